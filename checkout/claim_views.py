"""The merchant's claim pages: the Claims page across invoices, the invoice's Claims tab, the
"Sign claim" step and the wallet's report of the sent transaction."""

from dataclasses import dataclass, field
from decimal import Decimal

from django.http import HttpResponse, JsonResponse
from django.shortcuts import get_object_or_404, render
from django.views.decorators.http import require_POST

from checkout.models import Payment
from invoices.models import Invoice
from invoices.selectors import invoice_scope
from merchants.access import MerchantRequest, merchant_view
from merchants.models import Merchant, Role
from merchants.validators import parse_id
from wallets.claims import (
    MAX_CLAIM_ITEMS,
    ClaimError,
    claim_prepare,
    claim_submit,
    claims_of,
    uncollected,
)
from wallets.forwarders import parse_account_address
from wallets.models import Asset, Claim, Network, Wallet


@dataclass
class Card:
    """One forwarder deposit address with money on it, as the Claims pages show it."""

    deposit_id: int
    address: str
    destination: str
    network: Network
    invoice: Invoice | None
    order_number: str
    amounts: list[tuple[Asset, Decimal]] = field(default_factory=list)
    confirming: bool = False
    in_flight: bool = False


@dataclass
class Group:
    network: Network
    destination: str
    cards: list[Card]

    @property
    def totals(self) -> list[tuple[str, Decimal]]:
        sums: dict[str, Decimal] = {}
        for card in self.cards:
            for asset, amount in card.amounts:
                sums[asset.symbol] = sums.get(asset.symbol, Decimal(0)) + amount
        return sorted(sums.items())


def claim_cards(*, merchant: Merchant, invoice: Invoice | None = None) -> list[Group]:
    """Uncollected forwarder deposits of the merchant (or of one invoice), grouped by what
    one claim can cover: a network and a destination. A fixed number of queries."""
    deposit_ids = None
    if invoice is not None:
        deposit_ids = list(
            Payment.objects.filter(invoice=invoice).values_list("deposit_address_id", flat=True)
        )
    rows = [u for u in uncollected(merchant=merchant, deposit_ids=deposit_ids) if u.amount > 0]
    assets = Asset.objects.in_bulk({u.asset_id for u in rows})
    networks = Network.objects.in_bulk({u.network_id for u in rows})
    payments = {
        p.deposit_address_id: p
        for p in Payment.objects.filter(
            deposit_address_id__in={u.deposit_address_id for u in rows}
        ).select_related("invoice")
    }
    cards: dict[tuple[int, int], Card] = {}
    for u in rows:
        key = (u.network_id, u.deposit_address_id)
        payment = payments.get(u.deposit_address_id)
        card = cards.get(key)
        if card is None:
            card = cards[key] = Card(
                deposit_id=u.deposit_address_id,
                address=u.address,
                destination=u.destination,
                network=networks[u.network_id],
                invoice=payment.invoice if payment else None,
                order_number=payment.order_number if payment else "",
            )
        asset = assets[u.asset_id]
        card.amounts.append((asset, asset.to_major(u.amount)))
        card.confirming |= u.received > u.confirmed
        card.in_flight |= u.in_flight
    groups: dict[tuple[int, str], Group] = {}
    for card in cards.values():
        group = groups.setdefault(
            (card.network.pk, card.destination), Group(card.network, card.destination, [])
        )
        group.cards.append(card)
    return sorted(groups.values(), key=lambda g: (g.network.name, g.destination))


def _context(merchant: Merchant, invoice: Invoice | None = None) -> dict:
    wallet = Wallet.objects.filter(merchant=merchant).first()
    deposit_ids = None
    if invoice is not None:
        deposit_ids = list(
            Payment.objects.filter(invoice=invoice).values_list("deposit_address_id", flat=True)
        )
    claims = list(claims_of(merchant=merchant, deposit_ids=deposit_ids)[:50])
    return {
        "groups": claim_cards(merchant=merchant, invoice=invoice),
        "claims": claims,
        "fee_total": _fee_total(claims, deposit_ids),
        "wallet": wallet,
        "invoice": invoice,
        "max_items": MAX_CLAIM_ITEMS,
    }


def _fee_total(claims: list[Claim], deposit_ids: list[int] | None) -> Decimal:
    """Gas over every attempt (failed ones too), for the addresses shown."""
    total = Decimal(0)
    for claim in claims:
        if deposit_ids is None:
            total += claim.fee_major or 0
            continue
        for item in claim.items.all():
            if item.deposit_address_id in deposit_ids and item.fee_share_wei:
                total += Decimal(int(item.fee_share_wei)).scaleb(-18)
    return total


@dataclass
class ClaimRow:
    """A claim as a transfer of type Claim on an invoice's Transfers tab: what it moved of
    this invoice's addresses and this invoice's share of its blockchain fee."""

    claim: Claim
    moved: list[tuple[str, Decimal]]
    fee_wei: int
    fee_value: Decimal | None
    fee_currency: str

    @property
    def fee(self) -> Decimal:
        return Decimal(self.fee_wei).scaleb(-18)


def invoice_claim_rows(*, invoice: Invoice) -> list[ClaimRow]:
    deposit_ids = set(
        Payment.objects.filter(invoice=invoice).values_list("deposit_address_id", flat=True)
    )
    rows = []
    for claim in claims_of(merchant=invoice.merchant, deposit_ids=list(deposit_ids)):
        if claim.status == "prepared":
            continue
        own = [i for i in claim.items.all() if i.deposit_address_id in deposit_ids]
        moved: dict[str, Decimal] = {}
        for item in own:
            moved[item.asset.symbol] = moved.get(item.asset.symbol, Decimal(0)) + item.amount_major
        values = [i.fee_value for i in own if i.fee_value is not None]
        rows.append(
            ClaimRow(
                claim=claim,
                moved=sorted(moved.items()),
                fee_wei=sum(int(i.fee_share_wei or 0) for i in own),
                fee_value=sum(values, Decimal(0)) if values else None,
                fee_currency=next((i.fee_currency for i in own if i.fee_currency), ""),
            )
        )
    return rows


@merchant_view()
def claims_page(request: MerchantRequest) -> HttpResponse:
    context = _context(request.merchant)
    context["select_all"] = request.GET.get("all") == "1"
    return render(request, "checkout/claims.html", context)


@merchant_view()
def invoice_claims(request: MerchantRequest, pk: int) -> HttpResponse:
    """The invoice page's Claims tab (loaded into invoices/detail.html)."""
    invoice = get_object_or_404(invoice_scope(merchant=request.merchant), pk=pk)
    return render(request, "checkout/_invoice_claims.html", _context(request.merchant, invoice))


@merchant_view()
def claims_summary(request: MerchantRequest) -> HttpResponse:
    """Uncollected totals for the dashboard (loaded into it: invoices sit below checkout)."""
    groups = claim_cards(merchant=request.merchant)
    totals: dict[tuple[str, str], Decimal] = {}
    for group in groups:
        for symbol, amount in group.totals:
            key = (group.network.name, symbol)
            totals[key] = totals.get(key, Decimal(0)) + amount
    return render(
        request,
        "checkout/_claims_summary.html",
        {"totals": sorted(totals.items()), "cards": sum(len(g.cards) for g in groups)},
    )


def _ids(values: list[str]) -> list[int] | None:
    ids = [parse_id(v, limit=2**62 - 1) for v in values]
    return None if None in ids else [i for i in ids if i is not None]


def _chain_id(raw: str) -> int | None:
    """The chain id a wallet reports, decimal or 0x-hex (EIP-155 ids fit 64 bits): anything
    longer is no chain's, and formatting thousands of hex digits into the error message broke
    Python's integer-to-text limit, a 500."""
    raw = raw.strip()
    if not raw.isascii() or len(raw) > 20:
        return None
    try:
        value = int(raw, 0)
    except ValueError:
        return None
    return value if 0 < value < 2**63 else None


@require_POST
@merchant_view(min_role=Role.STAFF)
def claim_prepare_view(request: MerchantRequest) -> HttpResponse:
    """ "Sign claim": prepare the factory call and show what moves where, before signing."""
    merchant = request.merchant
    ids = _ids(request.POST.getlist("deposit"))
    network_ids = _ids([request.POST.get("network", "")])
    sender = request.POST.get("sender", "")
    error = ""
    claim = None
    if ids is None or not network_ids:
        error = "Select the deposits to claim."
    else:
        network = Network.objects.filter(pk=network_ids[0]).first()
        try:
            sender = parse_account_address(sender) if sender else ""
        except ValueError:
            sender = ""
        if network is None:
            error = "No such network."
        else:
            try:
                claim = claim_prepare(
                    merchant=merchant, network=network, deposit_ids=ids, sender=sender
                )
            except ClaimError as failure:
                error = str(failure)
    if claim is None:
        return render(request, "checkout/_claim_sign.html", {"error": error}, status=400)
    items = list(claim.items.select_related("asset", "deposit_address"))
    totals: dict[str, Decimal] = {}
    for item in items:
        totals[item.asset.symbol] = totals.get(item.asset.symbol, Decimal(0)) + item.amount_major
    return render(
        request,
        "checkout/_claim_sign.html",
        {
            "claim": claim,
            "items": items,
            "totals": sorted(totals.items()),
            "addresses": len({i.deposit_address_id for i in items}),
            "gas_hex": hex(claim.estimated_gas * 12 // 10) if claim.estimated_gas else "",
            "chain_hex": hex(claim.network.chain_id),
        },
    )


@require_POST
@merchant_view(min_role=Role.STAFF)
def claim_sent_view(request: MerchantRequest, pk: int) -> JsonResponse:
    """The browser wallet sent the claim: record its transaction hash."""
    chain_id = _chain_id(request.POST.get("chain_id", ""))
    if chain_id is None:
        return JsonResponse({"error": "The wallet did not say which chain it is on."}, status=400)
    try:
        claim = claim_submit(
            merchant=request.merchant,
            claim_id=pk,
            tx_hash=request.POST.get("tx_hash", ""),
            sender=request.POST.get("sender", ""),
            chain_id=chain_id,
        )
    except ClaimError as error:
        status = 404 if str(error) == "No such claim." else 400
        return JsonResponse({"error": str(error)}, status=status)
    return JsonResponse({"status": claim.status, "tx_hash": claim.tx_hash})
