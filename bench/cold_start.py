"""Cold start as Lambda sees it: a fresh interpreter imports a function's handler AND serves its first real
event, timed to the first response, beside the floor measured in the same run.

    .venv/bin/python bench/cold_start.py [--runs 5]

The events are real: each function's first event from a recorded run on the local runtime (a signed Twenty
webhook for ingest, its bus event for filter, the state machine's task inputs for lookup, format, dispatch
and write-back, an admin API request, a scheduled event, a due sweep), re-signed or given fresh ids per run so that no
run is answered from an earlier one's idempotency record.

AWS is moto, holding the recorded run's tables, secrets, rules and bus. It answers the child interpreters
over HTTP (moto's ThreadedMotoServer sharing the recording's in-process backends, AWS_ENDPOINT_URL): moto
imported inside the child would load boto3 and botocore before the timer starts and hide exactly the cost
this benchmark measures. The Twenty and Stripe stand-ins answer on 127.0.0.1 as in the recorded run.

Floor, per function: a fresh interpreter running `import boto3, aws_lambda_powertools`, creating the client
of the function's first AWS call and making that call (same parameters) against the same moto. A function
that makes no AWS call (format) has the imports alone as its floor.

Beside it, the dependencies' floor ("deps"): the same, plus importing pydantic's BaseModel and
billflow/observability.py (Powertools' Logger and Tracer: the X-Ray SDK, patching botocore). Every function
needs both before any of its own code runs, so the handler over "deps" is what billflow itself adds.

The layer's packages are loaded compiled (this venv's, and layers/billflow with its bytecode, compiled here
first) and boto3 is this venv's, as a function sees the layer layers/billflow/Makefile builds (bytecode
shipped, botocore left to the runtime); the handlers too, as functions/Makefile ships them. What code
without its bytecode costs is bench/layer_bytecode.py's figure.

Figures: medians of --runs interleaved runs. Target: every function's first response within 1.3x its floor;
exit status 1 over it. The import-only figure is printed beside the floor's imports.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
LAYER = ROOT / "layers" / "billflow"
sys.path.insert(0, str(HERE))

from recorded_run import SIGNING_SECRET, Invocation, Recording, record  # noqa: E402

TARGET = 1.3
FUNCTION_DIRS = {"IngestFunction": "ingest", "FilterFunction": "filter", "LookupFunction": "lookup",
                 "FormatFunction": "format", "DispatchFunction": "dispatch", "WriteBackFunction": "writeback",
                 "SchedulerFunction": "scheduler", "SweepFunction": "sweep", "AdminFunction": "admin"}
FLOOR_IMPORTS = "import boto3, aws_lambda_powertools"

# The child: everything before `started` is Lambda's runtime bootstrap (json, the event, the context).
CHILD = r"""
import json, sys, time
spec = json.load(open(sys.argv[1]))

class Context:
    function_name = spec["function"]
    function_version = "$LATEST"
    memory_limit_in_mb = spec["memory"]
    invoked_function_arn = "arn:aws:lambda:us-east-1:123456789012:function:" + spec["function"]
    aws_request_id = "cold-start-bench"
    log_group_name = "/aws/lambda/" + spec["function"]
    log_stream_name = "bench"
    def get_remaining_time_in_millis(self):
        return 60000

event, context = spec.get("event"), Context()
started, started_cpu = time.perf_counter(), time.process_time()
if spec["mode"] == "handler":
    sys.path[:0] = [spec["code"], spec["layer"]]
    import app
    imported = time.perf_counter()
    answer = app.handler(event, context)
    ok = not (isinstance(answer, dict) and answer.get("statusCode", 200) >= 400)
else:
    import boto3, aws_lambda_powertools
    if spec["mode"] == "dependencies":
        sys.path[:0] = [spec["layer"]]
        from pydantic import BaseModel
        import billflow.observability
    imported = time.perf_counter()
    ok = True
    if spec.get("call"):
        service, operation, params = spec["call"]
        client = boto3.client(service)
        try:
            getattr(client, operation)(**params)
        except client.exceptions.ClientError:
            pass  # a conditional write refused the second time: the round trip was made all the same
finished, finished_cpu = time.perf_counter(), time.process_time()
with open(spec["out"], "w") as out:
    json.dump({"import": imported - started, "first": finished - started, "first_cpu": finished_cpu - started_cpu,
               "ok": ok}, out)
"""


def _snake(operation: str) -> str:
    return "".join(f"_{c.lower()}" if c.isupper() else c for c in operation).lstrip("_")


def _fresh(function: str, event: Any, run: int) -> Any:
    """The recorded event, made new: fresh record and execution ids; the webhook signed now."""
    text = json.dumps(event)
    suffix = f"{run}{uuid.uuid4().hex[:6]}"
    if function in ("IngestFunction", "FilterFunction"):
        old = _record_id(event, function)
        if old:
            text = text.replace(old, str(uuid.uuid4()))
    for key in ("execution_key", "execution_name"):
        value = _find(event, key)
        if isinstance(value, str) and value:
            text = text.replace(value, f"{value[:60]}-{suffix}")
    fresh = json.loads(text)
    if function == "IngestFunction":
        from tests.fakes.signing import twenty_headers

        body = fresh["body"].encode()
        headers = {k.lower(): v for k, v in twenty_headers(SIGNING_SECRET, body).items()}
        fresh["headers"] = {**fresh["headers"], **headers}
    return fresh


def _record_id(event: Any, function: str) -> str | None:
    if function == "IngestFunction":
        return str(json.loads(event["body"])["record"]["id"])
    return str(event["detail"]["record_id"])


def _find(value: Any, key: str) -> Any:
    if isinstance(value, dict):
        if key in value:
            return value[key]
        for item in value.values():
            found = _find(item, key)
            if found is not None:
                return found
    return None


def _first_call(function: str, recording: Recording) -> list[Any] | None:
    """The function's first AWS call in a cold container."""
    invocation: Invocation = recording.first_invocations[function]
    calls = invocation.calls
    if not calls:
        return None
    return [calls[0].service, _snake(calls[0].operation), calls[0].params]


def _import_times(stderr: str) -> list[tuple[int, int, str]]:
    """`-X importtime` lines as (self us, cumulative us, module)."""
    rows = []
    for line in stderr.splitlines():
        if line.startswith("import time:") and "|" in line and "self" not in line:
            own, total, name = (part.strip() for part in line.removeprefix("import time:").split("|"))
            rows.append((int(own), int(total), name.strip()))
    return rows


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class Bench:
    def __init__(self, recording: Recording, runtime: Any, runs: int) -> None:
        self.recording, self.runtime, self.runs = recording, runtime, runs
        self.only: set[str] = set()
        self.tmp = Path(tempfile.mkdtemp(prefix="billflow-cold-"))
        self.child = self.tmp / "child.py"
        self.child.write_text(CHILD)

    def environment(self, function: str, endpoint: str) -> dict[str, str]:
        from billflow_local.runtime import FAKE_AWS_ENVIRONMENT, LOCAL_ENVIRONMENT

        # LOCAL_ENVIRONMENT last, as the runtime sets it: the template says ALLOW_LOOPBACK_TARGETS=false
        env = {"PATH": "", "LANG": "C.UTF-8", **FAKE_AWS_ENVIRONMENT,
               **self.runtime.template.function_environment(function), **LOCAL_ENVIRONMENT,
               "AWS_ENDPOINT_URL": endpoint,
               "AWS_LAMBDA_FUNCTION_NAME": function, "PYTHONDONTWRITEBYTECODE": "1"}
        if function == "FilterFunction":
            env["STATE_MACHINE_ARN"] = self.pass_machine
        return env

    def run_child(self, spec: dict[str, Any], env: dict[str, str], python_options: tuple[str, ...] = ()
                  ) -> dict[str, Any]:
        path = self.tmp / f"spec-{uuid.uuid4().hex}.json"
        out = self.tmp / f"out-{uuid.uuid4().hex}.json"
        path.write_text(json.dumps({**spec, "out": str(out)}))
        done = subprocess.run([sys.executable, *python_options, str(self.child), str(path)], env=env,
                              capture_output=True, text=True, cwd=self.tmp, check=False)
        self.last_stderr = done.stderr
        if done.returncode or not out.exists():
            raise RuntimeError(f"{spec['function']} {spec['mode']} failed: {done.stderr[-2000:]}")
        result: dict[str, Any] = json.loads(out.read_text())
        if not result["ok"]:
            raise RuntimeError(f"{spec['function']}: the first event was refused: {done.stdout[-1000:]}")
        return result

    def handler_spec(self, function: str, run: int) -> dict[str, Any]:
        first = self.recording.first_invocations[function]
        return {"function": function, "memory": self.recording.memory_mb[function], "mode": "handler",
                "event": _fresh(function, first.event, run), "code": str(ROOT / "functions" / FUNCTION_DIRS[function]),
                "layer": str(ROOT / "layers" / "billflow")}

    def profile(self, function: str, endpoint: str) -> None:
        """Where one cold start of `function` goes: the slowest imports (-X importtime, self time) and
        the handler call's cumulative profile (cProfile)."""
        import pstats

        env = self.environment(function, endpoint)
        floor_spec = {"function": function, "memory": self.recording.memory_mb[function], "mode": "dependencies",
                      "layer": str(LAYER), "call": _first_call(function, self.recording)}
        self.run_child(floor_spec, env, ("-X", "importtime"))
        in_floor = {name for _, _, name in _import_times(self.last_stderr)}
        self.run_child(self.handler_spec(function, 0), env, ("-X", "importtime"))
        rows = _import_times(self.last_stderr)
        print(f"{function}: slowest imports by self time (us), with their cumulative time")
        for own, total, name in sorted(rows, reverse=True)[:25]:
            print(f"  {own:8d} {total:9d}  {name}")
        extra = sorted(((own, name) for own, _, name in rows if name not in in_floor), reverse=True)
        print(f"{function}: {len(extra)} modules the dependencies' floor does not import, "
              f"{sum(o for o, _ in extra) / 1000:.1f} ms of self time; the slowest:")
        for own, name in extra[:40]:
            print(f"  {own:8d}  {name}")
        stats_file = self.tmp / "profile.out"
        self.run_child(self.handler_spec(function, 1), env, ("-m", "cProfile", "-o", str(stats_file)))
        print(f"{function}: the whole cold start, cumulative")
        pstats.Stats(str(stats_file)).sort_stats("cumulative").print_stats(45)

    def functions(self) -> list[str]:
        """The functions the recorded run called (write-back runs only when the Dispatch task could not finish
        an action: logic/action_step.py)."""
        return [f for f in FUNCTION_DIRS if f in self.recording.first_invocations
                and (not self.only or f in self.only)]

    def measure(self, endpoint: str) -> dict[str, dict[str, list[float]]]:
        figures: dict[str, dict[str, list[float]]] = {
            f: {"import": [], "first": [], "floor_import": [], "floor": [], "first_cpu": [], "floor_cpu": [],
                "dependencies": [], "dependencies_cpu": []}
            for f in self.functions()}
        for run in range(self.runs):
            for function in self.functions():
                base = {"function": function, "memory": self.recording.memory_mb[function]}
                env = self.environment(function, endpoint)
                floor = self.run_child({**base, "mode": "floor", "call": _first_call(function, self.recording)},
                                       env)
                handler = self.run_child(self.handler_spec(function, run), env)
                dependencies = self.run_child({**base, "mode": "dependencies", "layer": str(LAYER),
                                               "call": _first_call(function, self.recording)}, env)
                figures[function]["floor_import"].append(floor["import"])
                figures[function]["floor"].append(floor["first"])
                figures[function]["import"].append(handler["import"])
                figures[function]["first"].append(handler["first"])
                figures[function]["first_cpu"].append(handler["first_cpu"])
                figures[function]["floor_cpu"].append(floor["first_cpu"])
                figures[function]["dependencies"].append(dependencies["first"])
                figures[function]["dependencies_cpu"].append(dependencies["first_cpu"])
        return figures


def compile_as_built() -> None:
    """The bytecode the Makefiles ship, for billflow's package and the handlers: the children import them
    with PYTHONDONTWRITEBYTECODE (a read-only /opt and /var/task), so on a fresh clone, where nothing has
    written it yet, every child would compile them and the figures would be a layer shipped without it."""
    import compileall

    for tree in (LAYER / "billflow", ROOT / "functions"):
        if not compileall.compile_dir(tree, quiet=1):
            raise SystemExit(f"{tree} does not compile")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--profile", metavar="FUNCTION", help="profile one cold start (e.g. FilterFunction)")
    parser.add_argument("--only", metavar="FUNCTION", nargs="+", default=[], help="measure these functions only")
    args = parser.parse_args(argv)
    results: dict[str, Any] = {}

    def while_running(recording: Recording, runtime: Any) -> None:
        import logging

        from moto.moto_server.threaded_moto_server import ThreadedMotoServer

        logging.getLogger("werkzeug").setLevel(logging.ERROR)

        bench = Bench(recording, runtime, args.runs)
        bench.only = set(args.only)
        sfn = runtime.client("stepfunctions")
        bench.pass_machine = sfn.create_state_machine(
            name="cold-start-pass", roleArn="arn:aws:iam::123456789012:role/bench",
            definition=json.dumps({"StartAt": "Done", "States": {"Done": {"Type": "Pass", "End": True}}}),
        )["stateMachineArn"]
        port = _free_port()
        server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
        server.start()
        try:
            if args.profile:
                bench.profile(args.profile, f"http://127.0.0.1:{port}")
                return
            results["figures"] = bench.measure(f"http://127.0.0.1:{port}")
            results["calls"] = {f: _first_call(f, recording) for f in bench.functions()}
        finally:
            server.stop()

    compile_as_built()
    record(unmatched=1, invoices=1, while_running=while_running)
    if args.profile:
        return 0
    figures = results["figures"]
    print("first AWS call (floor): " + ", ".join(
        f"{f.removesuffix('Function')} {c[0]}.{c[1]}" if c else f"{f.removesuffix('Function')} none"
        for f, c in results["calls"].items()))
    print(f"cold start to the first response (median of {args.runs}; floor = `{FLOOR_IMPORTS}` + the "
          f"function's first AWS client and call; target <= {TARGET}x)")
    print(f"  {'function':<18}{'import':>8}{'floor imp':>10}{'ratio':>7}   {'first resp':>10}{'floor':>8}"
          f"{'ratio':>7}        {'CPU':>5}{'floor':>6}{'ratio':>7}   {'deps':>5}{'ratio':>7}"
          f"{'deps CPU':>9}{'ratio':>7}")
    worst = 0.0
    for function, values in figures.items():
        ms = {k: statistics.median(v) * 1000 for k, v in values.items()}
        ratio = ms["first"] / ms["floor"]
        worst = max(worst, ratio)
        print(f"  {function:<18}{ms['import']:7.0f} {ms['floor_import']:8.0f} {ms['import'] / ms['floor_import']:6.2f}x"
              f"   {ms['first']:9.0f} {ms['floor']:7.0f} {ratio:6.2f}x  {'ok' if ratio <= TARGET else 'OVER'}"
              f"  {ms['first_cpu']:5.0f} {ms['floor_cpu']:5.0f} {ms['first_cpu'] / ms['floor_cpu']:6.2f}x"
              f"   {ms['dependencies']:5.0f} {ms['first'] / ms['dependencies']:5.2f}x"
              f" {ms['dependencies_cpu']:8.0f} {ms['first_cpu'] / ms['dependencies_cpu']:5.2f}x")
    print("  deps: the floor plus what every function needs before its own code: pydantic's BaseModel and "
          "observability.py\n  (Powertools' Logger and Tracer, the X-Ray SDK patching botocore); the handler over "
          "it is billflow's own cost")
    print(f"  (ms; CPU: the child's own process time to the first response, which other load on the machine does "
          f"not inflate; load average at the end: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs)")
    return 0 if worst <= TARGET else 1


if __name__ == "__main__":
    os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
    sys.exit(main())
