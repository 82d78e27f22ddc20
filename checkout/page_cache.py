"""The payer's page and its status fragment, rendered once per state and kept in the cache.

Every open page asks for its status every few seconds, and the answer only changes when the
invoice, its payment, a refund or a transfer does. Rendering it (four ORM queries over wide rows,
the asset list, the template, the QR code) cost twenty times what serving a bare page costs, so
each request now reads what the page depends on in one narrow query, and a page rendered from
the same state is served from the cache. The key is a digest of that state as the database has
it at the request, so a change shows at the very next request: nothing is invalidated by hand,
and nothing can be missed by a code path that forgets to. Per-request parts (the CSP nonce, the
CSRF token, the seconds left on the timer) are stored as markers and filled in on the way out.
"""

import hashlib
import re
import threading
import weakref
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

from django.conf import settings
from django.core.cache import cache
from django.db import connection
from django.http import HttpRequest, HttpResponse
from django.middleware.csp import get_nonce
from django.middleware.csrf import get_token
from django.template.loader import render_to_string
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from checkout import page_news
from checkout.models import OPEN_PAYMENT, Payment, RefundRequest
from customers.models import Customer
from invoices.models import Invoice, InvoiceKind, InvoiceStatus
from merchants.models import Merchant
from merchants.templatetags.stablebill import timer
from wallets.models import Asset, Network, Transfer

# Long enough that an open page is served from the cache for its whole life; a page with no
# payment lists the assets on offer, whose rows (an RPC URL, a name) can change unseen by the
# state query below, so it is rendered anew at least this often.
PAGE_SECONDS = 600
CATALOGUE_SECONDS = 30

# Stand-ins rendered into the kept page, replaced per request. Only letters and digits, so no
# escaping changes them; a merchant typing one into an invoice gains nothing (their own text
# would show the payer's own nonce or token as text).
NONCE_MARKER = "cspnonce7d1b0f9e4a"
CSRF_MARKER = "csrftoken52c8e61f3b"
SECONDS_MARKER = 3_141_592_653  # seconds no timer runs: its text cannot occur by chance
_SECONDS_ATTR = f'data-countdown="{SECONDS_MARKER}"'
_SECONDS_TEXT = f">{timer(SECONDS_MARKER)}<"


@dataclass(frozen=True)
class PageState:
    """What the page of one invoice depends on, read in one query."""

    invoice_id: int
    kind: str
    pricing_mode: str
    expires_at: datetime | None
    has_payment: bool
    now: datetime
    digest: str

    @property
    def expired(self) -> bool:
        return self.expires_at is not None and self.now >= self.expires_at

    @property
    def seconds_left(self) -> int | None:
        if self.expires_at is None:
            return None
        return max(0, int((self.expires_at - self.now).total_seconds()))

    def invoice(self) -> Invoice:
        """Enough of the invoice for checkout.views._state_now (its pk and kind)."""
        return Invoice(pk=self.invoice_id, kind=self.kind)


def _columns(model: Any, *names: str) -> list[str]:
    return [str(model._meta.get_field(name).column) for name in names]


_sql: str | None = None


def _state_sql() -> str:
    """Built once from the models' tables and columns. Raw SQL: the ORM's compiler costs more
    than the query itself here, and this runs on every request of every open page."""
    global _sql
    if _sql is None:
        q = connection.ops.quote_name
        table = {m: q(str(m._meta.db_table)) for m in (Invoice, Merchant, Customer, Payment)}
        refund, transfer = q(str(RefundRequest._meta.db_table)), q(str(Transfer._meta.db_table))
        asset, network = q(str(Asset._meta.db_table)), q(str(Network._meta.db_table))
        col = {
            name: q(column)
            for model, names in (
                (
                    Invoice,
                    (
                        "id",
                        "merchant",
                        "customer",
                        "kind",
                        "pricing_mode",
                        "status",
                        "failure_reason",
                        "expires_at",
                        "updated_at",
                        "public_token",
                    ),
                ),
                (Merchant, ("name", "logo", "brand_colour")),
                (
                    Payment,
                    (
                        "invoice",
                        "received",
                        "confirmed",
                        "amount_due",
                        "asset",
                        "requote_at",
                        "deposit_address",
                    ),
                ),
            )
            for name, column in zip(names, _columns(model, *names), strict=True)
        }
        opened = ", ".join(["%s"] * len(OPEN_PAYMENT))
        # The payment current_payment() picks: the open one first, the newest; for a
        # permanent invoice only an open one.
        current = (
            f"SELECT c.id FROM {table[Payment]} c WHERE c.{col['invoice']} = i.id"  # noqa: S608
            f" AND (i.{col['kind']} <> %s OR c.status IN ({opened}))"
            f" ORDER BY CASE WHEN c.status IN ({opened}) THEN 1 ELSE 0 END DESC, c.id DESC"
            " LIMIT 1"
        )
        # PostgreSQL would fold the inner query into the outer one and then hash the whole
        # payment table to join on a subquery's result; OFFSET 0 keeps it apart (one row),
        # so the payment is fetched by its primary key. SQLite plans it that way by itself.
        fence = " OFFSET 0" if connection.vendor == "postgresql" else ""
        _sql = (
            f"SELECT s.*, p.status, p.{col['received']}, p.{col['confirmed']},"  # noqa: S608
            f" p.{col['amount_due']}, p.{col['asset']}, p.{col['requote_at']}, p.updated_at,"
            f" (SELECT COUNT(*) FROM {transfer} t"
            f"  WHERE t.deposit_address_id = p.{col['deposit_address']})"
            f" FROM (SELECT i.id, i.{col['kind']}, i.{col['pricing_mode']},"
            f" i.{col['expires_at']}, ({current}) AS pid, i.{col['status']},"
            f" i.{col['failure_reason']}, i.{col['updated_at']}, m.{col['name']},"
            f" m.{col['logo']}, m.{col['brand_colour']}, u.updated_at AS customer_at,"
            f" (SELECT COUNT(*) || ':' || MAX(r.updated_at) FROM {refund} r"
            "  WHERE r.invoice_id = i.id) AS refunds,"
            f" (SELECT COUNT(*) || ':' || COALESCE(SUM(a.id), 0) || ':' || COALESCE(SUM(n.id), 0)"
            f"  FROM {asset} a JOIN {network} n ON n.id = a.network_id"
            "  WHERE a.enabled = %s AND n.enabled = %s) AS catalogue,"
            f" i.{col['merchant']} AS page_merchant, i.{col['customer']} AS page_customer"
            f" FROM {table[Invoice]} i"
            f" JOIN {table[Merchant]} m ON m.id = i.{col['merchant']}"
            f" LEFT JOIN {table[Customer]} u ON u.id = i.{col['customer']}"
            f" WHERE i.{col['public_token']} = %s AND i.{col['status']} <> %s{fence}) s"
            f" LEFT JOIN {table[Payment]} p ON p.id = s.pid"
        )
    return _sql


# The raw connections (one per Django connection, replaced when it reconnects) on which the
# state query is prepared.
_prepared_on: "weakref.WeakSet[Any]" = weakref.WeakSet()


def _prepared(count: int) -> str:
    """The state query as a prepared statement of this connection (PostgreSQL): planning it
    took three times as long as running it (about 0.8 ms of the 1 ms per request), and it is
    the same query on every request. Prepared once per database connection, which
    CONN_MAX_AGE keeps for many requests; the PREPARE goes straight to the driver, as
    connection setup does, so each request counts as the one query it runs."""
    sql = _state_sql()
    # Named after the text, so a changed query never meets an old statement of that name.
    name = "stablebill_pay_state_" + hashlib.sha256(sql.encode()).hexdigest()[:12]
    connection.ensure_connection()
    raw = connection.connection
    if raw not in _prepared_on:
        numbers = iter(range(1, count + 1))
        positional = re.sub("%s", lambda _match: f"${next(numbers)}", sql)
        with raw.cursor() as cursor:
            cursor.execute(f"PREPARE {name} AS {positional}")
        _prepared_on.add(raw)
    return f"EXECUTE {name}({', '.join(['%s'] * count)})"


def _aware(value: Any) -> datetime | None:
    # Raw SQL on SQLite gives datetimes naive (in UTC), or as text; PostgreSQL gives them aware.
    if value is not None and not isinstance(value, datetime):
        value = parse_datetime(str(value))
        assert value is not None
    if value is not None and value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value


# The state of each page this process served, with where page_news stood when it was read.
MEMO_SIZE = 10_000
_memo: "OrderedDict[str, _Kept]" = OrderedDict()
_memo_lock = threading.Lock()


@dataclass(frozen=True)
class _Kept:
    state: PageState
    mark: tuple[int, int]
    news: tuple[str, ...]


def page_state(token: str) -> PageState | None:
    """The state of the invoice behind `token` as the database has it now; None when no
    issued invoice has that token. One indexed query; none at all while page_news vouches
    that nothing the page shows changed since this process last read it."""
    if not page_news.enabled():
        return _read_state(token)
    kept = _memo.get(token)
    if kept is not None and page_news.listener.unchanged(kept.mark, kept.news):
        return replace(kept.state, now=timezone.now())
    # The mark is taken before the read, so a change committed during it is not missed.
    return _read_state(token, keep=page_news.listener.mark())


def _read_state(token: str, keep: tuple[int, int] | None = None) -> PageState | None:
    opened = [str(status) for status in sorted(OPEN_PAYMENT)]
    # In the order of the placeholders: the current payment's, the catalogue's, the filter's.
    params: list[bool | str] = [
        str(InvoiceKind.PERMANENT),
        *opened,
        *opened,
        True,
        True,
        token,
        str(InvoiceStatus.DRAFT),
    ]
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql" and settings.DATABASE_PREPARED_STATEMENTS:
            cursor.execute(_prepared(len(params)), params)
        else:
            cursor.execute(_state_sql(), params)
        row = cursor.fetchone()
        # By name: the ids sit among the subquery's columns (s.*), wherever it puts them.
        columns = [c[0] for c in cursor.description or ()] if keep is not None else []
    if row is None:
        return None
    # str() so the same state reads the same whichever database and driver gave it.
    digest = hashlib.sha256(repr([str(v) for v in row]).encode()).hexdigest()[:32]
    state = PageState(
        invoice_id=row[0],
        kind=row[1],
        pricing_mode=row[2],
        expires_at=_aware(row[3]),
        has_payment=row[4] is not None,
        now=timezone.now(),
        digest=digest,
    )
    if keep is not None:
        merchant_id = row[columns.index("page_merchant")]
        customer_id = row[columns.index("page_customer")]
        news: tuple[str, ...] = (
            page_news.invoice_news(state.invoice_id),
            page_news.merchant_news(merchant_id),
        )
        if customer_id is not None:
            news += (page_news.customer_news(customer_id),)
        with _memo_lock:
            _memo[token] = _Kept(state=state, mark=keep, news=news)
            _memo.move_to_end(token)
            while len(_memo) > MEMO_SIZE:
                _memo.popitem(last=False)
    return state


def serve(
    request: HttpRequest,
    state: PageState,
    template: str,
    next_poll: int,
    context_of: Callable[[], dict],
) -> HttpResponse:
    """The page (or fragment) for `state`, rendered by `context_of` the first time."""
    key = f"pay:html:{state.invoice_id}:{template}:{next_poll}:{int(state.expired)}:{state.digest}"
    html = cache.get(key)
    if html is None:
        context = context_of()
        context.update(
            next_poll=next_poll,
            csp_nonce=NONCE_MARKER,
            csrf_token=CSRF_MARKER,
            seconds_left=None if context["seconds_left"] is None else SECONDS_MARKER,
        )
        html = render_to_string(template, context, request)
        cache.set(key, html, timeout=PAGE_SECONDS if state.has_payment else CATALOGUE_SECONDS)
    if NONCE_MARKER in html:
        html = html.replace(NONCE_MARKER, str(get_nonce(request)))
    if CSRF_MARKER in html:
        html = html.replace(CSRF_MARKER, get_token(request))
    seconds_left = state.seconds_left
    if seconds_left is not None:
        html = html.replace(_SECONDS_ATTR, f'data-countdown="{seconds_left}"').replace(
            _SECONDS_TEXT, f">{timer(seconds_left)}<"
        )
    return HttpResponse(html)
