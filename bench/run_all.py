"""`make bench`: every benchmark, each figure printed beside the baseline measured in the same run."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
BENCHMARKS = ["cold_imports.py", "cold_start.py", "layer_bytecode.py", "ingest_latency.py", "local_throughput.py",
              "filter_scaling.py", "cost_model.py", "scaling_model.py", "artifact_sizes.py"]


def main() -> int:
    failed = []
    for script in BENCHMARKS:
        print(f"\n=== {script} " + "=" * (60 - len(script)), flush=True)
        if subprocess.run([sys.executable, str(HERE / script)], cwd=HERE.parent).returncode:
            failed.append(script)
    print(f"\n{len(BENCHMARKS) - len(failed)} of {len(BENCHMARKS)} benchmarks met their targets"
          + (f"; over target: {', '.join(failed)}" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
