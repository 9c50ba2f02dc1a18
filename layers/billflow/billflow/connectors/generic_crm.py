"""A generic CRM as billflow reads from and writes back to it: configured HTTP calls, answers mapped by JSONata.

The connection may carry a `record_mapping` (JSONata, as the source's): records read from the API are put in
the shape the source's webhooks deliver them, so both paths remember and compare the same fields.

The connection (type "generic", named after the source) holds, beside the webhook settings
(sources/generic.py), an `api` block; strings in it may use {placeholders}: any top-level text setting of
the connection ({base_url}, {api_token}: secrets stay in the connection, never in rules), {object},
{object_path}, {record_id}, and {record.<path>} (a field of the record, for lookups). Values are
percent-encoded in URLs (not base_url); headers get them as they are.

    api:
      headers: {x-api-token: "{api_token}", Accept: application/json}
      objects: {deal: deals, person: persons, organization: organizations}   # {object_path}; default: +s
      record: {url: "{base_url}/api/v2/{object_path}/{record_id}", result: "data"}
      update: {method: PATCH, url: "{base_url}/api/v2/{object_path}/{record_id}", body: "fields"}
      lookups:                       # name -> call; a {record.x} that is missing means no call (None)
        company: {url: "{base_url}/api/v2/organizations/{record.org_id}", result: "data"}
        contact: {url: "{base_url}/api/v2/persons/{record.person_id}", result: "data"}
      search:                        # the sweep: records changed in a window, page by page
        url: "{base_url}/api/v2/{object_path}?updated_since={updated_after}&limit={page_size}"
        cursor_param: cursor
        records: data
        next_cursor: additional_data.next_cursor
        filters: {status: status}    # rule field -> query parameter, for "eq" filters
        ranges:                      # optional: rule field -> query parameter per bound, for date rules
          expected_close_date: {gte: close_from, lt: close_to, format: date}   # format: date | datetime
        requests_per_second: 5
      test: {url: "{base_url}/api/v2/deals?limit=1"}
    updated_field: update_time       # top level: the record's last-modified time (ask-the-CRM, sweep versions)

A search parameter left empty ({updated_after} when the caller gives no window: a date rule's search) is
left out of the URL rather than sent empty. Bounds without a `ranges` parameter are not sent: the CRM answers
more records and the caller decides them (a date rule reads the object's records and picks the due ones;
Pipedrive's GET /api/v2/deals has no parameter for a deal's dates, only `filter_id`, `status`, `updated_since`...).

Every call goes through connectors/http.py (netguard's SSRF guard, no redirects, Retry-After honoured by
the state machine). `result` / `records` / `next_cursor` / `body` are JSONata over the answer (or, for
body, over {"fields", "record_id", "object"}); without `body`, dotted fields ("custom_fields.abc") are
sent nested.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Collection, Mapping
from datetime import datetime
from typing import Any, ClassVar
from urllib.parse import parse_qsl, quote, urlencode, urlsplit, urlunsplit

from billflow.connectors.base import ConnectionReport, CrmConnector, RecordPage, RecordQuery
from billflow.connectors.http import DEFAULT_TIMEOUT, HttpResponse, raise_for, request
from billflow.errors import ConfigurationError, TargetRejected
from billflow.mapping import MappingError, apply_mapping, mapping_problem
from billflow.models.run import utc_text
from billflow.storage.secrets import Connection

_PLACEHOLDER = re.compile(r"\{([A-Za-z_][\w]*(?:\.[\w-]+)*)\}")
CALLS = ("record", "update", "search", "test")
MAPPED_KEYS = ("result", "records", "next_cursor", "body")


class _Missing(Exception):
    """A {record.x} placeholder with no value: the call is not made."""


def api_problems(settings: Mapping[str, Any]) -> list[str]:
    """What is wrong with a generic connection's api block (empty: nothing, or no api at all)."""
    api = settings.get("api")
    if api is None:
        return []
    if not isinstance(api, Mapping):
        return ["api: an object of calls (record, update, lookups, search)"]
    problems: list[str] = []
    if settings.get("record_mapping") is not None and (problem := mapping_problem(settings["record_mapping"])):
        problems.append(f"record_mapping: {problem}")
    calls = {name: api.get(name) for name in CALLS if api.get(name) is not None}
    lookups = api.get("lookups") or {}
    if not isinstance(lookups, Mapping):
        problems.append("api.lookups: an object of name -> call")
        lookups = {}
    calls.update({f"lookups.{k}": v for k, v in lookups.items()})
    for where, call in calls.items():
        if not isinstance(call, Mapping) or not isinstance(call.get("url"), str):
            problems.append(f"api.{where}: a call with a url (and optionally method, headers, result)")
            continue
        method = str(call.get("method", "GET")).upper()
        if method not in ("GET", "POST", "PUT", "PATCH"):
            problems.append(f"api.{where}.method: GET, POST, PUT or PATCH")
        if where == "search" and call.get("ranges") is not None:
            problems.extend(_ranges_problems(call["ranges"]))
        for key in MAPPED_KEYS:
            if call.get(key) is not None:
                problem = mapping_problem(call[key])
                if problem:
                    problems.append(f"api.{where}.{key}: {problem}")
    return problems


def _ranges_problems(ranges: Any) -> list[str]:
    if not isinstance(ranges, Mapping):
        return ["api.search.ranges: an object of field -> {gte, gt, lt, lte: query parameter, format}"]
    problems = []
    for name, spec in ranges.items():
        if not isinstance(spec, Mapping) or set(spec) - {*_BOUNDS, "format"} or not set(spec) & set(_BOUNDS):
            problems.append(f"api.search.ranges.{name}: bounds (gte, gt, lt, lte) naming query parameters, "
                            "and optionally format (date or datetime)")
        elif spec.get("format", "datetime") not in ("date", "datetime"):
            problems.append(f"api.search.ranges.{name}.format: date or datetime")
    return problems


# Search pacing per process, not per connector: connectors are made afresh for each call (connectors._load).
_LAST_CALL: dict[str, float] = {}
_PACE_LOCK = threading.Lock()


class GenericCrmConnector(CrmConnector):
    kind: ClassVar[str] = "generic"

    def __init__(self) -> None:
        self._last_call = _LAST_CALL
        self._pace_lock = _PACE_LOCK

    def get_record(
        self, connection: Connection, object_name: str, record_id: str, fields: Collection[str] = ()
    ) -> dict[str, Any] | None:
        call = _call(connection, "record")
        answer = self._send(connection, call, _context(connection, object_name, record_id, {}))
        if answer.status == 404:
            return None
        raise_for(answer, _target(connection))
        record = _mapped(call, "result", answer.json(), connection)
        return _as_record(connection, record) if isinstance(record, dict) else None

    def update_record(
        self, connection: Connection, object_name: str, record_id: str, fields: dict[str, Any]
    ) -> None:
        if not fields:
            return
        call = _call(connection, "update")
        document = {"fields": fields, "record_id": record_id, "object": object_name}
        body = _mapped(call, "body", document, connection) if call.get("body") else _nested(fields)
        answer = self._send(connection, call, _context(connection, object_name, record_id, {}),
                            json.dumps(body).encode())
        raise_for(answer, _target(connection))

    def lookup(self, connection: Connection, object_name: str, record: dict[str, Any]) -> dict[str, Any]:
        """Each configured lookup (company, contact, line_items, ...) by its call; None where the record does
        not link one (a {record.x} without value) or the CRM no longer has it (404)."""
        api = connection.settings.get("api") or {}
        found: dict[str, Any] = {}
        for name, call in (api.get("lookups") or {}).items():
            context = _context(connection, object_name, str(record.get("id", "")), record)
            try:
                answer = self._send(connection, call, context)
            except _Missing:
                found[name] = None
                continue
            if answer.status == 404:
                found[name] = None
                continue
            raise_for(answer, _target(connection))
            found[name] = _mapped(call, "result", answer.json(), connection)
        return found

    def search_records(
        self, connection: Connection, query: RecordQuery, cursor: str | None = None
    ) -> RecordPage:
        call = _call(connection, "search")
        context = _context(connection, query.object_name, "", {})
        context.update({
            "updated_after": utc_text(query.updated_after) if query.updated_after else "",
            "updated_before": utc_text(query.updated_before) if query.updated_before else "",
            "page_size": str(query.page_size),
        })
        params = {str(param): f.value for f in query.filters for field, param in (call.get("filters") or {}).items()
                  if f.field == field and f.op == "eq" and isinstance(f.value, (str, int, float))}
        params.update(_range_params(call, query))
        if cursor:
            params[str(call.get("cursor_param", "cursor"))] = cursor
        self._pace(connection, float(call.get("requests_per_second") or 0))
        answer = self._send(connection, call, context, extra_params=params, drop_empty=True)
        raise_for(answer, _target(connection))
        doc = answer.json()
        records = _mapped(call, "records", doc, connection) if call.get("records") else doc
        if isinstance(records, dict):
            records = [records]  # JSONata's singleton sequence
        if not isinstance(records, list):
            raise TargetRejected(f"{_target(connection)}: the search answer holds no list of records")
        next_cursor = _mapped(call, "next_cursor", doc, connection) if call.get("next_cursor") else None
        return RecordPage([_as_record(connection, r) for r in records if isinstance(r, dict)],
                          str(next_cursor) if next_cursor not in (None, "") else None)

    def test_connection(self, connection: Connection, tenant: str) -> ConnectionReport:
        """The configuration is checked (calls and mappings); then the `test` call, if any."""
        problems = api_problems(connection.settings)
        if problems:
            return ConnectionReport(connection=connection.name, kind=self.kind, ok=False,
                                    checked="configuration", error="; ".join(problems))
        api = connection.settings.get("api") or {}
        if not api.get("test"):
            return ConnectionReport(connection=connection.name, kind=self.kind, checked="configuration",
                                    notes=["no api.test call configured: only the configuration was checked"])
        answer = self._send(connection, api["test"], _context(connection, "", "", {}))
        raise_for(answer, _target(connection))
        return ConnectionReport(connection=connection.name, kind=self.kind,
                                checked=f"{api['test'].get('method', 'GET')} {urlsplit(answer.url).path}")

    # --- plumbing --------------------------------------------------------------------------------
    def _send(
        self, connection: Connection, call: Mapping[str, Any], context: dict[str, Any], body: bytes | None = None,
        extra_params: dict[str, Any] | None = None, drop_empty: bool = False,
    ) -> HttpResponse:
        api = connection.settings.get("api") or {}
        url = _render(str(call["url"]), context, url=True)
        if extra_params or drop_empty:
            parts = urlsplit(url)
            pairs = [*parse_qsl(parts.query, keep_blank_values=True), *(extra_params or {}).items()]
            query = urlencode([(k, v) for k, v in pairs if not (drop_empty and v in ("", None))])
            url = urlunsplit(parts._replace(query=query))
        headers = {str(k): _render(str(v), context) for k, v in {**(api.get("headers") or {}),
                                                                    **(call.get("headers") or {})}.items()}
        if body is not None:
            headers.setdefault("Content-Type", "application/json")
        timeout = float(api.get("timeout_seconds") or DEFAULT_TIMEOUT)
        return request(str(call.get("method", "GET")).upper(), url, headers=headers, body=body, timeout=timeout,
                       target=_target(connection), raise_for_status=False)

    def _pace(self, connection: Connection, per_second: float) -> None:
        """At most `per_second` search calls a second per connection (the CRM's documented rate)."""
        if per_second <= 0:
            return
        with self._pace_lock:
            key = connection.secret_id or connection.name
            wait = self._last_call.get(key, 0.0) + 1.0 / per_second - time.monotonic()
            if wait > 0:
                time.sleep(wait)
            self._last_call[key] = time.monotonic()


_BOUNDS = ("gt", "gte", "lt", "lte")


def _range_params(call: Mapping[str, Any], query: RecordQuery) -> dict[str, str]:
    """The search's range bounds the configured `ranges` give a query parameter (a date as YYYY-MM-DD with
    `format: date`, else RFC 3339 UTC)."""
    ranges = call.get("ranges") or {}
    params: dict[str, str] = {}
    for condition in query.filters:
        spec = ranges.get(condition.field) if isinstance(ranges, Mapping) else None
        if condition.op not in _BOUNDS or not isinstance(spec, Mapping) or not spec.get(condition.op):
            continue
        value = condition.value
        if isinstance(value, datetime):
            value = value.date().isoformat() if spec.get("format") == "date" else utc_text(value)
        params[str(spec[condition.op])] = str(value)
    return params


def _target(connection: Connection) -> str:
    return f"CRM {connection.name}"


def _call(connection: Connection, name: str) -> Mapping[str, Any]:
    call = (connection.settings.get("api") or {}).get(name)
    if not isinstance(call, Mapping) or not call.get("url"):
        raise ConfigurationError(f"connection {connection.name!r} has no api.{name} call configured")
    return call


def _context(connection: Connection, object_name: str, record_id: str, record: dict[str, Any]) -> dict[str, Any]:
    objects = (connection.settings.get("api") or {}).get("objects") or {}
    context: dict[str, Any] = {k: v for k, v in connection.settings.items() if isinstance(v, (str, int))}
    context.update({"object": object_name, "object_path": str(objects.get(object_name, f"{object_name}s")),
                    "record_id": record_id, "record": record})
    return context


def _render(template: str, context: dict[str, Any], url: bool = False) -> str:
    def value(match: re.Match[str]) -> str:
        name = match.group(1)
        node: Any = context
        for part in name.split("."):
            node = node.get(part) if isinstance(node, dict) else None
        if node is None or node == "" or isinstance(node, (dict, list)):
            if name.startswith("record."):
                raise _Missing(name)
            if name in context:
                return ""
            raise ConfigurationError(f"placeholder {{{name}}} has no value (not a setting of the connection)")
        text = str(node)
        return quote(text, safe="") if url and name != "base_url" else text

    return _PLACEHOLDER.sub(value, template)


def _mapped(call: Mapping[str, Any], key: str, document: Any, connection: Connection) -> Any:
    if call.get(key) is None:
        return document
    try:
        return apply_mapping(str(call[key]), document, f"{connection.name} api {key}")
    except MappingError as exc:
        raise TargetRejected(exc.message) from None


def _as_record(connection: Connection, record: dict[str, Any]) -> dict[str, Any]:
    """A record read from the API in the shape webhooks deliver it (the connection's record_mapping)."""
    from billflow.sources.generic import map_record  # deferred: the same mapping the source applies

    try:
        return map_record(connection.settings, record, connection.name)
    except MappingError as exc:
        raise TargetRejected(exc.message) from None


def _nested(fields: dict[str, Any]) -> dict[str, Any]:
    """{"custom_fields.abc": 1} -> {"custom_fields": {"abc": 1}}: how CRMs take nested custom fields."""
    out: dict[str, Any] = {}
    for path, value in fields.items():
        node = out
        *parents, last = path.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[last] = value
    return out
