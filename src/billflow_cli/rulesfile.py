"""Reading rule documents from YAML files: one file or a folder, several documents per file."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from billflow.models.rules import Rule
from billflow.rules.validation import validate_rule


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


def read_documents(path: Path) -> list[SourcedDocument]:
    found: list[SourcedDocument] = []
    problems: list[str] = []
    for file in rule_files(path):
        try:
            docs = [d for d in yaml.safe_load_all(file.read_text(encoding="utf-8")) if d is not None]
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f":{mark.line + 1}:{mark.column + 1}" if mark else ""
            problems.append(f"{file}{where}: not valid YAML: {getattr(exc, 'problem', exc)}")
            continue
        for doc in docs:
            items = doc["rules"] if isinstance(doc, dict) and "rules" in doc else doc
            for item in items if isinstance(items, list) else [items]:
                found.append(SourcedDocument(file, item))
    if problems:
        raise RulesFileError(problems)
    return found


def load_rules(path: Path, tenant: str) -> list[Rule]:
    """Valid rules for the tenant, or RulesFileError listing every problem with file, rule and field."""
    rules: list[Rule] = []
    problems: list[str] = []
    seen: dict[str, Path] = {}
    for sourced in read_documents(path):
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
    return yaml.safe_dump_all(documents, sort_keys=False, allow_unicode=True)
