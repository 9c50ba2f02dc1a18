"""What the builds save every cold start: each function's handler imported from its code and the layer as SAM's
python3.11 builder ships them, beside the function as functions/Makefile ships it and the layer as
layers/billflow/Makefile ships it, in the same run.

    .venv/bin/python bench/layer_bytecode.py [--runs 5]

Lambda mounts a layer read-only at /opt, so Python can write no bytecode there: every module of a layer
shipped without .pyc files is compiled again in every new execution environment. SAM's python builder
extracts wheels and copies sources without bytecode (and leaves *.pyc out on purpose); it also ships the
botocore that aws-xray-sdk requires, which shadows the runtime's precompiled one (/opt/python comes first on
sys.path). The layer's Makefile ships bytecode and leaves boto3 and its dependencies to the runtime. The same
holds for the function's own code in /var/task: the python builder copies app.py alone, functions/Makefile
ships it compiled.

Both layers are built here for this machine (`PLATFORM=host`: the deployed one has arm64 wheels, which this
machine cannot load; the Python files, and so the compiling, are the same). The runtime's own packages
(boto3, botocore and their dependencies, precompiled in /var/runtime) are this venv's. Each figure is a
fresh interpreter with no site-packages of its own (`-S`), sys.path as Lambda sets it (the function's code,
the layer, the runtime), PYTHONDONTWRITEBYTECODE (a read-only /opt), timing `import app` (the handler
module; what its first event imports lazily would be compiled too, so this understates the saving).
The floor beside them: `import boto3, aws_lambda_powertools` with the same layer.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import sysconfig
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LAYER_SOURCE = ROOT / "layers" / "billflow"
FUNCTIONS_SOURCE = ROOT / "functions"
FUNCTIONS = sorted(p.name for p in (ROOT / "functions").iterdir() if (p / "app.py").is_file())
RUNTIME = Path(sysconfig.get_paths()["purelib"])  # boto3 and botocore, compiled by pip as Lambda's are
FLOOR = "import boto3, aws_lambda_powertools"
ENV = {"PATH": "", "PYTHONDONTWRITEBYTECODE": "1", "POWERTOOLS_SERVICE_NAME": "billflow",
       "PYDANTIC_DISABLE_PLUGINS": "__all__", "AWS_DEFAULT_REGION": "us-east-1"}


def build_as_sam_does(target: Path) -> None:
    """BuildMethod python3.11: the requirements' wheels extracted (no bytecode) and the sources copied."""
    run([sys.executable, "-m", "pip", "install", "--quiet", "--no-compile", "--only-binary=:all:",
         "--target", str(target), "-r", str(LAYER_SOURCE / "requirements.txt")])
    shutil.copytree(LAYER_SOURCE / "billflow", target / "billflow", ignore=shutil.ignore_patterns("__pycache__"))


def build_with_makefile(artifacts: Path) -> None:
    run(["make", "--silent", "--no-print-directory", "-C", str(LAYER_SOURCE), "build-BillflowLayer",
         f"ARTIFACTS_DIR={artifacts}", "PLATFORM=host", f"PYTHON={sys.executable}"])


def function_as_sam_does(name: str, target: Path) -> None:
    """BuildMethod python3.11 for a function without requirements: its sources copied, no bytecode."""
    shutil.copytree(FUNCTIONS_SOURCE / name, target, ignore=shutil.ignore_patterns("__pycache__"))


def function_with_makefile(name: str, artifacts: Path) -> None:
    """build-<LogicalId> as sam build runs it: in the function's code (sam: a copy of it), ARTIFACTS_DIR set."""
    run(["make", "--silent", "--no-print-directory", "-C", str(FUNCTIONS_SOURCE / name), "-f",
         str(FUNCTIONS_SOURCE / "Makefile"), f"build-{name.capitalize()}Function", f"ARTIFACTS_DIR={artifacts}",
         f"PYTHON={sys.executable}"])


def run(command: list[str]) -> None:
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"{' '.join(command[:4])} ...: {done.stderr.strip()}")


def timed(statement: str, path: list[Path]) -> float:
    code = (f"import sys; sys.path[:0] = {[str(p) for p in path]!r}; import time; t = time.perf_counter(); "
            f"{statement}; print(time.perf_counter() - t)")
    out = subprocess.run([sys.executable, "-S", "-c", code], capture_output=True, text=True, env=ENV)
    if out.returncode:
        raise SystemExit(f"{statement} with {path[0]}: {out.stderr.strip().splitlines()[-1]}")
    return float(out.stdout.strip()) * 1000


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=5, help="interleaved runs per figure (median)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        sam_layer, make_layer = Path(scratch, "sam", "python"), Path(scratch, "make")
        build_as_sam_does(sam_layer)
        build_with_makefile(make_layer)
        layers = {"sam": sam_layer, "make": make_layer / "python"}
        code = {(name, "sam"): Path(scratch, "sam-functions", name) for name in FUNCTIONS}
        code.update({(name, "make"): Path(scratch, "make-functions", name) for name in FUNCTIONS})
        for name in FUNCTIONS:
            function_as_sam_does(name, code[(name, "sam")])
            function_with_makefile(name, code[(name, "make")])
        shipped = {name: sum(1 for _ in layer.rglob("*.pyc")) for name, layer in layers.items()}
        handlers = {build: sum(1 for (_, b), path in code.items() if b == build and any(path.rglob("app.*.pyc")))
                    for build in layers}
        botocore = {name: (layer / "botocore").is_dir() for name, layer in layers.items()}
        times: dict[tuple[str, str], list[float]] = {}
        for _ in range(args.runs):  # interleaved: a noisy moment weighs on both layers alike
            for name in ["floor", *FUNCTIONS]:
                for layer_name, layer in layers.items():
                    task = [] if name == "floor" else [code[(name, layer_name)]]  # /var/task
                    statement = FLOOR if name == "floor" else "import app"
                    times.setdefault((name, layer_name), []).append(timed(statement, [*task, layer, RUNTIME]))
    median = {key: statistics.median(values) for key, values in times.items()}
    print(f"layer bytecode: import of each handler module, median of {args.runs} (ms; a fresh interpreter, "
          "read-only layer)")
    print(f"  sam's python3.11 builder: {shipped['sam']} .pyc, botocore in the layer: {botocore['sam']}; "
          f"handlers compiled: {handlers['sam']} of {len(FUNCTIONS)}")
    print(f"  the Makefiles: {shipped['make']} .pyc, botocore in the layer: {botocore['make']}; "
          f"handlers compiled: {handlers['make']} of {len(FUNCTIONS)}")
    print(f"  {'function':<12}{'sam build':>10}{'Makefiles':>10}{'saved':>8}{'ratio':>8}")
    for name in ["floor", *FUNCTIONS]:
        before, after = median[(name, "sam")], median[(name, "make")]
        print(f"  {name:<12}{before:>10.0f}{after:>10.0f}{before - after:>8.0f}{before / after:>7.2f}x")
    # What the Makefiles are for: fails when what they build ships no bytecode, or the layer its own botocore.
    return 0 if shipped["make"] and handlers["make"] == len(FUNCTIONS) and not botocore["make"] else 1


if __name__ == "__main__":
    sys.exit(main())
