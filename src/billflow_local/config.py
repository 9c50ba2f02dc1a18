"""Configuration: the connections file and the rules files the local runtime starts with, checked up front."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from billflow.connectors import known_connectors
from billflow.models.rules import TenantSettings
from billflow.sources import known_sources
from pydantic import ValidationError

from billflow_local.rulesfile import RulesFileError, Yaml12Loader
from billflow_local.rulesfile import load_rules as read_rules

TENANT_ID = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")
_ENV_REFERENCE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


class LocalConfigError(Exception):
    """A rules or connections file is not usable: every problem with file, field and what to fix."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems



@dataclass
class TenantConfig:
    """What the connections file gives one tenant. Secret values: never printed."""

    sources: dict[str, dict[str, Any]] = field(default_factory=dict)  # source -> {"signing_secret": ...}
    connections: dict[str, dict[str, Any]] = field(default_factory=dict)  # name -> {"type": ..., ...}
    settings: Any = None  # billflow.models.rules.TenantSettings, when given

    def __repr__(self) -> str:
        return f"TenantConfig(sources={sorted(self.sources)}, connections={sorted(self.connections)})"


def load_connections(spec: Mapping[str, Any] | Path | str | None) -> dict[str, TenantConfig]:
    """Parse and check a connections document (a YAML file or an equivalent dict), per tenant.

    Shape: {tenants: {<tenant>: {sources: {<source>: {signing_secret}}, connections: {<name>: {type, ...}},
    settings: {daily_limits: {<action type>: n}}}}}. `${NAME}` in a string is replaced by the environment
    variable NAME, so keys can stay out of the file.
    """
    if spec is None:
        return {}
    where = "connections"
    if isinstance(spec, (str, Path)):
        path = Path(spec)
        where = str(path)
        if not path.is_file():
            raise LocalConfigError([f"{path}: no such file; give a YAML file with a top-level 'tenants:' key"])
        try:
            doc = yaml.load(path.read_text(encoding="utf-8"), Loader=Yaml12Loader)  # noqa: S506
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            at = f":{mark.line + 1}:{mark.column + 1}" if mark else ""
            raise LocalConfigError([f"{path}{at}: not valid YAML: {getattr(exc, 'problem', exc)}"]) from None
    else:
        doc = spec
    problems: list[str] = []
    tenants = doc.get("tenants") if isinstance(doc, Mapping) else None
    if not isinstance(tenants, Mapping):
        raise LocalConfigError([f"{where}: tenants: missing; the file is a mapping "
                                "{tenants: {<tenant>: {sources: ..., connections: ...}}}"])

    result: dict[str, TenantConfig] = {}
    for tenant, body in tenants.items():
        at = f"{where}: tenants.{tenant}"
        if not isinstance(tenant, str) or not TENANT_ID.match(tenant):
            problems.append(f"{at}: tenant ids are lowercase letters, digits and dashes (as in the URL)")
            continue
        if not isinstance(body, Mapping):
            problems.append(f"{at}: expected a mapping with sources, connections and settings")
            continue
        unknown = sorted(set(body) - {"sources", "connections", "settings"})
        if unknown:
            problems.append(f"{at}: unknown key(s) {', '.join(unknown)}; use sources, connections, settings")
        config = TenantConfig()
        for source, secret in (body.get("sources") or {}).items():
            here = f"{at}.sources.{source}"
            value = _expand(secret, here, problems)
            generic = isinstance(value, Mapping) and "mapping" in value  # issue 11: a generic source
            if source not in known_sources() and not generic:
                problems.append(f"{here}: unknown source; known: {', '.join(known_sources())}, or a generic "
                                "source (a webhook scheme and a mapping beside its signing_secret)")
                continue
            if generic:
                from billflow.sources.generic import config_problems

                problems.extend(f"{here}.{p}" for p in config_problems(value))
            if not isinstance(value, Mapping) or not isinstance(value.get("signing_secret"), str) \
                    or not value["signing_secret"]:
                problems.append(f"{here}.signing_secret: missing; give the secret the CRM signs webhooks with")
                continue
            config.sources[source] = dict(value)
        for name, connection in (body.get("connections") or {}).items():
            here = f"{at}.connections.{name}"
            value = _expand(connection, here, problems)
            if not isinstance(value, Mapping):
                problems.append(f"{here}: expected a mapping with a type and the system's settings")
                continue
            kind = value.get("type")
            if not isinstance(kind, str) or not kind:
                problems.append(f"{here}.type: missing; one of {', '.join(known_connectors())}")
                continue
            if kind not in known_connectors():
                problems.append(f"{here}.type: unknown type {kind!r}; known: {', '.join(known_connectors())}")
                continue
            if kind == "generic":  # issue 11: a bad call or mapping is found at start, not at the first deal
                from billflow.connectors.generic_crm import api_problems

                problems.extend(f"{here}.{p}" for p in api_problems(value))
            config.connections[str(name)] = dict(value)
        if body.get("settings") is not None:
            try:
                config.settings = TenantSettings.model_validate(body["settings"])
            except ValidationError as exc:
                for error in exc.errors():
                    loc = ".".join(str(p) for p in error["loc"])
                    problems.append(f"{at}.settings.{loc}: {error['msg']}")
        result[tenant] = config
    if problems:
        raise LocalConfigError(problems)
    return result


def _expand(value: Any, where: str, problems: list[str]) -> Any:
    if isinstance(value, Mapping):
        return {k: _expand(v, f"{where}.{k}", problems) for k, v in value.items()}
    if isinstance(value, list):
        return [_expand(v, f"{where}.{i}", problems) for i, v in enumerate(value)]
    if not isinstance(value, str):
        return value

    def replace(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in os.environ:
            problems.append(f"{where}: environment variable {name} is not set; export it or write the value")
            return ""
        return os.environ[name]

    return _ENV_REFERENCE.sub(replace, value)


def load_rules(path: Path | str, tenant: str) -> list[Any]:
    """Rule documents from a YAML file or folder (the CLI's reader), each for its tenant or `tenant`."""
    try:
        return list(read_rules(Path(path), tenant))
    except RulesFileError as exc:
        raise LocalConfigError(list(exc.problems)) from None

