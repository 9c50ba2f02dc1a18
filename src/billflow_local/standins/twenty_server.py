"""A fake Twenty workspace: companies, people and opportunities in memory, served over Twenty's REST API.

Every request is checked against the trimmed official OpenAPI (twenty_contract.py) before it is
served, and every answer the fake gives is checked too, so neither a wrong request from billflow nor a fake
that drifted from Twenty goes unnoticed: both land in `violations`. A request Twenty would refuse (unknown
field, wrong type, a stage the workspace does not have, an id that is not a UUID) is answered 400 in Twenty's
error shape; a wrong or missing API key 401; an unknown id 404 "Record not found", as current Twenty does.

    with FakeTwenty(custom_fields={"opportunity": {"invoiceNumber": {"type": "string"}}}) as twenty:
        acme = twenty.add_company("Acme", address={"addressCity": "Lyon", "addressCountry": "France"})
        ...
        assert twenty.patched("opportunity", opp["id"]) == {"invoiceNumber": "INV-1"}
        assert twenty.violations == []
"""

from __future__ import annotations

import copy
import json
import uuid
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from billflow.storage.secrets import Connection

from billflow_local.standins.base import FakeServer, Request, Response
from billflow_local.standins.twenty_contract import DEFAULT_STAGES, CustomFields, CustomObjects, TwentyContract
from billflow_local.standins.twenty_query import QueryError, matches, parse_filter, parse_order_by, sort_records

SAMPLE_WORKSPACE = Path(__file__).resolve().parents[3] / "events" / "twenty" / "workspace" / "records.json"
# plural (URL) -> singular (nameSingular, the key of data in an answer)
OBJECTS = {"companies": "company", "people": "person", "opportunities": "opportunity"}
DEFAULT_API_KEY = "twenty-test-api-key"
WORKSPACE_MEMBER_ID = "20202020-0687-4c41-b707-ed1bfca972a7"  # Twenty's seeded "Tim Apple"
# Foreign keys Twenty enforces: a PATCH pointing at a record that does not exist fails in Postgres (400).
_FOREIGN_KEYS = {"companyId": "company", "pointOfContactId": "person"}
# The 401 body of the spec's example.
_UNAUTHORIZED = {"statusCode": 401, "message": "Token invalid.", "error": "Unauthorized"}


# A line-item custom object as a workspace might create it (Twenty has none built in): the fields billflow's
# default line_items mapping reads (connectors/twenty.py DEFAULT_LINE_ITEM_FIELDS), linked to an opportunity.
_CURRENCY_FIELD = {"type": "object", "properties": {"amountMicros": {"type": "number"},
                                                    "currencyCode": {"type": "string"}}}
LINE_ITEM_OBJECT: dict[str, tuple[str, dict[str, Any]]] = {"lineItem": ("lineItems", {
    "name": {"type": "string"}, "sku": {"type": "string"}, "quantity": {"type": "number"},
    "unitPrice": _CURRENCY_FIELD, "discountPercent": {"type": "number"}, "discountAmount": _CURRENCY_FIELD,
    "taxable": {"type": "boolean"}, "description": {"type": "string"}, "term": {"type": "string"},
    "opportunityId": {"type": "string", "format": "uuid"},
})}
LINE_ITEM_SETTINGS = {"object": "lineItem", "relation_field": "opportunityId"}


def load_sample_workspace() -> dict[str, list[dict[str, Any]]]:
    """The company, person and opportunities the sample webhooks in events/twenty/ refer to."""
    records: dict[str, list[dict[str, Any]]] = json.loads(SAMPLE_WORKSPACE.read_text())
    return records


def iso_now() -> str:
    """A timestamp as Twenty writes it (JavaScript's toISOString: milliseconds, Z)."""
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _actor(
    source: str = "MANUAL", name: str = "Tim Apple", member: str | None = WORKSPACE_MEMBER_ID
) -> dict[str, Any]:
    return {"source": source, "workspaceMemberId": member, "name": name, "context": {}}


def _link(url: str = "") -> dict[str, Any]:
    return {"primaryLinkUrl": url, "primaryLinkLabel": "", "secondaryLinks": []}


@dataclass(frozen=True)
class RecordedPatch:
    object: str  # singular: opportunity, company, person
    id: str
    fields: dict[str, Any]


class FakeTwenty(FakeServer):
    name = "twenty"

    def __init__(
        self, *, api_key: str = DEFAULT_API_KEY, stages: Sequence[str] = DEFAULT_STAGES,
        custom_fields: CustomFields | None = None, custom_objects: CustomObjects | None = None,
    ) -> None:
        super().__init__()
        self.api_key = api_key
        self.contract = TwentyContract(stages=stages, custom_fields=custom_fields, custom_objects=custom_objects)
        # plural -> singular of every object this workspace has: the standard three and its custom ones.
        self.objects = {**OBJECTS, **{plural: singular for singular, (plural, _) in (custom_objects or {}).items()}}
        self.records: dict[str, dict[str, dict[str, Any]]] = {singular: {} for singular in self.objects.values()}
        self.patches: list[RecordedPatch] = []
        self._failures: deque[Response] = deque()
        self._position = 0
        plural = "|".join(self.objects)
        self.list_requests: list[dict[str, str]] = []  # the query of every list call, for paging tests
        self.route("GET", rf"/rest/({plural})", self._checked(self._list))
        self.route("GET", rf"/rest/({plural})/([^/]+)", self._checked(self._get))
        self.route("PATCH", rf"/rest/({plural})/([^/]+)", self._checked(self._patch))

    # --- seeding ---------------------------------------------------------------------------------
    @property
    def companies(self) -> dict[str, dict[str, Any]]:
        return self.records["company"]

    @property
    def people(self) -> dict[str, dict[str, Any]]:
        return self.records["person"]

    @property
    def opportunities(self) -> dict[str, dict[str, Any]]:
        return self.records["opportunity"]

    def add_company(
        self, name: str, *, id: str | None = None, domain: str = "", address: dict[str, Any] | None = None,
        **fields: Any,
    ) -> dict[str, Any]:
        """A company as GET /rest/companies/{id}?depth=0 returns it; `fields` override any of its fields."""
        record = {
            **self._system_fields(id),
            "name": name,
            "domainName": _link(domain),
            "address": {
                "addressStreet1": "", "addressStreet2": "", "addressCity": "", "addressPostcode": "",
                "addressState": "", "addressCountry": "", "addressLat": None, "addressLng": None,
                **(address or {}),
            },
            "employees": None,
            "linkedinLink": _link(),
            "xLink": _link(),
            "annualRecurringRevenue": None,
            "idealCustomerProfile": False,
            "accountOwnerId": None,
            **fields,
        }
        return self._store("company", record)

    def add_person(
        self, first_name: str, last_name: str, *, id: str | None = None, email: str = "",
        company_id: str | None = None, **fields: Any,
    ) -> dict[str, Any]:
        record = {
            **self._system_fields(id),
            "name": {"firstName": first_name, "lastName": last_name},
            "emails": {"primaryEmail": email, "additionalEmails": []},
            "linkedinLink": _link(),
            "xLink": _link(),
            "jobTitle": "",
            "phones": {
                "primaryPhoneNumber": "", "primaryPhoneCountryCode": "", "primaryPhoneCallingCode": "",
                "additionalPhones": [],
            },
            "city": "",
            "avatarUrl": "",
            "avatarFile": [],
            "companyId": company_id,
            **fields,
        }
        return self._store("person", record)

    def add_opportunity(
        self, name: str, *, id: str | None = None, amount_micros: int | None = None, currency: str = "USD",
        stage: str = "NEW", close_date: str | None = None, company_id: str | None = None,
        point_of_contact_id: str | None = None, **fields: Any,
    ) -> dict[str, Any]:
        record = {
            **self._system_fields(id),
            "name": name,
            "amount": None if amount_micros is None else {
                "amountMicros": amount_micros, "currencyCode": currency,
            },
            "closeDate": close_date,
            "stage": stage,
            "companyId": company_id,
            "pointOfContactId": point_of_contact_id,
            "ownerId": None,
            **fields,
        }
        return self._store("opportunity", record)

    def add_custom(self, object_name: str, **fields: Any) -> dict[str, Any]:
        """A record of a custom object: the system fields Twenty gives every record, and `fields`."""
        return self._store(object_name, {**self._system_fields(fields.pop("id", None)), **fields})

    def add_line_item(
        self, opportunity_id: str, name: str, *, unit_price_micros: int, currency: str = "USD",
        quantity: float = 1, sku: str | None = None, **fields: Any,
    ) -> dict[str, Any]:
        """A record of LINE_ITEM_OBJECT (the fake must have been made with custom_objects=LINE_ITEM_OBJECT)."""
        return self.add_custom(
            "lineItem", name=name, sku=sku, quantity=quantity, opportunityId=opportunity_id,
            unitPrice={"amountMicros": unit_price_micros, "currencyCode": currency}, **fields)

    def add_record(self, object_name: str, record: dict[str, Any]) -> dict[str, Any]:
        """Hold a record exactly as given (a webhook's `record`, say): it must read as Twenty's own."""
        return self._store(object_name, copy.deepcopy(record))

    def seed(self, records: Mapping[str, Sequence[dict[str, Any]]]) -> None:
        """Hold records keyed by plural, the shape of events/twenty/workspace/records.json."""
        for plural, items in records.items():
            for record in items:
                self.add_record(self.objects[plural], record)

    def _system_fields(self, record_id: str | None) -> dict[str, Any]:
        self._position += 1
        now = iso_now()
        return {
            "id": record_id or str(uuid.uuid4()),
            "createdAt": now,
            "updatedAt": now,
            "deletedAt": None,
            "position": self._position,
            "createdBy": _actor(),
            "updatedBy": _actor(),
        }

    def _store(self, object_name: str, record: dict[str, Any]) -> dict[str, Any]:
        problems = self.contract.response_schema_errors(object_name, record)
        if problems:  # a seed Twenty could never hold would make every later answer a lie
            raise ValueError(f"not a Twenty {object_name}: {problems}")
        with self._lock:
            self.records[object_name][record["id"]] = record
        return copy.deepcopy(record)

    # --- what tests read -------------------------------------------------------------------------
    def get(self, object_name: str, record_id: str) -> dict[str, Any] | None:
        with self._lock:
            record = self.records[object_name].get(record_id)
            return copy.deepcopy(record) if record is not None else None

    def patched(self, object_name: str, record_id: str) -> dict[str, Any]:
        """Every field billflow PATCHed on one record, later values winning ({} when none)."""
        merged: dict[str, Any] = {}
        for patch in self.patches:
            if patch.object == object_name and patch.id == record_id:
                merged.update(patch.fields)
        return merged

    def fail_next(
        self, status: int = 503, *, times: int = 1, retry_after: str | None = None, body: Any = None
    ) -> None:
        """Answer the next `times` requests with this status, before auth and validation (an outage)."""
        headers = {"Retry-After": retry_after} if retry_after is not None else {}
        answer = body if body is not None else {
            "statusCode": status, "error": "ServiceUnavailableException", "messages": ["Service Unavailable"],
        }
        with self._lock:
            self._failures.extend(Response(status, answer, headers) for _ in range(times))

    def connection_settings(self) -> dict[str, Any]:
        """The secret billflow keeps for a Twenty connection to this workspace."""
        return {"type": "twenty", "base_url": self.url, "api_key": self.api_key}

    def connection(self, name: str = "crm") -> Connection:
        return Connection(name=name, type="twenty", settings=self.connection_settings())

    # --- serving ---------------------------------------------------------------------------------
    def _checked(self, handler: Callable[..., Response]) -> Callable[..., Response]:
        def serve(req: Request, *groups: str) -> Response:
            with self._lock:
                if self._failures:
                    return self._failures.popleft()
            if self.contract.bearer_token(req.headers) != self.api_key:
                self.violate(f"{req.method} {req.path}: 401, missing or wrong API key")
                answer = Response(401, _UNAUTHORIZED)
            else:
                problems = self.contract.check_request(req.method, req.path, req.query, req.headers, req.body)
                if problems:
                    for problem in problems:
                        self.violate(f"{req.method} {req.path}: {problem}")
                    answer = _error(400, problems)
                else:
                    answer = handler(req, *groups)
            for problem in self.contract.check_response(req.method, req.path, answer.status, answer.body):
                self.violate(f"{req.method} {req.path}: answer {answer.status} is not Twenty's: {problem}")
            return answer

        return serve

    def _list(self, req: Request, plural: str) -> Response:
        """GET /rest/{plural}: the records that pass `filter`, in `order_by` order (id last, as Twenty adds
        it), `limit` of them (default 60) after the `starting_after` cursor or before `ending_before`.
        Cursors are record ids, as the spec's pageInfo declares them (format uuid)."""
        singular = self.objects[plural]
        query = {name: values[-1] for name, values in req.query.items() if values}
        with self._lock:
            self.list_requests.append(query)
            records = list(self.records[singular].values())

        def field_schema(path: tuple[str, ...]) -> Mapping[str, Any] | None:
            return self.contract.field_schema(singular, path)

        try:
            order = parse_order_by(query.get("order_by"), field_schema)
            found = sort_records(records, order)
            if query.get("filter"):
                condition = parse_filter(query["filter"], field_schema)
                found = [r for r in found if matches(condition, r)]
        except QueryError as exc:
            self.violate(f"{req.method} {req.path}: {exc}")
            return _error(400, [str(exc)])
        limit = int(query.get("limit", "60"))
        ids = [r["id"] for r in found]
        after, before = query.get("starting_after"), query.get("ending_before")
        for cursor in (after, before):
            if cursor is not None and cursor not in ids and cursor not in self.records[singular]:
                message = f"Invalid cursor '{cursor}'"
                self.violate(f"{req.method} {req.path}: {message}")
                return _error(400, [message])
        held = self.records[singular]
        if after is not None:
            start = ids.index(after) + 1 if after in ids else _position_after(found, order, held[after])
            window = found[start:]
            page, more = window[:limit], len(window) > limit
        elif before is not None:
            end = ids.index(before) if before in ids else _position_after(found, order, held[before])
            window = found[:end]
            page, more = window[max(0, len(window) - limit):], len(window) > limit
        else:
            page, more = found[:limit], len(found) > limit
        depth = int(query.get("depth", "1"))
        info: dict[str, Any] = {"hasNextPage": more}
        if page:
            info.update(startCursor=page[0]["id"], endCursor=page[-1]["id"])
        rendered = [self._render(singular, r, depth) for r in page]
        return Response(200, {"data": {plural: rendered}, "pageInfo": info, "totalCount": len(found)})

    def _get(self, req: Request, plural: str, record_id: str) -> Response:
        singular = self.objects[plural]
        record = self.records[singular].get(record_id)
        if record is None:
            return _error(404, ["Record not found"])
        depth = int((req.query.get("depth") or ["1"])[-1])  # Twenty's default depth is 1
        return Response(200, {"data": {singular: self._render(singular, record, depth)}})

    def _patch(self, req: Request, plural: str, record_id: str) -> Response:
        singular = self.objects[plural]
        record = self.records[singular].get(record_id)
        if record is None:
            return _error(404, ["Record not found"])
        fields = json.loads(req.body)
        for key, target in _FOREIGN_KEYS.items():
            value = fields.get(key)
            if value is not None and value not in self.records[target]:
                message = f'insert or update on table "{singular}" violates foreign key constraint on "{key}"'
                self.violate(f"{req.method} {req.path}: {message}")
                return _error(400, [message])
        for key, value in fields.items():
            current = record.get(key)
            # A composite field (amount, address, name...) keeps the sub-fields the PATCH does not send.
            if isinstance(current, dict) and isinstance(value, dict):
                record[key] = {**current, **value}
            else:
                record[key] = value
        record["updatedAt"] = iso_now()
        record["updatedBy"] = _actor("API", "billflow", None)
        self.patches.append(RecordedPatch(singular, record_id, copy.deepcopy(fields)))
        depth = int((req.query.get("depth") or ["1"])[-1])
        name = "update" + singular[:1].upper() + singular[1:]
        return Response(200, {"data": {name: self._render(singular, record, depth)}})

    def _render(self, singular: str, record: dict[str, Any], depth: int) -> dict[str, Any]:
        """The record; at depth 1 with the relations this fake holds embedded, as Twenty embeds them."""
        out = copy.deepcopy(record)
        if depth < 1:
            return out
        by_id = self.records
        if singular == "opportunity":
            out["company"] = copy.deepcopy(by_id["company"].get(record.get("companyId") or ""))
            out["pointOfContact"] = copy.deepcopy(by_id["person"].get(record.get("pointOfContactId") or ""))
        elif singular == "person":
            out["company"] = copy.deepcopy(by_id["company"].get(record.get("companyId") or ""))
            out["pointOfContactForOpportunities"] = _related(by_id["opportunity"], "pointOfContactId", record)
        elif singular == "company":
            out["people"] = _related(by_id["person"], "companyId", record)
            out["opportunities"] = _related(by_id["opportunity"], "companyId", record)
        return out

    def not_found(self, req: Request) -> Response:
        self.violate(f"{req.method} {req.path}: no such operation")
        return _error(404, [f"Cannot {req.method} {req.path}"])


def _position_after(
    found: list[dict[str, Any]], order: list[tuple[tuple[str, ...], str]], cursor_record: dict[str, Any]
) -> int:
    """Where a cursor's record would sit among the filtered records (it no longer matches the filter)."""
    ordered = sort_records([*found, cursor_record], order)
    return ordered.index(cursor_record)


def _related(records: dict[str, dict[str, Any]], key: str, target: dict[str, Any]) -> list[dict[str, Any]]:
    return [copy.deepcopy(r) for r in records.values() if r.get(key) == target["id"]]


def _error(status: int, messages: list[str]) -> Response:
    """Twenty's exception filter: {statusCode, error, messages} for every error status."""
    name = {400: "BadRequestException", 404: "NotFoundException"}.get(status, "HttpException")
    return Response(status, {"statusCode": status, "error": name, "messages": messages})
