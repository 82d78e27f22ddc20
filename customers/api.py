"""Customers over the REST API."""

from datetime import datetime

from django.http import HttpRequest
from ninja import Field, Query, Router, Schema
from pydantic import ConfigDict

from customers.models import Customer
from customers.selectors import customer_list, customer_scope
from customers.services import customer_archive, customer_create, customer_update
from merchants.api import IDEMPOTENT_POST, ApiError, Error, idempotent, merchant_of, page
from merchants.models import ADDRESS_FIELDS, Merchant

COUNTRY_PATTERN = r"^([A-Z]{2})?$"

router = Router(tags=["customers"])


class CustomerIn(Schema):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=200)
    email: str = Field(min_length=3, max_length=254)
    company: str = Field("", max_length=200)
    address_line1: str = Field("", max_length=200)
    address_line2: str = Field("", max_length=200)
    city: str = Field("", max_length=100)
    postal_code: str = Field("", max_length=20)
    region: str = Field("", max_length=100)
    country: str = Field("", pattern=COUNTRY_PATTERN, description="ISO 3166-1 alpha-2 code")
    tax_id: str = Field("", max_length=64)
    notes: str = Field("", max_length=5000, description="Private; never shown to the customer.")


class CustomerUpdateIn(Schema):
    model_config = ConfigDict(extra="forbid")

    name: str | None = Field(None, min_length=1, max_length=200)
    email: str | None = Field(None, min_length=3, max_length=254)
    company: str | None = Field(None, max_length=200)
    address_line1: str | None = Field(None, max_length=200)
    address_line2: str | None = Field(None, max_length=200)
    city: str | None = Field(None, max_length=100)
    postal_code: str | None = Field(None, max_length=20)
    region: str | None = Field(None, max_length=100)
    country: str | None = Field(None, pattern=COUNTRY_PATTERN)
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
    cursor: str | None = Field(None, max_length=100)
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
    customer = customer_scope(merchant=merchant).filter(pk=customer_id).first()
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
    response={201: CustomerOut, 422: Error},
    summary="Create a customer",
    openapi_extra=IDEMPOTENT_POST,
)
@idempotent
def create_customer(request: HttpRequest, payload: CustomerIn):
    customer = customer_create(merchant=merchant_of(request), **payload.model_dump())
    return 201, customer_out(customer)


@router.get("/{int:customer_id}", response={200: CustomerOut, 404: Error})
def get_customer(request: HttpRequest, customer_id: int):
    return customer_out(_get(merchant_of(request), customer_id))


@router.patch("/{int:customer_id}", response={200: CustomerOut, 404: Error, 422: Error})
def update_customer(request: HttpRequest, customer_id: int, payload: CustomerUpdateIn):
    customer = _get(merchant_of(request), customer_id)
    fields = {key: value for key, value in payload.model_dump(exclude_unset=True).items()}
    nulls = [key for key, value in fields.items() if value is None]
    if nulls:
        raise ApiError(
            422,
            "Leave a field out instead of sending null.",
            fields={key: ["May not be null."] for key in nulls},
        )
    return customer_out(customer_update(customer=customer, **fields))


@router.delete(
    "/{int:customer_id}",
    response={200: CustomerOut, 404: Error},
    summary="Archive a customer",
    description="Customers are archived, not deleted: their invoices keep them.",
)
def archive_customer(request: HttpRequest, customer_id: int):
    return customer_out(customer_archive(customer=_get(merchant_of(request), customer_id)))
