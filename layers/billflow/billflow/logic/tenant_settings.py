"""Tenant settings for the admin API and the CLI: the stored TenantSettings read and written as the
SettingsDocument admins see (failure digest `time` is the stored `at`; the default daily limit in force is
the stack's when the tenant sets none)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from billflow.errors import InvalidRequest
from billflow.models.admin import FailureDigestSettings, SettingsDocument, UsageAlertSettings
from billflow.models.rules import FailureDigest, TenantSettings, UsageAlert
from billflow.settings import get_settings
from billflow.storage.tenant_settings import TenantSettingsStore


def as_document(settings: TenantSettings, updated_at: str | None) -> SettingsDocument:
    digest = settings.failure_digest
    alert = settings.usage_alert
    return SettingsDocument(
        daily_limits=dict(settings.daily_limits),
        default_daily_limit=get_settings().default_daily_limit if settings.default_daily_limit is None
        else settings.default_daily_limit,
        usage_alert=UsageAlertSettings(threshold_percent=alert.threshold_percent, recipients=list(alert.recipients))
        if alert else None,
        failure_digest=FailureDigestSettings(frequency=digest.frequency, time=digest.at, timezone=digest.timezone,
                                             weekday=digest.weekday, recipients=list(digest.recipients))
        if digest else None,
        default_timezone=settings.default_timezone or "UTC",
        updated_at=updated_at,
    )


def from_document(document: SettingsDocument) -> TenantSettings:
    digest = document.failure_digest
    alert = document.usage_alert
    return TenantSettings(
        daily_limits=dict(document.daily_limits),
        default_daily_limit=document.default_daily_limit,
        usage_alert=UsageAlert(threshold_percent=alert.threshold_percent, recipients=list(alert.recipients))
        if alert else None,
        failure_digest=FailureDigest(frequency=digest.frequency, at=digest.time, timezone=digest.timezone,
                                     weekday=digest.weekday, recipients=list(digest.recipients))
        if digest else None,
        default_timezone=document.default_timezone,
    )


def read_settings(store: TenantSettingsStore, tenant: str) -> SettingsDocument:
    stored = store.read(tenant, consistent=True)
    return as_document(stored.settings, stored.updated_at)


def write_settings(store: TenantSettingsStore, tenant: str, document: SettingsDocument) -> SettingsDocument:
    updated_at = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    settings = from_document(document)
    store.write(tenant, settings, updated_at)
    return as_document(settings, updated_at)


def parse_settings(body: Any) -> SettingsDocument:
    """The document, or InvalidRequest (400) naming each bad field: 'failure_digest.time: ...'."""
    from pydantic import ValidationError  # deferred: only writes validate

    if not isinstance(body, dict):
        raise InvalidRequest("the settings are a JSON object: daily_limits, default_daily_limit, usage_alert, "
                             "failure_digest, default_timezone")
    try:
        return SettingsDocument.model_validate(body)
    except ValidationError as exc:
        problems = problems_of(exc.errors())
        raise InvalidRequest(problems[0], problems=problems,
                             fields=[p.split(":", 1)[0] for p in problems]) from None


def problems_of(errors: Any) -> list[str]:
    """pydantic errors as 'field.path: message', the message without pydantic's 'Value error, '."""
    found = []
    for error in errors:
        loc = [str(p) for p in error.get("loc", ())]
        if loc[:1] == ["body"]:
            loc = loc[1:]
        where = ".".join(loc) or "(document)"
        found.append(f"{where}: {str(error.get('msg', '')).removeprefix('Value error, ')}")
    return found
