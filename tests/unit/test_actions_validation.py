"""What a rule's actions may be when it is saved: Zoho Books' per-rule limits and each type's options."""

from __future__ import annotations

from typing import Any

import billflow.settings
import pytest
from billflow.logic.validate import validate_rule
from billflow.rules.validation import rule_actions

CRITERIA = [{"field": "stage", "comparator": "changed_to", "value": "CUSTOMER"}]
UPDATE = {"type": "field_update", "field": "note", "value": "x"}
EMAIL = {"type": "email_alert", "options": {"subject": "s", "text": "t", "to": ["a@b.example"]}}
HOOK = {"type": "webhook", "options": {"url": "https://hooks.example.com/deals"}}


def problems(*actions: dict[str, Any], blocks: list[dict[str, Any]] | None = None,
             on_failure: list[dict[str, Any]] | None = None) -> list[str]:
    doc: dict[str, Any] = {"id": "limits", "source": "twenty", "object": "opportunity"}
    if blocks is not None:
        doc["blocks"] = blocks
    else:
        doc.update(criteria=CRITERIA, actions=list(actions))
    if on_failure is not None:
        doc["on_failure"] = on_failure
    return [str(p) for p in validate_rule(doc)[1]]


# --- limits per rule ---------------------------------------------------------------------------------
@pytest.mark.parametrize(("action", "limit"), [(UPDATE, 3), (EMAIL, 5), (HOOK, 1)])
def test_at_the_limit_passes_and_one_more_is_refused(action: dict[str, Any], limit: int) -> None:
    assert problems(*[action] * limit) == []
    found = problems(*[action] * (limit + 1))
    assert found == [f"rule limits: blocks.0.actions.{limit}: a rule may have at most {limit} {action['type']} "
                     "action(s); this is one too many"]


def test_limits_count_across_blocks_and_failure_actions() -> None:
    blocks = [{"criteria": CRITERIA, "actions": [UPDATE, UPDATE]}, {"criteria": CRITERIA, "actions": [UPDATE]}]
    assert problems(blocks=blocks) == []
    assert problems(blocks=blocks, on_failure=[UPDATE]) == [
        "rule limits: on_failure.0: a rule may have at most 3 field_update action(s); this is one too many"]
    hooks = [{"criteria": CRITERIA, "actions": [HOOK]}, {"criteria": CRITERIA, "actions": [HOOK]}]
    assert problems(blocks=hooks) == [
        "rule limits: blocks.1.actions.0: a rule may have at most 1 webhook action(s); this is one too many"]


def test_other_types_have_no_per_rule_limit() -> None:
    note = {"type": "notification", "options": {"message": "m"}}
    assert problems(*[note] * 8) == []


def test_rule_actions_walks_every_list_of_actions_in_run_order() -> None:
    rule, _ = validate_rule({"id": "walk", "source": "twenty", "object": "opportunity",
                             "blocks": [{"criteria": CRITERIA, "actions": [UPDATE, EMAIL]},
                                        {"criteria": CRITERIA, "actions": [HOOK]}],
                             "on_failure": [EMAIL]})
    assert rule is not None
    assert [(path, a.type) for path, a in rule_actions(rule)] == [
        ("blocks.0.actions.0", "field_update"), ("blocks.0.actions.1", "email_alert"),
        ("blocks.1.actions.0", "webhook"), ("on_failure.0", "email_alert")]


# --- field updates -----------------------------------------------------------------------------------
def test_field_update_needs_a_field_path_and_may_clear() -> None:
    assert problems({"type": "field_update", "field": "note", "value": None}) == []
    assert problems({"type": "field_update", "field": "amount.currencyCode", "value": ""}) == []
    assert problems({"type": "field_update", "field": "bad field!", "value": 1}) == [
        "rule limits: blocks.0.actions.0.field: 'bad field!' is not a field name or dotted path (amount.currencyCode)"]


# --- email alerts ------------------------------------------------------------------------------------
def email(**options: Any) -> dict[str, Any]:
    return {"type": "email_alert", "options": {"subject": "s", "text": "t", **options}}


def test_email_alert_needs_recipients() -> None:
    assert problems({"type": "email_alert", "options": {"subject": "s", "text": "t"}}) == [
        "rule limits: blocks.0.actions.0.options: an email alert needs recipients: recipient_fields and/or to/cc/bcc"]
    assert problems(email(recipient_fields=["pointOfContact.emails.primaryEmail"])) == []


def test_email_alert_takes_at_most_10_extra_addresses() -> None:
    ten = [f"user{i}@example.com" for i in range(10)]
    assert problems(email(to=ten[:6], cc=ten[6:8], bcc=ten[8:])) == []
    found = problems(email(to=ten, bcc=["one.more@example.com"]))
    assert found == ["rule limits: blocks.0.actions.0.options.to: at most 10 extra recipients (to, cc and bcc "
                     "together); this alert has 11"]


def test_email_alert_options_are_checked() -> None:
    found = problems({"type": "email_alert", "options": {"to": ["not-an-address", "{{ contact.emails }}"],
                                                         "subjct": "typo", "recipient_fields": ["a b"]}})
    assert "rule limits: blocks.0.actions.0.options.subjct: unknown email alert option; known: bcc, cc, html, " \
           "recipient_fields, reply_to, subject, text, to" in found
    assert "rule limits: blocks.0.actions.0.options.subject: an email alert needs a subject" in found
    assert "rule limits: blocks.0.actions.0.options: an email alert needs a text and/or an html body" in found
    assert "rule limits: blocks.0.actions.0.options.to.0: 'not-an-address' is not an email address" in found
    assert "rule limits: blocks.0.actions.0.options.recipient_fields.0: 'a b' is not a field path" in found
    assert not any("options.to.1" in p for p in found)  # a placeholder is checked at run time


# --- webhooks ----------------------------------------------------------------------------------------
def hook(**options: Any) -> dict[str, Any]:
    return {"type": "webhook", "options": {"url": "https://hooks.example.com/x", **options}}


@pytest.mark.parametrize("options", [
    {}, {"method": "put"}, {"method": "DELETE", "query": {"a": "1", "b": 2}}, {"headers": {"X-Team": "finance"}},
    {"body_format": "raw", "body": {"a": [1, 2]}}, {"body": ["any", "json"]}, {"payload": {"legacy": True}},
    {"body_format": "form_data", "body": {"a": "1", "n": 2}}, {"body_format": "form_urlencoded", "body": {"a": None}},
])
def test_good_webhooks(options: dict[str, Any]) -> None:
    assert problems(hook(**options)) == []


@pytest.mark.parametrize(("options", "where", "message"), [
    ({"method": "GET"}, "options.method", "one of POST, PUT, DELETE"),
    ({"method": "PATCH"}, "options.method", "one of POST, PUT, DELETE"),
    ({"body_format": "xml"}, "options.body_format",
     "body_format 'xml': one of default, form_data, form_urlencoded, raw"),
    ({"body_format": "form_data", "body": {"a": {"nested": 1}}}, "options.body",
     "form_data needs body: a mapping of names to text values"),
    ({"body_format": "form_urlencoded"}, "options.body",
     "form_urlencoded needs body: a mapping of names to text values"),
    ({"body_format": "default", "body": {"a": 1}}, "options.body",
     "the default body is billflow's payload; use body_format raw, form_data or form_urlencoded to send your own"),
    ({"query": ["a", "b"]}, "options.query", "a mapping of names to text values"),
    ({"headers": {"Bad Header": "x"}}, "options.headers.Bad Header", "not a valid header name"),
    ({"url": "ftp://files.example.com/x"}, "options.url",
     "webhook: 'ftp://files.example.com/x' is not an absolute http:// or https:// URL"),
])
def test_bad_webhooks(options: dict[str, Any], where: str, message: str) -> None:
    assert f"rule limits: blocks.0.actions.0.{where}: {message}" in problems(hook(**options))


def test_a_secret_in_the_rule_is_refused_with_where_it_belongs() -> None:
    found = problems(hook(secret="abcdefghijkl1234"))
    assert len(found) == 1
    assert found[0].startswith("rule limits: blocks.0.actions.0.options.secret: a webhook's secret does not belong "
                               "in the rule")
    assert "connection as `secret` (12-50 letters and digits)" in found[0]


def test_a_webhook_needs_a_url_or_a_connection() -> None:
    assert problems({"type": "webhook"}) == [
        "rule limits: blocks.0.actions.0.options.url: a webhook needs a url (or a connection that has one)"]
    assert problems({"type": "webhook", "connection": "finance-hook"}) == []


def test_ports_other_than_80_and_443_are_refused_when_saved_for_production(monkeypatch: pytest.MonkeyPatch) -> None:
    assert problems(hook(url="https://hooks.example.com:8443/x")) == []  # any port outside production
    monkeypatch.setenv("STAGE", "prod")
    billflow.settings.get_settings.cache_clear()
    try:
        assert problems(hook(url="https://hooks.example.com:8443/x")) == [
            "rule limits: blocks.0.actions.0.options.url: webhook: port 8443 is refused in production; webhooks "
            "may only use ports 80 and 443 (STAGE=prod)"]
        assert problems(hook(url="https://hooks.example.com:443/x")) == []
        assert problems(hook(url="http://hooks.example.com:80/x")) == []
    finally:
        monkeypatch.delenv("STAGE")
        billflow.settings.get_settings.cache_clear()


# --- notifications and expressions ----------------------------------------------------------------------
def test_notification_options() -> None:
    found = problems({"type": "notification", "options": {"level": "loud", "recipients": "finance", "extra": 1}})
    assert found == [
        "rule limits: blocks.0.actions.0.options.extra: unknown notification option; known: level, message, "
        "recipients, title",
        "rule limits: blocks.0.actions.0.options.message: a notification needs a message",
        "rule limits: blocks.0.actions.0.options.level: one of info, success, warning, error",
        "rule limits: blocks.0.actions.0.options.recipients: a list of user names or addresses",
    ]


def test_invalid_jsonata_is_refused_with_its_position() -> None:
    found = problems({"type": "expression", "options": {"expression": "$round(record.amount.amountMicros * 0.9",
                                                        "fields": {"ok": "1 + 1", "bad": "record.(", "x y": "1"}}})
    assert found == [
        "rule limits: blocks.0.actions.0.options.expression: invalid JSONata at position 39: Expected ) before end "
        "of expression (S0203)",
        "rule limits: blocks.0.actions.0.options.fields.bad: invalid JSONata at position 8: Expected ) before end "
        "of expression (S0203)",
        "rule limits: blocks.0.actions.0.options.fields.x y: not a field name or dotted path",
    ]


def test_an_expression_action_needs_something_to_compute() -> None:
    assert problems({"type": "expression"}) == [
        "rule limits: blocks.0.actions.0.options: an expression action needs an expression and/or fields"]
    assert problems({"type": "expression", "options": {"fields": {"score": "$count(results)"}}}) == []
