"""`billflow settings` and `billflow connections` against the admin handler in-process (its HTTP transport
swapped for a direct call, as in test_cli_commands.py), and a rules folder's settings.yaml (issue 13).
Secret values go in through a prompt or standard input and never come out: not printed, not in errors."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import pytest
import yaml

from billflow_cli.api import AdminApi, ApiError
from billflow_cli.main import main
from tests.integration.conftest import AdminStack
from tests.integration.test_cli_commands import RULES_YAML

T = ["--tenant", "acme"]
SECRET = "sk_live_TYPED_AT_THE_PROMPT_99"


@pytest.fixture
def stack(monkeypatch: pytest.MonkeyPatch) -> Iterator[AdminStack]:
    with AdminStack() as admin:
        def call(self: AdminApi, method: str, path: str, body: dict[str, Any] | None) -> Any:
            parts = urlsplit(path)
            status, answer = admin.call(method, parts.path, body, dict(parse_qsl(parts.query)) or None)
            if status >= 400:
                message = answer.get("message") if isinstance(answer, dict) else None
                raise ApiError(f"{method} {path} answered {status}: {message or answer}", status, answer)
            return answer

        monkeypatch.setattr(AdminApi, "_call", call)
        yield admin


def run(capsys: pytest.CaptureFixture[str], code: int, *argv: str) -> tuple[str, str]:
    got = main(list(argv))
    out, err = capsys.readouterr()
    assert got == code, (out, err)
    return out, err


def stored_secret(name: str) -> dict[str, Any]:
    import boto3

    sm = boto3.client("secretsmanager", region_name="us-east-1")
    return dict(json.loads(sm.get_secret_value(SecretId=f"billflow/test/acme/connection/{name}")["SecretString"]))


# ------------------------------------------------------------------------------------------- settings
def test_settings_set_show_and_export(stack: AdminStack, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    out, _ = run(capsys, 0, "settings", "set", *T, "daily_limits.stripe.invoice=50", "default_daily_limit=200",
                 "usage_alert.threshold_percent=70", "usage_alert.recipients=billing@example.com,cfo@example.com",
                 "failure_digest.frequency=weekly", "failure_digest.time=07:45",
                 "failure_digest.timezone=Europe/Paris")
    assert out.startswith("saved the settings of acme")
    stored = stack.store.tenant_settings("acme")
    assert stored.daily_limits == {"stripe.invoice": 50}
    assert stored.default_daily_limit == 200
    assert stored.usage_alert is not None
    assert stored.usage_alert.recipients == ["billing@example.com", "cfo@example.com"]
    assert stored.failure_digest is not None
    assert (stored.failure_digest.frequency, stored.failure_digest.at) == ("weekly", "07:45")

    run(capsys, 0, "settings", "set", *T, "daily_limits.stripe.invoice=null", "failure_digest.frequency=off")
    shown = yaml.safe_load(run(capsys, 0, "settings", "show", *T)[0])
    assert shown["daily_limits"] == {}
    assert shown["failure_digest"]["frequency"] == "off"
    assert shown["updated_at"]

    out, _ = run(capsys, 0, "settings", "export", *T, "--out", str(tmp_path / "settings.yaml"))
    exported = yaml.safe_load((tmp_path / "settings.yaml").read_text())
    assert "updated_at" not in exported
    assert exported["usage_alert"]["threshold_percent"] == 70


@pytest.mark.parametrize(("assignment", "says"), [
    ("failure_digest.time=25:00", "failure_digest.time"),
    ("limits.x=1", "unknown setting"),
    ("daily_limits", "KEY=VALUE"),
    ("default_timezone=Moon/Base", "default_timezone"),
])
def test_bad_settings_say_what_to_fix(
    stack: AdminStack, capsys: pytest.CaptureFixture[str], assignment: str, says: str,
) -> None:
    code = main(["settings", "set", *T, assignment])
    _, err = capsys.readouterr()
    assert code != 0
    assert says in err


# ------------------------------------------------------------------------------------------- connections
def test_connections_create_update_list_delete_never_show_a_secret(
    stack: AdminStack, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO(SECRET + "\n"))
    out, err = run(capsys, 0, "connections", "create", "stripe-main", *T, "--type", "stripe",
                   "--secret", "api_key", "--set", "currency=eur")
    assert out.startswith("created stripe-main (stripe): settings api_key, currency")
    assert stored_secret("stripe-main") == {"type": "stripe", "api_key": SECRET, "currency": "eur"}

    # update keeps what it is not given; --unset removes
    out, _ = run(capsys, 0, "connections", "update", "stripe-main", *T, "--unset", "currency",
                 "--set", "base_url=https://api.stripe.com")
    assert stored_secret("stripe-main") == {"type": "stripe", "api_key": SECRET, "base_url": "https://api.stripe.com"}

    settings_file = tmp_path / "xero.yaml"
    settings_file.write_text("client_id: app-1\nclient_secret: from-a-file\n")
    run(capsys, 0, "connections", "create", "xero", *T, "--type", "xero", "--from-file", str(settings_file))
    listed, _ = run(capsys, 0, "connections", "list", *T)
    assert "stripe-main" in listed and "api_key, base_url" in listed
    assert "no (billflow connections connect)" in listed
    as_json = json.loads(run(capsys, 0, "connections", "list", *T, "--json")[0])
    assert [c["name"] for c in as_json] == ["stripe-main", "xero"]

    out, _ = run(capsys, 0, "connections", "delete", "xero", *T)
    assert out.strip() == "deleted connection xero"
    everything = out + err + listed + json.dumps(as_json)
    assert SECRET not in everything
    assert "from-a-file" not in everything


def test_a_secret_on_the_command_line_is_refused(stack: AdminStack, capsys: pytest.CaptureFixture[str]) -> None:
    _, err = run(capsys, 2, "connections", "create", "s", *T, "--type", "stripe", "--set", f"api_key={SECRET}")
    assert "--secret api_key" in err
    assert SECRET not in err
    assert stack.ok("GET", "/admin/tenants/acme/connections") == {"connections": []}


def test_connection_mistakes_say_what_to_fix(
    stack: AdminStack, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
) -> None:
    _, err = run(capsys, 1, "connections", "create", "s", *T, "--type", "stripe")
    assert "a stripe connection needs api_key" in err
    _, err = run(capsys, 2, "connections", "update", "nope", *T, "--set", "a=b")
    assert "has no connection 'nope'" in err
    monkeypatch.setattr("sys.stdin", io.StringIO(SECRET + "\n"))
    run(capsys, 0, "connections", "create", "s", *T, "--type", "stripe", "--secret", "api_key")
    _, err = run(capsys, 2, "connections", "create", "s", *T, "--type", "stripe", "--set", "x=y")
    assert "connections update s" in err
    monkeypatch.setattr("sys.stdin", io.StringIO("\n"))
    _, err = run(capsys, 2, "connections", "update", "s", *T, "--secret", "api_key")
    assert "nothing was entered" in err
    _, err = run(capsys, 1, "connections", "delete", "gone", *T)
    assert "has no connection 'gone'" in err


def test_connect_prints_the_consent_link(stack: AdminStack, capsys: pytest.CaptureFixture[str],
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO("app-secret\n"))
    run(capsys, 0, "connections", "create", "qbo", *T, "--type", "quickbooks", "--set", "client_id=app-1",
        "--secret", "client_secret")
    out, _ = run(capsys, 0, "connections", "connect", "qbo", *T)
    assert "https://appcenter.intuit.com/connect/oauth2?client_id=app-1" in out
    assert "redirect URI" in out
    assert "app-secret" not in out


# ------------------------------------------------------------------------------------------- settings.yaml
def test_a_rules_folder_carries_its_settings(
    stack: AdminStack, capsys: pytest.CaptureFixture[str], tmp_path: Path,
) -> None:
    folder = tmp_path / "rules"
    folder.mkdir()
    (folder / "opportunity.yaml").write_text(RULES_YAML)
    (folder / "settings.yaml").write_text(
        "daily_limits: {webhook: 30}\nfailure_digest: {frequency: daily, time: '08:15', timezone: UTC}\n"
        "default_timezone: Asia/Tokyo\n")
    out, _ = run(capsys, 0, "rules", "validate", str(folder))
    assert "2 rule(s) valid" in out and "settings valid" in out

    out, _ = run(capsys, 0, "rules", "plan", str(folder), *T)
    assert "change  settings  (daily_limits, default_timezone, failure_digest)" in out
    assert stack.store.tenant_settings("acme").daily_limits == {}  # plan stores nothing

    out, _ = run(capsys, 0, "rules", "apply", str(folder), *T)
    assert "apply: saved the settings" in out
    assert stack.store.tenant_settings("acme").daily_limits == {"webhook": 30}
    # The rules name no timezone: they take the folder's default_timezone, saved before them.
    assert {r.id: r.timezone for r in stack.store.all_rules("acme")} == {"won-hook": "Asia/Tokyo",
                                                                         "lost-hook": "Asia/Tokyo"}

    out, _ = run(capsys, 0, "rules", "plan", str(folder), *T)
    assert "unchanged  settings" in out
    assert "plan: nothing to change" in out

    (folder / "settings.yaml").write_text("daily_limits: {webhook: -1}\nfailure_digest: {time: '8am'}\n")
    _, err = run(capsys, 2, "rules", "apply", str(folder), *T)
    assert "settings.yaml: daily_limits.webhook:" in err
    assert "settings.yaml: failure_digest.time:" in err
    assert stack.store.tenant_settings("acme").daily_limits == {"webhook": 30}
