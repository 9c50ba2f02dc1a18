"""Dry runs through the admin handler: verdicts with reasons, exact requests, and nothing sent or written.

Stripe, the finance webhook and Twenty are real local servers: a dry run must leave them without a single
request (unless a lookup is asked for, which only reads), and every table exactly as it was.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from billflow.storage import keys

from billflow_cli.rulesfile import load_rules
from tests.fakes.base import FakeServer, Request, Response
from tests.fakes.signing import twenty_event
from tests.fakes.stripe_server import FakeStripe
from tests.fakes.twenty_server import FakeTwenty, load_sample_workspace
from tests.integration.conftest import AdminStack

ROOT = Path(__file__).resolve().parents[2]
TENANT = "demo"
COMPANY_ID = "8fd9c244-1456-454b-b624-3f30b44e1144"
WEBHOOK_SECRET = "dryrunsecret42"


class Receiver(FakeServer):
    name = "finance-webhook"

    def __init__(self) -> None:
        super().__init__()
        self.route("POST", "/hooks/finance", lambda req: Response(200, {"id": "never"}))


@pytest.fixture(scope="module")
def servers() -> Iterator[tuple[FakeStripe, Receiver, FakeTwenty]]:
    stripe, receiver, twenty = FakeStripe(), Receiver(), FakeTwenty()
    twenty.seed(load_sample_workspace())
    for server in (stripe, receiver, twenty):
        server.start()
    yield stripe, receiver, twenty
    for server in (stripe, receiver, twenty):
        server.stop()


@pytest.fixture
def stack(servers: tuple[FakeStripe, Receiver, FakeTwenty]) -> Iterator[AdminStack]:
    stripe, receiver, twenty = servers
    stripe.reset()
    receiver.requests.clear()
    twenty.requests.clear()
    with AdminStack() as admin:
        admin.put_connection(TENANT, "stripe-main", {"type": "stripe", "base_url": stripe.url,
                                                     "api_key": stripe.api_key})
        admin.put_connection(TENANT, "finance-webhook", {"type": "webhook", "url": f"{receiver.url}/hooks/finance",
                                                         "secret": WEBHOOK_SECRET})
        admin.put_connection(TENANT, "twenty", twenty.connection_settings())
        admin.ok("POST", f"/admin/tenants/{TENANT}/rules/apply", {"rules": example_rules()})
        yield admin


def example_rules() -> list[dict[str, Any]]:
    return [json.loads(r.model_dump_json(exclude={"tenant"})) for r in load_rules(ROOT / "examples/rules", "")]


def dry_run(stack: AdminStack, **body: Any) -> dict[str, Any]:
    report: dict[str, Any] = stack.ok("POST", f"/admin/tenants/{TENANT}/dry-run", body)
    return report


def only_rule(report: dict[str, Any]) -> dict[str, Any]:
    (event,) = report["events"]
    (rule,) = event["rules"]
    assert isinstance(rule, dict)
    return rule


def test_a_won_deal_shows_every_criterion_and_the_exact_requests_with_nothing_sent_or_written(
    stack: AdminStack, servers: tuple[FakeStripe, Receiver, FakeTwenty]
) -> None:
    before = stack.snapshot()
    report = dry_run(stack, event=twenty_event("opportunity-won"))
    assert (report["dry_run"], report["sent"]) == (True, 0)
    (event,) = report["events"]
    assert (event["tenant"], event["object"], event["action"]) == (TENANT, "opportunity", "updated")
    assert event["changes"] == [{"field": "stage", "before": None, "after": "CUSTOMER"}]
    rule = only_rule(report)
    assert (rule["rule_id"], rule["matched"], rule["runs"]) == ("won-to-stripe", True, True)
    (block,) = rule["blocks"]
    assert (block["pattern"], block["matched"]) == ("1 AND 2", True)
    stage, amount = block["criteria"]
    assert (stage["field"], stage["matched"], stage["actual"]) == ("stage", True, "CUSTOMER")
    assert "changed from None to 'CUSTOMER'" in stage["reason"]
    assert (amount["matched"], amount["actual"]) == (True, 12500000000)

    invoice, webhook = rule["actions"]
    assert invoice["error"] is None, invoice["error"]
    key = invoice["idempotency_key"]
    assert key.endswith(":0")
    # A once-per-record document is keyed by tenant, rule, record and document type (issue 11), so runs of two
    # transitions racing to dispatch send one document; the webhook action after it by its run.
    record = twenty_event("opportunity-won")["record"]["id"]
    document = keys.execution_key(TENANT, "won-to-stripe", keys.record_pk(TENANT, "twenty", "opportunity", record),
                                  "document:invoice")
    assert key == f"{document}:0"
    assert rule["execution_name"].endswith(webhook["idempotency_key"].split(":")[0])
    stripe = servers[0]
    steps = {step["step"]: step for step in invoice["requests"]}
    assert steps["invoice"]["method"] == "POST"
    assert steps["invoice"]["url"] == f"{stripe.url}/v1/invoices"
    assert steps["invoice"]["idempotency_key"] == f"{key}:invoice"
    assert steps["item:0"]["params"]["unit_amount"] == 1250000  # 12,500.00 USD in cents
    assert steps["find_customer_by_name"]["params"]["query"] == "name:'{company.name}'"  # not looked up

    assert webhook["error"] is None, webhook["error"]
    (post,) = webhook["requests"]
    payload = json.loads(post["body"])
    assert payload["invoice_id"] == "{action.0.external_id}"  # the invoice does not exist yet
    assert payload["customer"] == "{company.name}"
    assert payload["amount_micros"] == 12500000000

    for server in servers:
        assert server.requests == [], f"{server.name} was sent {len(server.requests)} request(s)"
    assert stack.snapshot() == before  # no record state, counter, log item or idempotency record
    assert stack.executions() == []


def test_the_previous_record_decides_what_changed(stack: AdminStack) -> None:
    event = twenty_event("opportunity-won")
    already_won = {**event["record"], "stage": "CUSTOMER"}
    rule = only_rule(dry_run(stack, event=event, previous=already_won))
    assert (rule["matched"], rule["runs"], rule["actions"]) == (False, False, [])
    stage = rule["blocks"][0]["criteria"][0]
    assert (stage["matched"], stage["reason"]) == (False, "stage did not change")

    from_proposal = {**event, "record": {**event["record"], "stage": "PROPOSAL"}}  # an earlier webhook body
    report = dry_run(stack, event=event, previous=from_proposal)
    assert report["events"][0]["changes"] == [{"field": "stage", "before": "PROPOSAL", "after": "CUSTOMER"}]
    assert only_rule(report)["runs"] is True


def test_no_match_says_which_criterion_failed(stack: AdminStack) -> None:
    rule = only_rule(dry_run(stack, event=twenty_event("opportunity-stage-proposal")))
    assert (rule["matched"], rule["reason"]) == (False, "no block's criteria hold")
    stage = rule["blocks"][0]["criteria"][0]
    assert stage["matched"] is False
    assert "'PROPOSAL'" in stage["reason"]


def test_a_given_lookup_fills_the_customer(stack: AdminStack) -> None:
    lookup = {"company": {"id": COMPANY_ID, "name": "Acme Robotics"}, "contact": None}
    rule = only_rule(dry_run(stack, event=twenty_event("opportunity-won"), lookup=lookup))
    steps = {step["step"]: step for step in rule["actions"][0]["requests"]}
    assert steps["find_customer_by_name"]["params"]["query"] == "name:'Acme Robotics'"
    assert json.loads(rule["actions"][1]["requests"][0]["body"])["customer"] == "Acme Robotics"


def test_fetching_the_lookup_only_reads_the_crm(
    stack: AdminStack, servers: tuple[FakeStripe, Receiver, FakeTwenty]
) -> None:
    stripe, receiver, twenty = servers
    report = dry_run(stack, event=twenty_event("opportunity-won"), fetch_lookup=True)
    assert report["events"][0]["lookup"].startswith("fetched")
    payload = json.loads(only_rule(report)["actions"][1]["requests"][0]["body"])
    assert payload["customer"] == "Acme Robotics"
    assert twenty.requests
    assert {r.method for r in twenty.requests} == {"GET"}
    assert twenty.violations == []
    assert stripe.requests == receiver.requests == []


def test_an_inactive_rule_is_shown_but_does_not_run(stack: AdminStack) -> None:
    stack.ok("POST", f"/admin/tenants/{TENANT}/rules/won-to-stripe/deactivate")
    rule = only_rule(dry_run(stack, event=twenty_event("opportunity-won")))
    assert (rule["matched"], rule["runs"], rule["active"]) == (True, False, False)
    assert rule["reason"].startswith("rule is inactive: it never runs")
    assert len(rule["actions"]) == 2  # what it would send once activated


def test_rule_documents_can_be_tried_before_they_are_stored(stack: AdminStack) -> None:
    draft = {**example_rules()[0], "id": "custom-won", "criteria": [
        {"field": "stage", "comparator": "changed_to", "value": "CLOSED_WON"}]}
    draft.pop("blocks")
    draft["actions"] = example_rules()[0]["blocks"][0]["actions"][:1]
    report = dry_run(stack, event=twenty_event("opportunity-won-custom-stage"), rules=[draft])
    rule = only_rule(report)
    assert (rule["rule_id"], rule["runs"]) == ("custom-won", True)
    assert stack.store.get(TENANT, "custom-won") is None


def test_one_stored_rule_by_id(stack: AdminStack) -> None:
    stack.ok("POST", f"/admin/tenants/{TENANT}/rules/won-to-stripe/clone", {"new_id": "on-companies"})
    moved = stack.ok("GET", f"/admin/tenants/{TENANT}/rules/on-companies")["rule"]
    stack.ok("PUT", f"/admin/tenants/{TENANT}/rules/on-companies", {**moved, "object": "company"})
    rule = only_rule(dry_run(stack, event=twenty_event("opportunity-won"), rule_id="on-companies"))
    assert rule["reason"] == "rule is for twenty/company; the event is for twenty/opportunity"
    status, _ = stack.call("POST", f"/admin/tenants/{TENANT}/dry-run",
                           {"event": twenty_event("opportunity-won"), "rule_id": "missing"})
    assert status == 404


def test_a_crm_event_document_is_accepted_and_takes_the_tenant_of_the_url(stack: AdminStack) -> None:
    event = {
        "event_id": "evt-1", "tenant": "someone-else", "source": "twenty", "object": "opportunity",
        "action": "created", "record_id": "opp-9", "occurred_at": "2026-03-18T14:22:05Z",
        "received_at": "2026-03-18T14:22:06Z",
        "record": {"id": "opp-9", "stage": "CUSTOMER", "name": "Deal",
                   "amount": {"amountMicros": 1000000, "currencyCode": "EUR"}},
    }
    report = dry_run(stack, event=event)
    assert report["events"][0]["tenant"] == TENANT
    assert report["events"][0]["changes_from"].startswith("a created record")
    rule = only_rule(report)
    assert rule["matched"] is False
    assert rule["reason"] == "trigger is on edited, event is created"


def test_an_event_no_source_accepts_is_400_with_each_sources_reason(stack: AdminStack) -> None:
    status, answer = stack.call("POST", f"/admin/tenants/{TENANT}/dry-run", {"event": {"hello": "world"}})
    assert status == 400
    problems = answer["details"]["problems"]  # one per known source, in name order
    assert any(p.startswith("twenty: body is not a Twenty webhook event") for p in problems)
    assert any(p.startswith("hubspot: body is not a HubSpot webhook batch") for p in problems)
    status, answer = stack.call("POST", f"/admin/tenants/{TENANT}/dry-run",
                                {"event": twenty_event("opportunity-won"), "source": "salesforce"})
    assert status == 404


def test_an_action_that_cannot_be_rendered_says_why_and_the_others_still_show(stack: AdminStack) -> None:
    rules = example_rules()
    rules[0]["blocks"][0]["actions"][0]["connection"] = "no-such-connection"
    rule = only_rule(dry_run(stack, event=twenty_event("opportunity-won"), rules=rules))
    invoice, webhook = rule["actions"]
    assert invoice["requests"] == []
    assert "no-such-connection" in invoice["error"]
    assert webhook["error"] is None


def test_observed_changes_without_state() -> None:
    from billflow.logic.dryrun import observed_changes
    from billflow.models.events import CrmEvent

    def event(action: str, changed: list[str] | None) -> CrmEvent:
        return CrmEvent(event_id="e", tenant="t", source="twenty", object="opportunity", action=action,
                        record_id="r", record={"stage": "WON", "amount": {"amountMicros": 5}, "name": "x"},
                        changed_fields=changed, occurred_at="2026-01-01T00:00:00Z",
                        received_at="2026-01-01T00:00:00Z")

    paths = {"stage", "amount.amountMicros", "missing"}
    assert set(observed_changes(event("updated", ["amount"]), paths, None)) == {"amount.amountMicros"}
    assert set(observed_changes(event("created", None), paths, None)) == {"stage", "amount.amountMicros"}
    assert observed_changes(event("deleted", None), paths, None) == {}
    previous = {"stage": "WON", "amount": {"amountMicros": 4}}
    changes = observed_changes(event("updated", ["stage"]), paths, previous)
    assert [(c.path, c.before, c.after) for c in changes.values()] == [("amount.amountMicros", 4, 5)]


def test_request_bodies_never_reach_the_receiver(servers: tuple[FakeStripe, Receiver, FakeTwenty]) -> None:
    """The receiver records what it gets: proof that the fixtures above could see a send."""
    import urllib.request

    receiver = servers[1]
    receiver.requests.clear()
    urllib.request.urlopen(urllib.request.Request(f"{receiver.url}/hooks/finance", data=b"{}", method="POST"))
    assert [r.path for r in receiver.requests] == ["/hooks/finance"]
    assert isinstance(receiver.requests[0], Request)
    receiver.requests.clear()


def test_time_based_actions_are_shown_in_their_place_with_their_time(stack: AdminStack) -> None:
    rule = example_rules()[0]
    block = rule["blocks"][0]
    block["time_based"] = [{"after": "2d", "at": "09:00", "actions": [block["actions"].pop()]}]
    report = dry_run(stack, event=twenty_event("opportunity-won"), rules=[rule])
    invoice, later = only_rule(report)["actions"]
    assert (invoice["when"], invoice["idempotency_key"].rsplit(":", 1)[1]) == ("now", "0")
    assert later["type"] == "webhook"
    assert later["when"].startswith("2d after the trigger at 09:00 (")
    assert later["idempotency_key"].endswith(":1")  # dispatch's key: the action's place in the run
    assert json.loads(later["requests"][0]["body"])["invoice_id"] == "{action.0.external_id}"


def test_company_criteria_wait_for_the_lookup_unless_it_is_given(stack: AdminStack) -> None:
    rule = example_rules()[0]
    rule["blocks"][0]["criteria"].append({"field": "company.name", "comparator": "starts_with", "value": "Acme"})
    rule["blocks"][0]["pattern"] = "1 AND 2 AND 3"
    event = twenty_event("opportunity-won")

    pending = only_rule(dry_run(stack, event=event, rules=[rule]))
    criterion = pending["blocks"][0]["criteria"][2]
    assert (criterion["pending"], criterion["matched"]) == (True, False)
    assert pending["blocks"][0]["pending"] is True
    assert any("decided after Lookup" in note for note in pending["notes"])

    lookup = {"company": {"id": COMPANY_ID, "name": "Acme Robotics"}}
    decided = only_rule(dry_run(stack, event=event, rules=[rule], lookup=lookup))
    criterion = decided["blocks"][0]["criteria"][2]
    assert (criterion["pending"], criterion["matched"], decided["runs"]) == (False, True, True)
    other = only_rule(dry_run(stack, event=event, rules=[rule], lookup={"company": {"name": "Globex"}}))
    assert (other["runs"], other["blocks"][0]["criteria"][2]["matched"]) == (False, False)


def test_require_line_items_is_decided_as_the_run_decides_it(stack: AdminStack) -> None:
    """Issue 11: a document action with require_line_items runs only with line items; the dry run says so."""
    rule = example_rules()[0]
    rule["blocks"][0]["actions"][0]["options"]["require_line_items"] = True
    event = twenty_event("opportunity-won")

    unknown = only_rule(dry_run(stack, event=event, rules=[rule]))
    assert unknown["runs"] is True
    assert any("require_line_items is decided after Lookup" in note for note in unknown["notes"])

    none = only_rule(dry_run(stack, event=event, rules=[rule], lookup={"company": {"name": "Acme"}}))
    assert (none["matched"], none["runs"]) == (True, False)
    assert "not_matched after Lookup: the record has no line items" in none["reason"]

    items = [{"name": "Robot arm", "sku": "ARM-1", "quantity": "2", "unit_price": "100", "currency": "USD",
              "discount_percent": None, "discount_amount": None, "taxable": True, "description": None, "term": None}]
    some = only_rule(dry_run(stack, event=event, rules=[rule], lookup={"company": {"name": "Acme"},
                                                                        "line_items": items}))
    assert some["runs"] is True
    assert "1 line item(s) from the lookup become the document's lines" in some["notes"]
    steps = some["actions"][0]["requests"]
    [item] = [s for s in steps if s.get("path") == "/v1/invoiceitems"]
    assert (item["params"]["quantity"], item["params"]["unit_amount"], item["params"]["description"]) == \
        (2, 10000, "Robot arm")
