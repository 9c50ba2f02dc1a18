"""Signatures on the webhooks billflow sends: seed 004's scheme for rule webhooks, and billflow's own.

Seed 004 (Zoho Books' help, "保护你的Webhooks" / "验证Webhooks") says, in the original's words translated:

    The following parameters (if available) are used to generate the hash value:
    - query string parameters;
    - the default payload or a custom raw JSON payload;
    - the x-www-form-urlencoded payload (key-value pairs).
    Construct a string by sorting the payload's key-value pairs alphabetically. The pairs must be sorted
    alphabetically by their keys.
    - If your webhook contains query string parameters, make sure these key-value pairs are sorted together
      with the payload's key-value pairs.
    - There must not be any spaces between the key-value pairs.
    Once you have sorted the key-value pairs and constructed the string, append the raw JSON to the end of
    the string.
    Example 1 (default payload): query string parameters subscription_id=90343, name=basic; default
    payload/raw JSON {"created_date":"2019-03-06","event_id":"5675"}; the constructed string is
        namebasicsubscription_id90343{"created_date":"2019-03-06","event_id":"5675"}
    Example 2 (x-www-form-urlencoded): query string parameters customer_name=Brandon, status=active;
    x-www-form-urlencoded pairs addon_description=Monthly addon, quantity=1; the constructed string is
        addon_descriptionMonthly addoncustomer_nameBrandonquantity1statusactive
    - If your payload is x-www-form-urlencoded, the whole string must be decoded before the hash is made.
    - If a key-value pair contains a space, the constructed string must contain the space too.
    The hash is computed by applying HMAC-SHA256 to this string with the secret token used in Zoho Books.
    Then compare it with the hash in the webhook's header (X-Zoho-Webhook-Signature).
    The secret token must be alphanumeric and 12-50 characters long.

So: every pair is key immediately followed by value (no '=', no '&', nothing between pairs), pairs sorted by
key (query and form pairs together; Python's sort: by code point, stable for a key given twice), decoded
(never percent- or plus-encoded), then the JSON body exactly as sent. A multipart form-data body is not in
the seed's list, so only its query pairs are signed. The seed does not say how the digest is written; the
receivers written against Zoho's documentation compare lowercase hex, so that is the default (base64 can be
chosen per connection). The HMAC runs over the UTF-8 bytes of the string.

billflow's own scheme (document actions sent to a generic webhook connection, and rule webhooks whose
connection asks for it): X-Billflow-Signature: sha256=<hex HMAC-SHA256(secret, f"{timestamp}.{body}")> with
the Unix timestamp in X-Billflow-Timestamp, so a receiver can refuse replays as it would Stripe's.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from collections.abc import Iterable
from typing import Literal

from billflow.errors import ConfigurationError

ZOHO_SIGNATURE_HEADER = "X-Zoho-Webhook-Signature"
BILLFLOW_SIGNATURE_HEADER = "X-Billflow-Signature"
BILLFLOW_TIMESTAMP_HEADER = "X-Billflow-Timestamp"

SECRET_PATTERN = re.compile(r"^[A-Za-z0-9]{12,50}$")

Encoding = Literal["hex", "base64"]


def check_secret(secret: object) -> str:
    """The seed's rule for a webhook secret token: letters and digits, 12 to 50 of them."""
    if not isinstance(secret, str) or not SECRET_PATTERN.match(secret):
        length = len(secret) if isinstance(secret, str) else 0
        raise ConfigurationError(
            f"a webhook secret must be 12-50 letters and digits (A-Z, a-z, 0-9); this one has {length} "
            "characters" + ("" if isinstance(secret, str) and secret.isalnum() else " and other characters")
        )
    return secret


def zoho_string_to_sign(pairs: Iterable[tuple[str, str]], raw_json: str | None = None) -> str:
    """Query and form pairs (decoded) sorted by key, each key then value, then the raw JSON body."""
    ordered = sorted(pairs, key=lambda pair: pair[0])
    return "".join(key + value for key, value in ordered) + (raw_json or "")


def zoho_signature(secret: str, string_to_sign: str, encoding: Encoding = "hex") -> str:
    digest = hmac.new(secret.encode(), string_to_sign.encode("utf-8"), hashlib.sha256)
    if encoding == "base64":
        return base64.b64encode(digest.digest()).decode()
    return digest.hexdigest()


def sign_zoho(
    secret: str, pairs: Iterable[tuple[str, str]], raw_json: str | None = None, encoding: Encoding = "hex"
) -> str:
    """The X-Zoho-Webhook-Signature value of a request with these query/form pairs and JSON body."""
    return zoho_signature(check_secret(secret), zoho_string_to_sign(pairs, raw_json), encoding)


def billflow_signature(secret: str, timestamp: str, body: bytes) -> str:
    digest = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    return f"sha256={digest}"
