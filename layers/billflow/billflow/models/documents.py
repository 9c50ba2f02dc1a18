"""What a document action sends, independent of the target system."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class Address(BaseModel):
    line1: str | None = None
    line2: str | None = None
    city: str | None = None
    state: str | None = None
    postal_code: str | None = None
    country: str | None = None


class CustomerInfo(BaseModel):
    """Who is billed, from the CRM record and its looked-up company and contacts."""

    external_id: str | None = Field(default=None, description="The target's customer id stored on the CRM")
    name: str
    email: str | None = None
    first_name: str | None = None
    last_name: str | None = None
    address: Address = Field(default_factory=Address)
    tax_id: str | None = None
    crm_company_id: str | None = None


class LineItem(BaseModel):
    description: str
    quantity: float = 1
    unit_amount_minor: int = Field(description="Price per unit in the currency's smallest unit")
    sku: str | None = None
    product_name: str | None = None
    taxable: bool | None = Field(default=None, description="True: taxed; False: marked not taxable; None: unsaid")


class InvoiceDraft(BaseModel):
    """A billing document to create, in the target-neutral form format builds and dispatch sends."""

    model_config = ConfigDict(extra="forbid")

    document_type: str = "invoice"
    customer: CustomerInfo
    currency: str = Field(min_length=3, max_length=3, description="ISO 4217, lower case")
    lines: list[LineItem] = Field(min_length=1)
    days_until_due: int | None = 30
    memo: str | None = None
    reference: str | None = None
    metadata: dict[str, str] = Field(default_factory=dict)
    options: dict[str, Any] = Field(default_factory=dict, description="Target-specific options from the rule")


class DispatchResult(BaseModel):
    """What a target answered: the id billflow writes back and logs."""

    status: str = "sent"
    external_id: str | None = None
    external_url: str | None = None
    value: Any = Field(default=None, description="What an expression action computed")
    details: dict[str, Any] = Field(default_factory=dict)
