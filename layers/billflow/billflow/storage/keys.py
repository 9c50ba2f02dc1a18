"""Every table key billflow writes, in one place: each starts with the tenant, so tenants never mix."""

from __future__ import annotations

import hashlib

from billflow.errors import InvalidRequest

# DynamoDB refuses a sort key over 1,024 bytes and a partition key over 2,048; a record's key is a
# partition key (records, the log's by-record index) and a prefix of others (due items add a rule id):
# 1,024 bytes for the whole record key leaves room for every suffix billflow adds.
MAX_RECORD_KEY_BYTES = 1024


def rules_pk(tenant: str, source: str, object_name: str) -> str:
    return f"{tenant}#{source}#{object_name}"


def rule_sk(rule_id: str) -> str:
    return f"rule#{rule_id}"


RULES_VERSION_SK = "rules-version"  # in each rules partition: a token changed by every rule write


def settings_pk(tenant: str) -> str:
    return f"{tenant}#_settings"


SETTINGS_SK = "settings"


def record_pk(tenant: str, source: str, object_name: str, record_id: str) -> str:
    return f"{tenant}#{source}#{object_name}#{record_id}"


def check_record_key(tenant: str, source: str, object_name: str, record_id: str) -> None:
    """Refuse, at ingest, a record billflow could not key, rather than accept it and lose it later."""
    size = len(record_pk(tenant, source, object_name, record_id).encode())
    if size > MAX_RECORD_KEY_BYTES:
        raise InvalidRequest(
            f"the record's object name and id take {size} bytes; billflow keys records by them and accepts at "
            f"most {MAX_RECORD_KEY_BYTES} bytes", object_bytes=len(object_name.encode()),
            record_id_bytes=len(record_id.encode()))


def counter_pk(tenant: str, action_type: str, day: str) -> str:
    return f"{tenant}#{action_type}#{day}"


def log_rule_key(tenant: str, rule_id: str) -> str:
    return f"{tenant}#{rule_id}"


def log_status_key(tenant: str, status: str) -> str:
    return f"{tenant}#{status}"


def execution_key(tenant: str, rule_id: str, record_key: str, transition: str) -> str:
    """The identity of one transition for one rule: names the execution and every idempotency key."""
    digest = hashlib.sha256("\x1f".join([tenant, rule_id, record_key, transition]).encode()).hexdigest()
    return digest[:40]


def execution_name(rule_id: str, key: str, attempt: int = 0) -> str:
    """Step Functions names: at most 80 of [A-Za-z0-9-_]; a duplicate is refused by Step Functions itself."""
    suffix = f"-r{attempt}" if attempt else ""
    return f"{rule_id[:30]}-{key}{suffix}"


# --- reconciliation sweep (issue 11) -------------------------------------------------------------------
SWEEP_SK = "sweep"  # the rules table's marker of a rule with a sweep (found through sk-index)


def sweep_marker_pk(tenant: str, rule_id: str) -> str:
    return f"{tenant}#_sweep#{rule_id}"


def parse_sweep_marker(pk: str) -> tuple[str, str]:
    tenant, _, rule_id = pk.partition("#_sweep#")
    return tenant, rule_id


def sweep_checkpoint_pk(tenant: str, rule_id: str) -> str:
    return f"{tenant}#sweep#{rule_id}"
