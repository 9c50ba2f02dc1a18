"""The local runtime with every invoicing target around it, for tests/e2e/test_targets.py.

One stack per module: Twenty, Stripe, QuickBooks Online, Xero and Zoho Books fakes (each checking every
request against its official contract), the three OAuth token endpoints, and the runtime configured with a
connection per matching mode. A Target adapter per system answers the questions the scenarios ask of any
of them (which documents a deal made, which customers exist, did billflow search), so the scenarios are
written once and run against each system.

Rules are written in the test as YAML, one per tag: a rule fires for a won opportunity whose name starts
with "[<tag>]", so every scenario picks its rule (and through it the connection and its matching mode) by
naming its deal, and deals never share a rule by accident.
"""

from __future__ import annotations

import copy
import json
import re
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from billflow.storage.execution_log import ExecutionLog

from billflow_local.runtime import LocalRuntime
from tests.fakes.base import FakeServer, Request
from tests.fakes.oauth_server import OAuthFake
from tests.fakes.quickbooks_server import QuickBooksFake
from tests.fakes.signing import signed_twenty_delivery
from tests.fakes.stripe_server import FakeStripe
from tests.fakes.twenty_server import FakeTwenty
from tests.fakes.xero_server import BASE_PATH as XERO_PATH
from tests.fakes.xero_server import FakeXero
from tests.fakes.zoho_books_server import BASE_PATH as ZOHO_PATH
from tests.fakes.zoho_books_server import FakeZohoBooks

ROOT = Path(__file__).resolve().parents[2]
TENANT = "acme"
SIGNING_SECRET = "e2e-targets-signing-secret"
CLIENT = {"client_id": "client-1", "client_secret": "client-secret-1"}
KNOWN_PRODUCT = "Fleet analytics platform"  # exists in every accounting target before the tests
WON_EVENT = json.loads((ROOT / "events" / "twenty" / "opportunity-won.json").read_text())
QBO_REALM = "9341453201"
QBO_UK_REALM = "9341453202"  # a VAT company: every line needs a TaxCodeRef
QBO_DOCUMENT_TYPES = ("invoice", "estimate", "sales_receipt", "paid_invoice", "refund_receipt", "expense")
QBO_ENTITIES = {"invoice": "Invoice", "paid_invoice": "Invoice", "estimate": "Estimate",
                "sales_receipt": "SalesReceipt", "refund_receipt": "RefundReceipt", "expense": "Purchase"}


def qbo_tag(document_type: str) -> str:
    """The rule tag of one QuickBooks document type (rule ids take dashes, not underscores)."""
    return "qbo-" + document_type.replace("_", "-")


def rule_yaml(tag: str, action_type: str, connection: str, write_back: str, options: dict[str, Any]) -> str:
    """A rule for won opportunities named "[tag] ..."; options as a YAML flow mapping (JSON is YAML)."""
    return f"""\
id: {tag}
name: "e2e: {tag}"
source: twenty
object: opportunity
trigger: {{type: event, on: edited}}
criteria:
  - {{field: stage, comparator: changed_to, value: CUSTOMER}}
  - {{field: name, comparator: starts_with, value: "[{tag}]"}}
pattern: "1 AND 2"
actions:
  - type: {action_type}
    connection: {connection}
    write_back_field: {write_back}
    options: {json.dumps(options)}
"""


@dataclass
class Deal:
    """A fresh company, contact and won opportunity in the fake Twenty."""

    tag: str  # the rule the deal is for
    record: dict[str, Any]
    company: dict[str, Any]
    person: dict[str, Any]

    @property
    def id(self) -> str:
        return str(self.record["id"])

    @property
    def name(self) -> str:
        return str(self.record["name"])

    @property
    def email(self) -> str:
        return str(self.person["emails"]["primaryEmail"])

    @property
    def company_id(self) -> str:
        return str(self.company["id"])

    @property
    def company_name(self) -> str:
        return str(self.company["name"])


# --- one adapter per target ------------------------------------------------------------------------------
class Target:
    """What the scenarios ask of a target system; subclasses answer from their fake."""

    key: ClassVar[str]
    prefix: ClassVar[str]  # rule tags: prefix, prefix-strict, prefix-unknown, prefix-revoked
    document_field: ClassVar[str]  # the opportunity field the document id is written back to
    customer_field: ClassVar[str]  # the company field the customer id is written back to
    has_products: ClassVar[bool] = True
    uses_oauth: ClassVar[bool] = True
    create_methods: ClassVar[tuple[str, ...]] = ("POST",)

    fake: FakeServer
    idp: OAuthFake | None = None
    strict_grant: int = -1  # the OAuthFake grants (indexes) of the prefix-strict and prefix-revoked connections
    revoked_grant: int = -1

    def connections(self) -> dict[str, dict[str, Any]]:
        raise NotImplementedError

    def rules(self) -> list[str]:
        """prefix: create customers and products; prefix-strict: only existing ones (the known product);
        prefix-unknown: strict, with a product nobody has; prefix-revoked: a grant the tests revoke."""
        doc = f"{self.key}.invoice"
        own = {"customer_id_field": self.customer_field, "days_until_due": 14}
        rules = [
            rule_yaml(self.prefix, doc, self.prefix, self.document_field,
                      {**own, "description": "{{ record.name }}"}),
            rule_yaml(f"{self.prefix}-strict", doc, f"{self.prefix}-strict", self.document_field,
                      {**own, "description": KNOWN_PRODUCT}),
        ]
        if self.has_products:
            rules.append(rule_yaml(f"{self.prefix}-unknown", doc, f"{self.prefix}-strict", self.document_field,
                                   {**own, "description": "{{ record.name }}"}))
        if self.uses_oauth:
            rules.append(rule_yaml(f"{self.prefix}-revoked", doc, f"{self.prefix}-revoked", self.document_field,
                                   {**own, "description": KNOWN_PRODUCT}))
        return rules

    # --- what the fake holds ---------------------------------------------------------------------
    def documents(self, deal: Deal) -> list[dict[str, Any]]:
        """The invoices made for the deal."""
        raise NotImplementedError

    def estimates(self, deal: Deal) -> list[tuple[str, dict[str, Any]]]:
        """The estimates (Xero: quotes) made for the deal, with their ids."""
        raise NotImplementedError

    def document_id(self, document: dict[str, Any]) -> str:
        raise NotImplementedError

    def document_customer(self, document: dict[str, Any]) -> str:
        raise NotImplementedError

    def customers(self, deal: Deal) -> list[dict[str, Any]]:
        """The target's customers with the deal's contact's email address."""
        raise NotImplementedError

    def customer_id(self, customer: dict[str, Any]) -> str:
        raise NotImplementedError

    def products(self, name: str) -> list[dict[str, Any]]:
        raise NotImplementedError

    def seed_customer(self, deal: Deal) -> str:
        """A customer for the deal's company that exists before the run; its id."""
        raise NotImplementedError

    # --- what billflow sent ----------------------------------------------------------------------
    def since(self, mark: int) -> list[Request]:
        """The requests the fake received after mark() answered `mark`."""
        return self.fake.requests[mark:]

    def mark(self) -> int:
        return len(self.fake.requests)

    def writes(self, mark: int) -> list[Request]:
        return [r for r in self.since(mark) if r.method in self.create_methods]

    def customer_searches(self, mark: int) -> list[Request]:
        """Lookups by email or name (not by a stored id)."""
        raise NotImplementedError

    def customer_reads(self, mark: int) -> list[Request]:
        """Lookups by the id stored on the CRM."""
        raise NotImplementedError

    def document_creates(self, mark: int) -> list[Request]:
        raise NotImplementedError

    # --- knobs -----------------------------------------------------------------------------------
    def throttle_document(self, retry_after: int) -> None:
        """The next document create answers 429 with Retry-After."""
        raise NotImplementedError

    def reject_document(self, message: str) -> None:
        """The next document create answers a 400 carrying `message` (an answer, not a violation)."""
        raise NotImplementedError

    def expire_tokens_at_document(self) -> None:
        """Every access token expires when the next document create arrives (it gets a 401)."""
        raise NotImplementedError

    def _expire_on(self, fake: FakeXero | FakeZohoBooks, method: str, suffix: str) -> None:
        assert self.idp is not None
        idp = self.idp
        armed = [True]

        def expire(req: Request) -> None:
            if armed[0] and req.method == method and req.path.endswith(suffix):
                armed[0] = False
                idp.expire_access_tokens()

        fake.before_request.append(expire)

    def _oauth_connections(self, base: dict[str, Any]) -> dict[str, dict[str, Any]]:
        """prefix (creates what is missing), prefix-strict, prefix-revoked: each its own grant (rotating
        refresh tokens cannot be shared), no access token yet (the first call refreshes)."""
        assert self.idp is not None
        connections = {self.prefix: {**base, **CLIENT, "refresh_token": self.idp.grant(), "create_products": True}}
        self.strict_grant = len(self.idp.grants)
        connections[f"{self.prefix}-strict"] = {**base, **CLIENT, "refresh_token": self.idp.grant(),
                                                "customer_matching": "strict"}
        self.revoked_grant = len(self.idp.grants)
        connections[f"{self.prefix}-revoked"] = {**base, **CLIENT, "refresh_token": self.idp.grant()}
        return connections


class StripeTarget(Target):
    key, prefix = "stripe", "stripe"
    document_field, customer_field = "stripeInvoiceId", "stripeCustomerId"
    has_products = uses_oauth = False

    def __init__(self) -> None:
        self.stripe = FakeStripe()
        self.stripe.start()
        self.fake = self.stripe
        self.tax_rate = self.stripe.add_tax_rate(8.0, display_name="Sales tax")["id"]

    def connections(self) -> dict[str, dict[str, Any]]:
        base = {"type": "stripe", "base_url": self.stripe.url, "api_key": self.stripe.api_key}
        return {"stripe": base, "stripe-strict": {**base, "customer_matching": "strict"}}

    def rules(self) -> list[str]:
        own = {"customer_id_field": self.customer_field, "days_until_due": 14}
        return [
            # finalized and sent, with a tax rate on the invoice
            rule_yaml("stripe", "stripe.invoice", "stripe", self.document_field,
                      {**own, "description": "{{ record.name }}", "send": True, "tax_rates": [self.tax_rate]}),
            # left as a draft
            rule_yaml("stripe-strict", "stripe.invoice", "stripe-strict", self.document_field,
                      {**own, "description": KNOWN_PRODUCT, "finalize": False}),
        ]

    def documents(self, deal: Deal) -> list[dict[str, Any]]:
        return [i for i in self.stripe.invoices.values() if i["metadata"].get("crm_record_id") == deal.id]

    def document_id(self, document: dict[str, Any]) -> str:
        return str(document["id"])

    def document_customer(self, document: dict[str, Any]) -> str:
        return str(document["customer"])

    def customers(self, deal: Deal) -> list[dict[str, Any]]:
        return [c for c in self.stripe.customers.values() if c.get("email") == deal.email]

    def customer_id(self, customer: dict[str, Any]) -> str:
        return str(customer["id"])

    def products(self, name: str) -> list[dict[str, Any]]:
        return []

    def seed_customer(self, deal: Deal) -> str:
        return str(self.stripe.add_customer(deal.company_name, deal.email)["id"])

    def customer_searches(self, mark: int) -> list[Request]:
        return [r for r in self.since(mark) if r.method == "GET" and r.path in ("/v1/customers",
                                                                                "/v1/customers/search")]

    def customer_reads(self, mark: int) -> list[Request]:
        return [r for r in self.since(mark) if r.method == "GET" and re.fullmatch(r"/v1/customers/cus_\w+", r.path)]

    def document_creates(self, mark: int) -> list[Request]:
        return [r for r in self.since(mark) if r.method == "POST" and r.path == "/v1/invoices"]

    def throttle_document(self, retry_after: int) -> None:
        self.stripe.fail_next("PostInvoices", 429, retry_after=retry_after)

    def reject_document(self, message: str) -> None:
        self.stripe.fail_next("PostInvoices", 400, message=message)


class QuickBooksTarget(Target):
    key, prefix = "quickbooks", "qbo"
    document_field, customer_field = "qboDocumentId", "qboCustomerId"

    def __init__(self) -> None:
        idp = OAuthFake(style="intuit")
        idp.start()
        self.idp = idp
        self.qbo = QuickBooksFake(idp)
        self.qbo.start()
        self.fake = self.qbo
        self.qbo.add_realm(QBO_REALM)
        self.qbo.add_realm(QBO_UK_REALM, country="GB")
        for realm in (QBO_REALM, QBO_UK_REALM):
            self.qbo.seed(realm, "Item", {"Name": KNOWN_PRODUCT, "Type": "Service", "UnitPrice": 100,
                                          "IncomeAccountRef": {"value": "1", "name": "Services"}})

    def connections(self) -> dict[str, dict[str, Any]]:
        base = {"type": "quickbooks", "realm_id": QBO_REALM, "base_url": self.qbo.url,
                "token_url": self.idp.token_url if self.idp else "", "income_account_id": "1",
                "deposit_account_id": "4", "refund_account_id": "35", "expense_account_id": "13",
                "payment_account_id": "35"}
        assert self.idp is not None
        uk = {**base, **CLIENT, "realm_id": QBO_UK_REALM, "region": "GB"}
        return {
            **self._oauth_connections(base),
            # the UK company's 20% VAT code (seeded by the fake as TaxCode 2), and a connection without one
            "qbo-uk": {**uk, "refresh_token": self.idp.grant(), "default_tax_code": "2"},
            "qbo-uk-no-tax-code": {**uk, "refresh_token": self.idp.grant()},
        }

    def rules(self) -> list[str]:
        own = {"customer_id_field": self.customer_field, "days_until_due": 14, "description": KNOWN_PRODUCT}
        return [*super().rules(), *(
            rule_yaml(qbo_tag(kind), f"quickbooks.{kind}", "qbo", self.document_field, own)
            for kind in QBO_DOCUMENT_TYPES),
            rule_yaml("qbo-uk", "quickbooks.invoice", "qbo-uk", self.document_field, own),
            rule_yaml("qbo-uk-no-tax-code", "quickbooks.invoice", "qbo-uk-no-tax-code", self.document_field, own),
        ]

    def entities(self, deal: Deal, entity: str, realm: str = QBO_REALM) -> list[dict[str, Any]]:
        """What the API created of `entity` for the deal (its PrivateNote carries the CRM record id)."""
        return [e for e in self.qbo.created(realm, entity) if deal.id in str(e.get("PrivateNote", ""))]

    def documents(self, deal: Deal) -> list[dict[str, Any]]:
        return [e for entity in sorted(set(QBO_ENTITIES.values())) for e in self.entities(deal, entity)]

    def document_id(self, document: dict[str, Any]) -> str:
        return str(document["Id"])

    def document_customer(self, document: dict[str, Any]) -> str:
        return str(document["CustomerRef"]["value"])

    def customers(self, deal: Deal) -> list[dict[str, Any]]:
        return [c for c in self.qbo.all(QBO_REALM, "Customer")
                if (c.get("PrimaryEmailAddr") or {}).get("Address") == deal.email]

    def customer_id(self, customer: dict[str, Any]) -> str:
        return str(customer["Id"])

    def products(self, name: str) -> list[dict[str, Any]]:
        return [i for i in self.qbo.all(QBO_REALM, "Item") if i.get("Name") == name]

    def seed_customer(self, deal: Deal) -> str:
        return str(self.qbo.seed(QBO_REALM, "Customer", {
            "DisplayName": deal.company_name, "PrimaryEmailAddr": {"Address": deal.email}})["Id"])

    def customer_searches(self, mark: int) -> list[Request]:
        return [r for r in self.since(mark) if r.method == "GET" and r.path.endswith("/query")
                and " from customer " in r.query["query"][-1].lower()]

    def customer_reads(self, mark: int) -> list[Request]:
        return [r for r in self.since(mark) if r.method == "GET" and re.search(r"/customer/\d+$", r.path)]

    def document_creates(self, mark: int) -> list[Request]:
        return [r for r in self.since(mark) if r.method == "POST" and r.path.endswith("/invoice")]

    def throttle_document(self, retry_after: int) -> None:
        self.qbo.throttle_next(str(retry_after), method="POST", path=r"/invoice$")

    def reject_document(self, message: str) -> None:
        self.qbo.reject_next("A business validation error has occurred while processing your request",
                             f"Business Validation Error: {message}", method="POST", path=r"/invoice$")

    def expire_tokens_at_document(self) -> None:
        self.qbo.expire_tokens_on("POST", r"/invoice$")


class XeroTarget(Target):
    key, prefix = "xero", "xero"
    document_field, customer_field = "xeroInvoiceId", "xeroContactId"
    create_methods = ("PUT", "POST")

    def __init__(self) -> None:
        idp = OAuthFake(style="xero")
        idp.start()
        self.idp = idp
        self.xero = FakeXero(token=None)
        self.xero.use_oauth(idp)
        self.xero.start()
        self.fake = self.xero
        self.xero.add_item("FLEET-1", KNOWN_PRODUCT, unit_price=100)

    def connections(self) -> dict[str, dict[str, Any]]:
        assert self.idp is not None
        return self._oauth_connections({"type": "xero", "tenant_id": self.xero.tenant_id, "base_url": self.xero.url,
                                        "token_url": self.idp.token_url, "sales_account_code": "200"})

    def documents(self, deal: Deal) -> list[dict[str, Any]]:
        return [i for i in self.xero.invoices.values() if i.get("Reference") == deal.name]

    def estimates(self, deal: Deal) -> list[tuple[str, dict[str, Any]]]:
        return [(str(q["QuoteID"]), q) for q in self.xero.quotes.values() if q.get("Reference") == deal.name]

    def rules(self) -> list[str]:
        return [*super().rules(), rule_yaml("xero-estimate", "xero.estimate", "xero", self.document_field, {
            "customer_id_field": self.customer_field, "days_until_due": 30, "description": KNOWN_PRODUCT,
            "title": "Fleet analytics proposal"})]

    def document_id(self, document: dict[str, Any]) -> str:
        return str(document["InvoiceID"])

    def document_customer(self, document: dict[str, Any]) -> str:
        return str(document["Contact"]["ContactID"])

    def customers(self, deal: Deal) -> list[dict[str, Any]]:
        return [c for c in self.xero.contacts.values() if c.get("EmailAddress") == deal.email]

    def customer_id(self, customer: dict[str, Any]) -> str:
        return str(customer["ContactID"])

    def products(self, name: str) -> list[dict[str, Any]]:
        return [i for i in self.xero.items.values() if i.get("Name") == name]

    def seed_customer(self, deal: Deal) -> str:
        return str(self.xero.add_contact(deal.company_name, email=deal.email)["ContactID"])

    def customer_searches(self, mark: int) -> list[Request]:
        return [r for r in self.since(mark) if r.method == "GET" and r.path == XERO_PATH + "/Contacts"
                and "where" in r.query]

    def customer_reads(self, mark: int) -> list[Request]:
        return [r for r in self.since(mark) if r.method == "GET" and r.path == XERO_PATH + "/Contacts"
                and "IDs" in r.query]

    def document_creates(self, mark: int) -> list[Request]:
        return [r for r in self.since(mark) if r.method == "PUT" and r.path == XERO_PATH + "/Invoices"]

    def throttle_document(self, retry_after: int) -> None:
        self.xero.fail_next("createInvoices", 429, retry_after=retry_after)

    def reject_document(self, message: str) -> None:
        self.xero.fail_next("createInvoices", 400, message=message)

    def expire_tokens_at_document(self) -> None:
        self._expire_on(self.xero, "PUT", "/Invoices")


class ZohoBooksTarget(Target):
    key, prefix = "zoho_books", "zoho"
    document_field, customer_field = "zohoInvoiceId", "zohoCustomerId"

    def __init__(self) -> None:
        self.zoho = FakeZohoBooks(token=None)
        self.zoho.start()
        # Zoho's token answer names the data centre the API calls go to: here, the fake.
        idp = OAuthFake(style="zoho", api_domain=self.zoho.url)
        idp.start()
        self.idp = idp
        self.zoho.use_oauth(idp)
        self.fake = self.zoho
        self.zoho.add_item(KNOWN_PRODUCT, rate=100, sku="FLEET-1")

    def connections(self) -> dict[str, dict[str, Any]]:
        assert self.idp is not None
        # No api_domain: the first token refresh answers it (the fake's URL), as connecting would store it.
        return self._oauth_connections({"type": "zoho_books", "organization_id": self.zoho.organization_id,
                                        "token_url": self.idp.token_url})

    def documents(self, deal: Deal) -> list[dict[str, Any]]:
        return [i for i in self.zoho.invoices.values()
                if str(i.get("reference_number", "")).startswith(deal.name + " bf-")]

    def estimates(self, deal: Deal) -> list[tuple[str, dict[str, Any]]]:
        return [(str(e["estimate_id"]), e) for e in self.zoho.estimates.values()
                if str(e.get("reference_number", "")).startswith(deal.name + " bf-")]

    def rules(self) -> list[str]:
        return [*super().rules(), rule_yaml("zoho-estimate", "zoho_books.estimate", "zoho", self.document_field, {
            "customer_id_field": self.customer_field, "days_until_due": 30, "description": KNOWN_PRODUCT})]

    def document_id(self, document: dict[str, Any]) -> str:
        return str(document["invoice_id"])

    def document_customer(self, document: dict[str, Any]) -> str:
        return str(document["customer_id"])

    def customers(self, deal: Deal) -> list[dict[str, Any]]:
        return [c for c in self.zoho.contacts.values() if c.get("email") == deal.email]

    def customer_id(self, customer: dict[str, Any]) -> str:
        return str(customer["contact_id"])

    def products(self, name: str) -> list[dict[str, Any]]:
        return [i for i in self.zoho.items.values() if i.get("name") == name]

    def seed_customer(self, deal: Deal) -> str:
        return str(self.zoho.add_contact(deal.company_name, email=deal.email)["contact_id"])

    def customer_searches(self, mark: int) -> list[Request]:
        return [r for r in self.since(mark) if r.method == "GET" and r.path == ZOHO_PATH + "/contacts"]

    def customer_reads(self, mark: int) -> list[Request]:
        return [r for r in self.since(mark) if r.method == "GET" and re.fullmatch(
            re.escape(ZOHO_PATH) + r"/contacts/\d+", r.path)]

    def document_creates(self, mark: int) -> list[Request]:
        return [r for r in self.since(mark) if r.method == "POST" and r.path == ZOHO_PATH + "/invoices"]

    def throttle_document(self, retry_after: int) -> None:
        self.zoho.fail_next("createInvoice", 429, retry_after=retry_after)

    def reject_document(self, message: str) -> None:
        self.zoho.fail_next("createInvoice", 400, message=message)

    def expire_tokens_at_document(self) -> None:
        self._expire_on(self.zoho, "POST", "/invoices")


TARGET_TYPES: tuple[type[Target], ...] = (StripeTarget, QuickBooksTarget, XeroTarget, ZohoBooksTarget)


# --- the stack ----------------------------------------------------------------------------------------
@dataclass
class Stack:
    runtime: LocalRuntime
    twenty: FakeTwenty
    targets: dict[str, Target]
    servers: list[FakeServer] = field(default_factory=list)

    def deal(self, tag: str, *, same_company_as: Deal | None = None, currency: str = "USD",
             amount_micros: int = 1_250_000_000) -> Deal:
        """A won opportunity named "[tag] <unique>", for a fresh company and contact unless given one."""
        unique = uuid.uuid4().hex[:10]
        if same_company_as is not None:
            company, person = same_company_as.company, same_company_as.person
        else:
            company = self.twenty.add_company(f"Company {unique}", address={
                "addressStreet1": "1 Main Street", "addressCity": "Springfield", "addressPostcode": "62701",
                "addressState": "IL", "addressCountry": "United States"})
            person = self.twenty.add_person("Ada", f"Lovelace {unique}", email=f"ap-{unique}@example.com",
                                            company_id=company["id"])
        record = self.twenty.add_opportunity(
            f"[{tag}] {unique}", amount_micros=amount_micros, currency=currency, stage="CUSTOMER",
            company_id=company["id"], point_of_contact_id=person["id"])
        return Deal(tag, record, company, person)

    def won_event(self, deal: Deal) -> dict[str, Any]:
        """Twenty's delivery for the deal's move to the won stage."""
        event: dict[str, Any] = copy.deepcopy(WON_EVENT)
        event["record"] = copy.deepcopy(deal.record)
        event["updatedFields"] = ["stage"]
        return event

    def post(self, body: bytes, headers: dict[str, str]) -> int:
        request = urllib.request.Request(f"{self.runtime.url}/webhooks/{TENANT}/twenty", data=body, method="POST",
                                         headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=30) as resp:
                return int(resp.status)
        except urllib.error.HTTPError as err:
            return int(err.code)

    def deliver(self, deal: Deal) -> int:
        headers, body = signed_twenty_delivery(SIGNING_SECRET, self.won_event(deal))
        return self.post(body, headers)

    def run(self, deal: Deal, timeout: float = 60) -> dict[str, Any]:
        """Deliver the won webhook, wait for the stack to settle; the deal's one execution."""
        assert self.deliver(deal) == 202
        self.runtime.wait_idle(timeout)
        [execution] = self.executions_for(deal)
        return execution

    def executions_for(self, deal: Deal) -> list[dict[str, Any]]:
        """The deal's executions: name, status, error, the states entered. Only the deal's rule's
        executions are described (runtime.executions() describes every one, slower with each test)."""
        sfn = self.runtime.client("stepfunctions")
        found = []
        for machine in self.runtime.state_machines.values():
            pages = sfn.get_paginator("list_executions").paginate(stateMachineArn=machine)
            for summary in (e for page in pages for e in page["executions"]):
                if not summary["name"].startswith(f"{deal.tag}-"):
                    continue
                described = sfn.describe_execution(executionArn=summary["executionArn"])
                if json.loads(described["input"])["event"]["record_id"] != deal.id:
                    continue
                history = self.runtime.history(summary["name"])
                found.append({
                    "name": summary["name"], "status": described["status"], "error": described.get("error"),
                    "states": [e["stateEnteredEventDetails"]["name"] for e in history
                               if e["type"].endswith("StateEntered")],
                })
        return found

    def log_for(self, deal: Deal) -> list[dict[str, Any]]:
        log = ExecutionLog(self.runtime.name_of("ExecutionLogTable"))
        return list(log.by_record(f"{TENANT}#twenty#opportunity#{deal.id}"))

    def failure_reason(self, deal: Deal) -> str:
        [entry] = [e for e in self.log_for(deal) if e["status"] == "failed"]
        return str(entry["reason"])

    def notifications_for(self, deal: Deal) -> list[dict[str, Any]]:
        return [n for n in self.runtime.notifications() if deal.id in str(n["message"])]

    def secret(self, connection: str) -> dict[str, Any]:
        from billflow.storage.secrets import get_secret_store

        secret_id = get_secret_store().connection_secret_id(TENANT, connection)
        raw = self.runtime.client("secretsmanager").get_secret_value(SecretId=secret_id)["SecretString"]
        doc = json.loads(raw)
        assert isinstance(doc, dict)
        return doc

    def stop(self) -> None:
        self.runtime.stop()
        for server in self.servers:
            server.stop()


def start_stack(
    rules_dir: Path, *, extra_rules: Callable[[dict[str, Target]], list[str]] | None = None,
    twenty_settings: dict[str, Any] | None = None, custom_objects: dict[str, Any] | None = None,
) -> Stack:
    """extra_rules: more rule YAMLs, given the targets; twenty_settings: more settings of the Twenty
    connection (line_items, say), custom_objects: the workspace's custom objects (tests/e2e/test_line_items)."""
    servers: list[FakeServer] = []
    try:
        targets: dict[str, Target] = {}
        for kind in TARGET_TYPES:
            target = kind()
            targets[target.key] = target
            servers += [s for s in (target.fake, target.idp) if s is not None]
        twenty = FakeTwenty(custom_fields={
            # what write-back stores: the document on the opportunity, the customer on the company
            "opportunity": {t.document_field: {"type": "string"} for t in targets.values()},
            "company": {t.customer_field: {"type": "string"} for t in targets.values()},
        }, custom_objects=custom_objects)
        twenty.start()
        servers.append(twenty)
        connections: dict[str, Any] = {"twenty": {**twenty.connection_settings(), **(twenty_settings or {})}}
        for target in targets.values():
            connections.update(target.connections())
            for number, text in enumerate(target.rules()):
                (rules_dir / f"{target.key}-{number}.yaml").write_text(text)
        for number, text in enumerate(extra_rules(targets) if extra_rules else []):
            (rules_dir / f"extra-{number}.yaml").write_text(text)
        runtime = LocalRuntime(
            ROOT, port=0, connections={"tenants": {TENANT: {
                "sources": {"twenty": {"signing_secret": SIGNING_SECRET}},
                "connections": connections,
            }}}, tenant=TENANT, echo=None, fast_retries=True,
        )
        runtime.start()
    except BaseException:
        for server in servers:
            server.stop()
        raise
    try:
        runtime.load_rules(rules_dir)
    except BaseException:
        runtime.stop()
        for server in servers:
            server.stop()
        raise
    return Stack(runtime, twenty, targets, servers)


def concurrently(count: int, work: Callable[[], Any]) -> list[Any]:
    import threading

    results: list[Any] = [None] * count
    start = threading.Barrier(count)

    def run(index: int) -> None:
        start.wait()
        results[index] = work()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results
