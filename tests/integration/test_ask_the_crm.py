"""When in doubt, ask the CRM: deliveries that do not say what changed, of a record billflow has not seen,
decided on the CRM's state (the real record store on moto, tables from template.yaml).

Given a record whose deliveries never say what changed (Twenty "updated" without updatedFields), when they
arrive in any order, any number of times, then the filter reads the record from the CRM on the first one and
fires the same transitions, under the same execution names, whatever the order: those of the CRM's state
at its last-modified time.
"""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

from billflow.logic.filter import match_event
from billflow.logic.observe import crm_event
from billflow.models.events import CrmEvent
from billflow.storage import keys
from billflow.storage.execution_log import get_execution_log
from billflow.storage.records import get_record_store
from billflow.storage.rules import get_rule_store
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.integration.test_observe_order import RULES, STAGES, T0, tables, twenty_event  # noqa: F401 - fixture

MODIFIED = T0 + timedelta(hours=2)  # the CRM's last change, after every delivery's


class FakeCrm:
    """Answers get_record with the record as the CRM holds it now; counts the reads."""

    def __init__(self, record: dict[str, Any] | None) -> None:
        self.record = record
        self.reads = 0

    def __call__(self, event: CrmEvent) -> tuple[CrmEvent | None, str]:
        self.reads += 1
        if self.record is None:
            return None, "the CRM has no such record"
        return crm_event(event.tenant, event.source, event.object, event.record_id, self.record, MODIFIED,
                         MODIFIED), ""


def fired(events: list[CrmEvent], crm: FakeCrm) -> set[str]:
    names: set[str] = set()
    for event in events:
        _, _, verdicts = match_event(event, get_rule_store(), get_record_store(), RULES, ask=crm)
        # Transitions only: a rule without one ("is-customer") fires per delivery, by design.
        names |= {f"{v.rule.id}:{v.transition}" for v in verdicts
                  if v.matched and not v.transition.startswith("event:")}
    return names


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                   HealthCheck.too_slow])
@given(stages=st.lists(st.sampled_from(STAGES), min_size=1, max_size=3), final=st.sampled_from(STAGES),
       data=st.data())
def test_silent_first_sights_fire_the_crm_states_transitions_in_any_order(
    tables: None, stages: list[str], final: str, data: st.DataObject,  # noqa: F811 - the fixture
) -> None:
    record = {"stage": final, "amount": 5_000_000, "name": "Deal"}
    crm_record = {"id": "x", "stage": final, "name": "Deal", "amount": {"amountMicros": 5_000_000,
                                                                         "currencyCode": "USD"}}
    deliveries = [(stage, T0 + timedelta(minutes=i)) for i, stage in enumerate(stages)]
    order = data.draw(st.permutations(deliveries + data.draw(st.lists(st.sampled_from(deliveries), max_size=2))))

    names = []
    for sequence in (deliveries, order):
        record_id = str(uuid.uuid4())
        events = {at: twenty_event(record_id, {**record, "stage": stage}, None, at) for stage, at in deliveries}
        crm = FakeCrm({**crm_record, "id": record_id})
        names.append(fired([events[at] for _, at in sequence], crm))
        assert crm.reads == 1  # asked once, on the first sight; never again

    in_order, shuffled = names
    assert shuffled == in_order
    stamp = int(MODIFIED.timestamp() * 1000)
    assert ("won:stage@" + str(stamp) in in_order) == (final == "CUSTOMER")  # the CRM's state decides


def test_when_the_crm_cannot_be_asked_the_delivery_is_logged_as_skipped_with_why(tables: None) -> None:  # noqa: F811
    record_id = str(uuid.uuid4())
    silent = twenty_event(record_id, {"stage": "CUSTOMER", "amount": 5, "name": "Deal"}, None, T0)

    assert fired([silent], FakeCrm(None)) == set()

    entries = get_execution_log().by_record(keys.record_pk("acme", "twenty", "opportunity", record_id))
    [won] = [e for e in entries if e["rule_id"] == "won"]
    assert won["status"] == "skipped"
    assert "the CRM could not be asked: the CRM has no such record" in str(won["reason"])


def test_the_crms_view_makes_one_run_even_when_a_said_change_arrives_after(tables: None) -> None:  # noqa: F811
    record_id = str(uuid.uuid4())
    crm = FakeCrm({"id": record_id, "stage": "CUSTOMER", "name": "Deal",
                   "amount": {"amountMicros": 5, "currencyCode": "USD"}})
    silent = twenty_event(record_id, {"stage": "PROPOSAL", "amount": 5, "name": "Deal"}, None, T0)
    later_name_edit = twenty_event(record_id, {"stage": "CUSTOMER", "amount": 5, "name": "Deal"}, ["name"],
                                   MODIFIED + timedelta(minutes=1))

    first = fired([silent], crm)
    second = fired([later_name_edit], crm)

    assert any(n.startswith("won:") for n in first)
    assert not any(n.startswith("won:") for n in second)  # the win was the CRM's, already decided
