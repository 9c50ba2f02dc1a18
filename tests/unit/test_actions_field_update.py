"""Field updates: the value (placeholders, types), clearing a field, composite paths, the dry-run view."""

from __future__ import annotations

from typing import Any

import pytest
from billflow.actions import get_action_type
from billflow.actions.field_update import FieldUpdateAction, cleared, fields_for
from billflow.errors import ConfigurationError

from tests.unit.test_actions_placeholders import INVOICE_RESULT, RECORD, run_state


def rendered(action: dict[str, Any], **state: Any) -> dict[str, Any]:
    run = run_state(action, **state)
    return FieldUpdateAction().render(run.actions[0], run)


def test_the_registry_gives_this_type() -> None:
    assert isinstance(get_action_type("field_update"), FieldUpdateAction)


def test_a_literal_value() -> None:
    assert rendered({"type": "field_update", "field": "stage", "value": "PROPOSAL"}) == {
        "fields": {"stage": "PROPOSAL"}}


def test_placeholders_keep_the_type_alone_and_interpolate_in_text() -> None:
    results = [INVOICE_RESULT]
    assert rendered({"type": "field_update", "field": "invoiceId", "value": "${INVOICE.ID}"}, results=results) == {
        "fields": {"invoiceId": "in_1Q2w3E"}}
    assert rendered({"type": "field_update", "field": "seats", "value": "{{ company.employees }}"}) == {
        "fields": {"seats": 240}}
    assert rendered({"type": "crm.field_update", "field": "note",
                     "value": "Invoiced ${COMPANY.NAME} as {{ dispatch.external_id }}"}, results=results) == {
        "fields": {"note": "Invoiced Acme Robotics as in_1Q2w3E"}}


@pytest.mark.parametrize("value", [None, ""])
def test_an_empty_value_clears_the_field_with_null(value: Any) -> None:
    assert rendered({"type": "field_update", "field": "closeDate", "value": value}) == {"fields": {"closeDate": None}}


def test_no_value_given_clears_too() -> None:
    assert rendered({"type": "field_update", "field": "closeDate"}) == {"fields": {"closeDate": None}}


def test_a_placeholder_rendering_empty_clears_but_zero_and_false_do_not() -> None:
    record = {**RECORD, "note": "", "count": 0, "flag": False}
    assert rendered({"type": "field_update", "field": "a", "value": "{{ record.note }}"}, record=record) == {
        "fields": {"a": None}}
    assert rendered({"type": "field_update", "field": "a", "value": "{{ record.count }}"}, record=record) == {
        "fields": {"a": 0}}
    assert rendered({"type": "field_update", "field": "a", "value": "{{ record.flag }}"}, record=record) == {
        "fields": {"a": False}}
    assert cleared([]) == []
    assert cleared(" ") == " "


def test_a_dotted_field_sets_part_of_a_composite() -> None:
    assert rendered({"type": "field_update", "field": "amount.currencyCode", "value": "EUR"}) == {
        "fields": {"amount": {"currencyCode": "EUR"}}}
    assert fields_for("a.b.c", 1) == {"a": {"b": {"c": 1}}}


def test_an_unknown_placeholder_at_run_time_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError, match=r"\$\{INVOICE.ID\}"):
        rendered({"type": "field_update", "field": "invoiceId", "value": "${INVOICE.ID}"})  # no invoice yet


def test_preview_shows_the_update_of_the_record() -> None:
    run = run_state({"type": "field_update", "field": "note", "value": None})
    action = FieldUpdateAction()
    request = action.render(run.actions[0], run)
    assert action.preview(run.actions[0], request, run, "key") == [{
        "action": "field_update", "crm": "twenty", "object": "opportunity", "record_id": RECORD["id"],
        "update": {"note": None}}]
