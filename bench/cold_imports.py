"""Cold import time of every function's handler module beside the floor (boto3 + Powertools alone).

Each measurement is a fresh interpreter importing the module, timed inside the process (interpreter start
excluded); the handler and the floor are interleaved and repeated, and the medians compared.
Target: every function within 1.3x the floor.
"""

from __future__ import annotations

import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FUNCTIONS = sorted(p.name for p in (ROOT / "functions").iterdir() if (p / "app.py").is_file())
FLOOR = "import boto3, aws_lambda_powertools"
TARGET = 1.3
RUNS = 9


def timed(statement: str, path: Path | None = None) -> float:
    setup = f"import sys; sys.path.insert(0, {str(path)!r}); " if path else ""
    code = f"{setup}import time; t = time.perf_counter(); {statement}; print(time.perf_counter() - t)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={"PATH": "", "POWERTOOLS_SERVICE_NAME": "billflow", "AWS_DEFAULT_REGION": "us-east-1"})
    return float(out.stdout.strip())


def main() -> int:
    floor: list[float] = []
    times: dict[str, list[float]] = {name: [] for name in FUNCTIONS}
    for _ in range(RUNS):
        floor.append(timed(FLOOR))
        for name in FUNCTIONS:
            times[name].append(timed("import app", ROOT / "functions" / name))
    floor_ms = statistics.median(floor) * 1000
    print(f"cold imports (median of {RUNS}; floor = `{FLOOR}` = {floor_ms:.0f} ms; target <= {TARGET}x)")
    worst = 0.0
    for name in FUNCTIONS:
        ms = statistics.median(times[name]) * 1000
        ratio = ms / floor_ms
        worst = max(worst, ratio)
        print(f"  {name:<10} {ms:6.0f} ms   {ratio:4.2f}x floor  {'ok' if ratio <= TARGET else 'OVER'}")
    return 0 if worst <= TARGET else 1


if __name__ == "__main__":
    sys.exit(main())
