"""`billflow schedules list|run`, and the schedules part of `billflow rules validate|plan|apply|export` (a
`schedules:` list in the rule files), through the admin API."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from billflow_cli.api import AdminApi, segment
from billflow_local.rulesfile import load_schedules, read_schedule_documents
from billflow_local.tables import table

SCHEDULES_FILE = "schedules.yaml"  # what `rules export --dir` writes the schedules to


def add_commands(commands: Any, api_args: Callable[[argparse.ArgumentParser], None]) -> None:
    schedules = commands.add_parser("schedules", help="recurring schedules: their next firings, or fire one now")
    actions = schedules.add_subparsers(required=True, metavar="ACTION")
    listing = actions.add_parser("list", help="every schedule with its next five firings (local time and UTC)")
    api_args(listing)
    listing.add_argument("--json", action="store_true", help="print JSON instead of a table")
    listing.set_defaults(run=list_schedules)
    run = actions.add_parser("run", help="fire a schedule now (running the same firing time again starts nothing)")
    run.add_argument("schedule_id", metavar="NAME")
    run.add_argument("--firing", help="the firing time to run, UTC ISO (default: now, to the minute)")
    api_args(run)
    run.set_defaults(run=run_schedule)


def _path(args: argparse.Namespace, *rest: str) -> str:
    return "/".join([f"/admin/tenants/{segment(args.tenant)}/schedules", *(segment(r) for r in rest)])


def list_schedules(args: argparse.Namespace) -> int:
    listed = AdminApi(args.api).get(_path(args)).get("schedules", [])
    if args.json:
        print(json.dumps(listed, indent=2))
        return 0
    if not listed:
        print("no schedules stored")
        return 0
    blocks = []
    for entry in listed:
        schedule = entry["schedule"]
        state = "" if schedule.get("active", True) else " (inactive)"
        rows = [[f"{n}", f["local"], f["utc"]] for n, f in enumerate(entry["next"], start=1)]
        lines = [f"{schedule['id']}{state}: {entry['describe']} -> rule {schedule['rule']}",
                 f"  fires by: {entry['fires_by']}"]
        lines.append(table(("#", f"local ({schedule['timezone']})", "UTC"), rows) if rows else "  no firing left")
        blocks.append("\n".join(lines))
    print("\n\n".join(blocks))
    return 0


def run_schedule(args: argparse.Namespace) -> int:
    body = {"firing": args.firing} if args.firing else {}
    answer = AdminApi(args.api).post(_path(args, args.schedule_id, "run"), body)
    if answer.get("skipped"):
        print(f"{args.schedule_id} @ {answer['firing']}: skipped: {answer['skipped']}")
        return 0
    print(f"{args.schedule_id} @ {answer['firing']}: {answer['records']} record(s), "
          f"{len(answer['started'])} run(s) started, {len(answer['duplicates'])} already run for this firing")
    for error in answer.get("errors", []):
        print(f"  error: {error}")
    return 1 if answer.get("errors") else 0


# ------------------------------------------------------------------------------------------- rules as code
def has_schedules(path: Path) -> bool:
    return bool(read_schedule_documents(path))


def validate(path: Path, rule_ids: set[str]) -> str | None:
    """'N schedule(s) valid: ...', or None when the files have no schedules (RulesFileError when invalid)."""
    if not has_schedules(path):
        return None
    schedules = load_schedules(path, rule_ids)
    return f"{len(schedules)} schedule(s) valid: {', '.join(s.id for s in schedules)}"


def documents(path: Path, rule_ids: set[str]) -> list[dict[str, Any]]:
    return [json.loads(s.model_dump_json(exclude={"tenant"})) for s in load_schedules(path, rule_ids)]


def plan_or_apply(args: argparse.Namespace, rule_ids: set[str]) -> str | None:
    """The schedules part of `rules plan|apply`: None when the files have no `schedules:` section (the stored
    schedules are then left as they are, even with --prune)."""
    if not has_schedules(args.path):
        return None
    body = {"schedules": documents(args.path, rule_ids), "prune": args.prune, "rule_ids": sorted(rule_ids)}
    plan = AdminApi(args.api).post(_path(args, args.action), body).get("plan", {})
    lines = []
    for key, label in (("create", "create"), ("change", "change"), ("delete", "delete"),
                       ("untracked", "keep"), ("unchanged", "unchanged")):
        for schedule_id in plan.get(key, []):
            fields = plan.get("fields", {}).get(schedule_id)
            detail = f"  ({', '.join(fields)})" if fields else ""
            how = plan.get("how", {}).get(schedule_id)
            lines.append(f"{label:>10}  schedule {schedule_id}{detail}")
            if how and key in ("create", "change", "unchanged"):
                lines.append(f"{'':>12}{how}")
    changed = sum(len(plan.get(k, [])) for k in ("create", "change", "delete"))
    lines.append(f"{args.action}: {changed} schedule(s) {'changed' if args.action == 'apply' else 'to change'}")
    return "\n".join(lines)


def export(args: argparse.Namespace) -> list[dict[str, Any]]:
    listed = AdminApi(args.api).get(_path(args)).get("schedules", [])
    return [entry["schedule"] for entry in listed]


def dump(schedules: list[dict[str, Any]]) -> str:
    """A `schedules:` YAML document (unset fields left out), read back by load_schedules."""
    return yaml.safe_dump({"schedules": [_without_nulls(s) for s in schedules]}, sort_keys=False,
                          allow_unicode=True, width=110)


def _without_nulls(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _without_nulls(v) for k, v in value.items() if v is not None and v != {} and v != []}
    if isinstance(value, list):
        return [_without_nulls(v) for v in value]
    return value
