"""A minimal Pipedrive company account over Pipedrive's API v2, for the generic source's worked example.

What it serves, in the shapes Pipedrive documents for API v2 (https://developers.pipedrive.com/docs/api/v1
-> "API v2"; every answer is {"success": true, "data": ...}; errors {"success": false, "error": ...}):

- GET   /api/v2/deals/{id}, /api/v2/persons/{id}, /api/v2/organizations/{id}
- PATCH /api/v2/deals/{id} (the fields to change; custom fields under `custom_fields` by their 40-hex key)
- GET   /api/v2/deals?updated_since=&updated_until=&status=&limit=&cursor= (cursor pagination,
        additional_data.next_cursor; limit at most 500)

Authentication is the `x-api-token` header (or the api_token query parameter), as Pipedrive's v2 accepts;
anything else is 401. Requests Pipedrive would refuse (a deal field it does not have, a custom field key
the account does not define, a limit over 500, a time that is not RFC 3339) are answered 400 and recorded in
`violations`. There is no published OpenAPI document for these operations in this repository: the checks
follow the reference pages, field by field.

    with FakePipedrive(custom_fields=["c1a2...f90"]) as pipedrive:
        pipedrive.add_organization(312, "Acme GmbH", country="Germany")
        pipedrive.add_deal(4521, "Acme rollout", status="won", org_id=312, ...)
        pipedrive.connection_settings()   # the generic connection of the worked example, pointed here
"""

from __future__ import annotations

import base64
import copy
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from billflow_local.standins.base import FakeServer, Request, Response

DEFAULT_API_TOKEN = "pipedrive-test-api-token"  # noqa: S105 - the stand-in's own test token
EXAMPLE_CONNECTIONS = Path(__file__).resolve().parents[3] / "examples" / "pipedrive" / "connections.yaml"
MAX_LIMIT = 500
# Deal fields API v2 takes in a PATCH (the reference's request body), custom fields aside.
DEAL_FIELDS = frozenset({
    "title", "owner_id", "person_id", "org_id", "pipeline_id", "stage_id", "value", "currency", "add_time",
    "update_time", "stage_change_time", "is_deleted", "status", "probability", "lost_reason", "visible_to",
    "close_time", "won_time", "lost_time", "expected_close_date", "label_ids", "custom_fields",
})
_NOT_FOUND = "{} not found"


def pipedrive_time(when: datetime | None = None) -> str:
    """A time as API v2 writes it: RFC 3339, seconds, Z."""
    return (when or datetime.now(UTC)).astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class FakePipedrive(FakeServer):
    name = "pipedrive"

    def __init__(self, *, api_token: str = DEFAULT_API_TOKEN, custom_fields: Sequence[str] = ()) -> None:
        super().__init__()
        self.api_token = api_token
        self.custom_fields = frozenset(custom_fields)
        self.deals: dict[int, dict[str, Any]] = {}
        self.persons: dict[int, dict[str, Any]] = {}
        self.organizations: dict[int, dict[str, Any]] = {}
        self.patches: list[tuple[int, dict[str, Any]]] = []
        self.route("GET", r"/api/v2/deals", self._authorised(self._list_deals))
        self.route("GET", r"/api/v2/deals/(\d+)", self._authorised(lambda r, i: self._get(self.deals, "Deal", i)))
        self.route("GET", r"/api/v2/persons/(\d+)",
                   self._authorised(lambda r, i: self._get(self.persons, "Person", i)))
        self.route("GET", r"/api/v2/organizations/(\d+)",
                   self._authorised(lambda r, i: self._get(self.organizations, "Organization", i)))
        self.route("PATCH", r"/api/v2/deals/(\d+)", self._authorised(self._patch_deal))

    # --- seeding ---------------------------------------------------------------------------------
    def add_deal(self, id: int, title: str, **fields: Any) -> dict[str, Any]:
        now = pipedrive_time()
        deal = {
            "id": id, "title": title, "creator_user_id": 18487521, "owner_id": 18487521, "value": 0,
            "currency": "USD", "status": "open", "stage_id": 1, "pipeline_id": 1, "person_id": None,
            "org_id": None, "add_time": now, "update_time": now, "stage_change_time": None, "won_time": None,
            "lost_time": None, "close_time": None, "expected_close_date": None, "probability": None,
            "lost_reason": None, "visible_to": 3, "is_deleted": False, "label_ids": [],
            "custom_fields": dict.fromkeys(sorted(self.custom_fields)),
        }
        deal.update(copy.deepcopy(fields))
        with self._lock:
            self.deals[id] = deal
        return copy.deepcopy(deal)

    def add_person(self, id: int, name: str, email: str = "", org_id: int | None = None) -> dict[str, Any]:
        first, _, last = name.partition(" ")
        person = {
            "id": id, "name": name, "first_name": first, "last_name": last, "owner_id": 18487521,
            "org_id": org_id, "add_time": pipedrive_time(), "update_time": pipedrive_time(), "is_deleted": False,
            "visible_to": 3, "emails": [{"value": email, "primary": True, "label": "work"}] if email else [],
            "phones": [], "label_ids": [], "custom_fields": {},
        }
        with self._lock:
            self.persons[id] = person
        return copy.deepcopy(person)

    def add_organization(self, id: int, name: str, *, street: str = "", city: str = "", postal_code: str = "",
                         country: str = "") -> dict[str, Any]:
        formatted = ", ".join(p for p in (street, f"{postal_code} {city}".strip(), country) if p)
        organization = {
            "id": id, "name": name, "owner_id": 18487521, "add_time": pipedrive_time(),
            "update_time": pipedrive_time(), "is_deleted": False, "visible_to": 3, "label_ids": [],
            "address": {"value": formatted, "country": country, "admin_area_level_1": None,
                        "admin_area_level_2": None, "locality": city, "sublocality": None, "route": street,
                        "street_number": None, "subpremise": None, "postal_code": postal_code,
                        "formatted_address": formatted},
            "custom_fields": {},
        }
        with self._lock:
            self.organizations[id] = organization
        return copy.deepcopy(organization)

    def connection_settings(self, **overrides: Any) -> dict[str, Any]:
        """The worked example's generic connection (examples/pipedrive/connections.yaml), pointed here."""
        import yaml  # deferred: only the worked example's tests read it

        document = yaml.safe_load(EXAMPLE_CONNECTIONS.read_text())
        settings: dict[str, Any] = dict(document["tenants"]["demo"]["connections"]["pipedrive"])
        settings.update({"base_url": self.url, "api_token": self.api_token, **overrides})
        return settings

    @staticmethod
    def source_settings(signing_secret: str) -> dict[str, Any]:
        """The worked example's source (webhook scheme and mappings) with this signing secret ("user:password")."""
        import yaml  # deferred: only the worked example's tests read it

        document = yaml.safe_load(EXAMPLE_CONNECTIONS.read_text())
        settings: dict[str, Any] = dict(document["tenants"]["demo"]["sources"]["pipedrive"])
        settings["signing_secret"] = signing_secret
        return settings

    # --- handlers --------------------------------------------------------------------------------
    def _authorised(self, handler: Any) -> Any:
        def checked(req: Request, *groups: str) -> Response:
            token = req.headers.get("x-api-token") or (req.query.get("api_token") or [""])[0]
            if token != self.api_token:
                return Response(401, {"success": False, "error": "unauthorized access", "errorCode": 401,
                                      "error_info": "Please check developers.pipedrive.com for more information "
                                                    "about Pipedrive API."})
            return handler(req, *groups)  # type: ignore[no-any-return]

        return checked

    def _get(self, table: dict[int, dict[str, Any]], kind: str, record_id: str) -> Response:
        record = table.get(int(record_id))
        if record is None:
            return Response(404, {"success": False, "error": _NOT_FOUND.format(kind), "data": None})
        return Response(200, {"success": True, "data": copy.deepcopy(record)})

    def _patch_deal(self, req: Request, record_id: str) -> Response:
        deal = self.deals.get(int(record_id))
        if deal is None:
            return Response(404, {"success": False, "error": "Deal not found", "data": None})
        body = req.json()
        if not isinstance(body, dict) or not body:
            return self._bad("PATCH /api/v2/deals: the body is a JSON object of the fields to change")
        unknown = sorted(set(body) - DEAL_FIELDS)
        if unknown:
            return self._bad(f"PATCH /api/v2/deals: unknown field(s) {', '.join(unknown)}")
        custom = body.get("custom_fields") or {}
        if not isinstance(custom, dict) or set(custom) - self.custom_fields:
            unknown = sorted(set(custom) - self.custom_fields) if isinstance(custom, dict) else ["(not an object)"]
            return self._bad(f"PATCH /api/v2/deals: unknown custom field key(s) {unknown}")
        self.patches.append((int(record_id), copy.deepcopy(body)))
        deal.update({k: v for k, v in body.items() if k != "custom_fields"})
        deal["custom_fields"] = {**deal.get("custom_fields", {}), **custom}
        deal["update_time"] = pipedrive_time()
        return Response(200, {"success": True, "data": copy.deepcopy(deal)})

    def _list_deals(self, req: Request) -> Response:
        query = {k: v[0] for k, v in req.query.items()}
        try:
            limit = int(query.get("limit", "100"))
            # A parameter given empty is not an RFC 3339 time either (billflow leaves unused ones out).
            since = _rfc3339(query["updated_since"]) if "updated_since" in query else None
            until = _rfc3339(query["updated_until"]) if "updated_until" in query else None
            start = int(base64.b64decode(query["cursor"]).decode()) if query.get("cursor") else 0
        except ValueError as exc:
            return self._bad(f"GET /api/v2/deals: {exc}")
        if not 1 <= limit <= MAX_LIMIT:
            return self._bad(f"GET /api/v2/deals: limit is 1 to {MAX_LIMIT}")
        status = query.get("status")
        deals = sorted(self.deals.values(), key=lambda d: d["id"])
        chosen = [d for d in deals if not d["is_deleted"] and (status is None or d["status"] == status)
                  and (since is None or _rfc3339(d["update_time"]) >= since)
                  and (until is None or _rfc3339(d["update_time"]) < until)]
        page = chosen[start:start + limit]
        more = start + limit < len(chosen)
        cursor = base64.b64encode(str(start + limit).encode()).decode() if more else None
        return Response(200, {"success": True, "data": copy.deepcopy(page), "additional_data": {"next_cursor": cursor}})

    def _bad(self, message: str) -> Response:
        self.violate(message)
        return Response(400, {"success": False, "error": message, "errorCode": 400})


def _rfc3339(value: str) -> datetime:
    """A time as Pipedrive takes it; a parameter given empty is not one either."""
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"{value!r} is not an RFC 3339 time") from None
    if parsed.tzinfo is None:
        raise ValueError(f"{value!r} has no time zone (RFC 3339 needs one)")
    return parsed
