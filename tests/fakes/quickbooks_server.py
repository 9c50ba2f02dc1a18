"""A fake QuickBooks Online Accounting API (v3, JSON) for the entities billflow creates.

Serves, per company (realm):
  GET  /v3/company/{realm}/{entity}/{id}       read; a missing id is Intuit's 400 "Object Not Found" (610)
  POST /v3/company/{realm}/{entity}            create (?requestid=... makes it idempotent)
  GET  /v3/company/{realm}/preferences         CurrencyPrefs (MultiCurrencyEnabled, HomeCurrency)
  GET  /v3/company/{realm}/exchangerate?sourcecurrencycode=EUR&asofdate=YYYY-MM-DD
                                               the company's rate into its home currency (multicurrency only)
  GET  /v3/company/{realm}/companyinfo/{realm}  the company's name and country
  GET  /v3/company/{realm}/query?query=...     Intuit's query language: SELECT * | count(*) FROM Entity
                                               [WHERE f op v [AND ...]] [ORDERBY f [ASC|DESC]]
                                               [STARTPOSITION n] [MAXRESULTS n], strings in single quotes
                                               with backslash escapes; only filterable properties.
for Customer, Item, Invoice, Estimate, SalesReceipt, Payment, RefundReceipt and Purchase (Account,
TaxCode, Term, PaymentMethod and Vendor are seeded reference data).

Like the real service:
- every call needs a bearer token the fake OAuth server issued and still honours, else 401 in Intuit's
  (lower-case) fault shape;
- every created body is validated against Intuit's XSD and the practical rules
  (tests/fakes/quickbooks_contract.py), then against the company's data (references exist and are active,
  names unique, Amount = UnitPrice x Qty, currencies (without multicurrency only the home currency; with
  it a customer keeps one currency and a transaction is in its customer's currency, at the ExchangeRate
  sent or else the company's own rate for the date), payments within the invoice's balance, a tax
  code on every line in VAT/GST companies); a refusal is Intuit's {"Fault": {"Error": [...], "type":
  "ValidationFault"}} with status 400, and is recorded in `violations`;
- the same requestid in a company answers the first success again without creating anything (`replays`);
- ids are per company, DocNumbers are assigned from 1001, TotalAmt/Balance are computed (VAT from the
  seeded rates).
Knobs for tests: throttle_next (429 with Retry-After), fail_next (5xx), reject_next (a 400 fault that is
not a violation), expire_tokens (every issued access token expires now).
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from typing import Any

from tests.fakes import quickbooks_contract as contract
from tests.fakes.base import FakeServer, Request, Response
from tests.fakes.oauth_server import OAuthFake

PATH_NAMES = {name.lower(): name for name in contract.ENTITIES}
REFERENCE_ENTITIES = ("Account", "TaxCode", "Term", "PaymentMethod", "Vendor")
NAME_LISTS = ("Customer", "Item", "Vendor", "Account", "TaxCode", "Term", "PaymentMethod")
TRANSACTIONS = ("Invoice", "Estimate", "SalesReceipt", "Payment", "RefundReceipt", "Purchase")
# Filterable properties (Intuit API reference, "filterable" in each entity's attribute list).
_TXN_FILTERS = {"Id", "DocNumber", "TxnDate", "CustomerRef", "TotalAmt", "MetaData.CreateTime",
                "MetaData.LastUpdatedTime"}
FILTERABLE: dict[str, set[str]] = {
    "Customer": {"Id", "DisplayName", "GivenName", "MiddleName", "FamilyName", "CompanyName",
                 "FullyQualifiedName", "PrimaryEmailAddr", "PrintOnCheckName", "Active", "Balance", "Job",
                 "MetaData.CreateTime", "MetaData.LastUpdatedTime"},
    "Item": {"Id", "Name", "Sku", "Type", "Active", "FullyQualifiedName", "MetaData.CreateTime",
             "MetaData.LastUpdatedTime"},
    "Vendor": {"Id", "DisplayName", "Active"},
    "Account": {"Id", "Name", "AccountType", "Active"},
    "TaxCode": {"Id", "Name", "Active"},
    "Term": {"Id", "Name", "Active"},
    "PaymentMethod": {"Id", "Name", "Active"},
    **dict.fromkeys(TRANSACTIONS, _TXN_FILTERS),
}
TAX_CODE_COUNTRIES = frozenset({"GB", "UK", "IE", "AU", "CA", "IN", "FR"})
HOME_CURRENCY = {"US": "USD", "GB": "GBP", "UK": "GBP", "IE": "EUR", "AU": "AUD", "CA": "CAD", "IN": "INR",
                 "FR": "EUR"}


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def fault(status: int, message: str, detail: str, code: str, kind: str = "ValidationFault",
          headers: dict[str, str] | None = None) -> Response:
    return Response(status, {"Fault": {"Error": [{"Message": message, "Detail": detail, "code": code,
                                                  "element": ""}], "type": kind}, "time": now_iso()},
                    headers or {})


def unauthorized(detail: str) -> Response:
    """What Intuit answers for a missing, expired or revoked access token."""
    return Response(401, {"fault": {"error": [{"message": "message=AuthenticationFailed; errorCode=003200; "
                                                          "statusCode=401", "detail": detail, "code": "3200"}],
                                    "type": "AUTHENTICATION"}, "time": now_iso()},
                    {"WWW-Authenticate": 'Bearer realm="Intuit", error="invalid_token"'})


class Rejected(Exception):
    """A business validation error: becomes a 400 fault and a violation."""

    def __init__(self, message: str, detail: str, code: str) -> None:
        super().__init__(detail)
        self.message, self.detail, self.code = message, detail, code


def _business(detail: str) -> Rejected:
    return Rejected("A business validation error has occurred while processing your request",
                    f"Business Validation Error: {detail}", "6000")


def _invalid_reference(what: str, value: Any) -> Rejected:
    return Rejected("Invalid Reference Id", f"Invalid Reference Id : {what} assigned is not valid: {value}",
                    "2500")


@dataclass
class Realm:
    realm_id: str
    country: str = "US"
    home_currency: str = "USD"
    multicurrency: bool = False
    company_name: str = "Sandbox Company"
    exchange_rates: dict[str, Decimal] = field(default_factory=dict)  # currency -> home units per unit
    entities: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)
    created: list[tuple[str, str]] = field(default_factory=list)  # (entity, Id) made through the API
    request_ids: dict[str, tuple[str, Any]] = field(default_factory=dict)  # requestid -> (entity, body)
    next_id: int = 100
    next_doc_number: int = 1001

    @property
    def tax_codes_required(self) -> bool:
        return self.country in TAX_CODE_COUNTRIES

    def table(self, entity: str) -> dict[str, dict[str, Any]]:
        return self.entities.setdefault(entity, {})

    def get(self, entity: str, entity_id: Any) -> dict[str, Any] | None:
        return self.table(entity).get(str(entity_id))


class QuickBooksFake(FakeServer):
    name = "fake-quickbooks"

    def __init__(self, oauth: OAuthFake) -> None:
        super().__init__()
        self.oauth = oauth
        self.realms: dict[str, Realm] = {}
        self.replays = 0
        self._injected: list[tuple[str | None, re.Pattern[str] | None, Response]] = []
        self._expire_on: list[tuple[str, re.Pattern[str]]] = []
        self.route("GET", r"/v3/company/([^/]+)/query", self._query)
        self.route("GET", r"/v3/company/([^/]+)/preferences", self._preferences)
        self.route("GET", r"/v3/company/([^/]+)/exchangerate", self._exchange_rate)
        self.route("GET", r"/v3/company/([^/]+)/companyinfo/([^/]+)", self._company_info)
        self.route("GET", r"/v3/company/([^/]+)/([a-z]+)/([^/]+)", self._read)
        self.route("POST", r"/v3/company/([^/]+)/([a-z]+)", self._create)

    # --- test set-up and knobs ---------------------------------------------------------------------
    def add_realm(self, realm_id: str, *, country: str = "US", multicurrency: bool = False,
                  exchange_rates: dict[str, str] | None = None) -> Realm:
        """A company with a chart of accounts, terms, payment methods, a vendor, the "Services" item and
        its edition's tax codes; exchange_rates (currency -> home units per unit) with multicurrency."""
        country = country.upper()
        realm = Realm(realm_id, country, HOME_CURRENCY.get(country, "USD"), multicurrency,
                      exchange_rates={k.upper(): Decimal(v) for k, v in (exchange_rates or {}).items()})
        self.realms[realm_id] = realm
        for entity_id, name, kind in (("1", "Services", "Income"), ("35", "Checking", "Bank"),
                                      ("4", "Undeposited Funds", "Other Current Asset"),
                                      ("41", "Visa", "Credit Card"), ("13", "Bank Charges", "Expense")):
            self._store(realm, "Account", {"Id": entity_id, "Name": name, "AccountType": kind, "Active": True})
        self._store(realm, "Term", {"Id": "3", "Name": "Net 30", "DueDays": 30, "Active": True})
        self._store(realm, "PaymentMethod", {"Id": "1", "Name": "Cash", "Active": True})
        self._store(realm, "Vendor", {"Id": "56", "DisplayName": "Payment processor", "Active": True})
        self._store(realm, "Item", {"Id": "1", "Name": "Services", "Type": "Service", "Active": True,
                                    "IncomeAccountRef": {"value": "1", "name": "Services"}})
        if realm.tax_codes_required:
            for entity_id, name, rate in (("2", "20.0% S", "20"), ("6", "No VAT", "0"), ("10", "Exempt", "0")):
                self._store(realm, "TaxCode", {"Id": entity_id, "Name": name, "Active": True, "Rate": rate})
        return realm

    def seed(self, realm_id: str, entity: str, body: dict[str, Any]) -> dict[str, Any]:
        """Something the company already has (not validated, not counted as created)."""
        realm = self.realms[realm_id]
        stored = self._enrich(realm, entity, copy.deepcopy(body))
        return self._store(realm, entity, stored)

    def all(self, realm_id: str, entity: str) -> list[dict[str, Any]]:
        return list(self.realms[realm_id].table(entity).values())

    def created(self, realm_id: str, entity: str | None = None) -> list[dict[str, Any]]:
        """What the API created, in order (seeded data left out)."""
        realm = self.realms[realm_id]
        return [realm.table(kind)[entity_id] for kind, entity_id in realm.created
                if entity is None or kind == entity]

    # The next request (or the next one matching method and path, a regex searched in the path) gets
    # this answer instead; not a violation.
    def throttle_next(self, retry_after: str = "7", *, method: str | None = None, path: str | None = None) -> None:
        self._inject(method, path, fault(429, "message=ThrottleExceeded; errorCode=003001; statusCode=429",
                                         "The request limit was reached.", "3001", "SERVICE",
                                         {"Retry-After": retry_after}))

    def fail_next(self, status: int = 500, *, method: str | None = None, path: str | None = None) -> None:
        self._inject(method, path, fault(status, "An application error has occurred while processing your "
                                         "request", "System Failure Error: An unexpected error occurred",
                                         "10000", "SystemFault"))

    def reject_next(self, message: str, detail: str, code: str = "6000", *, method: str | None = None,
                    path: str | None = None) -> None:
        self._inject(method, path, fault(400, message, detail, code))

    def _inject(self, method: str | None, path: str | None, response: Response) -> None:
        self._injected.append((method, re.compile(path) if path else None, response))

    def expire_tokens(self) -> None:
        self.oauth.expire_access_tokens()

    def expire_tokens_on(self, method: str, path_regex: str) -> None:
        """When the next such request arrives, every access token expires first (it gets a 401)."""
        self._expire_on.append((method, re.compile(path_regex)))

    # --- request plumbing --------------------------------------------------------------------------
    def _gate(self, req: Request, realm_id: str) -> Response | Realm:
        for trigger in list(self._expire_on):
            if trigger[0] == req.method and trigger[1].search(req.path):
                self._expire_on.remove(trigger)
                self.expire_tokens()
        header = req.headers.get("authorization", "")
        if not header.startswith("Bearer "):
            return unauthorized("Token is missing")
        if not self.oauth.access_token_valid(header[7:]):
            return unauthorized("Token expired: the access token is expired, revoked or unknown")
        accept = req.headers.get("accept", "")
        if "application/json" not in accept:
            self.violate(f"{req.method} {req.path}: Accept {accept!r} (QuickBooks would answer XML)")
        minor = req.query.get("minorversion", [None])[-1]
        if minor is not None and not minor.isdigit():
            self.violate(f"{req.method} {req.path}: minorversion {minor!r} is not a number")
            return fault(400, "Invalid minor version", f"minorversion {minor} is not supported", "4000")
        for injected in self._injected:
            method, pattern, response = injected
            if (method is None or method == req.method) and (pattern is None or pattern.search(req.path)):
                self._injected.remove(injected)
                return response
        realm = self.realms.get(realm_id)
        if realm is None:
            self.violate(f"{req.method} {req.path}: no company {realm_id}")
            return fault(403, "AuthorizationFault", f"the token is not authorized for company {realm_id}",
                         "5020", "AuthorizationFault")
        return realm

    def _read(self, req: Request, realm_id: str, path_name: str, entity_id: str) -> Response:
        gate = self._gate(req, realm_id)
        if isinstance(gate, Response):
            return gate
        entity = PATH_NAMES.get(path_name)
        if entity is None:
            return self.not_found(req)
        found = gate.get(entity, entity_id)
        if found is None:
            return fault(400, "Object Not Found", "Object Not Found : Something you're trying to use has "
                         "been made inactive. Check the fields with accounts, customers, items, vendors or "
                         "employees.", "610")
        return Response(200, {entity: found, "time": now_iso()})

    def _create(self, req: Request, realm_id: str, path_name: str) -> Response:
        gate = self._gate(req, realm_id)
        if isinstance(gate, Response):
            return gate
        realm = gate
        entity = PATH_NAMES.get(path_name)
        if entity is None or path_name == "query":
            return self.not_found(req)
        request_id = req.query.get("requestid", [None])[-1]
        if request_id is None:
            self.violate(f"POST {req.path}: create without requestid (a retry would create it twice)")
        elif len(request_id) > 50:
            self.violate(f"POST {req.path}: requestid longer than 50 characters")
            return fault(400, "Invalid requestid", "requestid must be at most 50 characters", "4000")
        elif request_id in realm.request_ids:
            self.replays += 1
            first_entity, first_body = realm.request_ids[request_id]
            if first_entity != entity:
                self.violate(f"POST {req.path}: requestid {request_id} reused for another entity")
            return Response(200, copy.deepcopy(first_body))
        content_type = req.headers.get("content-type", "").split(";")[0].strip()
        if content_type != "application/json":
            self.violate(f"POST {req.path}: Content-Type {content_type!r}")
            return fault(415, "Unsupported Media Type", f"Content-Type {content_type!r}", "4000")
        try:
            body = req.json()
        except ValueError:
            self.violate(f"POST {req.path}: body is not JSON")
            return fault(400, "Request has invalid or unsupported property", "the body is not JSON", "2010")
        problems = contract.validate_entity(entity, body)
        if not problems and "Id" in body:
            problems = [f"{entity}: a create must not carry an Id (that is an update)"]
        if problems:
            for problem in problems:
                self.violate(f"POST {req.path}: {problem}")
            return fault(400, "Request has invalid or unsupported property", "; ".join(problems)[:2000], "2010")
        try:
            self._check_business(realm, entity, body)
        except Rejected as rejected:
            self.violate(f"POST {req.path}: {rejected.detail}")
            return fault(400, rejected.message, rejected.detail, rejected.code)
        stored = self._store(realm, entity, self._enrich(realm, entity, body))
        realm.created.append((entity, stored["Id"]))
        answer = {entity: copy.deepcopy(stored), "time": now_iso()}
        if request_id is not None:
            realm.request_ids[request_id] = (entity, answer)
        return Response(200, answer)

    # --- the company's rules -----------------------------------------------------------------------
    def _check_business(self, realm: Realm, entity: str, body: dict[str, Any]) -> None:
        if entity in ("Customer", "Item"):
            self._check_name_list(realm, entity, body)
            if entity == "Customer":
                self._check_currency(realm, body)
            return
        self._check_currency(realm, body)
        customer = self._check_ref(realm, body, "CustomerRef", "Customer")
        currency = (body.get("CurrencyRef") or {}).get("value") or realm.home_currency
        if customer is not None:
            customer_currency = (customer.get("CurrencyRef") or {}).get("value") or realm.home_currency
            if customer_currency != currency:
                raise _business(f"the transaction's currency ({currency}) must be its customer's currency "
                                f"({customer_currency})")
        self._check_ref(realm, body, "SalesTermRef", "Term")
        self._check_ref(realm, body, "PaymentMethodRef", "PaymentMethod")
        self._check_ref(realm, body, "DepositToAccountRef", "Account")
        if entity == "Payment":
            self._check_payment(realm, body)
            return
        if entity == "Purchase":
            self._check_ref(realm, body, "AccountRef", "Account", kinds=("Bank", "Credit Card"))
            self._check_ref(realm, body, "EntityRef", body.get("EntityRef", {}).get("type") or "Vendor")
        if realm.tax_codes_required and body.get("GlobalTaxCalculation") == "NotApplicable":
            raise _business("GlobalTaxCalculation NotApplicable is not allowed with VAT")
        for line in body["Line"]:
            self._check_line(realm, entity, line)

    @staticmethod
    def _check_currency(realm: Realm, body: dict[str, Any]) -> None:
        currency = (body.get("CurrencyRef") or {}).get("value") or realm.home_currency
        if currency != realm.home_currency and not realm.multicurrency:
            raise _business(f"{currency} is not this company's currency ({realm.home_currency}) and "
                            "multicurrency is off")
        if "ExchangeRate" not in body:
            if currency != realm.home_currency and "Line" in body and currency not in realm.exchange_rates:
                raise _business(f"there is no exchange rate for {currency}: enter one")
            return
        rate = Decimal(str(body["ExchangeRate"]))
        if rate <= 0 or (currency == realm.home_currency and rate != 1):
            raise _business(f"ExchangeRate {body['ExchangeRate']} is not valid for {currency}")

    def _check_line(self, realm: Realm, entity: str, line: dict[str, Any]) -> None:
        detail = line.get(line["DetailType"]) or {}
        if line["DetailType"] == "SalesItemLineDetail":
            item = self._check_ref(realm, detail, "ItemRef", "Item")
            if item and item.get("Type") == "Category":
                raise _business(f"item {item['Name']} is a category and cannot be sold")
            self._check_amount(line, detail)
        if line["DetailType"] == "AccountBasedExpenseLineDetail":
            self._check_ref(realm, detail, "AccountRef", "Account")
        tax = detail.get("TaxCodeRef")
        if line["DetailType"] == "DiscountLineDetail":
            if Decimal(str(line.get("Amount", 0))) < 0:
                raise _business("A discount line's Amount is positive: it is taken off the lines above it")
            return  # spread over the taxed lines: no tax code of its own needed
        if realm.tax_codes_required:
            if not tax:
                raise _business("Make sure all your transactions have a VAT rate before you save.")
            self._check_ref(realm, detail, "TaxCodeRef", "TaxCode")
        elif tax and tax.get("value") not in ("TAX", "NON"):
            raise _invalid_reference("TaxCodeRef", tax.get("value"))

    @staticmethod
    def _check_amount(line: dict[str, Any], detail: dict[str, Any]) -> None:
        if "UnitPrice" not in detail or "Qty" not in detail:
            return
        expected = (Decimal(str(detail["UnitPrice"])) * Decimal(str(detail["Qty"]))).quantize(
            Decimal("0.01"), rounding=ROUND_HALF_UP)
        if Decimal(str(line["Amount"])).quantize(Decimal("0.01")) != expected:
            raise Rejected("Amount is not equal to UnitPrice * Qty",
                           f"Amount {line['Amount']} is not equal to UnitPrice * Qty ({expected})", "6070")

    def _check_payment(self, realm: Realm, body: dict[str, Any]) -> None:
        total = Decimal(str(body["TotalAmt"]))
        applied = Decimal(0)
        for line in body.get("Line", []):
            amount = Decimal(str(line["Amount"]))
            applied += amount
            for linked in line["LinkedTxn"]:
                if linked["TxnType"] != "Invoice":
                    raise _business(f"a payment cannot be applied to a {linked['TxnType']}")
                invoice = realm.get("Invoice", linked["TxnId"])
                if invoice is None:
                    raise _invalid_reference("LinkedTxn", linked["TxnId"])
                if invoice["CustomerRef"]["value"] != body["CustomerRef"]["value"]:
                    raise _business("the invoice belongs to another customer")
                if amount > Decimal(str(invoice["Balance"])):
                    raise _business(f"the payment ({amount}) is more than the invoice's balance "
                                    f"({invoice['Balance']})")
        if applied > total:
            raise _business("the amounts applied are more than the payment's total")

    def _check_name_list(self, realm: Realm, entity: str, body: dict[str, Any]) -> None:
        name_field = "DisplayName" if entity == "Customer" else "Name"
        name = str(body.get(name_field) or " ".join(
            str(body.get(k, "")) for k in ("GivenName", "FamilyName")).strip())
        others = ("Customer", "Vendor") if entity == "Customer" else ("Item",)
        for other in others:
            for existing in realm.table(other).values():
                if str(existing.get("DisplayName") or existing.get("Name") or "").lower() == name.lower():
                    raise Rejected("Duplicate Name Exists Error", "The name supplied already exists. : "
                                   "Another customer, vendor, employee or item is already using this name.",
                                   "6240")
        if entity == "Item":
            self._check_ref(realm, body, "IncomeAccountRef", "Account", kinds=("Income",))

    @staticmethod
    def _check_ref(realm: Realm, body: dict[str, Any], key: str, entity: str,
                   kinds: tuple[str, ...] = ()) -> dict[str, Any] | None:
        ref = body.get(key)
        if not ref:
            return None
        found = realm.get(entity, ref.get("value"))
        if found is None or found.get("Active") is False:
            raise _invalid_reference(key, ref.get("value"))
        if kinds and found.get("AccountType") not in kinds:
            raise _business(f"{key} {found.get('Name')} is a {found.get('AccountType')} account, not "
                            f"{' or '.join(kinds)}")
        return found

    # --- storing -----------------------------------------------------------------------------------
    def _store(self, realm: Realm, entity: str, body: dict[str, Any]) -> dict[str, Any]:
        if "Id" not in body:
            body["Id"] = str(realm.next_id)
            realm.next_id += 1
        realm.table(entity)[str(body["Id"])] = body
        return body

    def _enrich(self, realm: Realm, entity: str, body: dict[str, Any]) -> dict[str, Any]:
        """What QuickBooks adds to a created entity."""
        stamp = now_iso()
        body.setdefault("domain", "QBO")
        body["sparse"] = False
        body["SyncToken"] = "0"
        body["MetaData"] = {"CreateTime": stamp, "LastUpdatedTime": stamp}
        if entity in NAME_LISTS:
            body.setdefault("Active", True)
        if entity == "Customer":
            if "DisplayName" not in body:
                body["DisplayName"] = " ".join(str(body.get(k, "")) for k in ("GivenName", "FamilyName")).strip()
            body["FullyQualifiedName"] = body["DisplayName"]
            body.setdefault("Balance", 0)
            body.setdefault("CurrencyRef", {"value": realm.home_currency})
        elif entity == "Item":
            body["FullyQualifiedName"] = body["Name"]
        elif entity in TRANSACTIONS:
            self._enrich_transaction(realm, entity, body)
        return body

    def _enrich_transaction(self, realm: Realm, entity: str, body: dict[str, Any]) -> None:
        if entity not in ("Payment", "Purchase") and "DocNumber" not in body:
            body["DocNumber"] = str(realm.next_doc_number)
            realm.next_doc_number += 1
        body.setdefault("CurrencyRef", {"value": realm.home_currency})
        currency = body["CurrencyRef"]["value"]
        if currency != realm.home_currency:
            body.setdefault("ExchangeRate", _num(realm.exchange_rates.get(currency, Decimal(1))))
        subtotal, tax = Decimal(0), Decimal(0)
        lines = body.get("Line", [])
        # A DiscountLineDetail line takes its Amount (or DiscountPercent of the lines) off the lines above
        # it, spread over their tax pro rata (QuickBooks' "apply discount before tax").
        discounts = [ln for ln in lines if ln.get("DetailType") == "DiscountLineDetail"]
        sales = sum((Decimal(str(ln.get("Amount", 0))) for ln in lines if ln not in discounts), Decimal(0))
        discount = sum((self._discount_amount(ln, sales) for ln in discounts), Decimal(0))
        kept = (sales - discount) / sales if sales else Decimal(1)
        for number, line in enumerate(lines, start=1):
            line.setdefault("Id", str(number))
            if entity != "Payment":
                line.setdefault("LineNum", number)
            if line.get("DetailType") == "DiscountLineDetail":
                continue
            amount = Decimal(str(line.get("Amount", 0)))
            subtotal += amount
            detail = line.get(line.get("DetailType", ""), {})
            rate = self._tax_rate(realm, detail.get("TaxCodeRef"))
            if rate and body.get("GlobalTaxCalculation") != "TaxInclusive":
                tax += (amount * kept * rate / 100).quantize(Decimal("0.01"), rounding=ROUND_HALF_UP)
            item = realm.get("Item", (detail.get("ItemRef") or {}).get("value"))
            if item:
                detail["ItemRef"]["name"] = item["Name"]
        if entity == "Payment":
            total = Decimal(str(body["TotalAmt"]))
            for line in body.get("Line", []):
                for linked in line.get("LinkedTxn", []):
                    invoice = realm.get("Invoice", linked["TxnId"])
                    if invoice is not None:
                        invoice["Balance"] = _num(Decimal(str(invoice["Balance"])) - Decimal(str(line["Amount"])))
            body["UnappliedAmt"] = _num(total - subtotal)
            return
        customer = realm.get("Customer", (body.get("CustomerRef") or {}).get("value"))
        if customer:
            body["CustomerRef"]["name"] = customer["DisplayName"]
        if entity != "Purchase":
            body["Line"].append({"Amount": _num(subtotal), "DetailType": "SubTotalLineDetail",
                                 "SubTotalLineDetail": {}})
        if tax:
            body["TxnTaxDetail"] = {"TotalTax": _num(tax)}
        subtotal -= discount
        body["TotalAmt"] = _num(subtotal + tax)
        if "ExchangeRate" in body:
            body["HomeTotalAmt"] = _num(((subtotal + tax) * Decimal(str(body["ExchangeRate"]))).quantize(
                Decimal("0.01"), rounding=ROUND_HALF_UP))
        if entity == "Invoice":
            body["Balance"] = body["TotalAmt"]

    @staticmethod
    def _discount_amount(line: dict[str, Any], sales: Decimal) -> Decimal:
        detail = line.get("DiscountLineDetail") or {}
        if detail.get("PercentBased"):
            return (sales * Decimal(str(detail.get("DiscountPercent", 0))) / 100).quantize(
                Decimal("0.01"), rounding=ROUND_HALF_UP)
        return Decimal(str(line.get("Amount", 0)))

    @staticmethod
    def _tax_rate(realm: Realm, ref: dict[str, Any] | None) -> Decimal:
        code = realm.get("TaxCode", (ref or {}).get("value"))
        try:
            return Decimal(str(code.get("Rate", 0))) if code else Decimal(0)
        except InvalidOperation:
            return Decimal(0)

    # --- company settings --------------------------------------------------------------------------
    def _preferences(self, req: Request, realm_id: str) -> Response:
        gate = self._gate(req, realm_id)
        if isinstance(gate, Response):
            return gate
        return Response(200, {"Preferences": {
            "CurrencyPrefs": {"MultiCurrencyEnabled": gate.multicurrency,
                              "HomeCurrency": {"value": gate.home_currency}},
            "TaxPrefs": {"UsingSalesTax": True},
            "domain": "QBO", "sparse": False, "Id": "1", "SyncToken": "0"}, "time": now_iso()})

    def _exchange_rate(self, req: Request, realm_id: str) -> Response:
        gate = self._gate(req, realm_id)
        if isinstance(gate, Response):
            return gate
        source = (req.query.get("sourcecurrencycode", [""])[-1]).upper()
        as_of = req.query.get("asofdate", [datetime.now(UTC).date().isoformat()])[-1]
        if not gate.multicurrency:
            return fault(400, "A business validation error has occurred while processing your request",
                         "Business Validation Error: multicurrency is not enabled", "6000")
        if not source:
            self.violate(f"GET {req.path}: sourcecurrencycode is required")
            return fault(400, "Required param missing", "sourcecurrencycode is required", "2020")
        rate = gate.exchange_rates.get(source)
        if rate is None:
            return fault(400, "Object Not Found", f"no exchange rate for {source} on {as_of}", "610")
        return Response(200, {"ExchangeRate": {"SourceCurrencyCode": source, "TargetCurrencyCode":
                                               gate.home_currency, "Rate": _num(rate), "AsOfDate": as_of},
                              "time": now_iso()})

    def _company_info(self, req: Request, realm_id: str, company_id: str) -> Response:
        gate = self._gate(req, realm_id)
        if isinstance(gate, Response):
            return gate
        if company_id != realm_id:
            return fault(400, "Object Not Found", "Object Not Found", "610")
        return Response(200, {"CompanyInfo": {"CompanyName": gate.company_name, "LegalName": gate.company_name,
                                              "Country": gate.country, "Id": "1", "domain": "QBO"},
                              "time": now_iso()})

    # --- queries -----------------------------------------------------------------------------------
    def _query(self, req: Request, realm_id: str) -> Response:
        gate = self._gate(req, realm_id)
        if isinstance(gate, Response):
            return gate
        statement = req.query.get("query", [""])[-1]
        try:
            parsed = parse_query(statement)
        except QueryError as error:
            self.violate(f"query {statement!r}: {error}")
            return fault(400, "Error parsing query", f"QueryParserError: {error}", "4000")
        entity = parsed.entity
        if entity not in FILTERABLE:
            self.violate(f"query {statement!r}: no entity {entity}")
            return fault(400, "Invalid query", f"QueryValidationError: Entity {entity} is not supported", "4001")
        for condition in parsed.conditions:
            if condition.field not in FILTERABLE[entity]:
                self.violate(f"query {statement!r}: {condition.field} is not filterable on {entity}")
                return fault(400, "Invalid query",
                             f"QueryValidationError: property '{condition.field}' is not queryable", "4001")
        rows = list(gate.table(entity).values())
        if entity in NAME_LISTS and not any(c.field == "Active" for c in parsed.conditions):
            rows = [row for row in rows if row.get("Active", True) is not False]  # inactive are hidden
        rows = [row for row in rows if all(c.matches(row) for c in parsed.conditions)]
        if parsed.count:
            return Response(200, {"QueryResponse": {"totalCount": len(rows)}, "time": now_iso()})
        if parsed.order_by:
            rows.sort(key=lambda row: str(_value(row, parsed.order_by or "")).lower(), reverse=parsed.descending)
        start = parsed.start_position - 1
        rows = rows[start:start + parsed.max_results]
        result: dict[str, Any] = {}
        if rows:
            result = {entity: copy.deepcopy(rows), "startPosition": parsed.start_position,
                      "maxResults": len(rows)}
        return Response(200, {"QueryResponse": result, "time": now_iso()})


def _num(value: Decimal) -> int | float:
    return int(value) if value == value.to_integral_value() else float(value)


# --- Intuit's query language -----------------------------------------------------------------------
class QueryError(ValueError):
    pass


@dataclass(frozen=True)
class Condition:
    field: str
    operator: str
    values: tuple[Any, ...]

    def matches(self, row: dict[str, Any]) -> bool:
        actual = _value(row, self.field)
        if actual is None:
            return False
        if self.operator == "IN":
            return any(_equal(actual, v) for v in self.values)
        expected = self.values[0]
        if self.operator == "=":
            return _equal(actual, expected)
        if self.operator == "LIKE":
            pattern = "^" + ".*".join(re.escape(p) for p in str(expected).split("%")) + "$"
            return re.match(pattern, str(actual), re.IGNORECASE | re.DOTALL) is not None
        left, right = _comparable(actual), _comparable(expected)
        if type(left) is not type(right):  # a number against text: compare the text, as dates are
            left, right = str(actual), str(expected)
        return bool({"<": left < right, ">": left > right, "<=": left <= right,
                     ">=": left >= right}[self.operator])


@dataclass(frozen=True)
class Query:
    entity: str
    count: bool
    conditions: tuple[Condition, ...]
    order_by: str | None
    descending: bool
    start_position: int
    max_results: int


_TOKEN = re.compile(r"\s*(?:(?P<string>')|(?P<number>-?\d+(?:\.\d+)?)|(?P<op><=|>=|=|<|>|\(|\)|,|\*)"
                    r"|(?P<word>[A-Za-z_][A-Za-z0-9_.]*))")


def tokenize(statement: str) -> list[tuple[str, Any]]:
    tokens: list[tuple[str, Any]] = []
    position = 0
    while position < len(statement):
        if statement[position:].strip() == "":
            break
        match = _TOKEN.match(statement, position)
        if not match:
            raise QueryError(f"Encountered {statement[position:position + 10]!r} at column {position + 1}")
        if match.group("string"):
            position = match.end()
            chars: list[str] = []
            while True:
                if position >= len(statement):
                    raise QueryError("unterminated string literal")
                char = statement[position]
                if char == "\\":  # Intuit: a backslash escapes the next character
                    if position + 1 >= len(statement):
                        raise QueryError("dangling escape at the end of the query")
                    chars.append(statement[position + 1])
                    position += 2
                    continue
                if char == "'":
                    position += 1
                    break
                chars.append(char)
                position += 1
            tokens.append(("string", "".join(chars)))
            continue
        kind = match.lastgroup or ""
        tokens.append((kind, match.group(kind)))
        position = match.end()
    return tokens


def parse_query(statement: str) -> Query:
    tokens = tokenize(statement)
    index = 0

    def peek_word() -> str | None:
        return tokens[index][1].upper() if index < len(tokens) and tokens[index][0] == "word" else None

    def take(kind: str, value: str | None = None) -> Any:
        nonlocal index
        if index >= len(tokens):
            raise QueryError(f"Encountered end of query, expected {value or kind}")
        token_kind, token_value = tokens[index]
        if token_kind != kind or (value is not None and str(token_value).upper() != value):
            raise QueryError(f"Encountered {token_value!r}, expected {value or kind}")
        index += 1
        return token_value

    def literal() -> Any:
        nonlocal index
        if index >= len(tokens):
            raise QueryError("Encountered end of query, expected a value")
        kind, value = tokens[index]
        index += 1
        if kind == "string":
            return value
        if kind == "number":
            return Decimal(value)
        if kind == "word" and value.lower() in ("true", "false"):
            return value.lower() == "true"
        raise QueryError(f"Encountered {value!r}, expected a value in single quotes")

    take("word", "SELECT")
    count = False
    if peek_word() == "COUNT":
        take("word")
        take("op", "(")
        take("op", "*")
        take("op", ")")
        count = True
    else:
        take("op", "*")  # projections are not supported
    take("word", "FROM")
    entity = take("word")
    conditions: list[Condition] = []
    if peek_word() == "WHERE":
        take("word")
        while True:
            field_name = take("word")
            if peek_word() in ("LIKE", "IN"):
                operator = take("word").upper()
            else:
                operator = take("op")
                if operator not in ("=", "<", ">", "<=", ">="):
                    raise QueryError(f"Encountered {operator!r}, expected an operator")
            if operator == "IN":
                take("op", "(")
                values = [literal()]
                while index < len(tokens) and tokens[index] == ("op", ","):
                    index += 1
                    values.append(literal())
                take("op", ")")
            else:
                values = [literal()]
            conditions.append(Condition(field_name, operator, tuple(values)))
            if peek_word() == "AND":
                take("word")
                continue
            if peek_word() == "OR":
                raise QueryError("OR is not supported")
            break
    order_by, descending = None, False
    if peek_word() == "ORDERBY":
        take("word")
        order_by = take("word")
        if peek_word() in ("ASC", "DESC"):
            descending = take("word").upper() == "DESC"
    start_position, max_results = 1, 100
    if peek_word() == "STARTPOSITION":
        take("word")
        start_position = int(take("number"))
    if peek_word() == "MAXRESULTS":
        take("word")
        max_results = int(take("number"))
        if not 1 <= max_results <= 1000:
            raise QueryError("MAXRESULTS must be between 1 and 1000")
    if index != len(tokens):
        raise QueryError(f"Encountered {tokens[index][1]!r} after the end of the query")
    return Query(entity, count, tuple(conditions), order_by, descending, start_position, max_results)


def _value(row: dict[str, Any], field_name: str) -> Any:
    node: Any = row
    for part in field_name.split("."):
        node = node.get(part) if isinstance(node, dict) else None
    if isinstance(node, dict):  # PrimaryEmailAddr.Address, a reference's value
        node = node.get("Address", node.get("value"))
    return node


def _equal(actual: Any, expected: Any) -> bool:
    if isinstance(expected, bool):
        return actual is expected
    if isinstance(expected, Decimal):
        return bool(_comparable(actual) == expected)
    return str(actual).lower() == str(expected).lower()  # QuickBooks compares names case-insensitively


def _comparable(value: Any) -> Any:
    try:
        return Decimal(str(value))
    except InvalidOperation:
        return str(value)
