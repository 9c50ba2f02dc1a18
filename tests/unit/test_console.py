"""The console's static files (functions/admin/console): small, self-contained, and data only ever as text."""

from __future__ import annotations

import json
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CONSOLE = ROOT / "functions" / "admin" / "console"
SCRIPTS = sorted(CONSOLE.glob("*.js"))


def test_the_console_is_small_and_loads_nothing_from_another_host() -> None:
    total = sum(p.stat().st_size for p in CONSOLE.iterdir())
    assert total < 120_000, f"the console is {total} bytes"
    for path in [CONSOLE / "index.html", CONSOLE / "console.css", *SCRIPTS]:
        text = path.read_text()
        assert not re.search(r"""(?:src|href)\s*=\s*["']https?://""", text), path.name
        assert not re.search(r"""import[^;]*from\s*["']https?://""", text), path.name
        assert "@import" not in text and "url(http" not in text, path.name


def test_no_script_writes_html() -> None:
    """Record names, error messages and every other value reach the page as text nodes."""
    for path in SCRIPTS:
        text = path.read_text()
        for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval(", "new Function"):
            assert sink not in text, f"{path.name} uses {sink}"


def test_every_module_the_page_imports_is_there() -> None:
    for path in [CONSOLE / "index.html", *SCRIPTS]:
        for name in re.findall(r"""(?:from\s+|src=)["'](?:\./|/console/)([\w.-]+\.js)["']""", path.read_text()):
            assert (CONSOLE / name).is_file(), f"{path.name} imports {name}"


def test_the_dry_run_samples_are_the_repository_events() -> None:
    text = (CONSOLE / "samples.js").read_text()
    for file, event in re.findall(r'file: "([\w.-]+)", source: "twenty", event: (\{.*\}) \},', text):
        assert json.loads(event) == json.loads((ROOT / "events" / "twenty" / file).read_text()), file
    assert text.count("file:") == 4
