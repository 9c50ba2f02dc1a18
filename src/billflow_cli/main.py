"""`billflow`: rules as code and the execution log, against the local runtime or a deployed stack."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from billflow_cli.api import AdminApi, ApiError
from billflow_cli.rulesfile import RulesFileError, dump_rules, load_rules

DEFAULT_API = "http://127.0.0.1:3000"


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        result: int = args.run(args)
        return result
    except RulesFileError as exc:
        print("rules are not valid; fix these and run again:", file=sys.stderr)
        for problem in exc.problems:
            print(f"  {problem}", file=sys.stderr)
        return 2
    except ApiError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="billflow", description=__doc__)
    commands = parser.add_subparsers(required=True, metavar="COMMAND")

    rules = commands.add_parser("rules", help="validate, plan, apply and export workflow rules")
    rule_commands = rules.add_subparsers(required=True, metavar="ACTION")
    validate = rule_commands.add_parser("validate", help="check rule files; no API needed")
    validate.add_argument("path", type=Path, help="a YAML file or a folder of them")
    validate.set_defaults(run=_validate)
    for name, helptext in (("plan", "show what apply would change"), ("apply", "store the rules")):
        sub = rule_commands.add_parser(name, help=helptext)
        sub.add_argument("path", type=Path, help="a YAML file or a folder of them")
        _api_args(sub)
        sub.add_argument("--prune", action="store_true", help="delete stored rules the files no longer have")
        sub.set_defaults(run=_plan_or_apply, action=name)
    export = rule_commands.add_parser("export", help="write the stored rules as YAML")
    _api_args(export)
    export.add_argument("--out", type=Path, help="file to write (default: standard output)")
    export.set_defaults(run=_export)

    log = commands.add_parser("log", help="recent runs from the execution log")
    _api_args(log)
    log.add_argument("--rule", help="only this rule's runs")
    log.add_argument("--record", help="only this record's runs, as source:object:id")
    log.add_argument("--status", help="only runs with this status (sent, succeeded, failed, limited)")
    log.add_argument("--limit", type=int, default=20)
    log.add_argument("--json", action="store_true", help="print JSON instead of a table")
    log.set_defaults(run=_log)

    local = commands.add_parser("local", help="run the whole stack on this machine (see README)")
    local.add_argument("args", nargs=argparse.REMAINDER)
    local.set_defaults(run=_local)
    return parser


def _api_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--tenant", required=True, help="the tenant (CRM workspace) id")
    parser.add_argument("--api", default=DEFAULT_API, help=f"admin API base URL (default {DEFAULT_API})")


def _validate(args: argparse.Namespace) -> int:
    rules = load_rules(args.path, tenant="")
    print(f"{len(rules)} rule(s) valid: {', '.join(r.id for r in rules)}")
    return 0


def _documents(path: Path) -> list[dict[str, Any]]:
    return [json.loads(r.model_dump_json(exclude={"tenant"})) for r in load_rules(path, tenant="")]


def _plan_or_apply(args: argparse.Namespace) -> int:
    api = AdminApi(args.api)
    body = {"rules": _documents(args.path), "prune": args.prune}
    answer = api.post(f"/admin/tenants/{args.tenant}/rules/{args.action}", body)
    plan = answer.get("plan") or answer.get("applied") or {}
    verb = "would" if args.action == "plan" else "did"
    for change in ("create", "update", "delete", "unchanged"):
        for rule_id in plan.get(change, []):
            print(f"{change:>9}  {rule_id}")
    changed = sum(len(plan.get(k, [])) for k in ("create", "update", "delete"))
    print(f"{args.action}: {verb} change {changed} rule(s)")
    return 0


def _export(args: argparse.Namespace) -> int:
    answer = AdminApi(args.api).get(f"/admin/tenants/{args.tenant}/rules")
    text = dump_rules(answer.get("rules", []))
    if args.out:
        args.out.write_text(text, encoding="utf-8")
        print(f"wrote {len(answer.get('rules', []))} rule(s) to {args.out}")
    else:
        sys.stdout.write(text)
    return 0


def _log(args: argparse.Namespace) -> int:
    answer = AdminApi(args.api).get(
        f"/admin/tenants/{args.tenant}/executions",
        rule=args.rule or "", record=args.record or "", status=args.status or "", limit=str(args.limit),
    )
    items = answer.get("executions", [])
    if args.json:
        print(json.dumps(items, indent=2))
        return 0
    print(format_log(items))
    return 0


def format_log(items: list[dict[str, Any]]) -> str:
    if not items:
        return "no runs yet"
    columns = ("at", "rule_id", "step", "status", "external_id", "reason")
    rows = [[str(item.get(c, ""))[:60] for c in columns] for item in items]
    widths = [max(len(c), *(len(r[i]) for r in rows)) for i, c in enumerate(columns)]
    lines = ["  ".join(c.upper().ljust(w) for c, w in zip(columns, widths, strict=True))]
    lines += ["  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)) for r in rows]
    return "\n".join(lines)


def _local(args: argparse.Namespace) -> int:
    from billflow_local.__main__ import main as local_main

    code: int = local_main(args.args)
    return code


if __name__ == "__main__":
    sys.exit(main())
