"""A local Stripe for the operations billflow uses: customers (get, list, search, create), invoices (create,
finalize, send) and invoice items (create), at API version 2023-08-16.

Like Stripe, in this order: Bearer (or Basic) API key auth (401 without), injected rate limits and outages
(`fail_next`), every request validated against the operation in the trimmed official spec by
stripe_contract (400 invalid_request_error naming the param, unknown params included), Idempotency-Key
semantics (a POST's first answer is saved and replayed for the same key and parameters; other parameters or
another endpoint under the key answer 400 idempotency_error; requests refused by validation are not saved),
then the object rules: invoice items only onto draft invoices in the invoice's currency and customer,
finalize only a draft (open, or paid when nothing is due), send only a finalized send_invoice invoice,
totals and taxes summed from the items. Answers are shaped like the 2023-08-16 schemas (a contract test
validates them against the spec).

Every request the real Stripe would refuse is answered in Stripe's error shape and recorded in
`violations`; a lookup of a customer that does not exist (404 resource_missing on GET) is an answer, not a
violation.
"""

from __future__ import annotations

import base64
import copy
import random
import re
import string
import threading
import time
from collections import defaultdict, deque
from collections.abc import Callable
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal
from typing import Any
from urllib.parse import urlencode

from billflow_local.standins.base import FakeServer, Request, Response
from billflow_local.standins.stripe_contract import Operation, StripeContract

DEFAULT_API_KEY = "sk_test_billflow_fake"
MAX_IDEMPOTENCY_KEY = 255
MAX_ITEMS_PER_INVOICE = 250
ACCOUNT = "acct_1BillflowFake00"
SEARCH_FIELDS = ("created", "email", "metadata", "name", "phone")


class StripeError(Exception):
    """Raised by a handler; answered as Stripe's {"error": {...}}."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        kind: str = "invalid_request_error",
    ) -> None:
        super().__init__(message)
        self.status, self.message, self.param, self.code, self.kind = status, message, param, code, kind

    def response(self) -> Response:
        error: dict[str, Any] = {"type": self.kind, "message": self.message}
        if self.param is not None:
            error["param"] = self.param
        if self.code is not None:
            error["code"] = self.code
            error["doc_url"] = f"https://stripe.com/docs/error-codes/{self.code.replace('_', '-')}"
        return Response(self.status, {"error": error})


def _missing(kind: str, object_id: str, param: str, status: int = 400) -> StripeError:
    return StripeError(status, f"No such {kind}: '{object_id}'", param=param, code="resource_missing")


@dataclass
class _Saved:
    """The first answer to an idempotent POST, with what it was for."""

    method: str
    path: str
    params: Any
    response: Response


class FakeStripe(FakeServer):
    name = "fake-stripe"

    def __init__(
        self,
        api_key: str = DEFAULT_API_KEY,
        *,
        seed: int | None = None,
        contract: StripeContract | None = None,
    ) -> None:
        super().__init__()
        self.api_key = api_key
        self.contract = contract or StripeContract.load()
        self.clock: Callable[[], int] = lambda: int(time.time())
        self._random = random.Random(seed)
        self.reset()
        self._handlers: dict[str, Callable[..., Any]] = {
            "GetCustomers": self._list_customers,
            "PostCustomers": self._create_customer,
            "GetCustomersSearch": self._search_customers,
            "GetCustomersCustomer": self._get_customer,
            "PostInvoices": self._create_invoice,
            "PostInvoiceitems": self._create_invoice_item,
            "PostInvoicesInvoiceFinalize": self._finalize_invoice,
            "PostInvoicesInvoiceSend": self._send_invoice,
            "GetAccount": self._get_account,
        }
        for op in self.contract.operations:
            self.route(op.method, op.pattern.pattern[1:-1], self._endpoint(op))

    def reset(self) -> None:
        """Forget every object, key, request and violation: a fresh account on the same running server
        (a server shared by a module's tests saves each test the server's half-second shutdown)."""
        with self._lock:
            self.requests.clear()
            self.violations.clear()
            self.customers: dict[str, dict[str, Any]] = {}
            self.invoices: dict[str, dict[str, Any]] = {}
            self.invoice_items: dict[str, dict[str, Any]] = {}
            self.tax_rates: dict[str, dict[str, Any]] = {}
            self.sent_invoices: list[str] = []  # ids, in the order /send was called
            self._in_flight: set[tuple[str, str]] = set()
            self._in_flight_lock = threading.Lock()
            self.replayed: list[str] = []  # idempotency keys answered from a saved first answer
            self.answers: list[tuple[str, int, Any]] = []  # (operationId, status, body): for schema checks
            self._saved: dict[tuple[str, str], _Saved] = {}
            self._days_until_due: dict[str, int | None] = {}  # not an invoice field at 2023-08-16
            self._failures: dict[str, deque[Response]] = defaultdict(deque)

    # --- knobs and seeds for tests ---------------------------------------------------------------
    def fail_next(
        self,
        operation_id: str,
        status: int = 429,
        *,
        times: int = 1,
        retry_after: float | None = None,
        message: str | None = None,
    ) -> None:
        """The next `times` calls of the operation (e.g. "PostInvoices") answer `status` instead."""
        self.contract.by_id(operation_id)  # a typo fails the test, not silently nothing
        headers = {"Retry-After": f"{retry_after:g}"} if retry_after is not None else {}
        if status == 429:
            error = StripeError(
                429, message or "Too many requests hit the API too quickly.", code="rate_limit"
            )
        elif status >= 500:
            headers["Stripe-Should-Retry"] = "true"
            error = StripeError(status, message or "An unknown error occurred", kind="api_error")
        else:
            error = StripeError(status, message or "The request was refused by a test knob.")
        for _ in range(times):
            answer = error.response()
            answer.headers.update(headers)
            self._failures[operation_id].append(answer)

    def add_customer(
        self, name: str | None = None, email: str | None = None, **fields: Any
    ) -> dict[str, Any]:
        """A customer that exists before the test (made without an API call)."""
        customer = self._new_customer({"name": name, "email": email, **fields})
        return copy.deepcopy(customer)

    def delete_customer(self, customer_id: str) -> None:
        self.customers[customer_id]["deleted"] = True

    def add_tax_rate(
        self, percentage: float, *, inclusive: bool = False, display_name: str = "VAT", active: bool = True
    ) -> dict[str, Any]:
        rate = {
            "id": self._id("txr_1", 24),
            "object": "tax_rate",
            "active": active,
            "country": None,
            "created": self.clock(),
            "description": None,
            "display_name": display_name,
            "effective_percentage": percentage,
            "inclusive": inclusive,
            "jurisdiction": None,
            "livemode": False,
            "metadata": {},
            "percentage": percentage,
            "state": None,
            "tax_type": None,
        }
        self.tax_rates[str(rate["id"])] = rate
        return copy.deepcopy(rate)

    def items_of(self, invoice_id: str) -> list[dict[str, Any]]:
        return [i for i in self.invoice_items.values() if i["invoice"] == invoice_id]

    # --- the request pipeline --------------------------------------------------------------------
    def _endpoint(self, op: Operation) -> Any:
        def serve(req: Request, *groups: str) -> Response:
            answer = self._serve(op, req)
            answer.headers.setdefault("Request-Id", self._id("req_", 14))
            answer.headers.setdefault("Stripe-Version", self.contract.api_version)
            self.answers.append((op.operation_id, answer.status, copy.deepcopy(answer.body)))
            return answer

        return serve

    def _serve(self, op: Operation, req: Request) -> Response:
        where = f"{req.method} {req.path}"
        denied = self._authenticate(req)
        if denied is not None:
            self.violate(f"{where}: {denied.message}")
            return denied.response()
        if self._failures[op.operation_id]:
            return self._failures[op.operation_id].popleft()  # like a rate limiter in front: nothing saved
        version = req.headers.get("stripe-version")
        if version and version != self.contract.api_version:
            self.violate(
                f"{where}: Stripe-Version {version}, the fake answers {self.contract.api_version} only"
            )

        query = urlencode([(k, v) for k, values in req.query.items() for v in values])
        checked = self.contract.check_request(
            req.method, req.path, query, req.body, req.headers.get("content-type")
        )
        if checked.problems:
            self.violate(f"{where}: " + "; ".join(p.message for p in checked.problems))
            first = checked.problems[0]
            return StripeError(400, first.message, param=first.param).response()

        key = req.headers.get("idempotency-key") if req.method == "POST" else None
        if key is not None:
            with self._in_flight_lock:  # as Stripe: a key whose first request is still running answers 409
                replay = self._replay(req, key, checked.params)
                if replay is not None:
                    return replay
                if (self._caller(req), key) in self._in_flight:
                    return StripeError(409, "There is currently another in-progress request using this "
                                       "Idempotent Key (that probably means you submitted twice, and the other "
                                       "request is still going through): " + key,
                                       kind="idempotency_error").response()
                self._in_flight.add((self._caller(req), key))
        try:
            return self._answer(req, op, checked, where, key)
        finally:
            if key is not None:
                with self._in_flight_lock:
                    self._in_flight.discard((self._caller(req), key))

    def _answer(self, req: Request, op: Any, checked: Any, where: str, key: str | None) -> Response:
        try:
            answer = Response(200, self._handlers[op.operation_id](checked.params, **checked.path_params))
        except StripeError as err:
            answer = err.response()
            if not (req.method == "GET" and err.status == 404):
                self.violate(f"{where}: {err.message}")
        except Exception as err:  # a bug in the fake: fail the test loudly instead of dropping the connection
            self.violate(f"{where}: the fake itself failed: {err!r}")
            answer = StripeError(500, f"fake error: {err!r}", kind="api_error").response()
        if key is not None:  # the endpoint ran: its answer, success or error, is what the key means now
            self._saved[(self._caller(req), key)] = _Saved(
                req.method, req.path, checked.params, copy.deepcopy(answer)
            )
            answer.headers["Idempotency-Key"] = key
        return answer

    def _authenticate(self, req: Request) -> StripeError | None:
        header = req.headers.get("authorization", "")
        scheme, _, credential = header.partition(" ")
        if scheme.lower() == "basic":  # Stripe takes the key as the Basic user name too
            try:
                credential = base64.b64decode(credential).decode().partition(":")[0]
            except ValueError:
                credential = ""
        elif scheme.lower() != "bearer":
            credential = ""
        if not credential:
            return StripeError(
                401,
                "You did not provide an API key. You need to provide your API key in the Authorization "
                "header, using Bearer auth (e.g. 'Authorization: Bearer YOUR_SECRET_KEY'). See "
                "https://stripe.com/docs/api#authentication for details, or we can help at "
                "https://support.stripe.com/.",
            )
        if credential != self.api_key:
            shown = credential[:8] + "*" * 12 + credential[-4:] if len(credential) > 12 else "****"
            return StripeError(401, f"Invalid API Key provided: {shown}", code="api_key_invalid")
        return None

    def _caller(self, req: Request) -> str:
        return self.api_key  # keys are scoped to the account; the fake has one

    def _replay(self, req: Request, key: str, params: Any) -> Response | None:
        where = f"{req.method} {req.path}"
        if len(key) > MAX_IDEMPOTENCY_KEY:
            self.violate(f"{where}: idempotency key longer than {MAX_IDEMPOTENCY_KEY} characters")
            return StripeError(
                400,
                f"Invalid Idempotency-Key: must be at most {MAX_IDEMPOTENCY_KEY} characters long.",
            ).response()
        saved = self._saved.get((self._caller(req), key))
        if saved is None:
            return None
        if (saved.method, saved.path) != (req.method, req.path):
            message = (
                f"Keys for idempotent requests can only be used for the same endpoint they were first "
                f"used for ('{saved.method} {saved.path}' vs '{where}'). Try using a key other than "
                f"'{key}' if you meant to execute a different request."
            )
        elif saved.params != params:
            message = (
                f"Keys for idempotent requests can only be used with the same parameters they were "
                f"first used with. Try using a key other than '{key}' if you meant to execute a "
                "different request."
            )
        else:
            self.replayed.append(key)
            answer = copy.deepcopy(saved.response)
            answer.headers.update({"Idempotency-Key": key, "Idempotent-Replayed": "true"})
            return answer
        self.violate(f"{where}: {message}")
        return StripeError(400, message, kind="idempotency_error").response()

    def not_found(self, req: Request) -> Response:
        message = f"Unrecognized request URL ({req.method}: {req.path})."
        self.violate(f"{req.method} {req.path}: no such operation in the fake (or in the trimmed spec)")
        return StripeError(404, message).response()

    # --- customers -------------------------------------------------------------------------------
    def _new_customer(self, params: dict[str, Any]) -> dict[str, Any]:
        _check_metadata(params.get("metadata"))
        address = params.get("address")
        customer = {
            "id": self._id("cus_", 14),
            "object": "customer",
            "address": _address(address) if isinstance(address, dict) else None,
            "balance": int(params.get("balance") or 0),
            "created": self.clock(),
            "currency": None,
            "default_source": None,
            "delinquent": False,
            "description": params.get("description"),
            "discount": None,
            "email": params.get("email"),
            "invoice_prefix": params.get("invoice_prefix") or self._id("", 8, string.hexdigits.upper()[:16]),
            "invoice_settings": {
                "custom_fields": None,
                "default_payment_method": None,
                "footer": None,
                "rendering_options": None,
            },
            "livemode": False,
            "metadata": _metadata(params.get("metadata")),
            "name": params.get("name"),
            "next_invoice_sequence": 1,
            "phone": params.get("phone"),
            "preferred_locales": list(params.get("preferred_locales") or []),
            "shipping": None,
            "tax_exempt": params.get("tax_exempt") or "none",
            "test_clock": None,
        }
        self.customers[str(customer["id"])] = customer
        return customer

    def _live_customers(self) -> list[dict[str, Any]]:
        newest_first = reversed(self.customers.values())  # dicts keep creation order
        return [c for c in newest_first if not c.get("deleted")]

    def _customer(self, customer_id: str, param: str = "customer") -> dict[str, Any]:
        customer = self.customers.get(customer_id)
        if customer is None or customer.get("deleted"):
            raise _missing("customer", customer_id, param)
        return customer

    def _create_customer(self, params: dict[str, Any]) -> dict[str, Any]:
        return _public(self._new_customer(params))

    def _get_customer(self, params: dict[str, Any], customer: str) -> dict[str, Any]:
        found = self.customers.get(customer)
        if found is None:
            raise _missing("customer", customer, "id", status=404)
        if found.get("deleted"):
            return {"id": found["id"], "object": "customer", "deleted": True}
        return _public(found)

    def _list_customers(self, params: dict[str, Any]) -> dict[str, Any]:
        limit = _limit(params)
        matches = self._live_customers()
        if "email" in params:
            matches = [c for c in matches if c["email"] == params["email"]]  # case-sensitive, as documented
        if "created" in params:
            matches = [c for c in matches if _in_range(c["created"], params["created"])]
        for cursor, keep_after in (("starting_after", True), ("ending_before", False)):
            if cursor in params:
                ids = [c["id"] for c in matches]
                if params[cursor] not in ids:
                    raise _missing("customer", params[cursor], cursor)
                at = ids.index(params[cursor])
                matches = matches[at + 1 :] if keep_after else matches[:at]
        page = matches[:limit]
        return {
            "object": "list",
            "data": [_public(c) for c in page],
            "has_more": len(matches) > limit,
            "url": "/v1/customers",
        }

    def _search_customers(self, params: dict[str, Any]) -> dict[str, Any]:
        limit = _limit(params)
        query = CustomerQuery.parse(params["query"])
        matches = [c for c in self._live_customers() if query.matches(c)]
        start = 0
        if "page" in params:
            try:
                start = int(base64.urlsafe_b64decode(params["page"].encode()).decode())
            except ValueError:
                raise StripeError(
                    400, "Invalid page: not a page token from a previous search.", param="page"
                ) from None
        page = matches[start : start + limit]
        more = len(matches) > start + limit
        next_page = base64.urlsafe_b64encode(str(start + limit).encode()).decode() if more else None
        return {
            "object": "search_result",
            "data": [_public(c) for c in page],
            "has_more": more,
            "next_page": next_page,
            "total_count": len(matches),
            "url": "/v1/customers/search",
        }

    # --- invoices --------------------------------------------------------------------------------
    def _create_invoice(self, params: dict[str, Any]) -> dict[str, Any]:
        if "customer" not in params:
            raise StripeError(400, "Missing required param: customer.", param="customer")
        customer = self._customer(params["customer"])
        _check_metadata(params.get("metadata"))
        method = params.get("collection_method", "charge_automatically")
        days = params.get("days_until_due")
        if method == "send_invoice" and days is None and params.get("due_date") is None:
            raise StripeError(400, "Missing required param: days_until_due.", param="days_until_due")
        if method != "send_invoice" and (days is not None or params.get("due_date") is not None):
            raise StripeError(
                400,
                "Invalid days_until_due: can only be set when collection_method is send_invoice.",
                param="days_until_due",
            )
        currency = str(params.get("currency") or customer["currency"] or "usd").lower()
        default_rates = [
            self._tax_rate(r, f"default_tax_rates[{i}]")
            for i, r in enumerate(params.get("default_tax_rates") or [])
        ]
        now = self.clock()
        invoice: dict[str, Any] = {
            "id": self._id("in_1", 24),
            "object": "invoice",
            "account_country": "US",
            "account_name": "billflow fake",
            "account_tax_ids": None,
            "amount_due": 0,
            "amount_paid": 0,
            "amount_remaining": 0,
            "amount_shipping": 0,
            "application": None,
            "application_fee_amount": None,
            "attempt_count": 0,
            "attempted": False,
            "auto_advance": _bool(params.get("auto_advance"), False),
            "automatic_tax": {"enabled": False, "status": None},
            "billing_reason": "manual",
            "charge": None,
            "collection_method": method,
            "created": now,
            "currency": currency,
            "custom_fields": _custom_fields(params.get("custom_fields")),
            "customer": customer["id"],
            "customer_address": customer["address"],
            "customer_email": customer["email"],
            "customer_name": customer["name"],
            "customer_phone": customer["phone"],
            "customer_shipping": None,
            "customer_tax_exempt": customer["tax_exempt"],
            "customer_tax_ids": [],
            "default_payment_method": None,
            "default_source": None,
            "default_tax_rates": default_rates,
            "description": params.get("description") or None,
            "discount": None,
            "discounts": [],
            "due_date": int(params["due_date"]) if params.get("due_date") else None,
            "effective_at": None,
            "ending_balance": None,
            "footer": params.get("footer"),
            "from_invoice": None,
            "hosted_invoice_url": None,
            "invoice_pdf": None,
            "last_finalization_error": None,
            "latest_revision": None,
            "livemode": False,
            "metadata": _metadata(params.get("metadata")),
            "next_payment_attempt": None,
            "number": None,
            "on_behalf_of": None,
            "paid": False,
            "paid_out_of_band": False,
            "payment_intent": None,
            "payment_settings": {
                "default_mandate": None,
                "payment_method_options": None,
                "payment_method_types": None,
            },
            "period_end": now,
            "period_start": now,
            "post_payment_credit_notes_amount": 0,
            "pre_payment_credit_notes_amount": 0,
            "quote": None,
            "receipt_number": None,
            "rendering_options": None,
            "shipping_cost": None,
            "shipping_details": None,
            "starting_balance": customer["balance"],
            "statement_descriptor": None,
            "status": "draft",
            "status_transitions": {
                "finalized_at": None,
                "marked_uncollectible_at": None,
                "paid_at": None,
                "voided_at": None,
            },
            "subscription": None,
            "subscription_details": {"metadata": None},
            "subtotal": 0,
            "subtotal_excluding_tax": 0,
            "tax": None,
            "test_clock": None,
            "total": 0,
            "total_discount_amounts": [],
            "total_excluding_tax": 0,
            "total_tax_amounts": [],
            "transfer_data": None,
            "webhooks_delivered_at": None,
            "lines": {"object": "list", "data": [], "has_more": False, "total_count": 0, "url": ""},
        }
        invoice["lines"]["url"] = f"/v1/invoices/{invoice['id']}/lines"
        if customer["currency"] is None:
            customer["currency"] = currency
        self.invoices[invoice["id"]] = invoice
        self._days_until_due[invoice["id"]] = int(days) if days is not None else None
        behaviour = params.get("pending_invoice_items_behavior", "exclude")
        if behaviour in ("include", "include_and_require"):
            pending = [
                i
                for i in self.invoice_items.values()
                if i["customer"] == customer["id"] and i["invoice"] is None and i["currency"] == currency
            ]
            if not pending and behaviour == "include_and_require":
                del self.invoices[invoice["id"]]
                raise StripeError(
                    400, "Nothing to invoice for customer", code="invoice_no_customer_line_items"
                )
            for item in pending:
                item["invoice"] = invoice["id"]
        self._total(invoice)
        return copy.deepcopy(invoice)

    def _create_invoice_item(self, params: dict[str, Any]) -> dict[str, Any]:
        customer = self._customer(params["customer"])
        _check_metadata(params.get("metadata"))
        if "price" in params or "price_data" in params:
            raise StripeError(
                400,
                "The fake models invoice items priced with amount or unit_amount only.",
                param="price" if "price" in params else "price_data",
            )
        invoice = None
        if params.get("invoice"):
            invoice = self.invoices.get(params["invoice"])
            if invoice is None:
                raise _missing("invoice", params["invoice"], "invoice")
            if invoice["status"] != "draft":
                raise StripeError(
                    400,
                    f"You can only add invoice items to draft invoices. Invoice "
                    f"{invoice['id']} is {invoice['status']}.",
                    param="invoice",
                    code="invoice_not_editable",
                )
            if invoice["customer"] != customer["id"]:
                raise StripeError(
                    400, f"The invoice {invoice['id']} belongs to another customer.", param="invoice"
                )
            if len(self.items_of(invoice["id"])) >= MAX_ITEMS_PER_INVOICE:
                raise StripeError(
                    400,
                    f"An invoice can have at most {MAX_ITEMS_PER_INVOICE} invoice items.",
                    param="invoice",
                )
        currency = str(
            params.get("currency") or (invoice or {}).get("currency") or customer["currency"] or ""
        )
        if not currency:
            raise StripeError(400, "Missing required param: currency.", param="currency")
        currency = currency.lower()
        if invoice is not None and currency != invoice["currency"]:
            raise StripeError(
                400,
                f"The currency of the invoice item ({currency}) must match the currency of "
                f"the invoice ({invoice['currency']}).",
                param="currency",
            )

        given = [p for p in ("amount", "unit_amount", "unit_amount_decimal") if p in params]
        if len(given) > 1:
            raise StripeError(
                400, f"You may only specify one of these parameters: {', '.join(given)}.", param=given[1]
            )
        if not given:
            raise StripeError(
                400,
                "You must specify one of: amount, price, price_data, unit_amount, unit_amount_decimal.",
                param="amount",
            )
        quantity = int(params.get("quantity", 1))
        if quantity < 0:
            raise StripeError(400, "Invalid quantity: must be a non-negative integer.", param="quantity")
        if "amount" in params:  # the line's total; its unit price is the total over the quantity
            amount = int(params["amount"])
            unit = Decimal(amount) / quantity if quantity else Decimal(amount)
        else:
            unit = Decimal(str(params.get("unit_amount", params.get("unit_amount_decimal"))))
            amount = int((unit * quantity).quantize(Decimal(1), rounding=ROUND_HALF_UP))
        tax_rates = params.get("tax_rates") or []
        rates = [self._tax_rate(r, f"tax_rates[{i}]") for i, r in enumerate(tax_rates)]
        now = self.clock()
        period = params.get("period") or {"start": now, "end": now}
        item = {
            "id": self._id("ii_1", 24),
            "object": "invoiceitem",
            "amount": amount,
            "currency": currency,
            "customer": customer["id"],
            "date": now,
            "description": params.get("description"),
            "discountable": _bool(params.get("discountable"), amount >= 0),
            "discounts": [],
            "invoice": invoice["id"] if invoice else None,
            "livemode": False,
            "metadata": _metadata(params.get("metadata")),
            "period": {"start": int(period["start"]), "end": int(period["end"])},
            "price": None,
            "proration": False,
            "quantity": quantity,
            "subscription": None,
            "tax_rates": rates,
            "test_clock": None,
            "unit_amount": int(unit) if unit == unit.to_integral_value() else None,
            "unit_amount_decimal": format(unit.normalize(), "f"),
        }
        self.invoice_items[item["id"]] = item
        if invoice is not None:
            self._total(invoice)
        return copy.deepcopy(item)

    def _finalize_invoice(self, params: dict[str, Any], invoice: str) -> dict[str, Any]:
        found = self._invoice(invoice)
        if found["status"] != "draft":
            raise StripeError(
                400,
                "This invoice is already finalized, you can't re-finalize a non-draft invoice.",
                code="invoice_not_editable",
            )
        customer = self.customers[found["customer"]]
        now = self.clock()
        if "auto_advance" in params:
            found["auto_advance"] = _bool(params["auto_advance"], False)
        found["number"] = f"{customer['invoice_prefix']}-{customer['next_invoice_sequence']:04d}"
        customer["next_invoice_sequence"] += 1
        token = self._id("test_", 40)
        found["hosted_invoice_url"] = f"https://invoice.stripe.com/i/{ACCOUNT}/{token}"
        found["invoice_pdf"] = f"https://pay.stripe.com/invoice/{ACCOUNT}/{token}/pdf"
        found["status_transitions"]["finalized_at"] = now
        found["effective_at"] = now
        found["period_end"] = now
        if found["collection_method"] == "send_invoice" and found["due_date"] is None:
            found["due_date"] = now + 86400 * (self._days_until_due[found["id"]] or 0)
        if found["amount_due"] == 0:  # Stripe marks an invoice with nothing due paid when it finalizes
            found.update(status="paid", paid=True)
            found["status_transitions"]["paid_at"] = now
        else:
            found["status"] = "open"
        found["ending_balance"] = 0
        return copy.deepcopy(found)

    def _send_invoice(self, params: dict[str, Any], invoice: str) -> dict[str, Any]:
        found = self._invoice(invoice)
        if found["collection_method"] != "send_invoice":
            raise StripeError(
                400, "You can only manually send an invoice if its collection method is 'send_invoice'."
            )
        if found["status"] in ("draft", "void"):
            raise StripeError(
                400,
                f"You can't send a {found['status']} invoice; only a finalized invoice can be sent.",
                code="invoice_not_editable" if found["status"] == "draft" else None,
            )
        self.sent_invoices.append(found["id"])
        return copy.deepcopy(found)

    def _invoice(self, invoice_id: str) -> dict[str, Any]:
        found = self.invoices.get(invoice_id)
        if found is None:
            raise _missing("invoice", invoice_id, "invoice", status=404)
        return found

    def _get_account(self, params: dict[str, Any]) -> dict[str, Any]:
        """The account the key belongs to (the connection test's read)."""
        return {"id": "acct_1BillflowFake", "object": "account", "business_type": "company",
                "business_profile": {"name": "Billflow Test Ltd", "mcc": None, "product_description": None,
                                     "support_address": None, "support_email": None, "support_phone": None,
                                     "support_url": None, "url": None},
                "charges_enabled": True, "country": "DE", "default_currency": "eur",
                "details_submitted": True, "email": "owner@billflow.test", "payouts_enabled": True,
                "type": "standard", "created": self.clock(), "metadata": {}}

    def _tax_rate(self, rate_id: str, param: str) -> dict[str, Any]:
        rate = self.tax_rates.get(rate_id)
        if rate is None:
            raise _missing("tax_rate", rate_id, param)
        if not rate["active"]:
            raise StripeError(400, f"The tax rate {rate_id} is inactive and cannot be applied.", param=param)
        return copy.deepcopy(rate)

    def _total(self, invoice: dict[str, Any]) -> None:
        """Lines, subtotal, taxes and amounts due, from the invoice's items (exclusive taxes add to the total,
        inclusive ones are part of it)."""
        lines: list[dict[str, Any]] = []
        taxes_by_rate: dict[str, Any] = {}
        subtotal = exclusive_tax = inclusive_tax = 0
        for item in self.items_of(invoice["id"]):
            rates = item["tax_rates"] or invoice["default_tax_rates"]
            tax_amounts = []
            for rate in rates:
                share = Decimal(str(rate["percentage"])) / 100
                base = Decimal(item["amount"])
                tax = base - base / (1 + share) if rate["inclusive"] else base * share
                tax_minor = int(tax.quantize(Decimal(1), rounding=ROUND_HALF_UP))
                tax_amounts.append(
                    {
                        "amount": tax_minor,
                        "inclusive": rate["inclusive"],
                        "tax_rate": rate["id"],
                        "taxability_reason": None,
                        "taxable_amount": None,
                    }
                )
                if rate["inclusive"]:
                    inclusive_tax += tax_minor
                else:
                    exclusive_tax += tax_minor
                total_for_rate = taxes_by_rate.setdefault(
                    rate["id"],
                    {
                        "amount": 0,
                        "inclusive": rate["inclusive"],
                        "tax_rate": rate["id"],
                        "taxability_reason": None,
                        "taxable_amount": None,
                    },
                )
                total_for_rate["amount"] += tax_minor
            subtotal += item["amount"]
            included = sum(t["amount"] for t in tax_amounts if t["inclusive"])
            lines.append(
                {
                    "id": "il_" + item["id"].removeprefix("ii_"),
                    "object": "line_item",
                    "amount": item["amount"],
                    "amount_excluding_tax": item["amount"] - included,
                    "currency": item["currency"],
                    "description": item["description"],
                    "discount_amounts": [],
                    "discountable": item["discountable"],
                    "discounts": [],
                    "invoice_item": item["id"],
                    "livemode": False,
                    "metadata": item["metadata"],
                    "period": item["period"],
                    "price": None,
                    "proration": False,
                    "proration_details": None,
                    "quantity": item["quantity"],
                    "subscription": None,
                    "tax_amounts": tax_amounts,
                    "tax_rates": item["tax_rates"],
                    "type": "invoiceitem",
                    "unit_amount_excluding_tax": item["unit_amount_decimal"],
                }
            )
        total = subtotal + exclusive_tax
        invoice["lines"].update(data=lines, total_count=len(lines))
        invoice.update(
            subtotal=subtotal,
            subtotal_excluding_tax=subtotal - inclusive_tax,
            total=total,
            total_excluding_tax=total - exclusive_tax - inclusive_tax,
            tax=(exclusive_tax + inclusive_tax) if taxes_by_rate else None,
            total_tax_amounts=list(taxes_by_rate.values()),
            amount_due=max(0, total + invoice["starting_balance"]),
            amount_remaining=max(0, total + invoice["starting_balance"]),
        )

    # --- helpers ---------------------------------------------------------------------------------
    def _id(self, prefix: str, length: int, alphabet: str = string.ascii_letters + string.digits) -> str:
        return prefix + "".join(self._random.choice(alphabet) for _ in range(length))


# --- search ---------------------------------------------------------------------------------------
_CLAUSE = re.compile(
    r"""\s*(?P<neg>-)?(?P<field>[a-z_]+)(?:\[(?P<kq>['"])(?P<key>(?:\\.|(?!(?P=kq)).)*)(?P=kq)\])?"""
    r"""(?P<op>:|~|>=|<=|>|<)"""
    r"""(?:(?P<q>['"])(?P<text>(?:\\.|(?!(?P=q)).)*)(?P=q)|(?P<number>-?\d+)|(?P<null>null))\s*""",
    re.DOTALL,
)
_JOIN = re.compile(r"(AND|OR)\b")


@dataclass(frozen=True)
class _Clause:
    negated: bool
    field: str
    key: str | None
    op: str
    value: str | int | None


@dataclass(frozen=True)
class CustomerQuery:
    """Stripe's search query language, for the customer fields: clauses joined by AND or by OR (not both),
    quoted strings with backslash escapes, `:` exact (case-insensitive), `~` substring, `-` negation."""

    clauses: tuple[_Clause, ...]
    join: str

    @classmethod
    def parse(cls, query: str) -> CustomerQuery:
        clauses: list[_Clause] = []
        joins: set[str] = set()
        position = 0
        while True:
            match = _CLAUSE.match(query, position)
            if match is None:
                raise _query_error(query, position)
            clauses.append(_clause(match))
            position = match.end()
            if position == len(query):
                break
            join = _JOIN.match(query, position)
            if join is None:
                raise _query_error(query, position)
            joins.add(join.group(1))
            position = join.end()
        if len(joins) > 1:
            raise StripeError(400, "Search queries cannot combine AND and OR.", param="query")
        if len(clauses) > 10:
            raise StripeError(400, "Search queries can have at most 10 clauses.", param="query")
        return cls(tuple(clauses), joins.pop() if joins else "AND")

    def matches(self, customer: dict[str, Any]) -> bool:
        results = (_clause_matches(c, customer) != c.negated for c in self.clauses)
        return all(results) if self.join == "AND" else any(results)


def _clause(match: re.Match[str]) -> _Clause:
    field = match.group("field")
    if field not in SEARCH_FIELDS:
        raise StripeError(
            400,
            f"Field `{field}` is an unsupported search field for resource `customers`. See "
            "http://stripe.com/docs/search#query-fields-for-customers for a list of supported "
            "fields.",
            param="query",
        )
    if (field == "metadata") != (match.group("key") is not None):
        raise StripeError(
            400, "metadata takes a key (metadata['key']), and only metadata does.", param="query"
        )
    op = match.group("op")
    value: str | int | None
    if match.group("number") is not None:
        value = int(match.group("number"))
    elif match.group("null") is not None:
        value = None
    else:
        value = re.sub(r"\\(.)", r"\1", match.group("text"), flags=re.DOTALL)
    if field == "created" and not isinstance(value, int):
        raise StripeError(400, "created takes a Unix timestamp.", param="query")
    if field != "created" and op not in (":", "~"):
        raise StripeError(400, f"{field} supports only the : and ~ operators.", param="query")
    if op == "~" and (not isinstance(value, str) or len(value) < 3):
        raise StripeError(400, "Substring matching (~) needs at least 3 characters.", param="query")
    key = re.sub(r"\\(.)", r"\1", match.group("key")) if match.group("key") is not None else None
    return _Clause(bool(match.group("neg")), field, key, op, value)


def _clause_matches(clause: _Clause, customer: dict[str, Any]) -> bool:
    actual = (
        customer["metadata"].get(clause.key) if clause.field == "metadata" else customer.get(clause.field)
    )
    if clause.field == "created":
        assert isinstance(clause.value, int)
        if not isinstance(actual, int):
            return False
        compare = {
            ":": actual == clause.value,
            ">": actual > clause.value,
            "<": actual < clause.value,
            ">=": actual >= clause.value,
            "<=": actual <= clause.value,
        }
        return compare[clause.op]
    if clause.value is None:
        return actual in (None, "")
    if actual is None:
        return False
    if clause.op == "~":
        return str(clause.value).lower() in str(actual).lower()
    return str(actual).lower() == str(clause.value).lower()


def _query_error(query: str, position: int) -> StripeError:
    return StripeError(
        400,
        f"We were unable to parse your search query. Try using the format `metadata['key']:"
        f"'value'` or `email:'value'`. Problem at position {position}: {query[position:][:40]!r}",
        param="query",
    )


# --- small helpers --------------------------------------------------------------------------------
def _limit(params: dict[str, Any]) -> int:
    limit = int(params.get("limit", 10))
    if not 1 <= limit <= 100:
        raise StripeError(400, "Invalid limit: must be between 1 and 100.", param="limit")
    return limit


def _in_range(value: int, condition: Any) -> bool:
    if not isinstance(condition, dict):
        return value == int(condition)
    checks = {"gt": value.__gt__, "gte": value.__ge__, "lt": value.__lt__, "lte": value.__le__}
    return all(checks[k](int(v)) for k, v in condition.items())


def _bool(value: Any, default: bool) -> bool:
    if value is None:
        return default
    return value is True or value == "true"


def _metadata(value: Any) -> dict[str, str]:
    return dict(value) if isinstance(value, dict) else {}


def _check_metadata(value: Any) -> None:
    """Stripe's documented metadata limits (the spec says only "string")."""
    if not isinstance(value, dict):
        return
    if len(value) > 50:
        raise StripeError(400, "You can have at most 50 metadata keys.", param="metadata")
    for key, item in value.items():
        if len(key) > 40:
            raise StripeError(
                400, f"Metadata keys can have at most 40 characters: {key!r}", param=f"metadata[{key}]"
            )
        if len(item) > 500:
            raise StripeError(
                400,
                f"Metadata values can have at most 500 characters (key {key!r}).",
                param=f"metadata[{key}]",
            )


def _address(value: dict[str, Any]) -> dict[str, Any]:
    return {k: value.get(k) for k in ("city", "country", "line1", "line2", "postal_code", "state")}


def _custom_fields(value: Any) -> list[dict[str, str]] | None:
    if not isinstance(value, list) or not value:
        return None
    if len(value) > 4:
        raise StripeError(400, "An invoice can have at most 4 custom fields.", param="custom_fields")
    return [{"name": f["name"], "value": f["value"]} for f in value]


def _public(obj: dict[str, Any]) -> dict[str, Any]:
    """A stored object as the API returns it (without the fake's own bookkeeping)."""
    return {k: copy.deepcopy(v) for k, v in obj.items() if k != "deleted"}
