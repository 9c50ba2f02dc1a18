"""Environment, parsed once per cold start into one model. Every variable billflow reads is a field here,
named (alias) as template.yaml's Globals or a function's Environment sets it; tests check both ways."""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Mapping
from functools import lru_cache
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from billflow.errors import ConfigurationError

_TRUE = frozenset({"1", "true", "yes", "on"})
Handler = TypeVar("Handler", bound=Callable[..., Any])


class Settings(BaseModel):
    # defer_build: a function whose path reads no setting (Format) never builds the validator.
    model_config = ConfigDict(frozen=True, extra="ignore", populate_by_name=True, defer_build=True)

    stage: str = Field(default="dev", alias="STAGE")
    # Tables, bus, state machine, topics: empty when the function's template entry does not set them;
    # whatever needs one asks for it with required(), which names the variable.
    rules_table: str = Field(default="", alias="RULES_TABLE")
    counters_table: str = Field(default="", alias="COUNTERS_TABLE")
    idempotency_table: str = Field(default="", alias="IDEMPOTENCY_TABLE")
    execution_log_table: str = Field(default="", alias="EXECUTION_LOG_TABLE")
    records_table: str = Field(default="", alias="RECORDS_TABLE")
    event_bus_name: str = Field(default="", alias="EVENT_BUS_NAME")
    state_machine_arn: str = Field(default="", alias="STATE_MACHINE_ARN")
    failure_topic_arn: str = Field(default="", alias="FAILURE_TOPIC_ARN")
    notification_topic_arn: str = Field(default="", alias="NOTIFICATION_TOPIC_ARN")
    # Email alerts and usage/digest emails: a verified SES identity; without it no email is sent.
    ses_from_address: str = Field(default="", alias="SES_FROM_ADDRESS")
    ses_configuration_set: str = Field(default="", alias="SES_CONFIGURATION_SET")
    secrets_prefix: str = Field(default="billflow/dev", alias="SECRETS_PREFIX")
    secrets_cache_seconds: int = Field(default=300, ge=0, alias="SECRETS_CACHE_SECONDS")
    max_body_bytes: int = Field(default=256 * 1024, alias="MAX_BODY_BYTES")
    signature_tolerance_seconds: int = Field(default=300, alias="SIGNATURE_TOLERANCE_SECONDS")
    default_daily_limit: int = Field(default=500, alias="DEFAULT_DAILY_LIMIT")
    log_retention_days: int = Field(default=90, alias="LOG_RETENTION_DAYS")
    # Rehearse production's port rule (80 and 443 only) on another stage.
    webhook_restrict_ports: bool = Field(default=False, alias="WEBHOOK_RESTRICT_PORTS")
    # Loopback targets (the local runtime's stand-ins): never in production, whatever this says.
    allow_loopback_targets: bool = Field(default=False, alias="ALLOW_LOOPBACK_TARGETS")
    expression_timeout_ms: int = Field(default=1000, gt=0, alias="EXPRESSION_TIMEOUT_MS")
    expression_memory_mb: int = Field(default=128, gt=0, alias="EXPRESSION_MEMORY_MB")
    # Recurring schedules (issue 12): the tenant schedule groups' name prefix, the scheduler function they
    # invoke and the role EventBridge Scheduler invokes it with.
    schedule_group_prefix: str = Field(default="", alias="SCHEDULE_GROUP_PREFIX")
    scheduler_function_arn: str = Field(default="", alias="SCHEDULER_FUNCTION_ARN")
    schedules_role_arn: str = Field(default="", alias="SCHEDULES_ROLE_ARN")
    # The admin API's sweeps by hand invoke the sweep function (issue 11).
    sweep_function_name: str = Field(default="", alias="SWEEP_FUNCTION_NAME")
    # The console's sign-in (Cognito hosted UI, authorization code with PKCE); empty: the local runtime's token.
    console_auth_url: str = Field(default="", alias="CONSOLE_AUTH_URL")
    console_client_id: str = Field(default="", alias="CONSOLE_CLIENT_ID")

    @field_validator("webhook_restrict_ports", "allow_loopback_targets", mode="before")
    @classmethod
    def _switch(cls, value: Any) -> bool:
        """On for 1/true/yes/on (any case), off for anything else: a typo never turns a guard on by accident
        nor fails the function."""
        return value if isinstance(value, bool) else str(value).strip().lower() in _TRUE

    @classmethod
    def from_environment(cls, environ: Mapping[str, str]) -> Settings:
        """The settings the variables give; an empty number means its default. ConfigurationError names the
        variable whose value does not fit."""
        numbers = {f.alias for f in cls.model_fields.values() if f.annotation is int}
        values = {name: value for name, value in environ.items()
                  if name in variable_names() and not (name in numbers and value == "")}
        try:
            return cls.model_validate(values)
        except ValidationError as exc:
            problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())
            raise ConfigurationError(f"environment variable {problems}") from None

    def require(self, *fields: str) -> Settings:
        """These settings, or ConfigurationError naming every variable among them that is empty."""
        missing = [str(type(self).model_fields[f].alias) for f in fields if getattr(self, f) in ("", None)]
        if missing:
            raise ConfigurationError(f"{', '.join(missing)} not set for this function (template.yaml Environment)")
        return self

    def required(self, field: str) -> str:
        """A setting that must not be empty where it is used: its value, or ConfigurationError naming the
        variable (the function's template entry lacks it)."""
        value = getattr(self, field)
        if value in ("", None):
            variable = type(self).model_fields[field].alias
            raise ConfigurationError(f"{variable} is not set for this function (template.yaml Environment)")
        return str(value)


def requires_settings(*fields: str) -> Callable[[Handler], Handler]:
    """A handler that fails fast, naming the variable, when a setting it needs is empty; the settings are
    parsed on its first (cold) call. `required_settings` lists them (tests match them with template.yaml)."""
    unknown = [f for f in fields if f not in Settings.model_fields]
    if unknown:
        raise ValueError(f"unknown settings: {', '.join(unknown)}")

    def decorate(handler: Handler) -> Handler:
        @functools.wraps(handler)
        def checked(event: Any, context: Any) -> Any:
            get_settings().require(*fields)
            return handler(event, context)

        checked.required_settings = fields  # type: ignore[attr-defined]
        return checked  # type: ignore[return-value]

    return decorate


@lru_cache(maxsize=1)
def variable_names() -> frozenset[str]:
    """Every environment variable billflow reads."""
    return frozenset(str(f.alias) for f in Settings.model_fields.values())


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings.from_environment(os.environ)
