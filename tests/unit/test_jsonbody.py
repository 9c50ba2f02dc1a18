"""Admin and webhook bodies: bytes that are not UTF-8 or JSON nested thousands deep are a 400, not a 500."""

from __future__ import annotations

import json

import pytest
from billflow.errors import InvalidRequest
from billflow.jsonbody import MAX_DEPTH, nesting_depth, parse_event_body, parse_json_body
from hypothesis import given
from hypothesis import strategies as st


def test_a_json_document_parses() -> None:
    assert parse_json_body(b'{"rules": [{"id": "a", "name": "\\u00e9 [not a bracket"}]}') == {
        "rules": [{"id": "a", "name": "é [not a bracket"}]}


@pytest.mark.parametrize(("body", "reason"), [
    (b"\xff\xfe{}", "not UTF-8 (byte 1"),
    (b'{"name": "caf\xe9"}', "not UTF-8 (byte 14"),
    (b"[" * 5000 + b"]" * 5000, "nested 5000 levels deep"),
    (b'{"a":' * 3000 + b"1" + b"}" * 3000, "nested 3000 levels deep"),
    (b'{"rules": ', "not JSON"),
    (b'{"limit": ' + b"9" * 100_000 + b"}", "number too long"),
    (b"", "no body"),
])
def test_bad_bodies_are_invalid_requests_that_say_why(body: bytes, reason: str) -> None:
    with pytest.raises(InvalidRequest) as err:
        parse_json_body(body)
    assert err.value.http_status == 400 and reason in err.value.message


def test_brackets_inside_strings_do_not_count_as_nesting() -> None:
    assert nesting_depth(json.dumps({"a": "[[[[{{{{\\\"[[["})) == 1


def test_an_optional_body_may_be_absent() -> None:
    assert parse_json_body(None, required=False) is None


@given(st.recursive(st.none() | st.booleans() | st.integers() | st.text(),
                    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(), inner, max_size=3),
                    max_leaves=30))
def test_any_json_document_within_the_depth_parses_to_itself(value: object) -> None:
    text = json.dumps(value)
    if nesting_depth(text) <= MAX_DEPTH:
        assert parse_json_body(text.encode()) == value


def test_an_api_gateway_event_body_is_read_as_api_gateway_sends_it() -> None:
    import base64

    assert parse_event_body({"body": '{"a": 1}', "isBase64Encoded": False}) == {"a": 1}
    assert parse_event_body({"body": base64.b64encode(b'{"a": 2}').decode(), "isBase64Encoded": True}) == {"a": 2}
    assert parse_event_body({}) is None
    with pytest.raises(InvalidRequest, match="not UTF-8"):
        parse_event_body({"body": base64.b64encode(b"\xe9").decode(), "isBase64Encoded": True})
    with pytest.raises(InvalidRequest, match="not valid base64"):
        parse_event_body({"body": "!!", "isBase64Encoded": True})
