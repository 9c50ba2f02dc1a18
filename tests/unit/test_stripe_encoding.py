"""Stripe's bracket-notation form encoding, search literals, idempotency keys and line amounts."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
from billflow.connectors.stripe import encode_form, item_params, search_literal, step_key
from billflow.models.documents import InvoiceDraft
from hypothesis import given
from hypothesis import strategies as st

from tests.fakes.stripe_contract import decode_form
from tests.fakes.stripe_server import CustomerQuery

# Parameter names: anything bracket notation can carry (no brackets), and not all digits, since an object
# keyed 0..n-1 is how a list is written.
names = st.text(st.characters(blacklist_characters="[]", blacklist_categories=("Cs",)), min_size=1, max_size=12)
names = names.filter(lambda name: not name.isdecimal())
texts = st.text(st.characters(blacklist_categories=("Cs",)), max_size=20)
nested = st.recursive(
    texts,
    lambda children: st.lists(children, min_size=1, max_size=4)
    | st.dictionaries(names, children, min_size=1, max_size=4),
    max_leaves=20,
)


@given(st.dictionaries(names, nested, min_size=1, max_size=5))
def test_decode_inverts_encode(params: dict[str, Any]) -> None:
    assert decode_form(encode_form(params)) == params


@given(texts)
def test_search_literal_reads_back_as_the_same_text(name: str) -> None:
    query = CustomerQuery.parse(f"name:{search_literal(name)}")
    assert query.clauses[0].value == name


def test_nested_objects_and_lists_in_bracket_notation() -> None:
    encoded = encode_form({"metadata": {"crm_id": "opp 1"}, "lines": [{"amount": 100}, {"amount": -5}]})
    assert encoded == "metadata%5Bcrm_id%5D=opp+1&lines%5B0%5D%5Bamount%5D=100&lines%5B1%5D%5Bamount%5D=-5"


def test_scalars_are_spelled_as_stripe_expects() -> None:
    params = {"yes": True, "no": False, "n": 0, "price": Decimal("12.50"), "ratio": 0.1, "tiny": 1e-7}
    assert decode_form(encode_form(params)) == {
        "yes": "true", "no": "false", "n": "0", "price": "12.50", "ratio": "0.1", "tiny": "0.0000001"}


def test_none_and_empty_containers_are_left_out_but_empty_strings_are_kept() -> None:
    assert encode_form({"a": None, "b": [], "c": {}, "d": "", "e": {"f": None}}) == "d="


def test_reserved_characters_are_escaped() -> None:
    params = {"description": "a&b=c%d+e [f]", "metadata": {"key with spaces": "ünïcödé ✓"}}
    assert decode_form(encode_form(params)) == params


@pytest.mark.parametrize("key", ["a[b]", "x]", "", 3])
def test_names_bracket_notation_cannot_carry_are_refused(key: Any) -> None:
    with pytest.raises(ValueError, match="bracket notation"):
        encode_form({"metadata": {key: "v"}})


def test_values_of_other_types_are_refused() -> None:
    with pytest.raises(TypeError):
        encode_form({"when": object()})
    with pytest.raises(TypeError):
        encode_form(["not", "a", "mapping"])  # type: ignore[arg-type]


def test_search_literal_escapes_backslashes_before_quotes() -> None:
    assert search_literal("O'Brien \\ Co") == "'O\\'Brien \\\\ Co'"


def test_step_keys_are_stable_distinct_and_within_255_characters() -> None:
    assert step_key("run-1", "item:0") == "run-1:item:0"
    long_key = "t/" + "r" * 400
    keys = {step_key(long_key, f"item:{i}") for i in range(300)}
    assert len(keys) == 300
    assert all(len(k) <= 255 for k in keys)
    assert step_key(long_key, "invoice") == step_key(long_key, "invoice")
    assert step_key(long_key, "invoice") != step_key(long_key + "x", "invoice")


def _draft(currency: str, quantity: float, unit_amount_minor: int) -> InvoiceDraft:
    return InvoiceDraft.model_validate({
        "customer": {"name": "A"}, "currency": currency,
        "lines": [{"description": "x", "quantity": quantity, "unit_amount_minor": unit_amount_minor}],
    })


@pytest.mark.parametrize(
    ("currency", "quantity", "unit", "expected"),
    [
        ("jpy", 3, 1500, {"quantity": 3, "unit_amount": 1500}),  # yen are the smallest unit: never x100
        ("JPY", 1, 1, {"quantity": 1, "unit_amount": 1}),
        ("usd", 2, 1999, {"quantity": 2, "unit_amount": 1999}),
        ("kwd", 1, 1250, {"quantity": 1, "unit_amount": 1250}),  # fils: three decimals, still as given
        ("eur", 0, 500, {"quantity": 0, "unit_amount": 500}),
        ("usd", 1.5, 999, {"amount": 1499}),  # 1498.5 rounds half up
        ("jpy", 0.5, 3333, {"amount": 1667}),
        ("eur", -2, 500, {"amount": -1000}),  # Stripe quantities cannot be negative: a credit line instead
        ("eur", 2.0, 500, {"quantity": 2, "unit_amount": 500}),
    ],
)
def test_line_amounts(currency: str, quantity: float, unit: int, expected: dict[str, int]) -> None:
    document = _draft(currency, quantity, unit)
    params = item_params(document, document.lines[0], "cus_1", "in_1")
    assert {k: params[k] for k in ("quantity", "unit_amount", "amount") if k in params} == expected
    assert params["currency"] == currency.lower()
