"""Reading rule documents from YAML files (one file or a folder, several documents per file), with the line of
every field, so a problem is reported where it is written.

YAML 1.2 booleans: only true/false. YAML 1.1 (PyYAML's default) also reads on/off/yes/no as booleans, which
would turn a trigger's `on: edited` into `True: edited` and a criterion value `no` into False. The CLI and
the local runtime both read rules (and the runtime its connections file) through this module.
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from billflow.logic.validate import validate_rule
from billflow.models.rules import Rule
from billflow.rules.validation import Problem


class Yaml12Loader(yaml.SafeLoader):
    """Safe YAML where only true/false (any case) are booleans."""


Yaml12Loader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:bool"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
Yaml12Loader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)

Lines = dict[tuple[str, ...], int]  # a field's path (keys and list indexes as text) -> its 1-based line


@dataclass(frozen=True)
class LoadedDocument:
    value: Any
    lines: Lines = field(default_factory=dict)


def load_yaml_documents(text: str) -> list[Any]:
    return [d.value for d in load_yaml_with_lines(text)]


def load_yaml_with_lines(text: str) -> list[LoadedDocument]:
    """Every non-empty YAML document of the text, with the line each of its fields starts on."""
    loader = Yaml12Loader(text)
    documents: list[LoadedDocument] = []
    try:
        while loader.check_node():
            node = loader.get_node()
            if node is None:
                continue
            lines: Lines = {}
            _record_lines(node, (), lines)
            value = loader.construct_document(node)
            if value is not None:
                documents.append(LoadedDocument(value, lines))
    finally:
        loader.dispose()
    return documents


def _record_lines(node: yaml.Node, path: tuple[str, ...], lines: Lines) -> None:
    lines.setdefault(path, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            if isinstance(key, yaml.ScalarNode):
                lines[(*path, str(key.value))] = key.start_mark.line + 1
                _record_lines(value, (*path, str(key.value)), lines)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            _record_lines(item, (*path, str(index)), lines)


@dataclass(frozen=True)
class SourcedDocument:
    path: Path
    document: Any
    lines: Lines = field(default_factory=dict)  # relative to the rule document itself
    line: int = 0  # where the rule document starts in its file


class RulesFileError(Exception):
    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


SETTINGS_FILES = ("settings.yaml", "settings.yml")  # a rules folder's tenant settings, not rules (the CLI's)


def rule_files(path: Path) -> list[Path]:
    if path.is_dir():
        return sorted(p for p in path.rglob("*") if p.suffix in (".yaml", ".yml") and p.is_file()
                      and not (p.parent == path and p.name in SETTINGS_FILES))
    if path.is_file():
        return [path]
    raise RulesFileError([f"{path}: no such file or folder"])


def read_documents(path: Path) -> tuple[list[SourcedDocument], list[str]]:
    """Every rule document under path, and the files that are not valid YAML (file:line:column)."""
    found: list[SourcedDocument] = []
    problems: list[str] = []
    for file in rule_files(path):
        try:
            docs = load_yaml_with_lines(file.read_text(encoding="utf-8"))
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f":{mark.line + 1}:{mark.column + 1}" if mark else ""
            problems.append(f"{file}{where}: not valid YAML: {getattr(exc, 'problem', exc)}")
            continue
        for doc in docs:
            prefix: tuple[str, ...] = ()
            items = doc.value
            if isinstance(items, dict) and "rules" in items:
                items, prefix = items["rules"], ("rules",)
            if not isinstance(items, list):
                found.append(SourcedDocument(file, items, doc.lines, doc.lines.get((), 0)))
                continue
            for index, item in enumerate(items):
                here = (*prefix, str(index))
                lines = {key[len(here):]: line for key, line in doc.lines.items() if key[:len(here)] == here}
                found.append(SourcedDocument(file, item, lines, doc.lines.get(here, 0)))
    return found, problems


def as_written(path: str, document: Any) -> str:
    """A checked path as the file spells it: a rule written with top-level `criteria:`/`actions:` (one
    block) is checked as `blocks.0...`."""
    if isinstance(document, dict) and "blocks" not in document and path.startswith("blocks.0"):
        return path.removeprefix("blocks.0").lstrip(".")
    return path


def locate(problem: Problem, sourced: SourcedDocument) -> str:
    """`file:line: rule id: path: message`, the path as written in the file: a rule written with top-level
    `criteria:`/`actions:` (one block) is checked as `blocks.0...`, and reported as the file spells it."""
    parts = tuple(p for p in as_written(problem.field, sourced.document).split(".") if p)
    line = sourced.line
    for end in range(len(parts), -1, -1):  # the field itself, else the nearest written parent
        if parts[:end] in sourced.lines:
            line = sourced.lines[parts[:end]]
            break
    written = Problem(problem.rule, ".".join(parts), problem.message)
    return f"{sourced.path}:{line}: {written}" if line else f"{sourced.path}: {written}"


def every_problem(document: Any, rounds: int = 5) -> tuple[Rule | None, list[Problem]]:
    """validate_rule, and when the document does not fit the model, validate it again without the fields
    that did not fit, so the problems behind them (an unknown comparator beside a misspelt key) are reported
    in the same pass; each path once. The rule is the document's own (None when it does not fit)."""
    rule, problems = validate_rule(document)
    if rule is not None:
        return rule, problems
    found = list(problems)
    trimmed = copy.deepcopy(document)
    for _ in range(rounds):
        if not _drop_fields(trimmed, [as_written(p.field, document) for p in problems]):
            break
        again, problems = validate_rule(trimmed)
        reported = {p.field for p in found}
        found.extend(p for p in problems if not any(_within(p.field, seen) for seen in reported))
        if again is not None:
            break
    return None, found


def _within(path: str, parent: str) -> bool:
    return path == parent or path.startswith(f"{parent}.") or parent.startswith(f"{path}.")


def _drop_fields(document: Any, paths: list[str]) -> bool:
    """Remove each dotted path that exists in the document; True when anything was removed."""
    dropped = False
    for path in paths:
        parts = [p for p in path.split(".") if p]
        node = document
        for part in parts[:-1]:
            node = node.get(part) if isinstance(node, dict) else (
                node[int(part)] if isinstance(node, list) and part.isdigit() and int(part) < len(node) else None)
        last = parts[-1] if parts else None
        if isinstance(node, dict) and last in node:
            del node[last]
            dropped = True
        elif isinstance(node, list) and last is not None and last.isdigit() and int(last) < len(node):
            node[int(last)] = None  # keeps the other items' indexes, so their paths stay as written
            dropped = True
    return dropped


def _line_of(located: str) -> int:
    found = re.match(r"^[^:]*:(\d+): ", located)
    return int(found.group(1)) if found else 0


def load_rules(path: Path, tenant: str) -> list[Rule]:
    """Valid rules for the tenant, or RulesFileError listing every problem with file, line, rule and field."""
    rules: list[Rule] = []
    documents, problems = read_documents(path)
    seen: dict[str, Path] = {}
    for sourced in documents:
        rule, found = every_problem(sourced.document)
        located = sorted(((p, locate(p, sourced)) for p in found), key=lambda pair: _line_of(pair[1]))
        problems.extend(text for _, text in located)
        if rule is None:
            continue
        if rule.id in seen:
            line = sourced.lines.get(("id",), sourced.line)
            problems.append(f"{sourced.path}:{line}: rule {rule.id}: id: already used in {seen[rule.id]}")
        seen[rule.id] = sourced.path
        rules.append(rule.model_copy(update={"tenant": rule.tenant or tenant}))
    if problems:
        raise RulesFileError(problems)
    return rules
