"""Seed 004's webhook signature: its own worked examples as fixed vectors, and a property test against an
independent implementation written here from the seed's words.

The constructed strings are the seed's (its markdown escapes `_` as `\\_`; the strings below are unescaped).
The seed gives no digest for them, so the digests below were computed once with OpenSSL, independently of
Python's hmac:  printf '%s' "<string>" | openssl dgst -sha256 -hmac "<secret>" [-hex | -binary | base64].
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from urllib.parse import parse_qsl, urlencode

import pytest
from billflow.errors import ConfigurationError
from billflow.signing import (
    ZOHO_SIGNATURE_HEADER,
    billflow_signature,
    check_secret,
    sign_zoho,
    zoho_signature,
    zoho_string_to_sign,
)
from hypothesis import given, settings
from hypothesis import strategies as st

SECRET = "billflowTest1234"
# Example 1 (default payload): query subscription_id=90343, name=basic; raw JSON body.
EXAMPLE_1_QUERY = [("subscription_id", "90343"), ("name", "basic")]
EXAMPLE_1_JSON = '{"created_date":"2019-03-06","event_id":"5675"}'
EXAMPLE_1_STRING = 'namebasicsubscription_id90343{"created_date":"2019-03-06","event_id":"5675"}'
EXAMPLE_1_HEX = "c121fdbe65f7f71efc069632f5fb26cdfcd6a124a722cb1fe6e6e570c7aab63f"
EXAMPLE_1_BASE64 = "wSH9vmX39x78BpYy9fsmzfzWoSSnIssf5ublcMeqtj8="
OTHER_SECRET = "Zoho12345678SecretToken"
EXAMPLE_1_HEX_OTHER_SECRET = "48f649091a55eef4402040037c391dcec3e9ff7f2da5f20023cb244f2a24c4af"
# Example 2 (x-www-form-urlencoded): query customer_name=Brandon, status=active; form pairs.
EXAMPLE_2_QUERY = [("customer_name", "Brandon"), ("status", "active")]
EXAMPLE_2_FORM = [("addon_description", "Monthly addon"), ("quantity", "1")]
EXAMPLE_2_STRING = "addon_descriptionMonthly addoncustomer_nameBrandonquantity1statusactive"
EXAMPLE_2_HEX = "43d3ab28924cb604944add18f5ea09b5b5ebb59f234b72b7edcf1f0aa9f0d5ae"
EXAMPLE_2_BASE64 = "Q9OrKJJMtgSUSt0Y9eoJtbXrtZ8jS3K37c8fCqnw1a4="


# --- the seed's worked examples --------------------------------------------------------------------
def test_example_1_default_payload_string_and_digest() -> None:
    assert zoho_string_to_sign(EXAMPLE_1_QUERY, EXAMPLE_1_JSON) == EXAMPLE_1_STRING
    assert sign_zoho(SECRET, EXAMPLE_1_QUERY, EXAMPLE_1_JSON) == EXAMPLE_1_HEX
    assert sign_zoho(OTHER_SECRET, EXAMPLE_1_QUERY, EXAMPLE_1_JSON) == EXAMPLE_1_HEX_OTHER_SECRET
    assert sign_zoho(SECRET, EXAMPLE_1_QUERY, EXAMPLE_1_JSON, encoding="base64") == EXAMPLE_1_BASE64


def test_example_2_form_urlencoded_pairs_sort_with_the_query_pairs() -> None:
    assert zoho_string_to_sign([*EXAMPLE_2_QUERY, *EXAMPLE_2_FORM]) == EXAMPLE_2_STRING
    assert sign_zoho(SECRET, [*EXAMPLE_2_QUERY, *EXAMPLE_2_FORM]) == EXAMPLE_2_HEX
    assert sign_zoho(SECRET, [*EXAMPLE_2_FORM, *EXAMPLE_2_QUERY], encoding="base64") == EXAMPLE_2_BASE64


def test_form_pairs_are_signed_decoded_keeping_their_spaces() -> None:
    # "the whole string must be decoded": the wire has Monthly+addon, the signed string "Monthly addon".
    wire = urlencode(EXAMPLE_2_FORM)
    assert wire == "addon_description=Monthly+addon&quantity=1"
    assert zoho_string_to_sign([*EXAMPLE_2_QUERY, *parse_qsl(wire)]) == EXAMPLE_2_STRING


def test_header_name_is_the_seeds() -> None:
    assert ZOHO_SIGNATURE_HEADER == "X-Zoho-Webhook-Signature"


def test_hex_digest_equals_hmac_sha256_of_the_string() -> None:
    assert zoho_signature(SECRET, EXAMPLE_1_STRING) == hmac.new(
        SECRET.encode(), EXAMPLE_1_STRING.encode(), hashlib.sha256).hexdigest()


@pytest.mark.parametrize("secret", ["short1234", "a" * 51, "has-dash-123456", "spaces in it 1234", "", "ünïcode12345"])
def test_secrets_must_be_12_to_50_letters_and_digits(secret: str) -> None:
    with pytest.raises(ConfigurationError, match="12-50 letters and digits"):
        sign_zoho(secret, EXAMPLE_1_QUERY, EXAMPLE_1_JSON)


@pytest.mark.parametrize("secret", ["a" * 12, "Z9" * 25, "billflowTest1234"])
def test_secrets_at_the_bounds_are_accepted(secret: str) -> None:
    assert check_secret(secret) == secret


def test_billflow_own_signature_is_unchanged() -> None:
    body = b'{"a":1}'
    expected = hmac.new(b"s3cret", b"1700000000." + body, hashlib.sha256).hexdigest()
    assert billflow_signature("s3cret", "1700000000", body) == f"sha256={expected}"


# --- an independent implementation, from the seed's words ------------------------------------------
def seed_004_reference(secret: str, query_string: str, form_body: str | None, raw_json: str | None) -> str:
    """What a receiver does with what it received: decode the query string and the form body into pairs,
    sort all pairs by key, write key then value with nothing between, append the raw JSON, HMAC-SHA256."""
    pairs = parse_qsl(query_string, keep_blank_values=True)
    if form_body is not None:
        pairs += parse_qsl(form_body, keep_blank_values=True)
    text = ""
    for key, value in sorted(pairs, key=lambda kv: kv[0]):
        text += f"{key}{value}"
    text += raw_json or ""
    return hmac.new(secret.encode("utf-8"), text.encode("utf-8"), hashlib.sha256).hexdigest()


keys = st.text(alphabet=st.characters(codec="utf-8"), min_size=1, max_size=12)  # utf-8: no lone surrogates
values = st.text(alphabet=st.characters(codec="utf-8"), max_size=20)
unique_pairs = st.dictionaries(keys, values, max_size=6).map(lambda d: list(d.items()))
secrets = st.text(alphabet="abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789", min_size=12,
                  max_size=50)
json_bodies = st.dictionaries(keys, values | st.integers(), max_size=4).map(
    lambda d: json.dumps(d, separators=(",", ":"), ensure_ascii=False))


@settings(max_examples=200, deadline=None)
@given(secret=secrets, query=unique_pairs, raw_json=json_bodies)
def test_json_bodies_sign_like_the_reference(secret: str, query: list[tuple[str, str]], raw_json: str) -> None:
    wire_query = urlencode(query)
    assert sign_zoho(secret, query, raw_json) == seed_004_reference(secret, wire_query, None, raw_json)


@settings(max_examples=200, deadline=None)
@given(secret=secrets, query=unique_pairs, form=unique_pairs)
def test_form_bodies_sign_like_the_reference(
    secret: str, query: list[tuple[str, str]], form: list[tuple[str, str]]
) -> None:
    # Keys unique across query and form: with a key in both, their order is the sender's to define.
    form = [(k, v) for k, v in form if k not in dict(query)]
    expected = seed_004_reference(secret, urlencode(query), urlencode(form), None)
    assert sign_zoho(secret, [*query, *form]) == expected
    assert sign_zoho(secret, [*form, *query]) == expected  # sorting makes the order given irrelevant


@settings(max_examples=100, deadline=None)
@given(secret=secrets, query=unique_pairs, raw_json=json_bodies)
def test_base64_is_the_same_digest(secret: str, query: list[tuple[str, str]], raw_json: str) -> None:
    hex_digest = sign_zoho(secret, query, raw_json)
    assert base64.b64decode(sign_zoho(secret, query, raw_json, encoding="base64")).hex() == hex_digest
