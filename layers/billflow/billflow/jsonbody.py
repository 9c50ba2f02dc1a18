"""Request bodies as JSON, refused with a 400 saying why when they are not UTF-8, not JSON, or nested
deeper than any real document: the standard parser would otherwise raise UnicodeDecodeError or
RecursionError, which a handler answers with a 500."""

from __future__ import annotations

import json
from typing import Any

from billflow.errors import InvalidRequest

MAX_DEPTH = 64  # rules are a few levels deep; thousands of levels are an attack on the parser


def parse_json_body(body: bytes | str | None, *, max_depth: int = MAX_DEPTH, required: bool = True) -> Any:
    """The body's JSON value; InvalidRequest (400) when it is missing, not UTF-8, too deep or not JSON."""
    if body is None or body in (b"", ""):
        if required:
            raise InvalidRequest("the request has no body; a JSON document is expected")
        return None
    if isinstance(body, bytes):
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise InvalidRequest(f"the body is not UTF-8 (byte {exc.start + 1} is not valid)") from None
    else:
        text = body
    depth = nesting_depth(text)
    if depth > max_depth:
        raise InvalidRequest(f"the body is nested {depth} levels deep; at most {max_depth} are accepted")
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise InvalidRequest(f"the body is not JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from None
    except RecursionError:  # pragma: no cover - the depth check above refuses what could get here
        raise InvalidRequest("the body is nested too deep") from None


def nesting_depth(text: str) -> int:
    """The deepest nesting of [ and { outside strings: counted without parsing, so in constant stack."""
    depth = deepest = 0
    in_string = escaped = False
    for char in text:
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif char in "]}":
            depth -= 1
    return deepest
