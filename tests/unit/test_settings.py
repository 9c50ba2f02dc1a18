"""One settings model: every variable billflow reads is a Settings field, set by template.yaml for the functions
that read it, and nothing else reads the environment."""

from __future__ import annotations

import ast
import importlib.util
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from billflow.errors import ConfigurationError
from billflow.settings import Settings, requires_settings, variable_names

from billflow_local.template import Template

ROOT = Path(__file__).resolve().parents[2]
# Logger and Tracer read POWERTOOLS_*, pydantic its PYDANTIC_DISABLE_PLUGINS, themselves
READ_BY_POWERTOOLS = ("POWERTOOLS_", "PYDANTIC_")


def template_variables() -> tuple[set[str], dict[str, set[str]]]:
    """Globals' variables, and each function's own (by its CodeUri folder name)."""
    template = Template.load(ROOT / "template.yaml")
    globals_ = set((template.function_globals().get("Environment") or {}).get("Variables") or {})
    functions: dict[str, set[str]] = {}
    for _logical_id, resource in template.iter_functions():
        props = resource.get("Properties") or {}
        folder = Path(str(props["CodeUri"])).name
        functions[folder] = set(((props.get("Environment") or {}).get("Variables")) or {})
    return globals_, functions


def load_handler_module(folder: str) -> ModuleType:
    name = f"billflow_settings_test_{folder}"
    spec = importlib.util.spec_from_file_location(name, ROOT / "functions" / folder / "app.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def test_the_code_reads_exactly_the_variables_the_template_sets() -> None:
    globals_, functions = template_variables()
    set_by_template = {v for v in globals_.union(*functions.values()) if not v.startswith(READ_BY_POWERTOOLS)}
    assert sorted(variable_names() - set_by_template) == []  # read, never set
    assert sorted(set_by_template - variable_names()) == []  # set, never read


@pytest.mark.parametrize("folder", sorted(template_variables()[1]))
def test_each_function_gets_the_variables_its_handler_requires(folder: str) -> None:
    globals_, functions = template_variables()
    handler = load_handler_module(folder).handler
    needed = {str(Settings.model_fields[f].alias) for f in getattr(handler, "required_settings", ())}
    assert sorted(needed - globals_ - functions[folder]) == []


def test_nothing_but_settings_reads_the_environment() -> None:
    readers = []
    for path in [*(ROOT / "layers" / "billflow" / "billflow").rglob("*.py"), *(ROOT / "functions").rglob("*.py")]:
        if path.name == "settings.py" and path.parent.name == "billflow":
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Attribute) and node.attr in ("environ", "getenv") and \
                    isinstance(node.value, ast.Name) and node.value.id == "os":
                readers.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert readers == []


def test_defaults_empty_numbers_and_switches() -> None:
    settings = Settings.from_environment({"MAX_BODY_BYTES": "", "WEBHOOK_RESTRICT_PORTS": "Yes",
                                          "EXPRESSION_TIMEOUT_MS": "250", "UNRELATED": "x"})
    assert settings.max_body_bytes == 256 * 1024 and settings.expression_timeout_ms == 250
    assert settings.webhook_restrict_ports is True and settings.stage == "dev"
    assert Settings.from_environment({"WEBHOOK_RESTRICT_PORTS": "nope"}).webhook_restrict_ports is False


def test_a_malformed_variable_fails_with_its_name() -> None:
    with pytest.raises(ConfigurationError, match="DEFAULT_DAILY_LIMIT"):
        Settings.from_environment({"DEFAULT_DAILY_LIMIT": "five hundred"})
    with pytest.raises(ConfigurationError, match="EXPRESSION_MEMORY_MB"):
        Settings.from_environment({"EXPRESSION_MEMORY_MB": "0"})


def test_a_handler_fails_fast_naming_the_variables_it_lacks(monkeypatch: pytest.MonkeyPatch) -> None:
    """Given a handler that needs two tables, when the function's environment lacks them, then its first call
    fails before doing anything, naming both variables."""
    import billflow.settings

    calls: list[Any] = []

    @requires_settings("rules_table", "state_machine_arn")
    def handler(event: Any, context: Any) -> str:
        calls.append(event)
        return "done"

    monkeypatch.delenv("RULES_TABLE", raising=False)
    monkeypatch.delenv("STATE_MACHINE_ARN", raising=False)
    billflow.settings.get_settings.cache_clear()
    with pytest.raises(ConfigurationError, match="RULES_TABLE, STATE_MACHINE_ARN not set"):
        handler({}, None)
    assert calls == []
    monkeypatch.setenv("RULES_TABLE", "rules")
    monkeypatch.setenv("STATE_MACHINE_ARN", "arn:aws:states:us-east-1:1:stateMachine:m")
    billflow.settings.get_settings.cache_clear()
    assert handler({"x": 1}, None) == "done"
    billflow.settings.get_settings.cache_clear()


def test_the_local_runtime_environment_parses() -> None:
    """The local runtime sets each function's environment from the template: it must parse, with every table."""
    template = Template.load(ROOT / "template.yaml")
    for logical_id, _ in template.iter_functions():
        settings = Settings.from_environment(template.function_environment(logical_id))
        for table in ("rules_table", "records_table", "counters_table", "idempotency_table", "execution_log_table"):
            assert settings.required(table)
