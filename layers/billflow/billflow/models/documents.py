"""What a document action sends, independent of the target system."""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator


class Address(BaseModel):
    model_config = ConfigDict(defer_build=True)
    line1: str | None = None
    line2: str | None = None
    city: str | None = None
    state: str | None = None
    postal_code: str | None = None
    country: str | None = None


class CustomerInfo(BaseModel):
    """Who is billed, from the CRM record and its looked-up company and contacts."""

    model_config = ConfigDict(defer_build=True)
    external_id: str | None = Field(default=None, description="The target's customer id stored on the CRM")
    name: str
    email: str | None = None
    first_name: str | None = None
    last_name: str | None = None
    address: Address = Field(default_factory=Address)
    tax_id: str | None = None
    crm_company_id: str | None = None


class LineItem(BaseModel):
    model_config = ConfigDict(defer_build=True)
    description: str
    quantity: float = 1
    unit_amount_minor: int = Field(description="Price per unit in the currency's smallest unit")
    sku: str | None = None
    product_name: str | None = None
    taxable: bool | None = Field(default=None, description="True: taxed; False: marked not taxable; None: unsaid")
    discount_percent: Decimal | None = Field(
        default=None, ge=0, le=100, description="Percent off the line's gross amount (quantity x unit price)")
    discount_amount_minor: int | None = Field(
        default=None, ge=0, description="Amount off the whole line, in the currency's smallest unit")
    term: str | None = Field(default=None, description="The CRM's billing term of the line (e.g. P12M), for memos")

    @model_validator(mode="after")
    def _one_discount(self) -> LineItem:
        if self.discount_percent is not None and self.discount_amount_minor is not None:
            raise ValueError("a line has a discount percent or a discount amount, not both")
        if self.discount_amount_minor and self.discount_amount_minor > abs(self.gross_minor()):
            raise ValueError(f"the discount of {self.description[:40]!r} is larger than the line")
        return self

    def gross_minor(self) -> Decimal:
        """quantity x unit price, in minor units (fractional for a fractional quantity)."""
        return Decimal(str(self.quantity)) * self.unit_amount_minor

    def discount_minor(self) -> int:
        """The line's discount in minor units (a percent of the gross, rounded half up); 0 for none."""
        if self.discount_amount_minor is not None:
            return self.discount_amount_minor
        if self.discount_percent:
            return int((self.gross_minor() * self.discount_percent / 100).quantize(Decimal(1), ROUND_HALF_UP))
        return 0

    @property
    def discounted(self) -> bool:
        return bool(self.discount_amount_minor) or bool(self.discount_percent)


class InvoiceDraft(BaseModel):
    """A billing document to create, in the target-neutral form format builds and dispatch sends."""

    model_config = ConfigDict(extra="forbid", defer_build=True)

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

    model_config = ConfigDict(defer_build=True)
    status: str = "sent"
    external_id: str | None = None
    external_url: str | None = None
    value: Any = Field(default=None, description="What an expression action computed")
    details: dict[str, Any] = Field(default_factory=dict)
