"""`billflow`: rules as code, the rule lifecycle, dry runs, the execution log and replays, against the local
runtime or a deployed stack (the admin API)."""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, unquote

from billflow_cli import manage
from billflow_cli.api import AdminApi, ApiError, segment
from billflow_cli.redrive import redrive, stack_outputs
from billflow_cli.rulesfile import RulesFileError, dump_rules, load_rules
from billflow_local.tables import format_log
from billflow_local.tables import table as _table

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
        if exc.problems:
            print(f"error: the API refused ({exc.status}); fix these and run again:", file=sys.stderr)
            for problem in exc.problems:
                print(f"  {problem}", file=sys.stderr)
            return 2
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except (CliError, manage.ManageError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


class CliError(Exception):
    """A usage problem found before calling the API (a file that cannot be read...)."""


# ------------------------------------------------------------------------------------------- arguments
def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="billflow", description=__doc__)
    commands = parser.add_subparsers(required=True, metavar="COMMAND")

    rules = commands.add_parser("rules", help="workflow rules: as code (validate, plan, apply, export) and "
                                              "one by one (create, edit, clone, activate, reorder, delete)")
    actions = rules.add_subparsers(required=True, metavar="ACTION")
    validate = actions.add_parser("validate", help="check rule files; no API needed")
    validate.add_argument("path", type=Path, help="a YAML file or a folder of them")
    validate.set_defaults(run=_validate)
    for name, helptext in (("plan", "show what apply would change"), ("apply", "store the rules")):
        sub = actions.add_parser(name, help=helptext)
        sub.add_argument("path", type=Path, help="a YAML file or a folder of them")
        _api_args(sub)
        sub.add_argument("--prune", action="store_true", help="delete stored rules the files no longer have")
        sub.set_defaults(run=_plan_or_apply, action=name)
    export = actions.add_parser("export", help="write the stored rules as YAML")
    _api_args(export)
    where = export.add_mutually_exclusive_group()
    where.add_argument("--out", type=Path, help="one file with every rule (default: standard output)")
    where.add_argument("--dir", type=Path, help="a folder, one <rule id>.yaml per rule")
    export.add_argument("--source", help="only rules of this source")
    export.add_argument("--object", help="only rules of this object")
    export.set_defaults(run=_export)

    listing = actions.add_parser("list", help="the stored rules, one line each")
    _api_args(listing)
    listing.add_argument("--json", action="store_true", help="print JSON instead of a table")
    listing.set_defaults(run=_list)
    show = actions.add_parser("show", help="one stored rule as YAML")
    show.add_argument("rule_id", metavar="ID")
    _api_args(show)
    show.set_defaults(run=_show)
    create = actions.add_parser("create", help="store new rules from a YAML file (refused if the id exists)")
    create.add_argument("path", type=Path, help="a YAML file (or folder) with the new rule(s)")
    _api_args(create)
    create.set_defaults(run=_create)
    edit = actions.add_parser("edit", help="change a stored rule: from a file, or in $EDITOR")
    edit.add_argument("rule_id", metavar="ID")
    edit.add_argument("--file", type=Path, help="the rule's new YAML document (default: edit it in $EDITOR)")
    _api_args(edit)
    edit.set_defaults(run=_edit)
    clone = actions.add_parser("clone", help="copy a rule under a new id; the copy is inactive unless --active")
    clone.add_argument("rule_id", metavar="ID")
    clone.add_argument("new_id", metavar="NEW_ID")
    clone.add_argument("--name", help="the copy's name (default: the original's + ' (copy)')")
    clone.add_argument("--active", action="store_true", help="make the copy active at once")
    _api_args(clone)
    clone.set_defaults(run=_clone)
    for name, active in (("activate", True), ("deactivate", False)):
        sub = actions.add_parser(name, help="mark a rule active" if active else
                                 "mark a rule inactive: it is kept and never runs")
        sub.add_argument("rule_id", metavar="ID")
        _api_args(sub)
        sub.set_defaults(run=_set_active, active=active)
    reorder = actions.add_parser("reorder", help="set the order an object's rules run in")
    _api_args(reorder)
    reorder.add_argument("--source", required=True)
    reorder.add_argument("--object", required=True)
    reorder.add_argument("rule_ids", nargs="+", metavar="ID",
                         help="first to run first; the object's rules not listed follow in their order")
    reorder.set_defaults(run=_reorder)
    delete = actions.add_parser("delete", help="delete a stored rule (deactivate keeps it instead)")
    delete.add_argument("rule_id", metavar="ID")
    _api_args(delete)
    delete.set_defaults(run=_delete)

    dry = commands.add_parser("dry-run", help="what the rules would do with a sample event; nothing is sent")
    _api_args(dry)
    dry.add_argument("--event", type=Path, required=True,
                     help="a CRM webhook body (e.g. events/twenty/opportunity-won.json) or a CrmEvent JSON")
    chosen = dry.add_mutually_exclusive_group()
    chosen.add_argument("--rule", help="only this stored rule (default: every rule of the event's object)")
    chosen.add_argument("--rules", type=Path, help="try the rules in these YAML files instead of stored ones")
    dry.add_argument("--previous", type=Path,
                     help="JSON of the record before the change (or an earlier webhook body); default: the "
                          "fields the event says changed")
    looked = dry.add_mutually_exclusive_group()
    looked.add_argument("--lookup", type=Path, help="JSON of what the CRM lookup returns (company, contact)")
    looked.add_argument("--fetch-lookup", action="store_true",
                        help="read the company and contact from the CRM (GET only; default: stand-ins)")
    dry.add_argument("--source", help="the CRM of a webhook body (default: the source that accepts it)")
    dry.add_argument("--json", action="store_true", help="print the report as JSON")
    dry.set_defaults(run=_dry_run)

    log = commands.add_parser("log", help="recent runs from the execution log")
    _api_args(log)
    log.add_argument("--rule", help="only this rule's runs")
    log.add_argument("--record", help="only this record's runs, as source:object:id")
    log.add_argument("--status", help="only runs with this status (sent, succeeded, failed, limited)")
    log.add_argument("--limit", type=int, default=20)
    log.add_argument("--json", action="store_true", help="print JSON instead of a table")
    log.add_argument("--wide", action="store_true", help="print reasons in full (default: cut at 60 characters)")
    log.set_defaults(run=_log)

    replay = commands.add_parser("replay", help="run a failed or limited run again (sends are not repeated)")
    replay.add_argument("execution", metavar="EXECUTION_NAME", help="as `billflow log` shows it")
    _api_args(replay)
    replay.set_defaults(run=_replay)

    connections = commands.add_parser("connections", help="the tenant's connections to CRMs and billing systems")
    connection_commands = connections.add_subparsers(dest="connections_command", required=True)
    connection_test = connection_commands.add_parser("test", help="check a connection with one harmless read")
    connection_test.add_argument("name", metavar="NAME", help="the connection's name, as rules name it (stripe-main)")
    _api_args(connection_test)
    connection_test.set_defaults(run=_test_connection)
    manage.add_connection_commands(connection_commands, _api_args)
    manage.add_commands(commands, _api_args)

    redrive = commands.add_parser("redrive", help="put the filter's failed events (its on-failure queue) back on "
                                                  "the bus, once the cause is fixed; safe to run again")
    redrive.add_argument("--tenant", default=os.environ.get("BILLFLOW_TENANT") or None,
                         help="only this tenant's events (default: $BILLFLOW_TENANT, else every tenant)")
    found = redrive.add_mutually_exclusive_group(required=True)
    found.add_argument("--stack", help="the deployed stack: its FilterFailureQueueUrl and EventBusName outputs")
    found.add_argument("--queue-url", help="the failure queue's URL (with --event-bus)")
    redrive.add_argument("--event-bus", help="the bus to put the events on (with --queue-url)")
    redrive.add_argument("--region", help="AWS region (default: your AWS configuration's)")
    redrive.set_defaults(run=_redrive)

    local = commands.add_parser("local", help="run the whole stack on this machine (see README)")
    local.add_argument("args", nargs=argparse.REMAINDER)
    local.set_defaults(run=_local)
    return parser


def _api_args(parser: argparse.ArgumentParser) -> None:
    tenant = os.environ.get("BILLFLOW_TENANT") or None
    parser.add_argument("--tenant", required=tenant is None, default=tenant,
                        help="the tenant (CRM workspace) id (default: $BILLFLOW_TENANT)")
    api = os.environ.get("BILLFLOW_API") or DEFAULT_API
    parser.add_argument("--api", default=api, help=f"admin API base URL (default: $BILLFLOW_API, else {DEFAULT_API})")


def _rules_path(args: argparse.Namespace, *rest: str) -> str:
    return "/".join([f"/admin/tenants/{segment(args.tenant)}/rules", *(segment(r) for r in rest)])


# ------------------------------------------------------------------------------------------- rules as code
def _validate(args: argparse.Namespace) -> int:
    settings = _folder_settings(args.path)
    rules = load_rules(args.path, tenant="")
    print(f"{len(rules)} rule(s) valid: {', '.join(r.id for r in rules)}")
    if settings is not None:
        print(f"settings valid: {settings[0]}")
    return 0


def _folder_settings(path: Path) -> tuple[Path, dict[str, Any]] | None:
    """The folder's settings.yaml, checked (RulesFileError with file and field when it is not valid)."""
    found = manage.load_settings_file(path)
    if found is not None:
        problems = manage.check_settings(*found)
        if problems:
            raise RulesFileError(problems)
    return found


def _documents(path: Path) -> list[dict[str, Any]]:
    documents = []
    for rule in load_rules(path, tenant=""):
        document = json.loads(rule.model_dump_json(exclude={"tenant"}))
        if "timezone" not in rule.model_fields_set:  # unnamed: the tenant's default_timezone applies (API)
            document.pop("timezone", None)
        documents.append(document)
    return documents


PLAN_LINES = (
    ("create", "create"), ("change", "change"), ("deactivate", "deactivate"), ("delete", "delete"),
    ("untracked", "keep"), ("unchanged", "unchanged"),
)


def _plan_or_apply(args: argparse.Namespace) -> int:
    settings = _folder_settings(args.path)
    body = {"rules": _documents(args.path), "prune": args.prune}
    api = AdminApi(args.api)
    settings_line = ""
    if settings is not None:  # the folder's settings.yaml: the tenant's settings, as code
        settings_path = f"/admin/tenants/{segment(args.tenant)}/settings"
        changed = manage.settings_changes(api.get(settings_path), settings[1])
        settings_line = f"{'change':>10}  settings  ({', '.join(changed)})" if changed else \
            f"{'unchanged':>10}  settings"
        if changed and args.action == "apply":
            # First: rules that name no timezone take the default_timezone being applied
            api.put(settings_path, settings[1])
            settings_line += "\napply: saved the settings"
    answer = api.post(_rules_path(args, args.action), body)
    plan = answer.get("plan") or answer.get("applied") or {}
    print(format_plan(plan, applied=args.action == "apply"))
    if settings_line:
        print(settings_line)
    return 0


def format_plan(plan: dict[str, Any], applied: bool) -> str:
    lines = []
    fields = plan.get("fields") or {}
    for key, label in PLAN_LINES:
        for rule_id in plan.get(key, []):
            detail = f"  ({', '.join(fields[rule_id])})" if rule_id in fields else ""
            note = "  (not in the files; --prune deletes it)" if key == "untracked" else ""
            lines.append(f"{label:>10}  {rule_id}{detail}{note}")
    changed = sum(len(plan.get(k, [])) for k in ("create", "change", "deactivate", "delete"))
    if applied:
        lines.append(f"apply: changed {changed} rule(s)")
    else:
        lines.append(f"plan: {changed} rule(s) to change" if changed else "plan: nothing to change")
    return "\n".join(lines)


def _export(args: argparse.Namespace) -> int:
    answer = AdminApi(args.api).get(_rules_path(args), source=args.source or "", object=args.object or "")
    rules: list[dict[str, Any]] = answer.get("rules", [])
    if args.dir:
        args.dir.mkdir(parents=True, exist_ok=True)
        for rule in rules:
            (args.dir / f"{rule['id']}.yaml").write_text(dump_rules([rule]), encoding="utf-8")
        print(f"wrote {len(rules)} rule(s) to {args.dir}/")
    elif args.out:
        args.out.write_text(dump_rules(rules), encoding="utf-8")
        print(f"wrote {len(rules)} rule(s) to {args.out}")
    else:
        sys.stdout.write(dump_rules(rules))
    return 0


# ------------------------------------------------------------------------------------------- one rule
def _list(args: argparse.Namespace) -> int:
    rules = AdminApi(args.api).get(_rules_path(args)).get("rules", [])
    if args.json:
        print(json.dumps(rules, indent=2))
        return 0
    rows = [[r["id"], f"{r['source']}/{r['object']}", str(r.get("order", 0)),
             "active" if r.get("active", True) else "inactive", str(r.get("version", 1)), r.get("name") or ""]
            for r in rules]
    print(_table(("id", "object", "order", "state", "version", "name"), rows) if rows else "no rules stored")
    return 0


def _show(args: argparse.Namespace) -> int:
    rule = AdminApi(args.api).get(_rules_path(args, args.rule_id))["rule"]
    sys.stdout.write(dump_rules([rule]))
    return 0


def _create(args: argparse.Namespace) -> int:
    api = AdminApi(args.api)
    for document in _documents(args.path):
        rule = api.post(_rules_path(args), document)["rule"]
        print(f"created {rule['id']} ({_state(rule)}, version {rule['version']})")
    return 0


def _edit(args: argparse.Namespace) -> int:
    api = AdminApi(args.api)
    if args.file:
        documents = _documents(args.file)
        if len(documents) != 1:
            raise CliError(f"{args.file}: give exactly one rule document to edit {args.rule_id}")
        document: dict[str, Any] | None = documents[0]
    else:
        current = api.get(_rules_path(args, args.rule_id))["rule"]
        document = _edit_in_editor(current)
    if document is None:
        print(f"{args.rule_id}: no change")
        return 0
    rule = api.put(_rules_path(args, args.rule_id), document)["rule"]
    print(f"edited {rule['id']} ({_state(rule)}, version {rule['version']})")
    return 0


def _edit_in_editor(current: dict[str, Any]) -> dict[str, Any] | None:
    """The rule as edited in $VISUAL/$EDITOR, checked; None when left unchanged. On a problem the edited
    file is kept, and its path given, so no edit is lost."""
    editor = shlex.split(os.environ.get("VISUAL") or os.environ.get("EDITOR") or "vi")
    original = dump_rules([current])
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", prefix=f"{current['id']}-", delete=False,
                                     encoding="utf-8") as handle:
        handle.write(original)
        path = Path(handle.name)
    try:
        subprocess.run([*editor, str(path)], check=True)  # noqa: S603 - the user's own editor
    except (OSError, subprocess.CalledProcessError) as exc:
        path.unlink(missing_ok=True)
        raise CliError(f"the editor ({' '.join(editor)}) failed: {exc}") from None
    if path.read_text(encoding="utf-8") == original:
        path.unlink()
        return None
    documents = _documents(path)  # RulesFileError (file, rule, field) leaves the file for another go
    if len(documents) != 1:
        raise CliError(f"{path}: keep exactly one rule document (the file is kept)")
    path.unlink()
    return documents[0]


def _clone(args: argparse.Namespace) -> int:
    body: dict[str, Any] = {"new_id": args.new_id, "active": args.active}
    if args.name:
        body["name"] = args.name
    rule = AdminApi(args.api).post(_rules_path(args, args.rule_id, "clone"), body)["rule"]
    hint = "" if rule["active"] else f"; `billflow rules activate {rule['id']}` when it is ready"
    print(f"cloned {args.rule_id} as {rule['id']} ({_state(rule)}){hint}")
    return 0


def _set_active(args: argparse.Namespace) -> int:
    verb = "activate" if args.active else "deactivate"
    rule = AdminApi(args.api).post(_rules_path(args, args.rule_id, verb))["rule"]
    print(f"{rule['id']} is {_state(rule)} (version {rule['version']})")
    return 0


def _reorder(args: argparse.Namespace) -> int:
    body = {"source": args.source, "object": args.object, "rule_ids": args.rule_ids}
    rules = AdminApi(args.api).post(_rules_path(args, "reorder"), body)["rules"]
    print(_table(("order", "id", "state"), [[str(r["order"]), r["id"], _state(r)] for r in rules]))
    return 0


def _delete(args: argparse.Namespace) -> int:
    AdminApi(args.api).delete(_rules_path(args, args.rule_id))
    print(f"deleted {args.rule_id}")
    return 0


def _state(rule: dict[str, Any]) -> str:
    return "active" if rule.get("active", True) else "inactive"


# ------------------------------------------------------------------------------------------- dry run
def _dry_run(args: argparse.Namespace) -> int:
    body: dict[str, Any] = {"event": _json_file(args.event), "fetch_lookup": args.fetch_lookup}
    if args.rule:
        body["rule_id"] = args.rule
    if args.rules:
        body["rules"] = _documents(args.rules)
    if args.previous:
        body["previous"] = _json_file(args.previous)
    if args.lookup:
        body["lookup"] = _json_file(args.lookup)
    if args.source:
        body["source"] = args.source
    report = AdminApi(args.api).post(f"/admin/tenants/{segment(args.tenant)}/dry-run", body)
    print(json.dumps(report, indent=2) if args.json else format_dry_run(report))
    return 0


def _json_file(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise CliError(f"{path}: {exc.strerror}") from None
    except ValueError as exc:
        raise CliError(f"{path}: not JSON: {exc}") from None


def format_dry_run(report: dict[str, Any]) -> str:
    lines: list[str] = []
    for event in report.get("events", []):
        changed = ", ".join(event.get("changed_fields") or []) or "-"
        lines.append(f"event {event['source']}/{event['object']} {event['action']} {event['record_id']} "
                     f"(changed fields: {changed})")
        changes = ", ".join(f"{c['field']}: {_shown(c['before'])} → {_shown(c['after'])}"
                            for c in event.get("changes", [])) or "none the rules watch"
        lines.append(f"  changes ({event['changes_from']}): {changes}")
        lines.append(f"  lookup: {event['lookup']}")
        if not event.get("rules"):
            lines.append("  no rules for this object")
        for rule in event.get("rules", []):
            lines.extend(_rule_lines(rule))
    lines.append("dry run: nothing was sent, counted or stored")
    return "\n".join(lines)


def _rule_lines(rule: dict[str, Any]) -> list[str]:
    if rule["runs"]:
        verdict = f"RUNS → execution {rule['execution_name']}"
    elif rule["matched"]:
        verdict = "matches, but does not run"
    else:
        verdict = "no match"
    state = "active" if rule["active"] else "inactive"
    lines = [f"rule {rule['rule_id']} (order {rule['order']}, {state}): {verdict} — {rule['reason']}"]
    for block in rule.get("blocks", []):
        lines.append(f"  block {block['index'] + 1} [{block['pattern']}] {_mark(block)}")
        for criterion in block["criteria"]:
            lines.append(f"    {_mark(criterion)} {criterion['number']}. {criterion['field']} "
                         f"{criterion['comparator']} {_shown(criterion['value'])}: {criterion['reason']}")
    for action in rule.get("actions", []):
        target = f" via {action['connection']}" if action.get("connection") else ""
        when = "" if action.get("when", "now") == "now" else f" [{action['when']}]"
        lines.append(f"  action {action['index'] + 1}: {action['type']}{target}{when} "
                     f"(idempotency key {action['idempotency_key']})")
        if action.get("error"):
            lines.append(f"    not sent: {action['error']}")
        for request in action.get("requests", []):
            lines.extend(f"    {line}" for line in _request_lines(request))
    lines.extend(f"  note: {note}" for note in rule.get("notes", []))
    return lines


def _mark(result: dict[str, Any]) -> str:
    """✓ holds, ✗ does not, ? decided by the run after Lookup."""
    if result.get("pending"):
        return "?"
    return "✓" if result["matched"] else "✗"


def _request_lines(request: dict[str, Any]) -> list[str]:
    """One request for reading: method and URL (decoded), headers, then the body (form fields one a line).
    --json prints them exactly as the preview gives them."""
    if "method" not in request:
        return [json.dumps(request, sort_keys=True)]
    when = f"   (when {request['when']})" if request.get("when") else ""
    url = str(request.get("url") or request.get("path") or "")
    if request.get("query") and isinstance(request["query"], str):
        url = f"{url}?{request['query']}"
    lines = [f"{request['method']} {unquote(url)}{when}"]
    headers = dict(request.get("headers") or {})
    if request.get("idempotency_key"):
        headers.setdefault("Idempotency-Key", request["idempotency_key"])
    lines += [f"  {name}: {value}" for name, value in headers.items()]
    if isinstance(request.get("form"), str) and request["form"]:
        lines += [f"  {key}={value}" for key, value in parse_qsl(request["form"], keep_blank_values=True)]
    for key in ("json", "body"):
        value = request.get(key)
        if value:
            lines.append(f"  {value if isinstance(value, str) else json.dumps(value, sort_keys=True)}")
    return lines


def _shown(value: Any) -> str:
    return "?" if value is None else json.dumps(value)


# ------------------------------------------------------------------------------------------- runs
def _log(args: argparse.Namespace) -> int:
    answer = AdminApi(args.api).get(
        f"/admin/tenants/{segment(args.tenant)}/executions",
        rule=args.rule or "", record=args.record or "", status=args.status or "", limit=str(args.limit),
    )
    items = answer.get("executions", [])
    if args.json:
        print(json.dumps(items, indent=2))
        return 0
    filtered = bool(args.rule or args.record or args.status)
    print(format_log(items, wide=args.wide, filtered=filtered))
    return 0


def _replay(args: argparse.Namespace) -> int:
    path = f"/admin/tenants/{segment(args.tenant)}/executions/{segment(args.execution)}/replay"
    answer = AdminApi(args.api).post(path)
    why = f", {answer['original_error']}" if answer.get("original_error") else ""
    print(f"replaying {answer['replay_of']} ({answer['original_status'].lower()}{why}) as {answer['execution']}")
    return 0


def _test_connection(args: argparse.Namespace) -> int:
    path = f"/admin/tenants/{segment(args.tenant)}/connections/{segment(args.name)}/test"
    report = AdminApi(args.api).post(path)
    facts = [("account", report.get("account_name")), ("id", report.get("account_id")),
             ("currency", report.get("currency")), ("multicurrency", report.get("multicurrency")),
             ("tax regime", report.get("tax_regime")), ("data centre", report.get("data_centre"))]
    verdict = "ok" if report.get("ok") else "FAILED"
    print(f"{report.get('connection')} ({report.get('kind')}): {verdict} - {report.get('checked') or 'no read made'}")
    for label, value in facts:
        if value is not None:
            print(f"  {label}: {value}")
    for document, allowed in sorted((report.get("can_create") or {}).items()):
        print(f"  can create {document}: {'unknown' if allowed is None else 'yes' if allowed else 'no'}")
    for note in report.get("notes") or []:
        print(f"  note: {note}")
    if not report.get("ok"):
        print(f"  error: {report.get('error')}", file=sys.stderr)
        return 1
    return 0


def _redrive(args: argparse.Namespace) -> int:
    import boto3  # only redrive talks to AWS directly; the other commands go through the admin API

    if args.stack:
        outputs = stack_outputs(args.stack, args.region)
        queue_url, bus = outputs.get("FilterFailureQueueUrl"), outputs.get("EventBusName")
        if not queue_url or not bus:
            raise CliError(f"stack {args.stack}: no FilterFailureQueueUrl/EventBusName outputs; deploy this version")
    else:
        if not args.event_bus:
            raise CliError("--queue-url needs --event-bus (the bus to put the events on)")
        queue_url, bus = args.queue_url, args.event_bus
    report = redrive(boto3.client("sqs", region_name=args.region), boto3.client("events", region_name=args.region),
                     queue_url, bus, tenant=args.tenant)
    print(f"redriven {len(report.redriven)} event(s) onto {bus}"
          + (f"; {len(report.skipped)} of other tenants left in the queue" if report.skipped else ""))
    for refused in report.refused:
        print(f"  left in the queue (not an event, or refused by EventBridge): {refused}", file=sys.stderr)
    return 1 if report.refused else 0


def _local(args: argparse.Namespace) -> int:
    from billflow_local.__main__ import main as local_main

    code: int = local_main(args.args)
    return code


if __name__ == "__main__":
    sys.exit(main())
