"""Customers over the REST API."""

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Any

from django.core.exceptions import ValidationError
from django.http import HttpRequest
from django_countries import countries
from ninja import Field, Query, Router, Schema
from pydantic import ConfigDict

from customers.models import Customer
from customers.selectors import customer_list, customer_scope
from customers.services import (
    DUPLICATE_EMAIL,
    customer_archive,
    customer_create,
    customer_update,
)
from merchants.api import (
    IDEMPOTENT_POST,
    ApiError,
    Error,
    cursor_field,
    idempotent,
    merchant_of,
    page,
)
from merchants.models import ADDRESS_FIELDS, Merchant

COUNTRY_PATTERN = r"^([A-Z]{2})?$"
# The schema states what the service accepts, so that any request it allows is taken:
# the country list is django-countries' (blank for none); a name is more than spaces; an
# email is a dot-atom local part at a domain with a letters-only TLD: a part of what Django's
# EmailValidator accepts (it also takes quoted local parts and address literals), written
# without leading or trailing spaces since those are stripped.
COUNTRY_CODES = ["", *(code for code, _ in countries)]
# What str.strip() takes away, spelt out: `\s` means other things in ECMA-262 (which
# Schemathesis and clients read the schema by), in pydantic's Rust engine and in Python, and
# `\S` lets a NUL through, which no stored text may hold.
STRIPPED = r"\t\n\x0b\x0c\r\x1c-\x20\x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000"
# Something left after stripping, and no NUL anywhere: what customer_create and
# credit_note_issue ask of a name or a reason.
NAME_PATTERN = rf"^[^\x00]*[^\x00{STRIPPED}][^\x00]*$"
_ATOM = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
_LABEL = r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
EMAIL_PATTERN = rf"^{_ATOM}(\.{_ATOM})*@({_LABEL}\.)+[A-Za-z]{{2,63}}$"


def country_field(default: str | None) -> Any:
    return Field(
        default,
        pattern=COUNTRY_PATTERN,
        description="ISO 3166-1 alpha-2 code",
        json_schema_extra={"enum": [*COUNTRY_CODES, *([None] if default is None else [])]},
    )


def email_field(default: Any = ...) -> Any:
    return Field(default, min_length=3, max_length=254, pattern=EMAIL_PATTERN)


router = Router(tags=["customers"])


class CustomerIn(Schema):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=200, pattern=NAME_PATTERN)
    email: str = email_field()
    company: str = Field("", max_length=200)
    address_line1: str = Field("", max_length=200)
    address_line2: str = Field("", max_length=200)
    city: str = Field("", max_length=100)
    postal_code: str = Field("", max_length=20)
    region: str = Field("", max_length=100)
    country: str = country_field("")
    tax_id: str = Field("", max_length=64)
    notes: str = Field("", max_length=5000, description="Private; never shown to the customer.")


def no_default(schema: dict[str, Any]) -> None:
    schema.pop("default", None)


class CustomerUpdateIn(Schema):
    """Fields left out stay as they are. Name and email cannot be cleared, so they are not
    nullable; null clears any other field, like an empty string."""

    model_config = ConfigDict(extra="forbid")

    # Optional but never null: the None default only tells "left out" apart.
    name: str = Field(
        None,  # type: ignore[assignment]
        min_length=1,
        max_length=200,
        pattern=NAME_PATTERN,
        json_schema_extra=no_default,
    )
    email: str = Field(
        None,  # type: ignore[assignment]
        min_length=3,
        max_length=254,
        pattern=EMAIL_PATTERN,
        json_schema_extra=no_default,
    )
    company: str | None = Field(None, max_length=200)
    address_line1: str | None = Field(None, max_length=200)
    address_line2: str | None = Field(None, max_length=200)
    city: str | None = Field(None, max_length=100)
    postal_code: str | None = Field(None, max_length=20)
    region: str | None = Field(None, max_length=100)
    country: str | None = country_field(None)
    tax_id: str | None = Field(None, max_length=64)
    notes: str | None = Field(None, max_length=5000)


class CustomerOut(Schema):
    id: int
    name: str
    email: str
    company: str
    address_line1: str
    address_line2: str
    city: str
    postal_code: str
    region: str
    country: str
    tax_id: str
    notes: str
    archived: bool
    created_at: datetime


class CustomerFilters(Schema):
    q: str | None = Field(None, max_length=200, description="Name, email or company contains")
    include_archived: bool = False
    cursor: str | None = cursor_field()
    limit: int = Field(25, ge=1, le=100)


class CustomerPage(Schema):
    items: list[CustomerOut]
    next_cursor: str | None


def customer_out(customer: Customer) -> dict:
    return {
        "id": customer.pk,
        "name": customer.name,
        "email": customer.email,
        "company": customer.company,
        **{key: str(getattr(customer, key)) for key in ADDRESS_FIELDS},
        "tax_id": customer.tax_id,
        "notes": customer.notes,
        "archived": customer.archived_at is not None,
        "created_at": customer.created_at,
    }


def _get(merchant: Merchant, customer_id: int) -> Customer:
    # DELETE archives: from then on the customer is gone from the API by id (404), as HTTP
    # has it, though the invoices that name them keep them and the list still shows them
    # with include_archived.
    scope = customer_scope(merchant=merchant).filter(archived_at__isnull=True)
    customer = scope.filter(pk=customer_id).first()
    if customer is None:
        raise ApiError(404, "No such customer.", code="not_found")
    return customer


@router.get("", response=CustomerPage, summary="List customers by name")
def list_customers(request: HttpRequest, filters: Query[CustomerFilters]):
    customers = customer_list(
        merchant=merchant_of(request),
        query=filters.q or "",
        include_archived=filters.include_archived,
    )
    rows, next_cursor = page(customers, cursor=filters.cursor, limit=filters.limit)
    return {"items": [customer_out(c) for c in rows], "next_cursor": next_cursor}


@router.post(
    "",
    response={201: CustomerOut, 409: Error, 422: Error},
    summary="Create a customer",
    openapi_extra=IDEMPOTENT_POST,
)
@idempotent
def create_customer(request: HttpRequest, payload: CustomerIn):
    with _duplicate_email_conflict():
        customer = customer_create(merchant=merchant_of(request), **payload.model_dump())
    return 201, customer_out(customer)


@contextmanager
def _duplicate_email_conflict() -> Iterator[None]:
    """Another customer has the email: 409, like a duplicate foreign_id (the request is
    well formed; it conflicts with what is stored)."""
    try:
        yield
    except ValidationError as error:
        if DUPLICATE_EMAIL in error.message_dict.get("email", []):
            raise ApiError(
                409, DUPLICATE_EMAIL, code="duplicate_email", fields={"email": [DUPLICATE_EMAIL]}
            ) from None
        raise


@router.get("/{int:customer_id}", response={200: CustomerOut, 404: Error})
def get_customer(request: HttpRequest, customer_id: int):
    return customer_out(_get(merchant_of(request), customer_id))


@router.patch("/{int:customer_id}", response={200: CustomerOut, 404: Error, 409: Error, 422: Error})
def update_customer(request: HttpRequest, customer_id: int, payload: CustomerUpdateIn):
    customer = _get(merchant_of(request), customer_id)
    fields = {
        key: "" if value is None else value
        for key, value in payload.model_dump(exclude_unset=True).items()
    }
    with _duplicate_email_conflict():
        return customer_out(customer_update(customer=customer, **fields))


@router.delete(
    "/{int:customer_id}",
    response={200: CustomerOut, 404: Error},
    summary="Archive a customer",
    description="Customers are archived, not deleted: their invoices keep them, and "
    "`GET /v1/customers?include_archived=true` lists them, but by id they answer 404.",
)
def archive_customer(request: HttpRequest, customer_id: int):
    return customer_out(customer_archive(customer=_get(merchant_of(request), customer_id)))
