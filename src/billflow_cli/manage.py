"""`billflow settings` and `billflow connections`: a tenant's settings and its connections (secrets) through
the admin API. A secret's value is read from a prompt (or standard input), sent once, and never printed: the
API answers only a connection's setting names and when it changed."""

from __future__ import annotations

import argparse
import getpass
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from billflow_cli.api import AdminApi, segment
from billflow_local.rulesfile import Yaml12Loader
from billflow_local.tables import table

SETTINGS_FILE_NAMES = ("settings.yaml", "settings.yml")
SETTINGS_FIELDS = ("daily_limits", "default_daily_limit", "usage_alert", "failure_digest", "default_timezone")
# Settings whose values are credentials: never taken from the command line (shell history, ps keep it).
SECRET_KEYS = frozenset({"api_key", "client_secret", "refresh_token", "access_token", "secret", "signing_secret",
                         "password", "token", "private_key"})


class ManageError(Exception):
    """What to fix before calling the API (exit 2)."""


def add_commands(commands: Any, api_args: Callable[[argparse.ArgumentParser], None]) -> None:
    settings = commands.add_parser("settings", help="the tenant's settings: daily limits, usage alert, failure "
                                                    "digest, default time zone")
    actions = settings.add_subparsers(required=True, metavar="ACTION")
    show = actions.add_parser("show", help="the settings as YAML (or JSON)")
    api_args(show)
    show.add_argument("--json", action="store_true")
    show.set_defaults(run=settings_show)
    setting = actions.add_parser("set", help="change settings: KEY=VALUE, e.g. daily_limits.stripe.invoice=50 "
                                             "usage_alert.threshold_percent=80 failure_digest.frequency=off")
    setting.add_argument("assignments", nargs="+", metavar="KEY=VALUE",
                         help="VALUE is YAML (50, null, [a@x.com, b@y.com]); null removes a limit or a section")
    api_args(setting)
    setting.set_defaults(run=settings_set)
    export = actions.add_parser("export", help="the settings as a settings.yaml for a rules folder")
    api_args(export)
    export.add_argument("--out", type=Path, help="write here (default: standard output)")
    export.set_defaults(run=settings_export)


def add_connection_commands(connection_commands: Any, api_args: Callable[[argparse.ArgumentParser], None]) -> None:
    listing = connection_commands.add_parser("list", help="the tenant's connections (names of settings only)")
    api_args(listing)
    listing.add_argument("--json", action="store_true")
    listing.set_defaults(run=connections_list)
    for name, helptext in (("create", "save a new connection"),
                           ("update", "change a connection; settings not given are kept")):
        sub = connection_commands.add_parser(name, help=helptext)
        sub.add_argument("name", metavar="NAME", help="as rules name it, e.g. stripe-main")
        sub.add_argument("--type", required=name == "create",
                         help="stripe, quickbooks, xero, zoho_books, hubspot, twenty, webhook")
        sub.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", dest="values",
                         help="a setting that is not a secret (repeat), e.g. --set currency=eur")
        sub.add_argument("--secret", action="append", default=[], metavar="KEY",
                         help="a secret setting, read from a prompt (or a line of standard input); never echoed")
        sub.add_argument("--from-file", type=Path,
                         help="a YAML or JSON mapping of settings (keep such files out of git)")
        if name == "update":
            sub.add_argument("--unset", action="append", default=[], metavar="KEY", help="remove a setting")
        api_args(sub)
        sub.set_defaults(run=connections_save, create=name == "create")
    delete = connection_commands.add_parser("delete", help="delete a connection (its secret, at once)")
    delete.add_argument("name", metavar="NAME")
    api_args(delete)
    delete.set_defaults(run=connections_delete)
    connect = connection_commands.add_parser("connect", help="OAuth targets: print the consent link that "
                                                             "connects the account (QuickBooks, Xero, Zoho, HubSpot)")
    connect.add_argument("name", metavar="NAME")
    api_args(connect)
    connect.set_defaults(run=connections_connect)


# ------------------------------------------------------------------------------------------- settings
def _settings_path(args: argparse.Namespace) -> str:
    return f"/admin/tenants/{segment(args.tenant)}/settings"


def settings_document(answer: dict[str, Any]) -> dict[str, Any]:
    """What a settings.yaml holds: the settings without their save time."""
    return {k: answer[k] for k in SETTINGS_FIELDS if k in answer}


def settings_show(args: argparse.Namespace) -> int:
    answer = AdminApi(args.api).get(_settings_path(args))
    if args.json:
        print(json.dumps(answer, indent=2))
    else:
        sys.stdout.write(yaml.safe_dump(answer, sort_keys=False, allow_unicode=True))
    return 0


def settings_export(args: argparse.Namespace) -> int:
    text = yaml.safe_dump(settings_document(AdminApi(args.api).get(_settings_path(args))), sort_keys=False,
                          allow_unicode=True)
    if args.out:
        args.out.write_text(text, encoding="utf-8")
        print(f"wrote the settings of {args.tenant} to {args.out}")
    else:
        sys.stdout.write(text)
    return 0


def settings_set(args: argparse.Namespace) -> int:
    api = AdminApi(args.api)
    document = settings_document(api.get(_settings_path(args)))
    for assignment in args.assignments:
        apply_assignment(document, assignment)
    saved = api.put(_settings_path(args), document)
    print(f"saved the settings of {args.tenant} ({saved.get('updated_at')})")
    sys.stdout.write(yaml.safe_dump(settings_document(saved), sort_keys=False, allow_unicode=True))
    return 0


def apply_assignment(document: dict[str, Any], assignment: str) -> None:
    """KEY=VALUE into the settings document. daily_limits.<action type> takes the rest of the key whole (action
    types have dots: daily_limits.stripe.invoice); usage_alert.* and failure_digest.* create their section."""
    key, sep, raw = assignment.partition("=")
    if not sep or not key:
        raise ManageError(f"{assignment!r}: write KEY=VALUE, e.g. daily_limits.stripe.invoice=50")
    try:  # YAML 1.2, as rule files: `off` and `no` are strings (failure_digest.frequency=off)
        value = yaml.load(raw, Loader=Yaml12Loader) if raw.strip() else None  # noqa: S506 (a safe loader)
    except yaml.YAMLError:
        value = raw
    top, _, rest = key.partition(".")
    if top not in SETTINGS_FIELDS:
        raise ManageError(f"{key}: unknown setting; settings are {', '.join(SETTINGS_FIELDS)}")
    if not rest:
        document[top] = value
        return
    if top not in ("daily_limits", "usage_alert", "failure_digest"):
        raise ManageError(f"{key}: {top} has no parts; write {top}=VALUE")
    if top != "daily_limits" and "." in rest:
        raise ManageError(f"{key}: {top} has fields, not sections; e.g. {top}.recipients=[a@example.com]")
    if rest == "recipients" and isinstance(value, str):  # recipients=a@x.com,b@y.com
        value = [v.strip() for v in value.split(",") if v.strip()]
    section = document.get(top)
    if not isinstance(section, dict):
        section = {}
    if value is None:
        section.pop(rest, None)
    else:
        section[rest] = value
    document[top] = section


def load_settings_file(folder: Path) -> tuple[Path, dict[str, Any]] | None:
    """A rules folder's settings.yaml (or .yml): its path and document; None when it has none."""
    if not folder.is_dir():
        return None
    for name in SETTINGS_FILE_NAMES:
        path = folder / name
        if path.is_file():
            try:
                document = yaml.load(path.read_text(encoding="utf-8"), Loader=Yaml12Loader) or {}  # noqa: S506
            except yaml.YAMLError as exc:
                mark = getattr(exc, "problem_mark", None)
                where = f":{mark.line + 1}:{mark.column + 1}" if mark else ""
                raise ManageError(f"{path}{where}: not valid YAML: {getattr(exc, 'problem', exc)}") from None
            if not isinstance(document, dict):
                raise ManageError(f"{path}: the settings are a mapping ({', '.join(SETTINGS_FIELDS)})")
            return path, document
    return None


def check_settings(path: Path, document: dict[str, Any]) -> list[str]:
    """Every problem of a settings.yaml, as `file: field: message` (the API's own model checks it)."""
    from billflow.logic.tenant_settings import problems_of  # the layer: the CLI checks as the API does
    from billflow.models.admin import SettingsDocument
    from pydantic import ValidationError

    try:
        SettingsDocument.model_validate(document)
    except ValidationError as exc:
        return [f"{path}: {problem}" for problem in problems_of(exc.errors())]
    return []


def settings_changes(current: dict[str, Any], wanted: dict[str, Any]) -> list[str]:
    """The settings fields a settings.yaml would change (after the API's defaults are filled in)."""
    from billflow.models.admin import SettingsDocument  # as above

    full = json.loads(SettingsDocument.model_validate(wanted).model_dump_json())
    stored = settings_document(current)
    if wanted.get("default_daily_limit") is None:
        full["default_daily_limit"] = stored.get("default_daily_limit")  # unset: the stack's, as stored
    return sorted(k for k in SETTINGS_FIELDS if full.get(k) != stored.get(k))


# ------------------------------------------------------------------------------------------- connections
def _connections_path(args: argparse.Namespace, *rest: str) -> str:
    return "/".join([f"/admin/tenants/{segment(args.tenant)}/connections", *(segment(r) for r in rest)])


def connections_list(args: argparse.Namespace) -> int:
    connections = AdminApi(args.api).get(_connections_path(args)).get("connections", [])
    if args.json:
        print(json.dumps(connections, indent=2))
        return 0
    rows = [[c["name"], c["type"], ", ".join(c["keys"]), c.get("updated_at") or "",
             "" if c.get("connected") is None else "yes" if c["connected"] else "no (billflow connections connect)"]
            for c in connections]
    print(table(("name", "type", "settings", "changed", "connected"), rows) if rows else "no connections")
    return 0


def connections_save(args: argparse.Namespace) -> int:
    api = AdminApi(args.api)
    settings: dict[str, Any] = {}
    if args.from_file:
        settings.update(_settings_file(args.from_file))
    for assignment in args.values:
        key, sep, value = assignment.partition("=")
        if not sep or not key:
            raise ManageError(f"--set {assignment!r}: write KEY=VALUE")
        if key in SECRET_KEYS:
            raise ManageError(f"--set {key}: {key} is a secret; give --secret {key} and type it at the prompt "
                              "(a command line is kept in shell history)")
        settings[key] = value
    for key in args.secret:
        settings[key] = read_secret_value(key)
    for key in getattr(args, "unset", []):
        settings[key] = None
    kind = args.type
    if not args.create:
        current = {c["name"]: c for c in api.get(_connections_path(args)).get("connections", [])}
        if args.name not in current:
            raise ManageError(f"tenant {args.tenant} has no connection {args.name!r}; create it first")
        kind = kind or current[args.name]["type"]
        if not settings and kind == current[args.name]["type"]:
            raise ManageError("nothing to change: give --set, --secret, --unset or --from-file")
    elif args.name in {c["name"] for c in api.get(_connections_path(args)).get("connections", [])}:
        raise ManageError(f"connection {args.name!r} exists; `billflow connections update {args.name}` changes it")
    answer = api.put(_connections_path(args, args.name), {"type": kind, "settings": settings})
    connection = answer["connection"]
    verb = "created" if answer.get("created") else "updated"
    print(f"{verb} {connection['name']} ({connection['type']}): settings {', '.join(connection['keys'])}")
    if connection.get("connected") is False:
        print(f"  next: `billflow connections connect {connection['name']}` and open the link to grant access")
    return 0


def _settings_file(path: Path) -> dict[str, Any]:
    try:
        document = yaml.load(path.read_text(encoding="utf-8"), Loader=Yaml12Loader)  # noqa: S506 (safe)
    except OSError as exc:
        raise ManageError(f"{path}: {exc.strerror}") from None
    except yaml.YAMLError:
        raise ManageError(f"{path}: not YAML or JSON") from None
    if not isinstance(document, dict):
        raise ManageError(f"{path}: a mapping of settings, e.g. api_key: ...")
    if isinstance(document.get("settings"), dict):  # {type, settings} as the API takes it
        return dict(document["settings"])
    return {k: v for k, v in document.items() if k != "type"}


def read_secret_value(key: str) -> str:
    """A secret from the terminal without echo, or one line of standard input (a pipe)."""
    value = getpass.getpass(f"{key}: ") if sys.stdin.isatty() else sys.stdin.readline().rstrip("\r\n")
    if not value:
        raise ManageError(f"--secret {key}: nothing was entered")
    return value


def connections_delete(args: argparse.Namespace) -> int:
    AdminApi(args.api).delete(_connections_path(args, args.name))
    print(f"deleted connection {args.name}")
    return 0


def connections_connect(args: argparse.Namespace) -> int:
    answer = AdminApi(args.api).get(_connections_path(args, args.name, "authorize"))
    print(f"Open this link and grant access (valid until {answer['expires_at']}):\n{answer['url']}")
    print(f"The provider's app must list {answer['redirect_uri']} as a redirect URI.")
    return 0
