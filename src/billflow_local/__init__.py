"""billflow on one machine, without Docker or an AWS account: template.yaml provisioned on moto, the
functions run in-process, the HTTP API on localhost. Development tooling: never shipped in a Lambda."""

from billflow_local.runtime import LocalConfigError, LocalRuntime, load_connections, load_rules

__all__ = ["LocalConfigError", "LocalRuntime", "load_connections", "load_rules"]
