"""The merchant's balances and ledger entries over the REST API."""

from datetime import datetime

from django.http import HttpRequest
from ninja import Field, Query, Router, Schema

from merchants.api import IsoDate, cursor_field, merchant_of, page
from wallets.selectors import ledger_entries, merchant_balances

router = Router(tags=["balances"])


class BalanceOut(Schema):
    currency: str
    amount: str


class EntryOut(Schema):
    id: int
    transaction_id: int
    kind: str
    reference: str
    memo: str
    currency: str
    amount: str
    created_at: datetime


class EntryFilters(Schema):
    currency: str | None = Field(None, max_length=16)
    kind: str | None = Field(None, max_length=40)
    date_from: IsoDate | None = None
    date_to: IsoDate | None = None
    cursor: str | None = cursor_field()
    limit: int = Field(50, ge=1, le=200)


class EntryPage(Schema):
    items: list[EntryOut]
    next_cursor: str | None


@router.get("/balances", response=list[BalanceOut], summary="What you are owed, per currency")
def list_balances(request: HttpRequest):
    return [
        {"currency": balance.currency, "amount": str(balance.amount)}
        for balance in merchant_balances(merchant=merchant_of(request))
    ]


@router.get("/ledger", response=EntryPage, summary="Your ledger entries, newest first")
def list_entries(request: HttpRequest, filters: Query[EntryFilters]):
    entries = ledger_entries(
        merchant=merchant_of(request),
        currency=filters.currency or "",
        kind=filters.kind or "",
        date_from=filters.date_from,
        date_to=filters.date_to,
    )
    rows, next_cursor = page(entries, cursor=filters.cursor, limit=filters.limit)
    return {
        "items": [
            {
                "id": entry.pk,
                "transaction_id": entry.transaction_id,
                "kind": entry.transaction.kind,
                "reference": entry.transaction.reference,
                "memo": entry.transaction.memo,
                "currency": entry.currency,
                "amount": str(entry.amount),
                "created_at": entry.transaction.created_at,
            }
            for entry in rows
        ],
        "next_cursor": next_cursor,
    }
