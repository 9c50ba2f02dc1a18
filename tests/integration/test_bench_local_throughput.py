"""bench/local_throughput.py at a small scale, as `make bench` runs it at full: the stand-ins and the load's
clients in processes of their own, every deal invoiced once however often it is delivered, the runtime's CPU
split and the other processes' CPU printed. (Its rate target is judged at full scale only.)"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_the_throughput_benchmark_invoices_each_deal_once_with_the_stand_ins_out_of_process() -> None:
    run = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "local_throughput.py"), "--deals", "6", "--copies", "3",
         "--clients", "3", "--singles", "1"],
        capture_output=True, text=True, timeout=180, cwd=ROOT,
    )
    lines = run.stdout.splitlines()
    assert run.returncode in (0, 1), run.stderr[-2000:]  # 1: a figure over its target, never a crash
    load = next(line for line in lines if line.startswith("load: "))
    assert "6 won deals x 3 deliveries" in load and "6 invoices in" in load and load.endswith("webhook errors: 0")
    # 9: the six deals, the two warm-up deals and the one timed alone, each run once
    assert any("executions: 9 (9 succeeded); each deal invoiced once: True" in line for line in lines), run.stdout
    assert any(line.startswith("  outside the runtime's process (not in its GIL): stand-ins ") for line in lines)
    assert any(line.strip().startswith("dynamodb ") for line in lines)
