"""Reading rule documents from YAML files: one file or a folder, several documents per file.

YAML 1.2 booleans: only true/false. YAML 1.1 (PyYAML's default) also reads on/off/yes/no as booleans, which
would turn a trigger's `on: edited` into `True: edited` and a criterion value `no` into False.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from billflow.logic.validate import validate_rule
from billflow.models.rules import Rule


class RulesLoader(yaml.SafeLoader):
    """Safe YAML where only true/false (any case) are booleans."""


RulesLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:bool"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
RulesLoader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)


def load_yaml_documents(text: str) -> list[Any]:
    return [d for d in yaml.load_all(text, Loader=RulesLoader) if d is not None]  # RulesLoader is a SafeLoader


@dataclass(frozen=True)
class SourcedDocument:
    path: Path
    document: Any


class RulesFileError(Exception):
    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


def rule_files(path: Path) -> list[Path]:
    if path.is_dir():
        return sorted(p for p in path.rglob("*") if p.suffix in (".yaml", ".yml") and p.is_file())
    if path.is_file():
        return [path]
    raise RulesFileError([f"{path}: no such file or folder"])


def read_documents(path: Path) -> tuple[list[SourcedDocument], list[str]]:
    """Every rule document under path, and the files that are not valid YAML (file:line:column)."""
    found: list[SourcedDocument] = []
    problems: list[str] = []
    for file in rule_files(path):
        try:
            docs = load_yaml_documents(file.read_text(encoding="utf-8"))
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f":{mark.line + 1}:{mark.column + 1}" if mark else ""
            problems.append(f"{file}{where}: not valid YAML: {getattr(exc, 'problem', exc)}")
            continue
        for doc in docs:
            items = doc["rules"] if isinstance(doc, dict) and "rules" in doc else doc
            for item in items if isinstance(items, list) else [items]:
                found.append(SourcedDocument(file, item))
    return found, problems


def load_rules(path: Path, tenant: str) -> list[Rule]:
    """Valid rules for the tenant, or RulesFileError listing every problem with file, rule and field."""
    rules: list[Rule] = []
    documents, problems = read_documents(path)
    seen: dict[str, Path] = {}
    for sourced in documents:
        rule, found = validate_rule(sourced.document)
        problems.extend(f"{sourced.path}: {p}" for p in found)
        if rule is None:
            continue
        if rule.id in seen:
            problems.append(f"{sourced.path}: rule {rule.id}: id: already used in {seen[rule.id]}")
        seen[rule.id] = sourced.path
        rules.append(rule.model_copy(update={"tenant": rule.tenant or tenant}))
    if problems:
        raise RulesFileError(problems)
    return rules


def dump_rules(documents: list[dict[str, Any]]) -> str:
    """YAML documents separated by ---, fields in the model's order; strings that look like YAML 1.1
    booleans (on, no...) are quoted, so any YAML reader reads them back as strings."""
    return yaml.safe_dump_all(documents, sort_keys=False, allow_unicode=True, width=110)
