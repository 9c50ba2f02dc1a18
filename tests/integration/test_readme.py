"""The README's hand-made webhook, run as written against a started runtime with the example connections:
the first thing a newcomer types must be accepted (it was signed with a secret no connection used: 401)."""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from billflow_local.runtime import LocalRuntime

ROOT = Path(__file__).resolve().parents[2]
FENCED_BASH = re.compile(r"```bash\n(.*?)```", re.DOTALL)


def readme_block(after: str) -> str:
    text = (ROOT / "README.md").read_text()
    start = text.index(after)
    found = FENCED_BASH.search(text, start)
    assert found, f"no bash block after {after!r}"
    return found.group(1)


@pytest.fixture(scope="module")
def runtime() -> Iterator[LocalRuntime]:
    with LocalRuntime(ROOT, port=0, rules=ROOT / "examples" / "rules",
                      connections=ROOT / "examples" / "local-connections.yaml", echo=None) as local:
        yield local


def test_the_send_a_webhook_by_hand_block_is_accepted(runtime: LocalRuntime) -> None:
    block = readme_block("Send a webhook by hand")
    assert "127.0.0.1:3000" in block
    script = block.replace("127.0.0.1:3000", f"127.0.0.1:{runtime.server.port}")
    done = subprocess.run(["bash", "-euo", "pipefail", "-c", script], cwd=ROOT, capture_output=True, text=True,
                          timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    status_line = done.stdout.splitlines()[0]
    assert status_line.split()[1] == "202", done.stdout


def test_the_managing_rules_commands_name_a_folder_that_exists() -> None:
    block = readme_block("## Managing rules")
    folders = set(re.findall(r"validate (\S+)", block))
    assert folders and all((ROOT / folder).is_dir() for folder in folders)
    done = subprocess.run([sys.executable, "-m", "billflow_cli.main", "rules", "validate", *folders], cwd=ROOT,
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
