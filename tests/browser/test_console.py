"""The admin console as a new admin uses it, in headless Chromium, against the local runtime."""

from __future__ import annotations

import copy
import json
import re
import urllib.request
import uuid
from typing import Any

import pytest

from billflow_local.standins.signing import twenty_body, twenty_headers
from tests.browser.conftest import (
    HOSTILE,
    OTHER_TENANT,
    ROOT,
    SIGNING_SECRET,
    TENANT,
    TOKEN,
    ConsoleStack,
    shoot,
)

pytestmark = pytest.mark.browser
WON_EVENT = json.loads((ROOT / "events" / "twenty" / "opportunity-won.json").read_text())


def post_won(stack: ConsoleStack, name: str) -> str:
    """A signed "won" webhook for a fresh opportunity the Twenty stand-in holds; its record id."""
    event = copy.deepcopy(WON_EVENT)
    record = event["record"]
    record["id"] = str(uuid.uuid4())
    record["name"] = name
    stack.twenty.add_record("opportunity", dict(record))
    body = twenty_body(event)
    headers = {"Content-Type": "application/json", **twenty_headers(SIGNING_SECRET, body)}
    request = urllib.request.Request(f"{stack.runtime.url}/webhooks/{TENANT}/twenty", data=body, method="POST",
                                     headers=headers)
    with urllib.request.urlopen(request, timeout=30) as resp:
        assert resp.status == 202
    stack.runtime.wait_idle(60)
    return str(record["id"])


def go(page: Any, hash_: str) -> None:
    """Open a page of the console (again, when it is open: a fresh read)."""
    page.evaluate("h => { if (location.hash === h) window.dispatchEvent(new HashChangeEvent('hashchange'));"
                  " else location.hash = h; }", hash_)
    page.wait_for_function("h => location.hash === h && !document.querySelector('main .loading')", arg=hash_)


# ------------------------------------------------------------------------------------------- security
def test_the_local_api_refuses_calls_without_the_token_and_the_page_is_locked_down(console_stack: ConsoleStack) -> None:
    status, headers, body = console_stack.call("GET", f"/admin/tenants/{TENANT}/rules", token=None)
    assert status == 401 and body["error"] == "Unauthorized"
    status, _, body = console_stack.call("GET", f"/admin/tenants/{TENANT}/rules", token="wrong-token")
    assert status == 401
    status, headers, _ = console_stack.call("GET", "/console", token=None)  # the page itself holds no data
    assert status == 200
    csp = headers["content-security-policy"]
    assert "default-src 'self'" in csp and "script-src 'self'" in csp and "frame-ancestors 'none'" in csp
    assert "unsafe-inline" not in csp
    assert headers["x-frame-options"] == "DENY"
    assert not any(k.lower() == "access-control-allow-origin" for k in headers)
    html = (ROOT / "functions" / "admin" / "console" / "index.html").read_text()
    assert not re.search(r"<script(?![^>]*\bsrc=)[^>]*>", html), "no inline script"
    assert not re.search(r"https?://", html), "nothing loaded from another host"
    status, _, _ = console_stack.call("GET", "/console/..%2F..%2Fapp.py", token=None)
    assert status == 404


def test_the_cli_sends_the_token_it_is_given(console_stack: ConsoleStack, monkeypatch: pytest.MonkeyPatch) -> None:
    from billflow_cli.api import AdminApi, ApiError

    api = AdminApi(console_stack.runtime.url)
    monkeypatch.delenv("BILLFLOW_TOKEN", raising=False)
    with pytest.raises(ApiError) as refused:
        api.get(f"/admin/tenants/{TENANT}/rules")
    assert refused.value.status == 401 and "Authorization: Bearer" in str(refused.value)
    monkeypatch.setenv("BILLFLOW_TOKEN", TOKEN)
    assert "rules" in api.get(f"/admin/tenants/{TENANT}/rules")


def test_without_the_token_the_page_asks_for_it(browser: Any, console_stack: ConsoleStack) -> None:
    context = browser.new_context()
    page = context.new_page()
    page.set_default_timeout(10_000)
    page.goto(f"{console_stack.runtime.url}/console#tenants={TENANT}")
    page.wait_for_selector("text=Local API token")
    page.fill("input[type=password]", "not-the-token")
    page.click("text=Use token")
    page.wait_for_selector("[role=alert]")
    assert "sign in again" in page.text_content("[role=alert]")
    context.close()


# ------------------------------------------------------------------------------------------- rules
def test_create_a_rule_from_the_form_see_a_problem_at_its_line_and_save_it_after_a_diff(page: Any) -> None:
    page.wait_for_selector("text=won-to-stripe")
    page.click("text=New rule")
    page.wait_for_selector("form.rule-form")
    page.fill("input[name=id]", "big-won-deals")
    page.fill("input[name=name]", "Invoice big won deals")
    page.click("text=Add criterion")
    page.fill("input[name=criterion-2-field]", "amount.amountMicros")
    page.select_option("select[name=criterion-2-kind]", "number")
    options = page.eval_on_selector("select[name=criterion-2-comparator]", "s => [...s.options].map(o => o.value)")
    assert "greater_than" in options and "starts_with" not in options  # comparators that fit a number
    page.select_option("select[name=criterion-2-comparator]", "greater_than")
    page.fill("input[name=criterion-2-value]", "1000000")
    shoot(page, "rule-form")

    page.click("#tab-yaml")
    yaml_text = page.input_value("#rule-yaml")
    assert "amount.amountMicros" in yaml_text and "greater_than" in yaml_text
    broken = yaml_text.replace("greater_than", "bigger_than")
    page.fill("#rule-yaml", broken)
    page.click("text=Validate")
    problem = page.wait_for_selector("li.problem")
    line = 1 + broken.split("\n").index(next(x for x in broken.split("\n") if "bigger_than" in x))
    assert problem.get_attribute("data-line") == str(line)
    assert "unknown comparator 'bigger_than'" in problem.text_content()
    assert page.get_attribute(f".gutter div:nth-child({line})", "class") == "bad"
    shoot(page, "rule-yaml-problem")

    page.fill("#rule-yaml", yaml_text)
    page.click("text=Review and save")
    page.wait_for_selector("pre.diff")
    assert "+ id: big-won-deals" in page.text_content("pre.diff")
    page.click("text=Create rule")
    page.wait_for_selector("h1:has-text('Rule big-won-deals')")
    # the stored rule, changed: the diff shows just the change
    page.click("#tab-yaml")
    edited = page.input_value("#rule-yaml").replace("name: Invoice big won deals", "name: Invoice the big ones")
    page.fill("#rule-yaml", edited)
    page.click("text=Review and save")
    diff = page.text_content("pre.diff")
    assert "- name: Invoice big won deals" in diff and "+ name: Invoice the big ones" in diff
    page.click("text=Save these changes")
    page.wait_for_selector("#status:has-text('Saved big-won-deals')")
    go(page, "#/rules")
    assert page.is_visible("text=big-won-deals")


def test_toggle_clone_reorder_and_delete_rules(page: Any, console_stack: ConsoleStack) -> None:
    doc = {"id": "toggle-me", "name": HOSTILE, "source": "twenty", "object": "company", "order": 5, "active": True,
           "trigger": {"type": "event", "on": "edited"},
           "criteria": [{"field": "name", "comparator": "changed"}],
           "actions": [{"type": "webhook", "connection": "finance-webhook"}]}
    assert console_stack.call("POST", f"/admin/tenants/{TENANT}/rules", doc)[0] == 200
    go(page, "#/rules")
    assert page.locator(f"text={HOSTILE}").count() == 1  # the hostile name, shown as text
    assert page.locator("main img").count() == 0
    page.uncheck("#active-toggle-me")
    page.wait_for_selector("#status:has-text('toggle-me is now inactive')")
    assert console_stack.call("GET", f"/admin/tenants/{TENANT}/rules/toggle-me")[2]["rule"]["active"] is False
    page.click("tr:has-text('toggle-me') >> text=Clone")
    page.wait_for_selector("tr:has-text('toggle-me-copy')")
    shoot(page, "rules")  # the README's picture: two objects' rules, one named with hostile HTML, shown as text
    page.click("[aria-label='Move toggle-me down']")
    page.wait_for_selector("#status:has-text('Moved toggle-me')")
    ids = [r["id"] for r in console_stack.call("GET", f"/admin/tenants/{TENANT}/rules?object=company")[2]["rules"]]
    assert ids.index("toggle-me-copy") < ids.index("toggle-me")
    page.click("tr:has-text('toggle-me-copy') >> text=Delete")
    page.click("text=Really delete toggle-me-copy?")
    page.wait_for_selector("#status:has-text('Deleted toggle-me-copy')")
    assert console_stack.call("GET", f"/admin/tenants/{TENANT}/rules/toggle-me-copy")[0] == 404


# ------------------------------------------------------------------------------------------- dry run
def test_dry_run_shows_the_verdict_each_criterion_and_every_request(page: Any, console_stack: ConsoleStack) -> None:
    go(page, "#/dry-run")
    event = copy.deepcopy(WON_EVENT)
    event["record"]["name"] = HOSTILE
    page.fill("#dry-event", json.dumps(event, indent=2))
    page.select_option("#dry-rule", "won-to-stripe")
    page.click("button:has-text('Dry run')")
    page.wait_for_selector("article.verdict")
    report = page.text_content("#dry-result")
    assert "won-to-stripe: runs" in report
    assert "stage changed from None to 'CUSTOMER'" in report
    assert "POST " in report and "/v1/invoices" in report
    page.click("#dry-result details >> nth=0 >> summary")
    assert HOSTILE in page.text_content("#dry-result")  # the record's name as text, not an element
    assert page.locator("#dry-result img").count() == 0
    assert console_stack.stripe.invoices == {} or all(  # nothing was sent by the dry run
        i["metadata"].get("crm_record_id") != event["record"]["id"] for i in console_stack.stripe.invoices.values())
    shoot(page, "dry-run")


# ------------------------------------------------------------------------------------------- runs
DOWN_RULE = {"id": "down-invoices", "name": "Invoice through a target that is down", "source": "twenty",
             "object": "opportunity", "order": 20, "active": True, "trigger": {"type": "event", "on": "edited"},
             "criteria": [{"field": "stage", "comparator": "changed_to", "value": "CUSTOMER"}],
             "actions": [{"type": "stripe.invoice", "connection": "stripe-down"}]}


def test_a_webhook_run_appears_with_its_path_drawn_and_a_failed_run_is_replayed(
        page: Any, console_stack: ConsoleStack) -> None:
    assert console_stack.call("POST", f"/admin/tenants/{TENANT}/rules", DOWN_RULE)[0] == 200
    record_id = post_won(console_stack, HOSTILE)
    go(page, "#/runs")
    page.wait_for_selector(f"tbody tr:has-text('{record_id}')")
    shoot(page, "runs")

    # the run that sent: its path passed, the invoice's id links into Stripe
    page.select_option("select[name=rule]", "won-to-stripe")
    page.fill("input[name=record]", f"twenty:opportunity:{record_id}")
    page.click("button:has-text('Filter')")
    page.wait_for_function("() => location.hash.includes('record=')")
    page.click(f"tbody tr:has-text('{record_id}') >> text=Open")
    page.wait_for_selector("svg.statemachine")
    assert page.locator("svg.statemachine g.state.passed").count() >= 5
    assert page.locator("svg.statemachine g.state.failed").count() == 0
    assert page.locator("svg.statemachine path.edge.taken").count() >= 4
    shoot(page, "run-succeeded")
    invoices = [i["id"] for i in console_stack.stripe.invoices.values() if i["metadata"]["crm_record_id"] == record_id]
    link = page.locator("a[href^='https://dashboard.stripe.com/invoices/']")
    assert link.count() == 1 and link.text_content() in invoices
    assert link.get_attribute("href") == f"https://dashboard.stripe.com/invoices/{link.text_content()}"
    assert page.locator("#replay").count() == 0  # a run that succeeded is not replayed

    # the run whose target is down: failed, drawn failed, replayed
    go(page, f"#/runs?rule=down-invoices&record=twenty%3Aopportunity%3A{record_id}")
    page.click(f"tbody tr:has-text('{record_id}') >> text=Open")
    page.wait_for_selector("svg.statemachine")
    shoot(page, "run-failed")
    assert page.locator("dd .badge.failed").count() == 1
    assert page.locator("svg.statemachine g.state.failed").count() >= 1
    dispatch = page.locator("svg.statemachine g[data-state=Dispatch]")
    assert dispatch.get_attribute("data-status") == "failed"
    assert "retried" in dispatch.locator("title").text_content()  # the transient error was retried first
    before = len(console_stack.runtime.executions())
    page.click("#replay")
    page.wait_for_selector("text=Replayed as")
    console_stack.runtime.wait_idle(60)
    assert len(console_stack.runtime.executions()) == before + 1
    page.set_viewport_size({"width": 390, "height": 844})
    shoot(page, "run-failed-phone", width=390)
    console_stack.call("DELETE", f"/admin/tenants/{TENANT}/rules/down-invoices")


# ------------------------------------------------------------------------------------------- second tenant
def test_a_second_tenant_sees_none_of_the_first_tenants_data(page: Any, console_stack: ConsoleStack) -> None:
    go(page, "#/runs")  # acme has runs by now (the webhook test above)
    assert page.locator("tbody tr").count() > 0
    page.fill("#tenant", OTHER_TENANT)
    page.click("text=Switch")
    page.wait_for_selector("h1:has-text('Execution log')")
    page.wait_for_function("() => !document.querySelector('main .loading')")
    assert page.locator("text=No runs match.").count() == 1
    go(page, "#/rules")
    assert page.locator("text=won-to-stripe").count() == 0
    assert page.locator("text=No rules yet").count() == 1


# ------------------------------------------------------------------------------------------- usage
def test_usage_shows_today_against_the_limits_and_30_days(page: Any, console_stack: ConsoleStack) -> None:
    post_won(console_stack, "Usage deal")
    go(page, "#/usage")
    row = page.wait_for_selector("tr[data-action-type=invoice]")
    cells = [c.text_content() for c in row.query_selector_all("td")]
    assert int(cells[1]) >= 1 and cells[2] == "500"
    assert page.locator("svg.chart g.day").count() == 30
    assert page.locator("svg.chart rect.bar.sent").count() >= 1
    shoot(page, "usage")
    shoot(page, "usage-phone", width=390)


# ------------------------------------------------------------------------------------------- connections, settings
def test_change_a_daily_limit(page: Any, console_stack: ConsoleStack) -> None:
    go(page, "#/connections")
    limit = page.locator("#daily-limits .row:has(input[value=invoice]) input[name=limit-value]")
    limit.fill("250")
    page.click("text=Save settings")
    page.wait_for_selector("#status:has-text('Settings saved')")
    assert console_stack.call("GET", f"/admin/tenants/{TENANT}/settings")[2]["daily_limits"]["invoice"] == 250
    go(page, "#/usage")
    assert page.locator("tr[data-action-type=invoice] td").nth(2).text_content() == "250"


def test_test_a_connection_and_save_one_whose_secret_is_never_shown_again(
        page: Any, console_stack: ConsoleStack) -> None:
    go(page, "#/connections")
    page.click("tr[data-connection=stripe-main] >> button:has-text('Test')")
    page.wait_for_selector("tr[data-connection=stripe-main] .test-result .ok")
    page.click("tr[data-connection=stripe-down] >> button:has-text('Test')")
    page.wait_for_selector("tr[data-connection=stripe-down] .test-result .error")
    shoot(page, "connections")

    page.click("text=New connection")
    page.fill("#connection-editor input[name=name]", "audit-hook")
    page.select_option("#connection-editor select[name=type]", "webhook")
    values = page.locator("#connection-editor input[name=value]")
    assert values.nth(1).get_attribute("type") == "password"  # the secret is typed into a password field
    values.nth(0).fill(f"{console_stack.receiver.url}/hooks/audit")
    values.nth(1).fill("s3cr3t-Audit-Value")
    page.click("text=Save connection")
    page.wait_for_selector("tr[data-connection=audit-hook]")
    assert "secret" in page.text_content("tr[data-connection=audit-hook]")
    assert "s3cr3t-Audit-Value" not in page.content()
    assert "s3cr3t-Audit-Value" not in json.dumps(console_stack.call("GET", f"/admin/tenants/{TENANT}/connections")[2])
    page.click("tr[data-connection=audit-hook] >> button:has-text('Edit')")
    secret_input = page.locator("#connection-editor input[type=password]")
    assert secret_input.count() == 1 and secret_input.input_value() == ""  # never echoed back
    shoot(page, "connections-phone", width=390)


def test_a_generic_connection_takes_its_calls_as_json(
        page: Any, console_stack: ConsoleStack, console_allows: list[str]) -> None:
    console_allows.append("400")  # the admin API refuses the wrong calls below, and the form shows why
    go(page, "#/connections")
    page.click("text=New connection")
    page.fill("#connection-editor input[name=name]", "pipedrive")
    page.select_option("#connection-editor select[name=type]", "generic")
    keys = page.locator("#connection-editor input[name=key]")
    assert [keys.nth(i).input_value() for i in range(keys.count())] == ["base_url", "api_key", "api"]
    values = page.locator("#connection-editor input[name=value]")
    values.nth(0).fill("https://acme.pipedrive.com")
    values.nth(1).fill("pd-Token-Never-Shown")
    values.nth(2).fill('{"record": {"url": "{base_url}/api/v2/deals/{record_id}"')  # one brace short
    page.click("text=Save connection")
    page.wait_for_selector("#status.error:has-text('api: not valid JSON')")
    values.nth(2).fill('{"record": {"method": "DELETE", "url": "{base_url}/api/v2/deals/{record_id}"}}')
    page.click("text=Save connection")  # the admin API's check of the calls, shown as it says it
    page.wait_for_selector("#status.error:has-text('api.record.method: GET, POST, PUT or PATCH')")
    saved = console_stack.call("GET", f"/admin/tenants/{TENANT}/connections")[2]["connections"]
    assert "pipedrive" not in {c["name"] for c in saved}  # nothing was saved while the calls were wrong
    values.nth(2).fill('{"record": {"url": "{base_url}/api/v2/deals/{record_id}", "result": "data"}}')
    page.click("text=Save connection")
    page.wait_for_selector("tr[data-connection=pipedrive]")
    listed = console_stack.call("GET", f"/admin/tenants/{TENANT}/connections")[2]
    pipedrive = next(c for c in listed["connections"] if c["name"] == "pipedrive")
    assert pipedrive["type"] == "generic" and pipedrive["keys"] == ["api", "api_key", "base_url"]
    assert "pd-Token-Never-Shown" not in page.content() + json.dumps(listed)


def test_every_page_fits_a_phone(page: Any) -> None:
    page.set_viewport_size({"width": 390, "height": 844})
    for name, hash_ in (("rules-phone", "#/rules"), ("dry-run-phone", "#/dry-run"), ("runs-phone", "#/runs"),
                        ("rule-phone", "#/rules/won-to-stripe")):
        go(page, hash_)
        shoot(page, name, width=390)


def test_the_console_works_by_keyboard(page: Any, console_stack: ConsoleStack) -> None:
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.textContent") == "Skip to content"
    focused = []
    for _ in range(8):
        page.keyboard.press("Tab")
        focused.append(page.evaluate("document.activeElement.id || document.activeElement.textContent"))
    assert focused[:7] == ["billflow", "Rules", "Dry run", "Execution log", "Usage", "Connections & settings", "tenant"]
    # a page opened from the menu by keyboard puts focus on its heading; a rule is toggled with the space bar
    page.focus("#nav a[data-page=usage]")
    page.keyboard.press("Enter")
    page.wait_for_function("() => document.activeElement.tagName === 'H1'")
    assert page.evaluate("document.activeElement.textContent") == "Usage"
    page.focus("#nav a[data-page=rules]")
    page.keyboard.press("Enter")
    page.wait_for_function("() => document.activeElement.textContent === 'Rules'")
    page.focus("#active-won-to-stripe")
    page.keyboard.press("Space")
    page.wait_for_selector("#status:has-text('won-to-stripe is now inactive')")
    page.focus("#active-won-to-stripe")
    page.keyboard.press("Space")
    page.wait_for_selector("#status:has-text('won-to-stripe is now active')")
    rule = console_stack.call("GET", f"/admin/tenants/{TENANT}/rules/won-to-stripe")[2]["rule"]
    assert rule["active"] is True


def test_oauth_connect_opens_the_providers_consent_page_and_the_grant_is_stored(
        page: Any, console_stack: ConsoleStack) -> None:
    from tests.fakes.oauth_server import OAuthFake

    with OAuthFake(style="xero") as xero:
        settings = {"client_id": "client-1", "client_secret": "client-secret-1",
                    "authorize_url": xero.authorize_url, "token_url": xero.token_url, "base_url": xero.url}
        status, _, _ = console_stack.call("PUT", f"/admin/tenants/{TENANT}/connections/xero-main",
                                          {"type": "xero", "settings": settings})
        assert status == 200
        go(page, "#/connections")
        with page.context.expect_page() as consent:
            page.click("tr[data-connection=xero-main] >> button:has-text('Connect')")
        provider = consent.value
        provider.wait_for_load_state()
        assert provider.url.startswith(f"{console_stack.runtime.url}/oauth/callback?")  # the provider sent it back
        assert '"connected": true' in provider.content().replace('":true', '": true')
        provider.close()
        go(page, "#/connections")
        assert "refresh_token" in page.text_content("tr[data-connection=xero-main]")
        assert "tenant_id" in page.text_content("tr[data-connection=xero-main]")  # the organisation, from Xero
        assert xero.current_refresh_token(0) not in page.content()
