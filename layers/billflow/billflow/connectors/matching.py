"""Who is billed and what was sold: the matching rules every accounting target shares.

Customers are looked up in this order, the first criterion that finds one wins:
  1. the target's id stored on the CRM record (CustomerInfo.external_id),
  2. the email address,
  3. the person's first and last name (both needed),
  4. the display (company) name.
A criterion that finds several active customers is not guessed from (single_match): AmbiguousCustomer lists
the candidates, and the cure is storing the right one's id on the CRM record, which criterion 1 then takes.
When nothing matches, customer_matching decides: "create_if_missing" (the default) creates the customer,
"strict" refuses with CustomerNotFound and nothing is created.

Products are looked up per line by SKU, then by name (the line's product_name, else its description).
A line that matches nothing is created when the connection allows it (create_products), otherwise every
unmatched line is listed in one ProductNotFound, before anything was created.

Everything here is pure: the connector passes lookup functions (one API call each) and acts on the answer,
so Xero, Zoho Books, QuickBooks and Stripe decide identically and tests need no server.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, Literal, TypeVar

from billflow.errors import AmbiguousCustomer, ConfigurationError, CustomerNotFound, ProductNotFound
from billflow.models.documents import CustomerInfo, LineItem
from billflow.storage.secrets import Connection

T = TypeVar("T")

CREATE_IF_MISSING = "create_if_missing"
STRICT = "strict"
MATCHING_MODES = (CREATE_IF_MISSING, STRICT)

CustomerField = Literal["id", "email", "person_name", "name"]
ProductField = Literal["sku", "name"]


def same_text(found: Any, wanted: str) -> bool:
    """Whether a value a target answered is the text billflow looked for, as the targets compare names:
    trimmed, without regard to case."""
    return isinstance(found, str) and found.strip().casefold() == wanted.strip().casefold()


# --- settings --------------------------------------------------------------------------------------
def customer_matching_mode(connection: Connection) -> str:
    """The connection's customer_matching, validated; create_if_missing when unset."""
    mode = connection.settings.get("customer_matching") or CREATE_IF_MISSING
    if mode not in MATCHING_MODES:
        raise ConfigurationError(
            f"connection {connection.name!r}: customer_matching must be one of {', '.join(MATCHING_MODES)}"
        )
    return str(mode)


def flag_setting(connection: Connection, name: str, default: bool = False) -> bool:
    """A boolean connection setting; secrets are JSON, but people write "true" too."""
    value = connection.settings.get(name, default)
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "false", "yes", "no", "1", "0"):
        return value.strip().lower() in ("true", "yes", "1")
    raise ConfigurationError(f"connection {connection.name!r}: {name} must be true or false")


# --- customers -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class CustomerCriterion:
    """One way to look a customer up. person_name has two values (first, last); the others one."""

    field: CustomerField
    values: tuple[str, ...]

    @property
    def value(self) -> str:
        return " ".join(self.values)

    def describe(self) -> str:
        """For error messages, which end up in logs: the email address is never echoed."""
        if self.field == "id":
            return f"id {self.value!r}"
        if self.field == "email":
            return "the email address"
        if self.field == "person_name":
            return f"first and last name {self.value!r}"
        return f"name {self.value!r}"


def customer_criteria(customer: CustomerInfo) -> list[CustomerCriterion]:
    """The lookups to try, in order; empty values are skipped, duplicates dropped."""
    criteria: list[CustomerCriterion] = []
    if customer.external_id and customer.external_id.strip():
        criteria.append(CustomerCriterion("id", (customer.external_id.strip(),)))
    if customer.email and customer.email.strip():
        criteria.append(CustomerCriterion("email", (customer.email.strip(),)))
    first = (customer.first_name or "").strip()
    last = (customer.last_name or "").strip()
    if first and last:
        criteria.append(CustomerCriterion("person_name", (first, last)))
    name = customer.name.strip()
    if name:
        criteria.append(CustomerCriterion("name", (name,)))
    return criteria


@dataclass(frozen=True)
class CustomerMatch(Generic[T]):
    """What the lookups found (None: nothing) and by which criterion."""

    found: T | None
    criterion: CustomerCriterion | None = None
    tried: tuple[CustomerCriterion, ...] = ()

    @property
    def must_create(self) -> bool:
        return self.found is None


def find_customer(
    customer: CustomerInfo, lookup: Callable[[CustomerCriterion], T | None]
) -> CustomerMatch[T]:
    """Run lookup for each criterion in order until one answers something."""
    tried: list[CustomerCriterion] = []
    for criterion in customer_criteria(customer):
        tried.append(criterion)
        hit = lookup(criterion)
        if hit is not None:
            return CustomerMatch(hit, criterion, tuple(tried))
    return CustomerMatch(None, None, tuple(tried))


MAX_CANDIDATES_SHOWN = 10


def single_match(
    hits: Sequence[T], criterion: CustomerCriterion, *, target: str, describe: Callable[[T], str]
) -> T | None:
    """The one customer a lookup found, None for none; several raise AmbiguousCustomer with the candidates
    (describe gives each one's id and name: never an email address, messages end up in logs)."""
    if len(hits) <= 1:
        return hits[0] if hits else None
    shown = [describe(hit) for hit in hits[:MAX_CANDIDATES_SHOWN]]
    more = f" and {len(hits) - len(shown)} more" if len(hits) > len(shown) else ""
    raise AmbiguousCustomer(
        f"{len(hits)} {target} customers match {criterion.describe()}: {'; '.join(shown)}{more}. billflow does "
        f"not guess: store the right customer's {target} id on the CRM record (the rule's customer_id_field) "
        "and it is used first; nothing was created", candidates=shown, matched_by=criterion.field)


def require_customer(match: CustomerMatch[Any], *, mode: str, target: str) -> None:
    """Raise CustomerNotFound when nothing matched and the mode forbids creating customers."""
    if match.found is None and mode == STRICT:
        raise CustomerNotFound(customer_not_found_message(match, target), tried=[c.field for c in match.tried])


def customer_not_found_message(match: CustomerMatch[Any], target: str) -> str:
    tried = ", ".join(c.describe() for c in match.tried) or "nothing (the customer has no id, email or name)"
    return f"no {target} customer matches {tried}; customer_matching is strict, so none was created"


# --- products --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ProductCriterion:
    field: ProductField
    value: str


def product_name(line: LineItem) -> str:
    """The name a line's product has (or gets when created): product_name, else the description."""
    return (line.product_name or "").strip() or line.description.strip()


def product_criteria(line: LineItem) -> list[ProductCriterion]:
    criteria: list[ProductCriterion] = []
    sku = (line.sku or "").strip()
    if sku:
        criteria.append(ProductCriterion("sku", sku))
    name = product_name(line)
    if name:
        criteria.append(ProductCriterion("name", name))
    return criteria


@dataclass(frozen=True)
class ProductMatch(Generic[T]):
    """One line and the product it matched (None: to be created)."""

    index: int
    line: LineItem
    found: T | None
    criterion: ProductCriterion | None = None


@dataclass
class ProductToCreate:
    """A product no line matched, and the lines that will use it once created."""

    sku: str | None
    name: str
    line: LineItem  # the first line using it: description, price and taxable flag for the new product
    line_indexes: list[int] = field(default_factory=list)


def match_products(
    lines: Sequence[LineItem], lookup: Callable[[ProductCriterion], T | None], *, create_missing: bool,
    target: str, setting: str = "create_products", preset: Mapping[int, T] | None = None,
) -> list[ProductMatch[T]]:
    """Match every line (each distinct lookup is made once). Unmatched lines are allowed only when
    create_missing; otherwise ProductNotFound lists all of them (1-based line numbers).

    preset: products already decided for some lines by index (say, a default product for lines that name
    none); those lines are not looked up.
    """
    answers: dict[ProductCriterion, T | None] = {}
    matches: list[ProductMatch[T]] = []
    for index, line in enumerate(lines):
        if preset and index in preset:
            matches.append(ProductMatch(index, line, preset[index]))
            continue
        found: T | None = None
        used: ProductCriterion | None = None
        for criterion in product_criteria(line):
            if criterion not in answers:
                answers[criterion] = lookup(criterion)
            if answers[criterion] is not None:
                found, used = answers[criterion], criterion
                break
        matches.append(ProductMatch(index, line, found, used))
    unmatched = [m for m in matches if m.found is None]
    if unmatched and not create_missing:
        raise ProductNotFound(
            product_not_found_message(unmatched, target, setting),
            unmatched_lines=[{"line": m.index + 1, "sku": m.line.sku, "name": product_name(m.line)}
                             for m in unmatched],
        )
    return matches


def product_not_found_message(unmatched: Sequence[ProductMatch[Any]], target: str, setting: str) -> str:
    parts = []
    for m in unmatched:
        sku = f", SKU {m.line.sku.strip()!r}" if m.line.sku and m.line.sku.strip() else ""
        parts.append(f"line {m.index + 1} ({product_name(m.line)!r}{sku})")
    return (f"no {target} product matches {', '.join(parts)}; {setting} is off, so nothing was created")


def products_to_create(matches: Sequence[ProductMatch[Any]]) -> list[ProductToCreate]:
    """The distinct products to create for the unmatched lines, in line order.

    Lines share one new product when they name the same SKU (whatever their descriptions say), or, without
    a SKU, the same product name: targets refuse a second product with a SKU or a name they already hold.
    A line without a SKU joins a product of its name that has one; a line with a SKU gives its SKU to a
    product of its name that has none yet. Compared without regard to case, as the targets compare them.
    """
    wanted: list[ProductToCreate] = []
    by_sku: dict[str, ProductToCreate] = {}
    by_name: dict[str, ProductToCreate] = {}
    for m in matches:
        if m.found is not None:
            continue
        sku = (m.line.sku or "").strip()
        name = product_name(m.line)
        entry = by_sku.get(sku.casefold()) if sku else None
        if entry is None:
            named = by_name.get(name.casefold())
            if named is not None and (not sku or named.sku is None):
                entry = named
        if entry is None:
            entry = ProductToCreate(sku or None, name, m.line)
            wanted.append(entry)
            by_name.setdefault(name.casefold(), entry)
        if sku and entry.sku is None:
            entry.sku = sku
        if entry.sku:
            by_sku.setdefault(entry.sku.casefold(), entry)
        entry.line_indexes.append(m.index)
    return wanted
