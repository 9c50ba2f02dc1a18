"""The rule side of the reconciliation sweep: `sweep:` in a rule, what the sweep asks the CRM (filters) and
what it decides locally (candidates), and `billflow sweep`'s bad input."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from billflow.connectors.base import RecordFilter
from billflow.logic.schedule import equality_filters
from billflow.logic.sweep import candidate
from billflow.logic.validate import validate_rule
from billflow.models.rules import Rule

from billflow_cli.main import main as billflow
from billflow_cli.rulesfile import load_rules

ROOT = Path(__file__).resolve().parents[2]
RULE: dict[str, Any] = {
    "id": "won", "source": "pipedrive", "object": "deal",
    "criteria": [{"field": "status", "comparator": "changed_to", "value": "won"},
                 {"field": "amount.amountMicros", "comparator": "greater_than", "value": 0},
                 {"field": "company.name", "comparator": "contains", "value": "GmbH"}],
    "actions": [{"type": "stripe.invoice", "connection": "stripe-main"}],
    "sweep": {"every": "1h", "window": "26h"},
}


def problems(doc: dict[str, Any]) -> list[str]:
    return [str(p) for p in validate_rule(doc)[1]]


def test_a_sweep_is_a_frequency_and_a_window_checked_when_the_rule_is_saved() -> None:
    rule, found = validate_rule(RULE)
    assert found == [] and rule is not None and rule.sweep is not None
    assert rule.sweep.every_delta.total_seconds() == 3600 and rule.sweep.window_delta.total_seconds() == 26 * 3600

    assert "at least 5m" in " ".join(problems({**RULE, "sweep": {"every": "1m", "window": "1h"}}))
    assert "at least sweep.every" in " ".join(problems({**RULE, "sweep": {"every": "2h", "window": "1h"}}))
    assert "not a duration" in " ".join(problems({**RULE, "sweep": {"every": "hourly"}}))
    assert "Extra inputs" in " ".join(problems({**RULE, "sweep": {"every": "1h", "cron": "x"}}))
    dated = {**RULE, "criteria": RULE["criteria"][1:2], "trigger": {"type": "date", "field": "close_time"}}
    assert any("sweep: a date-triggered rule" in p for p in problems(dated))


def test_the_crm_is_asked_for_the_equalities_the_rest_is_decided_here() -> None:
    rule = Rule.model_validate(RULE)
    assert equality_filters(rule) == (RecordFilter("status", "eq", "won"),)  # not the lookup's company.name
    either = Rule.model_validate({**RULE, "pattern": "1 OR 2"})
    assert equality_filters(either) == ()  # an OR cannot be one CRM filter: every record is evaluated here


@pytest.mark.parametrize(("record", "expected"), [
    ({"status": "won", "amount": {"amountMicros": 5}}, True),  # company.name: decided by the run after Lookup
    ({"status": "open", "amount": {"amountMicros": 5}}, False),
    ({"status": "won", "amount": {"amountMicros": 0}}, False),
    ({"amount": {"amountMicros": 5}}, False),
])
def test_a_record_is_a_candidate_when_the_criteria_hold_on_it_now(record: dict[str, Any], expected: bool) -> None:
    assert candidate(Rule.model_validate(RULE), record) is expected


def test_the_pipedrive_example_rule_is_valid_and_swept() -> None:
    [rule] = load_rules(ROOT / "examples" / "pipedrive" / "rules", tenant="demo")
    assert rule.source == "pipedrive" and rule.sweep is not None and rule.trigger.on == "edited"


def test_billflow_sweep_refuses_a_since_it_cannot_read(capsys: pytest.CaptureFixture[str]) -> None:
    code = billflow(["sweep", "--tenant", "acme", "--rule", "won", "--since", "last tuesday",
                     "--api", "http://127.0.0.1:9"])
    assert code == 2
    assert "--since 'last tuesday': give an ISO time" in capsys.readouterr().err


def test_the_pipedrive_example_connections_load_and_a_bad_generic_source_is_reported_at_start() -> None:
    from billflow_local.config import LocalConfigError, load_connections

    tenants = load_connections(ROOT / "examples" / "pipedrive" / "connections.yaml")
    assert sorted(tenants["demo"].sources) == ["pipedrive"]
    assert tenants["demo"].connections["pipedrive"]["type"] == "generic"

    bad = {"tenants": {"acme": {
        "sources": {"close": {"signing_secret": "s", "webhook": {"scheme": "hmac"}, "mapping": "{ a: "},
                    "salesforce": {"signing_secret": "s"}},
        "connections": {"close": {"type": "generic", "api": {"record": {"url": "x", "result": "data.{"}}}},
    }}}
    with pytest.raises(LocalConfigError) as error:
        load_connections(bad)
    text = "\n".join(error.value.problems)
    assert "sources.close.webhook.signature_header" in text and "sources.close.mapping: invalid JSONata" in text
    assert "sources.salesforce: unknown source" in text
    assert "connections.close.api.record.result: invalid JSONata" in text
