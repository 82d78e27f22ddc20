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
from wallets.addresses import (
    wallet_next_addresses,
    wallet_next_forwarders,
    wallet_set,
    wallet_set_account,
)
from wallets.chain import checksum_address
from wallets.forms import AccountAddressForm, LedgerFilterForm, TransferFilterForm, XpubForm
from wallets.models import Network, Wallet, derivation_path
from wallets.selectors import (
    funded_addresses,
    holdings_split,
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
@require_recent_reauth("Wallet key changed", detail_fields=("xpub", "account_address"))
def wallet_settings(request: MerchantRequest) -> HttpResponse:
    merchant = request.merchant
    wallet = Wallet.objects.filter(merchant=merchant).first()
    posted = None
    if request.method == "POST":
        posted = request.POST.get("mode") or (
            "xpub"
            if "xpub" in request.POST
            else "forwarder"
            if "account_address" in request.POST
            else None
        )
    form = XpubForm(request.POST if posted == "xpub" else None)
    account_form = AccountAddressForm(request.POST if posted == "forwarder" else None)
    if request.method == "POST":
        if not request.membership.is_owner:
            raise PermissionDenied("Only owners change the wallet.")
        if posted == "forwarder" and account_form.is_valid():
            wallet = wallet_set_account(
                merchant=merchant, account_address=account_form.cleaned_data["account_address"]
            )
            messages.success(
                request,
                "Saved. New deposit addresses forward to "
                f"{checksum_address(wallet.account_address)}; earlier ones keep their account.",
            )
            return redirect("wallet_settings")
        if posted == "xpub" and form.is_valid():
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
    # A POST naming neither way (each of the page's two forms names its own): both forms are
    # unbound then, so the answer is a message, not a form error.
    unknown_mode = request.method == "POST" and posted not in ("xpub", "forwarder")
    if unknown_mode:
        messages.error(request, "Choose how payments are received.")
    upcoming = (
        [
            {"index": index, "address": address, "path": derivation_path(index)}
            for index, address in wallet_next_addresses(wallet=wallet, count=NEXT_ADDRESSES_SHOWN)
        ]
        if wallet and wallet.xpub and not wallet.uses_forwarders
        else []
    )
    factories = [n for n in Network.objects.active() if n.deposit_factory]
    forwarders = (
        [
            {
                "network": n,
                "addresses": wallet_next_forwarders(wallet=wallet, factory=n.deposit_factory),
            }
            for n in factories
        ]
        if wallet and wallet.uses_forwarders
        else []
    )
    status = 422 if form.errors or account_form.errors or unknown_mode else 200
    return render(
        request,
        "wallets/settings.html",
        {
            "wallet": wallet,
            "form": form,
            "account_form": account_form,
            "posted": posted,
            "upcoming": upcoming,
            "forwarders": forwarders,
            "networks_without_factory": [
                n for n in Network.objects.active() if not n.deposit_factory
            ],
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
        "split": holdings_split(merchant=merchant),
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
