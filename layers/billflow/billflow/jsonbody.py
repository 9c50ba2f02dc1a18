"""Request bodies as JSON, refused with a 400 saying why when they are not UTF-8, not JSON, or nested
deeper than any real document, or carrying a number of thousands of digits: the standard parser would
otherwise raise UnicodeDecodeError, RecursionError or ValueError, which a handler answers with a 500."""

from __future__ import annotations

import base64
import binascii
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
    except ValueError as exc:  # an integer of more than 4,300 digits (Python's guard against slow parsing)
        raise InvalidRequest(f"the body has a number too long to read: {str(exc)[:80]}") from None
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


def parse_event_body(event: dict[str, Any], *, required: bool = False) -> Any:
    """The JSON body of an API Gateway HTTP API event (payload 2.0; base64 when not UTF-8), checked as above."""
    body = event.get("body")
    if body is None:
        return parse_json_body(None, required=required)
    if event.get("isBase64Encoded"):
        try:
            return parse_json_body(base64.b64decode(body, validate=True), required=required)
        except binascii.Error:
            raise InvalidRequest("the body is not valid base64 although the request says it is") from None
    return parse_json_body(str(body), required=required)
