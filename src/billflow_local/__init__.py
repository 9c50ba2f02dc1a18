"""billflow on one machine, without Docker or an AWS account: template.yaml provisioned on moto, the
functions run in-process, the HTTP API on localhost. Development tooling: never shipped in a Lambda.

The names below load the runtime (and moto) on first use, so reading a rules file does not."""

from __future__ import annotations

import importlib
from typing import Any

__all__ = ["LocalConfigError", "LocalRuntime", "load_connections", "load_rules"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        return getattr(importlib.import_module("billflow_local.runtime"), name)
    raise AttributeError(f"module 'billflow_local' has no attribute {name!r}")
