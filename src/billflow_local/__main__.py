"""`python -m billflow_local`: the whole stack on this machine, serving until Ctrl-C.

    python -m billflow_local --port 3000 --rules examples/rules --connections local-connections.yaml
"""

from __future__ import annotations

import argparse
import os
import secrets
import signal
import sys
import threading
from pathlib import Path

from billflow_local.runtime import LocalConfigError, LocalRuntime
from billflow_local.template import TemplateError


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    root = args.root or _find_root()
    if root is None:
        print("error: no template.yaml here or above; run from the billflow folder or pass --root",
              file=sys.stderr)
        return 2
    try:
        parameters = dict(_parameter(p) for p in args.parameter)
        runtime = LocalRuntime(
            root, port=args.port, host=args.host, rules=args.rules, connections=args.connections,
            tenant=args.tenant, parameters=parameters, time_scale=args.time_scale,
            log_level=args.log_level, echo=_echo, console_token=console_token(),
            schedules=True,  # EventBridge Scheduler fires on its own
        )
    except LocalConfigError as exc:
        print("the local runtime cannot start; fix these and run again:", file=sys.stderr)
        for problem in exc.problems:
            print(f"  {problem}", file=sys.stderr)
        return 2
    except (TemplateError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2

    stopping = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):  # Ctrl-C, and `kill` from scripts
        signal.signal(signum, lambda *_: stopping.set())
    try:
        runtime.start()
    except OSError as exc:  # the port is taken, most often
        print(f"error: cannot listen on {args.host}:{args.port}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    try:
        _banner(runtime, args)
        while not stopping.wait(0.5):
            pass
    finally:
        print("stopping…", flush=True)
        runtime.stop()
    return 0


def _banner(runtime: LocalRuntime, args: argparse.Namespace) -> None:
    print(f"billflow is running locally at {runtime.url} (no AWS account involved; Ctrl-C stops it)")
    urls = runtime.webhook_urls()
    if urls:
        print("Point your CRM's webhook at:")
        for url in urls:
            print(f"  {url}")
    else:
        print(f"No webhook sources configured: give --connections with tenants.<tenant>.sources "
              f"(URL shape: {runtime.url}/webhooks/<tenant>/<source>)")
    rules = runtime.initial_rules
    print(f"{len(rules)} rule(s) loaded" + (f" from {args.rules}" if args.rules else "")
          + (": " + ", ".join(f"{r.tenant}/{r.id}" for r in rules) if rules else ""))
    print(f"Admin API: {runtime.url}/admin/tenants/{args.tenant}/rules (send 'Authorization: Bearer <token>')")
    print_console(runtime)
    sys.stdout.flush()


def console_token() -> str:
    """The local admin API's token: $BILLFLOW_TOKEN when set (scripts, the CLI), else a new random one."""
    return os.environ.get("BILLFLOW_TOKEN") or secrets.token_urlsafe(24)


def print_console(runtime: LocalRuntime) -> None:
    print(f"Console: {runtime.url}/console  (open with the token: {runtime.console_url})")
    print(f"CLI:     export BILLFLOW_API={runtime.url} BILLFLOW_TENANT={runtime.tenant} "
          f"BILLFLOW_TOKEN={runtime.server.console_token}")
    sys.stdout.flush()


def _echo(line: str) -> None:
    print(line, flush=True)


def _parameter(text: str) -> tuple[str, str]:
    name, sep, value = text.partition("=")
    if not sep or not name:
        raise ValueError(f"--parameter {text!r}: write it as Name=value (e.g. Stage=dev)")
    return name, value


def _find_root() -> Path | None:
    for folder in (Path.cwd(), *Path.cwd().parents):
        if (folder / "template.yaml").is_file():
            return folder
    packaged = Path(__file__).resolve().parents[2]  # src/billflow_local/ -> the repository
    return packaged if (packaged / "template.yaml").is_file() else None


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m billflow_local", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--port", type=int, default=3000, help="HTTP port (0: any free port; default 3000)")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--rules", type=Path, help="a rules YAML file or a folder of them")
    parser.add_argument("--connections", type=Path,
                        help="YAML with tenants' webhook secrets and connections (local-connections.yaml)")
    parser.add_argument("--tenant", default="demo", help="tenant of rules that name none (default demo)")
    parser.add_argument("--root", type=Path, help="the folder holding template.yaml (default: found upwards)")
    parser.add_argument("--parameter", action="append", default=[], metavar="NAME=VALUE",
                        help="override a template parameter (repeatable), e.g. DefaultDailyLimit=5")
    parser.add_argument("--time-scale", type=float, default=1.0,
                        help="how fast Wait states and retry backoffs run (10: ten times faster)")
    parser.add_argument("--log-level", default="WARNING",
                        help="the functions' log level (default WARNING; INFO shows every handler log)")
    return parser


if __name__ == "__main__":
    sys.exit(main())
