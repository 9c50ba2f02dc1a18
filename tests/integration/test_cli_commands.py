"""The `billflow` CLI against the admin handler in-process (its HTTP transport swapped for a direct call).

The same commands over real HTTP against the local runtime: tests/integration/test_admin_runtime.py and
tests/integration/test_rules_roundtrip.py.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import pytest
import yaml

from billflow_cli.api import AdminApi, ApiError
from billflow_cli.main import main
from tests.fakes.signing import EVENTS_DIR
from tests.integration.conftest import AdminStack

ROOT = Path(__file__).resolve().parents[2]
T = ["--tenant", "acme"]

RULES_YAML = """\
# YAML 1.2 booleans: `on` is a key, `no` a string
id: won-hook
name: Won deals to finance
source: twenty
object: opportunity
order: 10
trigger: {type: event, on: edited}
criteria:
  - {field: stage, comparator: changed_to, value: CUSTOMER}
  - {field: invoiceable, comparator: not_equals, value: no}
pattern: "1 AND 2"
actions:
  - {type: webhook, connection: hook}
---
id: lost-hook
source: twenty
object: opportunity
order: 20
criteria:
  - {field: stage, comparator: changed_to, value: LOST}
actions:
  - {type: webhook, connection: hook}
"""


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


@pytest.fixture
def rules_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "rules"
    folder.mkdir()
    (folder / "opportunity.yaml").write_text(RULES_YAML)
    return folder


def ok(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    """What the command printed; it must succeed."""
    code = main(list(argv))
    out, err = capsys.readouterr()
    assert code == 0, err
    return out


def fails(capsys: pytest.CaptureFixture[str], code: int, *argv: str) -> str:
    """What the command said on stderr; it must exit with this code."""
    got = main(list(argv))
    out, err = capsys.readouterr()
    assert got == code, (out, err)
    return err


def test_validate_reports_every_problem_with_file_rule_and_field(
    tmp_path: Path, rules_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = ok(capsys, "rules", "validate", str(rules_dir))
    assert out.strip() == "2 rule(s) valid: won-hook, lost-hook"

    (rules_dir / "broken.yaml").write_text(
        "id: bad-one\nsource: twenty\nobject: opportunity\n"
        "criteria: [{field: stage, comparator: sounds_like, value: x}]\npattern: '1 OR 2'\nactions: []\n"
        "---\nid: won-hook\nsource: twenty\nobject: company\nactions: [{type: webhook}]\n"
    )
    (rules_dir / "unreadable.yml").write_text("id: [unclosed\n")
    err = fails(capsys, 2, "rules", "validate", str(rules_dir))
    broken = rules_dir / "broken.yaml"
    # The path as written (top-level criteria:, not blocks.0.criteria) and the line it is written on.
    assert f"{broken}:4: rule bad-one: criteria.0.comparator: unknown comparator 'sounds_like'" in err
    assert f"{broken}:6: rule bad-one: actions: a block needs at least one action" in err
    assert f"{broken}:5: rule bad-one: pattern:" in err
    assert "blocks.0" not in err
    assert f"{rules_dir / 'opportunity.yaml'}:" in err
    assert f": rule won-hook: id: already used in {broken}" in err
    assert f"{rules_dir / 'unreadable.yml'}:2:1: not valid YAML" in err


def test_validate_reports_the_problems_behind_a_field_that_does_not_fit_the_model(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rules = tmp_path / "rules.yaml"
    rules.write_text(
        "id: two\nsource: twenty\nobject: opportunity\n"
        "blocks:\n"
        "  - criteria:\n"
        "      - {field: stage, comparator: eq, value: CUSTOMER}\n"
        "      - field: amount\n"
        "        comparator: bogus\n"
        "        value: 3\n"
        "    actions:\n"
        "      - type: webhook\n"
        "        connection: hook\n"
        "        colour: blue\n"
    )
    err = fails(capsys, 2, "rules", "validate", str(rules))
    assert err.splitlines()[1:] == [
        f"  {rules}:8: rule two: blocks.0.criteria.1.comparator: unknown comparator 'bogus'",
        f"  {rules}:13: rule two: blocks.0.actions.0.colour: Extra inputs are not permitted",
    ]


def test_yaml_reads_on_and_no_as_strings(rules_dir: Path) -> None:
    from billflow_cli.rulesfile import load_rules

    won = load_rules(rules_dir, tenant="acme")[0]
    assert won.trigger.on == "edited"
    assert won.blocks[0].criteria[1].value == "no"


def test_plan_apply_export_apply_is_a_no_op(
    stack: AdminStack, tmp_path: Path, rules_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = ok(capsys, "rules", "plan", str(rules_dir), *T)
    assert "    create  won-hook" in out
    assert out.strip().endswith("plan: 2 rule(s) to change")
    out = ok(capsys, "rules", "apply", str(rules_dir), *T)
    assert out.strip().endswith("apply: changed 2 rule(s)")

    exported = tmp_path / "export.yaml"
    out = ok(capsys, "rules", "export", *T, "--out", str(exported))
    assert out.strip() == f"wrote 2 rule(s) to {exported}"
    documents = list(yaml.safe_load_all(exported.read_text()))
    assert [d["id"] for d in documents] == ["won-hook", "lost-hook"]
    assert "'on': edited" in exported.read_text()  # readable by any YAML reader
    assert "null" not in exported.read_text()  # unset fields are left out, as a person writes a rule

    before = stack.snapshot()
    out = ok(capsys, "rules", "plan", str(exported), *T, "--prune")
    assert out.strip() == "unchanged  won-hook\n unchanged  lost-hook\nplan: nothing to change".strip()
    out = ok(capsys, "rules", "apply", str(exported), *T, "--prune")
    assert out.strip().endswith("apply: changed 0 rule(s)")
    assert stack.snapshot() == before

    folder = tmp_path / "exported"
    ok(capsys, "rules", "export", *T, "--dir", str(folder))
    assert sorted(p.name for p in folder.iterdir()) == ["lost-hook.yaml", "won-hook.yaml"]
    out = ok(capsys, "rules", "plan", str(folder), *T, "--prune")
    assert out.strip().endswith("plan: nothing to change")


def test_plan_shows_changed_fields_deactivations_and_what_prune_deletes(
    stack: AdminStack, rules_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ok(capsys, "rules", "apply", str(rules_dir), *T)
    text = RULES_YAML.replace("order: 10", "order: 5").replace("order: 20", "order: 20\nactive: false")
    (rules_dir / "opportunity.yaml").write_text(text.split("---")[0] + "---\n" + text.split("---")[1])
    out = ok(capsys, "rules", "plan", str(rules_dir), *T)
    assert "    change  won-hook  (order)" in out
    assert "deactivate  lost-hook  (active)" in out
    (rules_dir / "opportunity.yaml").write_text(text.split("---")[0])
    out = ok(capsys, "rules", "plan", str(rules_dir), *T)
    assert "      keep  lost-hook  (not in the files; --prune deletes it)" in out
    out = ok(capsys, "rules", "plan", str(rules_dir), *T, "--prune")
    assert "    delete  lost-hook" in out


def test_lifecycle_commands(stack: AdminStack, rules_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = ok(capsys, "rules", "create", str(rules_dir), *T)
    assert out.splitlines() == ["created won-hook (active, version 1)", "created lost-hook (active, version 1)"]
    err = fails(capsys, 1, "rules", "create", str(rules_dir), *T)
    assert "409" in err
    assert "already exists" in err

    out = ok(capsys, "rules", "clone", "won-hook", "won-hook-eu", *T)
    assert out.strip() == ("cloned won-hook as won-hook-eu (inactive); "
                           "`billflow rules activate won-hook-eu` when it is ready")
    out = ok(capsys, "rules", "reorder", *T, "--source", "twenty", "--object", "opportunity",
                       "won-hook-eu", "lost-hook")
    assert [line.split() for line in out.splitlines()] == [
        ["ORDER", "ID", "STATE"], ["10", "won-hook-eu", "inactive"], ["20", "lost-hook", "active"],
        ["30", "won-hook", "active"]]
    out = ok(capsys, "rules", "activate", "won-hook-eu", *T)
    assert out.strip() == "won-hook-eu is active (version 2)"  # reorder kept its order 10: no new version
    out = ok(capsys, "rules", "deactivate", "won-hook", *T)
    assert out.strip() == "won-hook is inactive (version 3)"  # moved to 30, then deactivated
    out = ok(capsys, "rules", "list", *T)
    assert [line.split()[:5] for line in out.splitlines()[1:]] == [
        ["won-hook-eu", "twenty/opportunity", "10", "active", "2"],
        ["lost-hook", "twenty/opportunity", "20", "active", "1"],
        ["won-hook", "twenty/opportunity", "30", "inactive", "3"]]
    out = ok(capsys, "rules", "show", "won-hook", *T)
    assert yaml.safe_load(out)["active"] is False
    out = ok(capsys, "rules", "delete", "won-hook-eu", *T)
    assert out.strip() == "deleted won-hook-eu"
    err = fails(capsys, 1, "rules", "show", "won-hook-eu", *T)
    assert "404" in err


def test_edit_from_a_file_and_in_the_editor(
    stack: AdminStack, tmp_path: Path, rules_dir: Path, capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    ok(capsys, "rules", "apply", str(rules_dir), *T)
    edited = tmp_path / "won.yaml"
    edited.write_text(RULES_YAML.split("---")[0].replace("Won deals to finance", "Renamed"))
    out = ok(capsys, "rules", "edit", "won-hook", "--file", str(edited), *T)
    assert out.strip() == "edited won-hook (active, version 2)"
    assert stack.store.get("acme", "won-hook").name == "Renamed"

    editor = tmp_path / "editor.py"
    editor.write_text("import sys, pathlib\np = pathlib.Path(sys.argv[1])\n"
                      "p.write_text(p.read_text().replace('order: 20', 'order: 7'))\n")
    monkeypatch.setenv("VISUAL", f"{sys.executable} {editor}")
    out = ok(capsys, "rules", "edit", "lost-hook", *T)
    assert out.strip() == "edited lost-hook (active, version 2)"
    assert stack.store.get("acme", "lost-hook").order == 7
    monkeypatch.setenv("VISUAL", "true")  # leaves the file as it is
    out = ok(capsys, "rules", "edit", "lost-hook", *T)
    assert out.strip() == "lost-hook: no change"

    editor.write_text("import sys, pathlib\np = pathlib.Path(sys.argv[1])\n"
                      "p.write_text(p.read_text().replace('changed_to', 'turned_into'))\n")
    monkeypatch.setenv("VISUAL", f"{sys.executable} {editor}")
    err = fails(capsys, 2, "rules", "edit", "lost-hook", *T)
    kept = Path(err.splitlines()[1].strip().split(": rule ")[0].rsplit(":", 1)[0])  # file:line: rule ...
    assert "unknown comparator 'turned_into'" in err
    assert kept.exists()  # the edit is not lost
    kept.unlink()


def test_api_problems_are_listed_and_exit_2(stack: AdminStack, capsys: pytest.CaptureFixture[str]) -> None:
    err = fails(capsys, 1, "rules", "reorder", *T, "--source", "twenty", "--object", "opportunity", "x")
    assert "has no rule(s) x" in err
    bad_clone = ApiError("x", 400, {"details": {"problems": ["rule a: id: bad"]}})
    assert bad_clone.problems == ["rule a: id: bad"]


def test_dry_run_prints_verdicts_and_requests(
    stack: AdminStack, rules_dir: Path, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    stack.put_connection("acme", "hook", {"type": "webhook", "url": "http://127.0.0.1:9/hook"})
    ok(capsys, "rules", "apply", str(rules_dir), *T)
    event = EVENTS_DIR / "twenty" / "opportunity-won.json"
    out = ok(capsys, "dry-run", *T, "--event", str(event))
    lines = out.splitlines()
    assert lines[0] == ("event twenty/opportunity updated bde53504-c80c-4c1b-ba92-7bd1c914fb22 "
                        "(changed fields: stage)")
    assert any(line.startswith("rule won-hook (order 10, active): RUNS → execution won-hook-") for line in lines)
    assert "  block 1 [1 AND 2] ✓" in lines
    assert any(line.startswith("    ✓ 1. stage changed_to \"CUSTOMER\"") for line in lines)
    assert any(line.startswith("rule lost-hook (order 20, active): no match") for line in lines)
    assert any(line.startswith("  action 1: webhook via hook") for line in lines)
    assert any(line.startswith("    POST http://127.0.0.1:9/") for line in lines)
    assert lines[-1] == "dry run: nothing was sent, counted or stored"

    previous = tmp_path / "previous.json"
    previous.write_text(json.dumps({"stage": "CUSTOMER"}))
    out = ok(capsys, "dry-run", *T, "--event", str(event), "--rule", "won-hook", "--previous",
                       str(previous), "--json")
    report = json.loads(out)
    (rule,) = report["events"][0]["rules"]
    assert (rule["rule_id"], rule["runs"]) == ("won-hook", False)

    err = fails(capsys, 2, "dry-run", *T, "--event", str(tmp_path / "missing.json"))
    assert "missing.json: No such file" in err


def test_log_prints_a_table(stack: AdminStack, capsys: pytest.CaptureFixture[str]) -> None:
    from billflow.storage.execution_log import get_execution_log, log_item

    out = ok(capsys, "log", *T)
    assert out.strip() == "no runs yet"
    reason = "TargetRejected: no; the wait ended at 2026-03-18T09:30:05+00:00 " + "and more detail " * 5
    get_execution_log().write(log_item(tenant="acme", execution="won-hook-abc", rule_id="won-hook", step="run",
                                       status="failed", record_key="k", reason=reason,
                                       at=datetime(2026, 3, 18, 9, 31, 7, 250_000, tzinfo=UTC)))
    out = ok(capsys, "log", *T, "--status", "failed")
    header, row, note = out.splitlines()
    assert header.split() == ["AT", "EXECUTION", "RULE_ID", "STEP", "STATUS", "EXTERNAL_ID", "REASON"]
    assert row.split()[:5] == ["2026-03-18T09:31:07Z", "won-hook-abc", "won-hook", "run", "failed"]
    assert row.endswith("…") and "2026-03-18T09:30:05Z" in row and "+00:00" not in row
    assert "--wide" in note
    wide = ok(capsys, "log", *T, "--wide")
    assert wide.splitlines()[1].endswith(reason.replace("+00:00", "Z").rstrip())
    assert ok(capsys, "log", *T, "--status", "sent").strip() == "no runs match these filters"
    out = ok(capsys, "log", *T, "--rule", "won-hook", "--json")
    assert json.loads(out)[0]["execution"] == "won-hook-abc"


def test_the_api_and_tenant_come_from_the_environment(
    stack: AdminStack, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    called: list[str] = []
    original = AdminApi._call

    def recording(self: AdminApi, method: str, path: str, body: dict[str, Any] | None) -> Any:
        called.append(f"{self.base_url} {path}")
        return original(self, method, path, body)

    monkeypatch.setattr(AdminApi, "_call", recording)
    monkeypatch.setenv("BILLFLOW_API", "http://127.0.0.1:3999")
    monkeypatch.setenv("BILLFLOW_TENANT", "acme")
    assert ok(capsys, "rules", "list").strip() == "no rules stored"
    assert called == ["http://127.0.0.1:3999 /admin/tenants/acme/rules"]
    monkeypatch.delenv("BILLFLOW_TENANT")
    with pytest.raises(SystemExit):
        main(["rules", "list"])
    assert "--tenant" in capsys.readouterr().err


def test_an_unreachable_api_is_exit_1(capsys: pytest.CaptureFixture[str]) -> None:
    err = fails(capsys, 1, "rules", "list", *T, "--api", "http://127.0.0.1:9")
    assert "cannot reach http://127.0.0.1:9" in err
