"""Schedules on the local runtime: rule files with a `schedules:` list applied with the CLI, listed with their
next firings, fired by hand and by the runtime's clock (the template's own AWS::Scheduler::Schedule and the
tenant's, both through moto's Scheduler API); a date rule finding a record no webhook ever announced."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, time, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from billflow_cli.main import main as cli
from billflow_local.runtime import LocalRuntime
from tests.fakes.twenty_server import FakeTwenty

ROOT = Path(__file__).resolve().parents[2]
TENANT = "acme"
NEW_YORK = ZoneInfo("America/New_York")

RULES = """
rules:
  - id: daily-digest
    source: twenty
    object: opportunity
    actions:
      - {type: notification, options: {message: "digest {{ record.firing }}"}}
  - id: close-reminder
    source: twenty
    object: opportunity
    trigger: {type: date, field: closeDate, offset_days: -7, at: "09:00", timezone: America/New_York}
    criteria:
      - {field: stage, comparator: is, value: CUSTOMER}
    actions:
      - {type: notification, options: {message: "closing {{ record.name }}"}}
"""


@pytest.fixture(scope="module")
def twenty() -> Iterator[FakeTwenty]:
    with FakeTwenty(stages=("NEW", "CUSTOMER")) as fake:
        yield fake


@pytest.fixture(scope="module")
def runtime(tmp_path_factory: pytest.TempPathFactory, twenty: FakeTwenty) -> Iterator[LocalRuntime]:
    connections = tmp_path_factory.mktemp("schedules") / "connections.yaml"
    connections.write_text(json.dumps({"tenants": {TENANT: {
        "sources": {"twenty": {"signing_secret": "schedules-e2e-secret"}},
        "connections": {"twenty": twenty.connection_settings()}}}}))
    # The stack's own schedule hourly (its parameter), so a clock advanced by a day fires it 24 times.
    with LocalRuntime(ROOT, port=0, connections=connections, tenant=TENANT, echo=None, fast_retries=True,
                      parameters={"SchedulerSchedule": "cron(0 * * * ? *)"}) as local:
        yield local


def run_cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = cli(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def notes(runtime: LocalRuntime, prefix: str) -> list[str]:
    """The notification messages (the published documents' `message`) that start with prefix."""
    found = [json.loads(n["message"])["message"] for n in runtime.notifications()]
    return [m for m in found if str(m).startswith(prefix)]


def test_schedules_fire_on_the_local_clock(runtime: LocalRuntime, twenty: FakeTwenty, tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    now = runtime.now()
    first = (now + timedelta(hours=2)).replace(second=0, microsecond=0)
    (tmp_path / "rules.yaml").write_text(RULES)
    (tmp_path / "schedules.yaml").write_text(
        "schedules:\n"
        "  - id: digest\n"
        "    rule: daily-digest\n"
        "    timezone: UTC\n"
        f"    starts: \"{first:%Y-%m-%dT%H:%M}\"\n"
        "    repeat: {every: day}\n"
        "    ends: {after: 2}\n")
    api = ["--api", runtime.url, "--tenant", TENANT]
    code, out, err = run_cli(capsys, "rules", "validate", str(tmp_path))
    assert code == 0 and "1 schedule(s) valid: digest" in out, err
    code, out, err = run_cli(capsys, "rules", "apply", str(tmp_path), *api)
    assert code == 0, err
    assert f"cron({first.minute} {first.hour} * * ? *) in UTC" in out

    code, out, err = run_cli(capsys, "schedules", "list", *api)
    assert code == 0, err
    assert f"{first:%Y-%m-%dT%H:%M}:00+00:00" in out and f"{first:%Y-%m-%dT%H:%M}:00Z" in out
    assert "every day at" in out and "2 times" in out

    # A record billflow never heard of through a webhook, due (7 days before closing, 09:00 New York)
    # within the day the clock moves on.
    due_local = datetime.combine((now + timedelta(hours=3)).astimezone(NEW_YORK).date(), time(9), tzinfo=NEW_YORK)
    if due_local <= now + timedelta(minutes=5):
        due_local += timedelta(days=1)
    close = due_local.date() + timedelta(days=7)
    deal = twenty.add_opportunity("Unseen Ltd", stage="CUSTOMER", close_date=f"{close}T00:00:00.000Z")

    runtime.advance_clock((due_local.astimezone(UTC) - now).total_seconds() + 26 * 3600)
    fired = runtime.fire_schedules()
    runtime.wait_idle(60)
    digest_firings = [f for f in fired if f.name == "digest"]
    assert [f.at for f in digest_firings] == [first, first + timedelta(days=1)]  # ends after 2 runs
    assert all(f.ok for f in fired), [f.error for f in fired if not f.ok]
    assert sum(1 for f in fired if f.name.endswith("SchedulerDueSchedule")) >= 24
    assert sorted(notes(runtime, "digest ")) == [f"digest {first:%Y-%m-%dT%H:%M:%SZ}",
                                                 f"digest {first + timedelta(days=1):%Y-%m-%dT%H:%M:%SZ}"]
    assert notes(runtime, "closing ") == ["closing Unseen Ltd"]
    assert runtime.fire_schedules() == []  # nothing fires twice

    code, out, err = run_cli(capsys, "schedules", "run", "digest", "--firing",
                             f"{first:%Y-%m-%dT%H:%M:%SZ}", *api)
    assert code == 0 and "0 run(s) started, 1 already run for this firing" in out, (out, err)
    runs = [e for e in runtime.executions() if (e["input"] or {}).get("event", {}).get("record_id") == deal["id"]]
    assert len(runs) == 1

    # Export round-trip: the exported folder plans as unchanged, schedules included.
    exported = tmp_path / "exported"
    code, out, err = run_cli(capsys, "rules", "export", "--dir", str(exported), *api)
    assert code == 0 and "2 rule(s) and 1 schedule(s)" in out, err
    code, out, err = run_cli(capsys, "rules", "plan", str(exported), *api)
    assert code == 0, err
    assert "unchanged  schedule digest" in out
    assert "plan: 0 schedule(s) to change" in out


def test_the_cli_refuses_the_eleventh_schedule(runtime: LocalRuntime, tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    start = (runtime.now() + timedelta(days=3)).strftime("%Y-%m-%dT%H:%M")
    (tmp_path / "rules.yaml").write_text(RULES)
    (tmp_path / "schedules.yaml").write_text("schedules:\n" + "".join(
        f"  - {{id: s{n}, rule: daily-digest, starts: \"{start}\", repeat: {{every: week}}}}\n" for n in range(11)))
    code, _, err = run_cli(capsys, "rules", "validate", str(tmp_path))
    assert code == 2 and "11 schedules; a tenant has at most 10" in err
    (tmp_path / "schedules.yaml").write_text(
        "schedules:\n  - id: bad\n    rule: daily-digest\n    starts: \"2026-01-01T09:00\"\n"
        "    repeat: {every: month, nth: 6, weekday: friday}\n")
    code, _, err = run_cli(capsys, "rules", "validate", str(tmp_path))
    assert code == 2 and "schedules.yaml:5: schedule bad: repeat.nth" in err, err
