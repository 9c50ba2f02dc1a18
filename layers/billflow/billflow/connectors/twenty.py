"""Twenty as the CRM billflow reads from (lookups) and writes back to, over its REST API.

Records live at {base_url}/rest/{object plural}/{id}: GET answers {"data": {"<singular>": {...}}}, PATCH takes
the fields to change and answers {"data": {"update<Singular>": {...}}}. Calls ask for depth=0 (the record
alone): a lookup fetches exactly the related records it needs, not every relation Twenty would embed.

Connection settings: base_url (https://api.twenty.com or a self-hosted URL), api_key (Bearer), optionally
timeout_seconds and object_plurals ({"invoiceRequest": "invoiceRequests"} for custom objects whose plural
the default rule gets wrong).
"""

from __future__ import annotations

import json
from typing import Any, ClassVar, TypeGuard
from urllib.parse import quote

from billflow.connectors.base import ConnectionReport, CrmConnector
from billflow.connectors.http import DEFAULT_TIMEOUT, HttpResponse, error_message, raise_for, request
from billflow.errors import TargetRejected
from billflow.storage.secrets import Connection

TARGET = "Twenty"

# Twenty's standard objects whose plural is not the singular plus "s".
_PLURALS = {"opportunity": "opportunities", "company": "companies", "person": "people"}


class TwentyConnector(CrmConnector):
    kind: ClassVar[str] = "twenty"

    def get_record(self, connection: Connection, object_name: str, record_id: str) -> dict[str, Any] | None:
        answer = self._call(connection, "GET", object_name, record_id)
        if _is_missing(answer):
            return None
        raise_for(answer, TARGET)
        return _unwrap(answer, object_name)

    def update_record(
        self, connection: Connection, object_name: str, record_id: str, fields: dict[str, Any]
    ) -> None:
        if not fields:
            return  # nothing to write: no call
        answer = self._call(connection, "PATCH", object_name, record_id, json.dumps(fields).encode())
        raise_for(answer, TARGET)

    def lookup(self, connection: Connection, object_name: str, record: dict[str, Any]) -> dict[str, Any]:
        """The record's company and point of contact (an opportunity's companyId and pointOfContactId).

        A missing id means no call; an id Twenty no longer knows (the company was deleted) gives None, so
        the formatter falls back to what the record itself holds.
        """
        company_id = record.get("companyId")
        contact_id = record.get("pointOfContactId")
        return {
            "company": self.get_record(connection, "company", company_id) if _is_id(company_id) else None,
            "contact": self.get_record(connection, "person", contact_id) if _is_id(contact_id) else None,
        }

    def test_connection(self, connection: Connection, tenant: str) -> ConnectionReport:
        """GET /rest/opportunities?limit=1: the key is accepted and the workspace answers."""
        url = f"{_rest_root(connection)}/{_plural(connection, 'opportunity')}?limit=1"
        answer = request("GET", url, headers=self._headers(connection), target=TARGET, raise_for_status=False,
                         timeout=float(connection.settings.get("timeout_seconds") or DEFAULT_TIMEOUT))
        raise_for(answer, TARGET)
        doc = answer.json()
        count = doc.get("totalCount") if isinstance(doc, dict) else None
        return ConnectionReport(
            connection=connection.name, kind=self.kind, checked="GET /rest/opportunities?limit=1",
            notes=[f"{count} opportunities in the workspace"] if isinstance(count, int) else [])

    # --- plumbing --------------------------------------------------------------------------------
    @staticmethod
    def _headers(connection: Connection) -> dict[str, str]:
        return {"Authorization": f"Bearer {connection.require('api_key')}", "Accept": "application/json"}

    def _call(
        self, connection: Connection, method: str, object_name: str, record_id: str, body: bytes | None = None
    ) -> HttpResponse:
        if not _is_id(record_id):
            raise TargetRejected(f"{TARGET}: {object_name} id {record_id!r} is not a record id")
        # depth=0: the record alone, also in a PATCH's answer, which billflow does not read.
        url = f"{_rest_root(connection)}/{_plural(connection, object_name)}/{quote(record_id, safe='')}?depth=0"
        headers = self._headers(connection)
        if body is not None:
            headers["Content-Type"] = "application/json"
        timeout = float(connection.settings.get("timeout_seconds") or DEFAULT_TIMEOUT)
        return request(
            method, url, headers=headers, body=body, timeout=timeout, target=TARGET, raise_for_status=False
        )


def _rest_root(connection: Connection) -> str:
    base = str(connection.require("base_url")).rstrip("/")
    # Accept the REST root itself too (https://crm.example.com/rest), as Twenty's API settings page shows it.
    return base if base.endswith("/rest") else f"{base}/rest"


def _plural(connection: Connection, object_name: str) -> str:
    overrides = connection.settings.get("object_plurals") or {}
    if object_name in overrides:
        return str(overrides[object_name])
    if object_name in _PLURALS:
        return _PLURALS[object_name]
    if object_name in _PLURALS.values():
        return object_name  # already plural
    if object_name.endswith("y") and len(object_name) > 1 and object_name[-2] not in "aeiou":
        return object_name[:-1] + "ies"
    if object_name.endswith(("s", "x", "z", "ch", "sh")):
        return object_name + "es"
    return object_name + "s"


def _is_id(value: object) -> TypeGuard[str]:
    return isinstance(value, str) and bool(value.strip())


def _is_missing(answer: HttpResponse) -> bool:
    # Current Twenty answers 404 for an unknown id; versions before 1.x answered 400 "Record not found".
    if answer.status == 404:
        return True
    return answer.status == 400 and "record not found" in error_message(answer).lower()


def _unwrap(answer: HttpResponse, object_name: str) -> dict[str, Any] | None:
    try:
        doc = answer.json()
    except ValueError:
        raise TargetRejected(f"{TARGET} answered {answer.status} with a body that is not JSON") from None
    data = doc.get("data") if isinstance(doc, dict) else None
    if isinstance(data, dict):
        if object_name not in data and len(data) == 1:
            object_name = next(iter(data))  # a custom object whose singular we were not given exactly
        record = data.get(object_name, False)
        if record is None:
            return None  # {"data": {"company": null}}: nothing with that id
        if isinstance(record, dict):
            return record
    raise TargetRejected(f"{TARGET} answered {answer.status} without data.{object_name}")
