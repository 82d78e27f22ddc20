import csv
from decimal import Decimal, InvalidOperation

from django.contrib import messages
from django.core.exceptions import PermissionDenied, ValidationError
from django.core.paginator import Paginator
from django.http import HttpResponse, StreamingHttpResponse
from django.http.response import HttpResponseBase
from django.shortcuts import redirect, render

from merchants.access import MerchantRequest, merchant_view
from merchants.security import require_recent_reauth
from merchants.templatetags.stablebill import plain
from wallets.addresses import checksum_address, wallet_next_addresses, wallet_set
from wallets.forms import LedgerFilterForm, TransferFilterForm, XpubForm
from wallets.models import Wallet, derivation_path
from wallets.selectors import (
    funded_addresses,
    ledger_entries,
    merchant_balances,
    merchant_holdings,
    transfer_list,
    wallet_addresses_handed_out,
)

PAGE_SIZE = 50
# How many unused addresses common wallets look ahead before they stop searching (BIP44).
GAP_LIMIT = 20
NEXT_ADDRESSES_SHOWN = 5


@merchant_view()
@require_recent_reauth("Wallet key changed", detail_fields=("xpub",))
def wallet_settings(request: MerchantRequest) -> HttpResponse:
    merchant = request.merchant
    wallet = Wallet.objects.filter(merchant=merchant).first()
    form = XpubForm(request.POST or None)
    if request.method == "POST":
        if not request.membership.is_owner:
            raise PermissionDenied("Only owners change the wallet.")
        if form.is_valid():
            try:
                wallet = wallet_set(merchant=merchant, xpub=form.cleaned_data["xpub"])
            except ValidationError as error:
                form.add_error("xpub", error)
            else:
                messages.success(
                    request,
                    "Wallet saved. Check that your wallet's first receiving address is "
                    f"{wallet.first_address}.",
                )
                return redirect("wallet_settings")
    upcoming = (
        [
            {"index": index, "address": address, "path": derivation_path(index)}
            for index, address in wallet_next_addresses(wallet=wallet, count=NEXT_ADDRESSES_SHOWN)
        ]
        if wallet
        else []
    )
    status = 422 if form.errors else 200
    return render(
        request,
        "wallets/settings.html",
        {
            "wallet": wallet,
            "form": form,
            "upcoming": upcoming,
            "handed_out": wallet_addresses_handed_out(wallet=wallet) if wallet else 0,
            "gap_limit": GAP_LIMIT,
        },
        status=status,
    )


@merchant_view()
def wallet_addresses_csv(request: MerchantRequest) -> StreamingHttpResponse:
    """Funded deposit addresses with their paths, to find the money in a wallet whose
    discovery stops after 20 unused addresses."""
    merchant = request.merchant
    wallet = Wallet.objects.filter(merchant=merchant).first()
    current_key = wallet.key_fingerprint if wallet else None
    writer = csv.writer(_Echo())
    header = [
        "address",
        "derivation_path",
        "derivation_index",
        "key",
        "network",
        "asset",
        "confirmed",
        "unconfirmed",
        "transfers",
        "first_seen",
        "last_seen",
    ]

    def key_label(fingerprint: str) -> str:
        if not fingerprint:
            return "earlier key"
        return fingerprint[:8] + (" (current)" if fingerprint == current_key else "")

    def rows():
        yield writer.writerow(header)
        for row in funded_addresses(merchant=merchant):
            yield writer.writerow(
                [
                    _csv_cell(v)
                    for v in (
                        checksum_address(row.address),
                        derivation_path(row.derivation_index),
                        row.derivation_index,
                        key_label(row.key_fingerprint),
                        row.network,
                        row.symbol,
                        plain(row.confirmed),
                        plain(row.unconfirmed),
                        row.transfers,
                        row.first_seen.isoformat(),
                        row.last_seen.isoformat(),
                    )
                ]
            )

    response = StreamingHttpResponse(rows(), content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = 'attachment; filename="stablebill-funded-addresses.csv"'
    return response


@merchant_view()
def balances(request: MerchantRequest) -> HttpResponse:
    merchant = request.merchant
    context = {
        "balances": merchant_balances(merchant=merchant),
        "holdings": merchant_holdings(merchant=merchant),
    }
    return render(request, "wallets/balances.html", context)


@merchant_view()
def ledger(request: MerchantRequest) -> HttpResponseBase:
    merchant = request.merchant
    filters = LedgerFilterForm(request.GET or None)
    params = filters.cleaned_data if filters.is_valid() else {}
    entries = ledger_entries(merchant=merchant, **{k: v for k, v in params.items() if v})
    if request.GET.get("format") == "csv":
        return _ledger_csv(entries)
    page = Paginator(entries, PAGE_SIZE).get_page(request.GET.get("page"))
    query = request.GET.copy()
    query.pop("page", None)
    return render(
        request,
        "wallets/ledger.html",
        {"page": page, "filters": filters, "query_string": query.urlencode()},
    )


class _Echo:
    def write(self, value: str) -> str:
        return value


def _csv_cell(value: object) -> str:
    # A cell starting with = + - @ would run as a formula in a spreadsheet; quote it as text.
    # Negative amounts are numbers, not formulas, and stay as they are.
    text = str(value)
    if text[:1] in ("=", "+", "-", "@") and not _is_amount(text):
        return "'" + text
    return text


def _is_amount(text: str) -> bool:
    try:
        Decimal(text)
    except InvalidOperation:
        return False
    return True


def _ledger_csv(entries) -> StreamingHttpResponse:
    writer = csv.writer(_Echo())
    header = ["date", "transaction", "kind", "reference", "currency", "amount", "memo"]

    def rows():
        yield writer.writerow(header)
        for entry in entries.iterator(chunk_size=1000):
            posting = entry.transaction
            yield writer.writerow(
                [
                    _csv_cell(v)
                    for v in (
                        posting.created_at.isoformat(),
                        posting.pk,
                        posting.kind,
                        posting.reference,
                        entry.currency,
                        plain(entry.amount),
                        posting.memo,
                    )
                ]
            )

    response = StreamingHttpResponse(rows(), content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = 'attachment; filename="stablebill-ledger.csv"'
    return response


@merchant_view()
def transfers(request: MerchantRequest) -> HttpResponse:
    merchant = request.merchant
    filters = TransferFilterForm(request.GET or None)
    params = filters.cleaned_data if filters.is_valid() else {}
    items = transfer_list(
        merchant=merchant, status=params.get("status", ""), network=params.get("network", "")
    )
    page = Paginator(items, PAGE_SIZE).get_page(request.GET.get("page"))
    query = request.GET.copy()
    query.pop("page", None)
    return render(
        request,
        "wallets/transfers.html",
        {"page": page, "filters": filters, "query_string": query.urlencode()},
    )
