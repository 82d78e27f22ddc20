"""Invoices over the REST API. Handlers parse, call one service, and answer with the invoice
as `invoice_snapshot` shows it, which is also what callbacks carry."""

import re
from contextlib import nullcontext
from datetime import date, datetime
from decimal import Decimal
from typing import Annotated, Any, Literal

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import transaction
from django.http import HttpRequest
from ninja import Field, Query, Router, Schema
from pydantic import ConfigDict
from pydantic.config import JsonDict, JsonValue

from customers.api import NAME_PATTERN, email_field, no_default
from customers.models import Customer
from customers.selectors import customer_scope
from customers.services import customer_create
from invoices.callbacks import credit_note_snapshot, invoice_snapshot
from invoices.delivery import invoice_send
from invoices.models import Actor, Invoice, InvoiceKind, InvoiceStatus, PaymentMethod, TaxRate
from invoices.rules import NO_DISCOUNT, Discount, LineItemInput
from invoices.selectors import invoice_list, invoice_scope
from invoices.services import (
    DUPLICATE_FOREIGN_ID,
    INTEGRATION_FIELDS,
    NEEDS_POSITIVE_TOTAL,
    InvoiceInput,
    InvoiceStateError,
    credit_note_issue,
    invoice_cancel,
    invoice_close,
    invoice_create,
    invoice_update_integration,
    invoice_update_items,
)
from merchants.api import (
    IDEMPOTENT_POST,
    ApiError,
    Error,
    IsoDate,
    cursor_field,
    from_validation_error,
    idempotent,
    merchant_of,
    page,
)
from merchants.models import Merchant
from merchants.money import CURRENCIES, PAYMENT_ASSETS, price_gap

router = Router(tags=["invoices"])

# What check_quantity and check_price accept, as far as a pattern can say it: a quantity is
# above zero, at most a million, with at most four decimals; a price at most a trillion. The
# decimals a price may have depend on the currency (USD 2, USDC 6): the service says so (422).
QUANTITY_PATTERN = (
    r"^([1-9][0-9]{0,5}(\.[0-9]{1,4})?|1000000(\.0{1,4})?"
    r"|0\.([1-9][0-9]{0,3}|0[1-9][0-9]{0,2}|00[1-9][0-9]?|000[1-9]))$"
)
_FRACTION = r"(\.[0-9]{1,8})?"
PRICE_PATTERN = rf"^([0-9]|[1-9][0-9]{{1,11}}){_FRACTION}$|^1000000000000(\.0{{1,8}})?$"
# The same, above zero: what a one-time invoice's single amount must be.
POSITIVE_PRICE_PATTERN = (
    rf"^[1-9][0-9]{{0,11}}{_FRACTION}$|^1000000000000(\.0{{1,8}})?$"
    r"|^0\.(?=[0-9]{1,8}$)0*[1-9][0-9]*$"
)
DecimalText = Field(pattern=PRICE_PATTERN, examples=["19.99"])
# A full http(s) URL at a host name, `localhost` or an IPv4 address: the part of what the
# invoice's URL checks accept that a pattern can state. Where the address may point is the
# SSRF rule's to judge (private and loopback addresses are refused in production, 422).
_LABEL = r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_OCTET = r"(25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])"
_HOST = rf"(({_LABEL}\.)+[A-Za-z]{{2,63}}|localhost|({_OCTET}\.){{3}}{_OCTET})"
_URL_CHARS = r"[A-Za-z0-9._~%!$&'()*+,;=:@/-]"


def _url_pattern(host: str) -> str:
    # The look-ahead keeps the host within the 253 characters a host name may have: no 254
    # characters before the port, path or query. Said as "not 254" rather than "1 to 253, then
    # the end of the host", which means the same here (a host holds none of / : ?) but which
    # Hypothesis cannot generate for: Schemathesis searched 9 s of CPU for each URL at its
    # 500-character bound and gave up, so the fuzzing never sent one.
    return (
        rf"^(https?://(?![^/:?]{{254}}){host}(:[1-9][0-9]{{0,3}})?"
        rf"(/{_URL_CHARS}*)?(\?{_URL_CHARS}*)?)?$"
    )


URL_PATTERN = _url_pattern(_HOST)
# Where private targets are refused (production), a callback URL names its host: the rule
# refuses `localhost`, its subdomains and literal addresses that are not public, and names are
# only resolved at delivery. A name is what a pattern can state of that.
_NOT_LOCALHOST = r"(?![Ll][Oo][Cc][Aa][Ll][Hh][Oo][Ss][Tt]([/:?]|$))"
PUBLIC_CALLBACK_URL_PATTERN = _url_pattern(rf"({_LABEL}\.)+{_NOT_LOCALHOST}[A-Za-z]{{2,63}}")


def _callback_targets(schema: JsonDict) -> None:
    if settings.CALLBACKS_ALLOW_PRIVATE:
        return
    schema["description"] = (
        "A full http(s) URL at a public host name (no localhost or literal address); "
        "empty for none."
    )
    branches = schema.get("anyOf")  # nullable: the string branch
    for branch in branches if isinstance(branches, list) else [schema]:
        if isinstance(branch, dict) and branch.get("type") == "string":
            branch["pattern"] = PUBLIC_CALLBACK_URL_PATTERN


def url_field(default: str | None, *, callback: bool = False) -> Any:
    return Field(
        default,
        max_length=500,
        pattern=URL_PATTERN,
        description="A full http(s) URL; empty for none.",
        json_schema_extra=_callback_targets if callback else None,
    )


class In(Schema):
    # Python's regex engine: the URL pattern needs a look-ahead, which pydantic's own lacks.
    model_config = ConfigDict(extra="forbid", regex_engine="python-re")


ID = Field(ge=1, le=2**63 - 1)


# What check_percent accepts: 0 to 100, at most four decimals.
PERCENT_PATTERN = r"^(100(\.0{1,4})?|[1-9]?[0-9](\.[0-9]{1,4})?)$"


class PercentOff(In):
    kind: Literal["percent"]
    value: str = Field(pattern=PERCENT_PATTERN, examples=["10"], description="0 to 100")


class AmountOff(In):
    kind: Literal["amount"]
    value: str = Field(
        pattern=PRICE_PATTERN,
        examples=["5.00"],
        description="In the invoice's currency, at most what it comes off (422 otherwise).",
    )


# One shape per kind, told apart by `kind`, so each states its own bounds.
DiscountIn = Annotated[PercentOff | AmountOff, Field(discriminator="kind")]
DISCOUNT_KINDS = frozenset({"percent", "amount"})


class ItemIn(In):
    name: str = Field(min_length=1, max_length=200, pattern=NAME_PATTERN)
    description: str = Field("", max_length=500)
    quantity: str = Field("1", pattern=QUANTITY_PATTERN, examples=["2"])
    unit_price: str = DecimalText
    discount: DiscountIn | None = None
    tax_rate_id: int | None = Field(
        None, ge=1, le=2**63 - 1, description="One of your tax rates (GET /v1/tax-rates)."
    )


class InlineCustomerIn(In):
    """Found by email among your customers, or created."""

    name: str = Field(min_length=1, max_length=200, pattern=NAME_PATTERN)
    email: str = email_field()
    company: str = Field("", max_length=200)


# Fields that exclude each other, stated in the schema as the handlers apply them: by
# presence in the request, whatever the value.
NOT_BOTH_ITEMS_AND_AMOUNT: JsonDict = {"not": {"required": ["items", "amount"]}}
NOT_BOTH_CUSTOMERS: JsonDict = {"not": {"required": ["customer", "customer_id"]}}
NO_EMAIL_FOR_DRAFTS: JsonDict = {
    "not": {
        "required": ["send_email", "issue"],
        "properties": {"send_email": {"const": True}, "issue": {"const": False}},
    }
}


# An issued one-time invoice needs a positive total (invoices.services._check_issuable): a
# draft or a permanent invoice may start empty; otherwise a positive amount or a line with a
# positive price. (Discounts that take a line to zero remain the service's to refuse, 422.)
PRICED_WHEN_ISSUED: JsonDict = {
    "anyOf": [
        {"required": ["issue"], "properties": {"issue": {"const": False}}},
        {"required": ["kind"], "properties": {"kind": {"const": "permanent"}}},
        {"required": ["amount"], "properties": {"amount": {"pattern": POSITIVE_PRICE_PATTERN}}},
        {
            "required": ["items"],
            "properties": {
                "items": {
                    "contains": {"properties": {"unit_price": {"pattern": POSITIVE_PRICE_PATTERN}}}
                }
            },
        },
    ]
}


def _priceable_currencies(schema: JsonDict) -> None:
    # The currencies an invoice may be priced in under this deployment's rate settings.
    schema["enum"] = [code for code in CURRENCIES if not price_gap(code)]


def _priceable_assets(schema: JsonDict) -> None:
    # What the payer may pay in, under the same settings; each once. (That a pre-selected
    # asset, timer_fixed_asset, needs exactly one is the service's to say, 422: Schemathesis
    # cannot generate from the schema once that rule joins the others.)
    codes: list[JsonValue] = [code for code in PAYMENT_ASSETS if not price_gap(code)]
    schema.update(items={"enum": codes}, uniqueItems=True, maxItems=len(codes))


class InvoiceCreateIn(In):
    model_config = ConfigDict(
        extra="forbid",
        regex_engine="python-re",
        json_schema_extra={
            "allOf": [
                NOT_BOTH_ITEMS_AND_AMOUNT,
                NOT_BOTH_CUSTOMERS,
                NO_EMAIL_FOR_DRAFTS,
                PRICED_WHEN_ISSUED,
            ]
        },
    )

    currency: str = Field(max_length=8, examples=["USD"], json_schema_extra=_priceable_currencies)
    items: list[ItemIn] = Field(default_factory=list, max_length=200)
    amount: str | None = Field(
        None,
        pattern=PRICE_PATTERN,
        description="A single amount instead of items (becomes one item named by `description`).",
    )
    description: str = Field("", max_length=2000)
    due_date: IsoDate | None = None
    kind: Literal["one_time", "permanent"] = "one_time"
    pricing_mode: Literal["no_timer", "timer", "timer_fixed_asset"] = "no_timer"
    accepted_assets: list[str] = Field(
        default_factory=list, max_length=20, json_schema_extra=_priceable_assets
    )
    fee_payer: Literal["merchant", "payer"] | None = None
    customer_id: int | None = None
    customer: InlineCustomerIn | None = None
    foreign_id: str = Field("", max_length=128)
    tracking_id: str = Field("", max_length=128)
    callback_url: str = url_field("", callback=True)
    payment_page_url: str = url_field("")
    payment_page_button: str = Field("", max_length=40)
    discount: DiscountIn | None = Field(None, description="Off the whole invoice, before tax.")
    notes: str = Field("", max_length=5000, description="Shown to the customer.")
    terms: str = Field("", max_length=5000)
    terms_days: int | None = Field(
        None,
        ge=0,
        le=365,
        description="Net N: the due date is set N days after issue. Left out: your default.",
    )
    po_number: str = Field("", max_length=64)
    footer: str | None = Field(None, max_length=1000, description="Left out: your default.")
    # Ids bounded to what the database can hold: a bigger one is a 422, not an overflow.
    payment_method_ids: list[Annotated[int, Field(ge=1, le=2**63 - 1)]] = Field(
        default_factory=list,
        max_length=20,
        description="Other ways to pay this invoice accepts (GET /v1/payment-methods).",
    )
    issue: bool = Field(True, description="Open for payment now; false keeps a draft.")
    send_email: bool = Field(False, description="Email the invoice to the customer.")


class InvoiceUpdateIn(In):
    model_config = ConfigDict(
        extra="forbid", regex_engine="python-re", json_schema_extra=NOT_BOTH_ITEMS_AND_AMOUNT
    )

    tracking_id: str | None = Field(None, max_length=128)
    callback_url: str | None = url_field(None, callback=True)
    payment_page_url: str | None = url_field(None)
    payment_page_button: str | None = Field(None, max_length=40)
    # Optional but never null (None only tells "left out" apart), like a customer's name.
    items: list[ItemIn] = Field(
        None,  # type: ignore[assignment, arg-type]
        min_length=1,
        max_length=200,
        json_schema_extra=no_default,
    )
    amount: str = Field(
        None,  # type: ignore[assignment]
        pattern=PRICE_PATTERN,
        description="A one-time invoice's must be above zero (409 otherwise: the kind is stored).",
        json_schema_extra=no_default,
    )


class InvoiceFilters(Schema):
    status: Literal[tuple(InvoiceStatus.values)] | None = None  # type: ignore[valid-type]
    # Bounded like a database id: beyond 64 bits SQLite cannot even compare.
    customer_id: int | None = Field(None, ge=1, le=2**63 - 1)
    created_after: IsoDate | None = None
    created_before: IsoDate | None = None
    foreign_id: str | None = Field(None, max_length=128)
    cursor: str | None = cursor_field()
    limit: int = Field(25, ge=1, le=100)


class DiscountOut(Schema):
    kind: str
    value: str
    amount: str


class LineTaxOut(Schema):
    name: str
    percent: str
    inclusive: bool
    rate_id: int | None
    amount: str


class TaxOut(Schema):
    name: str
    percent: str
    inclusive: bool
    taxable: str
    tax: str


class ItemOut(Schema):
    name: str
    description: str
    quantity: str
    unit_price: str
    discount: DiscountOut | None
    amount: str = Field(description="quantity x unit price less the line's discount")
    tax: LineTaxOut | None


class CustomerRef(Schema):
    id: int
    name: str
    email: str
    company: str


class AddressOut(Schema):
    address_line1: str
    address_line2: str
    city: str
    postal_code: str
    region: str
    country: str


class SellerOut(Schema):
    name: str
    legal_name: str
    tax_id: str
    registration_number: str
    contact_email: str
    contact_phone: str
    address: AddressOut
    address_lines: list[str]


class BuyerOut(Schema):
    name: str
    email: str
    company: str
    tax_id: str
    address: AddressOut
    address_lines: list[str]


class CreditLineOut(Schema):
    position: int = Field(description="The invoice line's position (1-based)")
    name: str
    quantity: str = Field(description="Units of the line this note credits")
    of_quantity: str = Field(description="The line's quantity on the invoice")
    amount: str = Field(description="Credited, exclusive tax included")
    tax: str


class CreditNoteOut(Schema):
    id: int
    reference: str
    amount: str
    tax: str
    reason: str
    lines: list[CreditLineOut]
    refund: str | None
    created_at: datetime


class PaymentMethodOut(Schema):
    id: int
    name: str
    kind: str
    account_holder: str
    bank_name: str
    iban: str
    bic: str
    instructions: str


class InvoiceOut(Schema):
    id: int
    reference: str
    status: str
    failure_reason: str | None
    kind: str
    pricing_mode: str
    currency: str
    subtotal: str
    discount: DiscountOut | None
    tax_total: str
    taxes: list[TaxOut]
    total: str = Field(description="What the payer pays.")
    open_amount: bool
    accepted_assets: list[str]
    fee_payer: str
    description: str
    due_date: date | None
    customer: CustomerRef | None
    items: list[ItemOut]
    notes: str
    terms: str
    terms_days: int | None
    po_number: str | None
    footer: str
    seller: SellerOut
    buyer: BuyerOut | None
    payment_methods: list[PaymentMethodOut]
    credit_notes: list[CreditNoteOut]
    foreign_id: str | None
    tracking_id: str | None
    callback_url: str | None
    payment_page_url: str | None
    payment_page_button: str | None
    pay_url: str
    created_at: datetime
    issued_at: datetime | None
    expires_at: datetime | None
    finalized_at: datetime | None


class InvoicePage(Schema):
    items: list[InvoiceOut]
    next_cursor: str | None


class DuplicateError(Error):
    # Left out of a 409 that is not about the foreign_id (an Idempotency-Key reused).
    existing_id: int = Field(
        None,  # type: ignore[assignment]
        description="The invoice that has this foreign_id (code duplicate_foreign_id).",
        json_schema_extra=no_default,
    )


def invoice_or_404(merchant: Merchant, invoice_id: int) -> Invoice:
    invoice = invoice_scope(merchant=merchant).filter(pk=invoice_id).first()
    if invoice is None:
        raise ApiError(404, "No such invoice.", code="not_found")
    return invoice


def _snapshot(invoice_id: int) -> dict[str, Any]:
    return invoice_snapshot(
        Invoice.objects.select_related("customer").prefetch_related("items").get(pk=invoice_id)
    )


def _discount(discount: PercentOff | AmountOff | None) -> Discount:
    return Discount(discount.kind, Decimal(discount.value)) if discount else NO_DISCOUNT


def _items(
    merchant: Merchant,
    items: list[ItemIn] | None,
    amount: str | None,
    description: str,
    *,
    both: bool,
) -> list[LineItemInput]:
    if both:
        raise ApiError(
            422,
            "Send line items or a single amount, not both.",
            fields={"amount": ["Leave out when items are given."]},
        )
    if amount is not None:
        name = description.strip().splitlines()[0][:200] if description.strip() else "Payment"
        return [LineItemInput(name=name, quantity=Decimal(1), unit_price=Decimal(amount))]
    rate_ids = {item.tax_rate_id for item in items or [] if item.tax_rate_id is not None}
    # No ids, no lookup: building the (empty) query costs a creation more than its inserts.
    rates = (
        {
            rate.pk: rate
            for rate in TaxRate.objects.filter(
                merchant=merchant, pk__in=rate_ids, archived_at__isnull=True
            )
        }
        if rate_ids
        else {}
    )
    unknown = {
        f"items.{index}.tax_rate_id": ["No such tax rate of yours."]
        for index, item in enumerate(items or [])
        if item.tax_rate_id is not None and item.tax_rate_id not in rates
    }
    if unknown:
        raise ApiError(404, "No such tax rate.", code="not_found", fields=unknown)
    return [
        LineItemInput(
            name=item.name,
            description=item.description,
            quantity=Decimal(item.quantity),
            unit_price=Decimal(item.unit_price),
            discount=_discount(item.discount),
            tax=rates[item.tax_rate_id].spec if item.tax_rate_id is not None else None,
        )
        for item in items or []
    ]


def _payment_methods(merchant: Merchant, ids: list[int]) -> list[PaymentMethod]:
    if not ids:
        return []
    methods = list(
        PaymentMethod.objects.filter(merchant=merchant, pk__in=ids, archived_at__isnull=True)
    )
    if len(methods) != len(set(ids)):
        raise ApiError(
            404,
            "No such payment method.",
            code="not_found",
            fields={"payment_method_ids": ["Give ids of your active payment methods."]},
        )
    return methods


def _customer(merchant: Merchant, payload: InvoiceCreateIn) -> Customer | None:
    if {"customer", "customer_id"} <= payload.model_fields_set:
        raise ApiError(
            422,
            "Give customer_id or customer, not both.",
            fields={"customer": ["Leave out when customer_id is given."]},
        )
    if payload.customer_id is not None:
        customer = customer_scope(merchant=merchant).filter(pk=payload.customer_id).first()
        if customer is None:
            raise ApiError(
                404,
                "No such customer.",
                code="not_found",
                fields={"customer_id": ["No such customer of yours."]},
            )
        return customer
    if payload.customer is not None:
        inline = payload.customer
        existing = (
            customer_scope(merchant=merchant).filter(email__iexact=inline.email.strip()).first()
        )
        if existing is not None:
            return existing
        try:
            return customer_create(
                merchant=merchant, name=inline.name, email=inline.email, company=inline.company
            )
        except ValidationError as error:
            raise from_validation_error(error, prefix="customer.") from None
    return None


def _duplicate(merchant: Merchant, foreign_id: str) -> ApiError | None:
    existing = invoice_scope(merchant=merchant).filter(foreign_id=foreign_id).first()
    if existing is None:
        return None
    return ApiError(
        409,
        DUPLICATE_FOREIGN_ID,
        code="duplicate_foreign_id",
        fields={"foreign_id": [DUPLICATE_FOREIGN_ID]},
        extra={"existing_id": existing.pk},
    )


# An id in the body that names nothing of this merchant is a 404 like one in the path (the
# request is well formed; the object it names is not there), with `fields` saying which.
NAMED_IN_BODY = (
    "An id in the body (customer_id, an item's tax_rate_id, payment_method_ids) names none "
    "of your active ones; `fields` says which."
)
NAMED_IN_PATH_OR_BODY = (
    "No such invoice of yours, or an item's tax_rate_id names none of your active tax "
    "rates; `fields` says which."
)


@router.post(
    "",
    response={201: InvoiceOut, 404: Error, 409: DuplicateError, 422: Error},
    summary="Create an invoice",
    openapi_extra={**IDEMPOTENT_POST, "responses": {404: {"description": NAMED_IN_BODY}}},
    description='Amounts are decimal strings (`"19.99"`), never JSON numbers. '
    "Send an `Idempotency-Key` header to make retries safe.",
)
@idempotent
def create_invoice(request: HttpRequest, payload: InvoiceCreateIn):
    merchant = merchant_of(request)
    foreign_id = payload.foreign_id.strip()
    if foreign_id and (duplicate := _duplicate(merchant, foreign_id)):
        raise duplicate
    items = _items(
        merchant,
        payload.items,
        payload.amount,
        payload.description,
        both={"items", "amount"} <= payload.model_fields_set,
    )
    given = payload.model_fields_set
    if payload.send_email and not payload.issue:
        raise ApiError(
            422, "A draft cannot be emailed.", fields={"send_email": ["Needs issue: true."]}
        )
    # A customer made from the request and the email stand or fall with the invoice; without
    # them, the creation needs no transaction around it (see invoice_create).
    together = payload.customer is not None or payload.send_email
    with transaction.atomic() if together else nullcontext():
        data = InvoiceInput(
            currency=payload.currency,
            items=items,
            customer=_customer(merchant, payload),
            description=payload.description,
            due_date=payload.due_date,
            kind=payload.kind,
            pricing_mode=payload.pricing_mode,
            accepted_assets=payload.accepted_assets,
            fee_payer=payload.fee_payer or "",
            foreign_id=foreign_id,
            tracking_id=payload.tracking_id,
            callback_url=payload.callback_url,
            payment_page_url=payload.payment_page_url,
            payment_page_button=payload.payment_page_button,
            discount=_discount(payload.discount),
            notes=payload.notes,
            terms=payload.terms,
            terms_days=payload.terms_days if "terms_days" in given else merchant.default_terms_days,
            po_number=payload.po_number,
            footer=payload.footer if payload.footer is not None else merchant.invoice_footer,
            payment_methods=_payment_methods(merchant, payload.payment_method_ids),
        )
        try:
            invoice = invoice_create(
                merchant=merchant,
                data=data,
                actor=Actor.API,
                issue=payload.issue,
                whole_for_snapshot=not payload.send_email,
            )
        except ValidationError as error:
            # Lost a race with a concurrent request carrying the same foreign ID.
            lost_race = foreign_id and DUPLICATE_FOREIGN_ID in error.messages
            if lost_race and (duplicate := _duplicate(merchant, foreign_id)):
                raise duplicate from None
            raise _in_api_terms(error) from None
        if payload.send_email:
            try:
                invoice_send(invoice=invoice, actor=Actor.API)
            except ValidationError as error:
                raise ApiError(
                    422, error.messages[0], fields={"send_email": error.messages}
                ) from None
            return 201, _snapshot(invoice.pk)
    # Handed back whole (its items, no credit notes yet): nothing needs reading back.
    return 201, invoice_snapshot(invoice)


@router.get("", response=InvoicePage, summary="List invoices, newest first")
def list_invoices(request: HttpRequest, filters: Query[InvoiceFilters]):
    merchant = merchant_of(request)
    invoices = invoice_list(
        merchant=merchant,
        status=filters.status or "",
        customer_id=filters.customer_id,
        created_from=filters.created_after,
        created_to=filters.created_before,
    ).prefetch_related("items")
    if filters.foreign_id:
        invoices = invoices.filter(foreign_id=filters.foreign_id)
    rows, next_cursor = page(invoices, cursor=filters.cursor, limit=filters.limit)
    return {"items": [invoice_snapshot(invoice) for invoice in rows], "next_cursor": next_cursor}


@router.get(
    "/by-foreign-id",
    response={200: InvoiceOut, 404: Error},
    summary="Find an invoice by your own id for it",
)
def get_invoice_by_foreign_id(
    request: HttpRequest, foreign_id: str = Query(..., min_length=1, max_length=128)
):
    invoice = invoice_scope(merchant=merchant_of(request)).filter(foreign_id=foreign_id).first()
    if invoice is None:
        raise ApiError(404, "No invoice has this foreign ID.", code="not_found")
    return _snapshot(invoice.pk)


@router.get("/{int:invoice_id}", response={200: InvoiceOut, 404: Error}, summary="Get an invoice")
def get_invoice(request: HttpRequest, invoice_id: int):
    return _snapshot(invoice_or_404(merchant_of(request), invoice_id).pk)


@router.patch(
    "/{int:invoice_id}",
    response={200: InvoiceOut, 404: Error, 409: Error, 422: Error},
    summary="Change an invoice",
    openapi_extra={"responses": {404: {"description": NAMED_IN_PATH_OR_BODY}}},
    description="Tracking ID, callback URL and payment-page link and button may change any "
    "time; the items or amount only while no payment has started.",
)
def update_invoice(request: HttpRequest, invoice_id: int, payload: InvoiceUpdateIn):
    invoice = invoice_or_404(merchant_of(request), invoice_id)
    given = payload.model_fields_set
    with transaction.atomic():
        integration: dict[str, str] = {
            key: getattr(payload, key) or ""
            for key in INTEGRATION_FIELDS
            if key in given and key in INTEGRATION_FIELDS
        }
        if integration:
            invoice = invoice_update_integration(
                invoice=invoice,
                actor=Actor.API,
                **integration,  # type: ignore[arg-type]
            )
        if "items" in given or "amount" in given:
            items = _items(
                invoice.merchant,
                payload.items,
                payload.amount,
                invoice.description,
                both={"items", "amount"} <= given,
            )
            try:
                invoice = _state(
                    invoice_update_items, invoice=invoice, items=items, actor=Actor.API
                )
            except ValidationError as error:
                # What the request conflicts with is stored, not sent, hence 409: the
                # invoice's own discount is above the new items' subtotal, or the invoice is a
                # one-time one (its kind does not change) and the new total is zero.
                by_field = error.message_dict if hasattr(error, "error_dict") else {}
                conflict = by_field.get("discount_value")
                if conflict:
                    raise ApiError(
                        409, conflict[0], code="discount_conflict", fields={"items": conflict}
                    ) from None
                if NEEDS_POSITIVE_TOTAL in by_field.get("items", []):
                    field = "amount" if "amount" in given else "items"
                    raise ApiError(
                        409,
                        NEEDS_POSITIVE_TOTAL,
                        code="total_not_positive",
                        fields={field: [NEEDS_POSITIVE_TOTAL]},
                    ) from None
                raise _in_api_terms(error) from None
    return _snapshot(invoice.pk)


# The invoice service names fields as the web form does; an API client sent other names.
_API_FIELD_NAMES = (
    (re.compile(r"^(items\.\d+\.)?discount_value$"), r"\1discount.value"),
    (re.compile(r"^(items\.\d+\.)tax_rate$"), r"\1tax_rate_id"),
    (re.compile(r"^customer$"), "customer_id"),
    (re.compile(r"^payment_methods$"), "payment_method_ids"),
)


def _in_api_terms(error: ValidationError) -> ApiError:
    """The service's field errors under the names the request used (`discount.value`, not
    the form's `discount_value`), so a client can point at what it sent."""
    api_error = from_validation_error(error)
    renamed: dict[str, list[str]] = {}
    for key, messages in (api_error.fields or {}).items():
        for pattern, replacement in _API_FIELD_NAMES:
            key = pattern.sub(replacement, key)
        renamed.setdefault(key, []).extend(messages)
    api_error.fields = renamed
    return api_error


def _state(service: Any, **kwargs: Any) -> Invoice:
    try:
        return service(**kwargs)
    except InvoiceStateError as error:
        raise ApiError(409, str(error), code="invalid_state") from None


@router.post(
    "/{int:invoice_id}/cancel",
    response={200: InvoiceOut, 404: Error, 409: Error},
    summary="Cancel an open or processing invoice",
    openapi_extra=IDEMPOTENT_POST,
    description="The invoice fails with reason `cancelled`; the `invoice.cancelled` callback "
    "says so.",
)
@idempotent
def cancel_invoice(request: HttpRequest, invoice_id: int):
    invoice = invoice_or_404(merchant_of(request), invoice_id)
    return _snapshot(_state(invoice_cancel, invoice=invoice, actor=Actor.API).pk)


@router.post(
    "/{int:invoice_id}/close",
    response={200: InvoiceOut, 404: Error, 409: Error},
    summary="Close a permanent invoice to further payments",
    openapi_extra=IDEMPOTENT_POST,
)
@idempotent
def close_invoice(request: HttpRequest, invoice_id: int):
    invoice = invoice_or_404(merchant_of(request), invoice_id)
    if invoice.kind != InvoiceKind.PERMANENT:
        raise ApiError(409, "Only permanent invoices are closed.", code="invalid_state")
    return _snapshot(_state(invoice_close, invoice=invoice, actor=Actor.API).pk)


class CreditLineIn(In):
    position: int = Field(ge=1, le=32767, description="The invoice line's position (1-based)")
    quantity: str | None = Field(
        None,
        pattern=QUANTITY_PATTERN,
        examples=["2"],
        description="Units to credit, as a line's quantity is written; left out: all that is "
        "left of the line. More than is left is a 409.",
    )


class CreditNoteIn(In):
    reason: str = Field(min_length=1, max_length=2000, pattern=NAME_PATTERN)
    lines: list[CreditLineIn] | None = Field(
        None,
        min_length=1,
        max_length=200,
        description="Left out: credit everything not credited yet. A position named more "
        "than once is credited the sum of its quantities (all that is left if one has none).",
    )


class CreditNoteCreated(CreditNoteOut):
    invoice: InvoiceOut


@router.post(
    "/{int:invoice_id}/credit-notes",
    response={201: CreditNoteCreated, 404: Error, 409: Error, 422: Error},
    summary="Credit an issued invoice, in full, by lines or by part of a line's quantity",
    openapi_extra={
        **IDEMPOTENT_POST,
        "responses": {
            404: {"description": "No such invoice of yours, or a position names no line of it."},
            409: {
                "description": "The invoice cannot be credited in its status, a line has less "
                "left to credit than asked (`fields` by line), what is chosen is worth nothing, "
                "or the Idempotency-Key was used with another request."
            },
        },
    },
    description="Each line is credited pro rata to its quantity (discounts and tax "
    "included), never beyond what is left of it across all credit notes. The customer gets "
    "the credit note by email; an invoice credited in full is closed; the `invoice.credited` "
    "callback carries the note.",
)
@idempotent
def create_credit_note(request: HttpRequest, invoice_id: int, payload: CreditNoteIn):
    invoice = invoice_or_404(merchant_of(request), invoice_id)
    requested = payload.lines or []
    # Errors name a line by where it first appears in the request.
    index_of: dict[int, int] = {}
    quantities: dict[int, Decimal | None] = {}
    for index, line in enumerate(requested):
        index_of.setdefault(line.position, index)
        units = Decimal(line.quantity) if line.quantity is not None else None
        # A position named again adds to it; one without a quantity asks for all that is
        # left of the line, which already covers whatever else was asked of it.
        earlier = quantities.get(line.position, Decimal(0))
        quantities[line.position] = None if earlier is None or units is None else earlier + units
    try:
        note = credit_note_issue(
            invoice=invoice, reason=payload.reason, quantities=quantities or None, actor=Actor.API
        )
    except InvoiceStateError as error:
        raise ApiError(409, str(error), code="invalid_state") from None
    except ValidationError as error:
        raise _by_request_index(error, index_of) from None
    return 201, {**credit_note_snapshot(note), "invoice": _snapshot(invoice.pk)}


# How a refused credit stands to the stored invoice: a position it does not have is not found
# (like an id that names nothing); more than is left, or nothing worth crediting, conflicts
# with what earlier credit notes took. The request alone is well formed either way.
CREDIT_NOT_FOUND = frozenset({"no_such_line"})
CREDIT_CONFLICTS = frozenset({"credit_above_remaining", "nothing_left", "nothing_to_credit"})


def _by_request_index(error: ValidationError, index_of: dict[int, int]) -> ApiError:
    """The service names lines by position; the client sent a list: name them by index."""
    api_error = from_validation_error(error)
    codes = (
        {item.code for item in error.error_list}
        if not hasattr(error, "error_dict")
        else {item.code for items in error.error_dict.values() for item in items}
    )
    if codes & CREDIT_NOT_FOUND:
        api_error.status, api_error.code = 404, "not_found"
    elif codes and codes <= CREDIT_CONFLICTS:
        api_error.status, api_error.code = 409, "credit_conflict"
    renamed: dict[str, list[str]] = {}
    for key, messages in api_error.fields.items():
        parts = key.split(".")
        if len(parts) == 3 and parts[0] == "lines" and parts[1].isdigit():
            key = f"lines.{index_of.get(int(parts[1]), parts[1])}.{parts[2]}"
        renamed[key] = messages
    api_error.fields = renamed
    return api_error


# What an integrator picks from: tax rates and other payment methods ---------------------------

catalog_router = Router(tags=["tax rates and payment methods"])


class TaxRateOut(Schema):
    id: int
    name: str
    percent: str
    inclusive: bool
    country: str
    is_default: bool


@catalog_router.get("/tax-rates", response=list[TaxRateOut], summary="Your active tax rates")
def list_tax_rates(request: HttpRequest):
    return [
        {
            "id": rate.pk,
            "name": rate.name,
            "percent": format(rate.percent.normalize(), "f"),
            "inclusive": rate.inclusive,
            "country": str(rate.country or ""),
            "is_default": rate.is_default,
        }
        for rate in TaxRate.objects.filter(merchant=merchant_of(request), archived_at__isnull=True)
    ]


@catalog_router.get(
    "/payment-methods",
    response=list[PaymentMethodOut],
    summary="Your active payment methods besides the stablecoin checkout",
)
def list_payment_methods(request: HttpRequest):
    methods = PaymentMethod.objects.filter(merchant=merchant_of(request), archived_at__isnull=True)
    return [method.snapshot() for method in methods]
