"""Every function is built by functions/Makefile (template: BuildMethod makefile, ContextPath functions), as
`sam build` runs it: the handler ships with bytecode Lambda uses whatever timestamps the zip keeps, so no cold
start compiles it again in the read-only /var/task."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from billflow_local.template import load_template

ROOT = Path(__file__).resolve().parents[2]
FUNCTIONS = ROOT / "functions"
RESOURCES: dict[str, dict[str, Any]] = load_template(ROOT / "template.yaml")["Resources"]
SERVERLESS_FUNCTIONS = {logical_id: resource for logical_id, resource in RESOURCES.items()
                        if resource["Type"] == "AWS::Serverless::Function"}


def test_every_function_is_built_by_the_functions_makefile() -> None:
    # Given the template's functions
    assert len(SERVERLESS_FUNCTIONS) >= 9
    for logical_id, resource in SERVERLESS_FUNCTIONS.items():
        # Then each is built by functions/Makefile, from a folder beside it, with a target the pattern serves
        assert resource.get("Metadata") == {"BuildMethod": "makefile", "ContextPath": "functions"}, logical_id
        code = ROOT / resource["Properties"]["CodeUri"]
        assert code.parent == FUNCTIONS and (code / "app.py").is_file(), logical_id
        assert logical_id.endswith("Function"), logical_id


def build(logical_id: str, artifacts: Path) -> None:
    """What sam build runs: make with the ContextPath's Makefile, in (a copy of) the CodeUri, ARTIFACTS_DIR set."""
    code = ROOT / SERVERLESS_FUNCTIONS[logical_id]["Properties"]["CodeUri"]
    done = subprocess.run(
        ["make", "--silent", "-f", str(FUNCTIONS / "Makefile"), f"build-{logical_id}",
         f"ARTIFACTS_DIR={artifacts}", f"PYTHON={sys.executable}"],
        cwd=code, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


@pytest.mark.parametrize("logical_id", ["AdminFunction", "FilterFunction", "WriteBackFunction"])
def test_a_built_handler_ships_bytecode_valid_for_its_source(logical_id: str, tmp_path: Path) -> None:
    # When the function is built
    build(logical_id, tmp_path)
    source = (tmp_path / "app.py").read_bytes()
    code = ROOT / SERVERLESS_FUNCTIONS[logical_id]["Properties"]["CodeUri"]
    # Then its code is there as written, with its bytecode: hash-based and unchecked (PEP 552 flags 0b01),
    # for this very source
    assert source == (code / "app.py").read_bytes()
    compiled = (tmp_path / "__pycache__" / f"app.{sys.implementation.cache_tag}.pyc").read_bytes()
    assert compiled[:4] == importlib.util.MAGIC_NUMBER
    assert int.from_bytes(compiled[4:8], "little") == 0b01
    assert compiled[8:16] == importlib.util.source_hash(source)
    # and nothing a Lambda does not load: no requirements file (the layer has the packages)
    assert not (tmp_path / "requirements.txt").exists()


def test_the_admin_function_ships_its_console(tmp_path: Path) -> None:
    build("AdminFunction", tmp_path)
    shipped = sorted(p.name for p in (tmp_path / "console").iterdir())
    assert shipped == sorted(p.name for p in (FUNCTIONS / "admin" / "console").iterdir())
    assert "index.html" in shipped

