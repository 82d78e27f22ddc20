"""Claims seen by the watcher, into the books and onto the invoices they collect.

wallets.claim_watch follows each claim to confirmation; this module, which knows invoices,
handles each claim status once (like settlement does for transfers):

- confirmed: one ledger transaction "claim:<id>" moves each asset from the network's
  holdings at deposit addresses to the merchant's holdings at the account; the gas, when the
  merchant's wallet (or the operator's relayer on the merchant's behalf) paid it, is posted as
  the merchant's expense in each invoice's currency ("claim-fee:<id>:<invoice>"); every
  invoice touched gets an `invoice.claimed` event (timeline and callback);
- failed: the gas of the attempt is posted the same way, the funds stay uncollected, and the
  timeline says why.
"""

import logging
from collections import defaultdict
from decimal import ROUND_HALF_UP, Decimal

from django.db import transaction
from django.db.models import F

from checkout.models import Payment
from checkout.rates import RateUnavailable, provider
from invoices.models import Invoice, InvoiceEvent
from invoices.services import invoice_record_event
from merchants.models import Merchant
from merchants.money import get_currency
from wallets.chain import ChainError
from wallets.claims import (
    MAX_CLAIM_ITEMS,
    ClaimError,
    claim_prepare,
    claim_relay,
    relayer_address,
    uncollected,
)
from wallets.ledger import (
    InsufficientBalance,
    Leg,
    claimed_account,
    fx_account,
    holdings_account,
    ledger_post,
    merchant_account,
    network_fees_account,
)
from wallets.models import (
    Asset,
    Claim,
    ClaimItem,
    ClaimStatus,
    DepositAddress,
    Network,
    TransferStatus,
)

logger = logging.getLogger(__name__)
HANDLED = (ClaimStatus.CONFIRMED, ClaimStatus.FAILED)
# Paid by the merchant: their own wallet through the page, or the operator's relayer.
MERCHANT_PAID = ("wallet", "relayer")


def claims_settle(*, network_id: int | None = None) -> int:
    pending = Claim.objects.filter(status__in=HANDLED).exclude(handled_status=F("status"))
    if network_id is not None:
        pending = pending.filter(network_id=network_id)
    ids = list(pending.order_by("pk").values_list("pk", flat=True)[:500])
    for claim_id in ids:
        claim_settle(claim_id)
    return len(ids)


def claim_settle(claim_id: int) -> None:
    with transaction.atomic():
        claim = (
            Claim.objects.select_for_update().select_related("network", "merchant").get(pk=claim_id)
        )
        if claim.handled_status == claim.status or claim.status not in HANDLED:
            return
        items = list(
            ClaimItem.objects.filter(claim=claim).select_related("asset", "deposit_address")
        )
        invoices = _invoices_of(items)
        if claim.status == ClaimStatus.CONFIRMED:
            _post_claim(claim, items)
        if claim.sent_by in MERCHANT_PAID:
            _post_fee(claim, items, invoices)
        _announce(claim, items, invoices)
        Claim.objects.filter(pk=claim.pk, status=claim.status).update(handled_status=claim.status)


def _invoices_of(items: list[ClaimItem]) -> dict[int, Invoice]:
    """deposit address id -> the invoice whose payment used it."""
    rows = Payment.objects.filter(
        deposit_address_id__in={i.deposit_address_id for i in items}
    ).select_related("invoice")
    return {p.deposit_address_id: p.invoice for p in rows}


def _post_claim(claim: Claim, items: list[ClaimItem]) -> None:
    slug = claim.network.slug
    moved: dict[str, Decimal] = defaultdict(Decimal)
    for item in items:
        if item.amount:
            moved[item.asset.symbol] += item.asset.to_major(item.amount)
    legs = []
    for symbol, amount in sorted(moved.items()):
        legs += [
            Leg(holdings_account(slug), symbol, amount),
            Leg(claimed_account(slug, claim.merchant), symbol, -amount),
        ]
    if legs:
        ledger_post(
            kind="claim",
            idempotency_key=f"claim:{claim.pk}",
            reference=claim.tx_hash,
            memo=f"Claimed to {claim.destination} on {claim.network.name}, tx {claim.tx_hash}",
            legs=legs,
        )


def _post_fee(claim: Claim, items: list[ClaimItem], invoices: dict[int, Invoice]) -> None:
    """The gas as the merchant's expense, per invoice in its currency at the current rate."""
    native = claim.network.native_symbol
    shares: dict[int, Decimal] = defaultdict(Decimal)  # invoice id -> wei
    by_invoice: dict[int, Invoice] = {}
    for item in items:
        invoice = invoices.get(item.deposit_address_id)
        if invoice is None or not item.fee_share_wei:
            continue
        shares[invoice.pk] += item.fee_share_wei
        by_invoice[invoice.pk] = invoice
    for invoice_id, wei in sorted(shares.items()):
        invoice = by_invoice[invoice_id]
        fee = Decimal(int(wei)).scaleb(-18)
        try:
            rate = provider().rate(native, invoice.currency).value
        except RateUnavailable:
            logger.warning("No %s rate to book claim %s's fee", native, claim.pk)
            continue
        value = (fee * rate).quantize(get_currency(invoice.currency).quantum, ROUND_HALF_UP)
        for item in items:
            if invoices.get(item.deposit_address_id) == invoice and item.fee_share_wei:
                share = Decimal(int(item.fee_share_wei)).scaleb(-18) * rate
                ClaimItem.objects.filter(pk=item.pk).update(
                    fee_currency=invoice.currency, fee_value=share
                )
        legs = [
            Leg(network_fees_account(claim.network.slug), native, fee),
            Leg(fx_account(), native, -fee),
            Leg(fx_account(), invoice.currency, value),
            Leg(merchant_account(invoice.merchant), invoice.currency, -value),
        ]
        try:
            with transaction.atomic():
                ledger_post(
                    kind="claim_fee",
                    idempotency_key=f"claim-fee:{claim.pk}:{invoice.pk}",
                    reference=claim.tx_hash,
                    memo=f"Blockchain fee of claim {claim.tx_hash} ({fee} {native})",
                    legs=legs,
                )
        except InsufficientBalance:
            logger.warning("Claim %s's fee exceeds the merchant's balance; not booked", claim.pk)


def claims_auto(*, network: Network) -> list[int]:
    """Auto-claim: where the network has a gas-only relayer key and a threshold, claim each
    account's confirmed uncollected deposits once they are worth at least the threshold in
    USD. The relayer pays the gas (booked as the merchant's expense); it cannot choose where
    the money goes."""
    threshold = network.auto_claim_usd
    if not (network.relayer_key and threshold and network.deposit_factory):
        return []
    merchants = (
        DepositAddress.objects.filter(
            factory=network.deposit_factory,
            transfers__network=network,
            transfers__status=TransferStatus.CONFIRMED,
        )
        .values_list("merchant_id", flat=True)
        .distinct()
    )
    assets = {a.pk: a for a in Asset.objects.filter(network=network)}
    sent = []
    for merchant in Merchant.objects.filter(pk__in=list(merchants)).order_by("pk"):
        rows = uncollected(merchant=merchant, network=network)
        if any(u.in_flight for u in rows):
            continue  # one claim at a time per merchant and network
        groups: dict[str, list[int]] = defaultdict(list)
        values: dict[str, Decimal] = defaultdict(Decimal)
        for u in rows:
            ready = u.confirmed - u.claimed
            if ready <= 0 or u.asset_id not in assets:
                continue
            asset = assets[u.asset_id]
            try:
                rate = provider().rate(asset.symbol, "USD").value
            except RateUnavailable:
                continue
            values[u.destination] += asset.to_major(ready) * rate
            groups[u.destination].append(u.deposit_address_id)
        for destination, ids in groups.items():
            if values[destination] < threshold:
                continue
            try:
                claim = claim_prepare(
                    merchant=merchant,
                    network=network,
                    deposit_ids=sorted(set(ids))[:MAX_CLAIM_ITEMS],
                    sender=relayer_address(network),
                )
                claim_relay(claim=claim)
            except (ClaimError, ChainError) as error:
                logger.warning("Auto-claim for merchant %s on %s: %s", merchant.pk, network, error)
                continue
            sent.append(claim.pk)
    return sent


def claim_snapshot(claim: Claim, items: list[ClaimItem]) -> dict:
    """One claim as callbacks and the timeline show it."""
    return {
        "id": claim.pk,
        "network": claim.network.slug,
        "tx_hash": claim.tx_hash or None,
        "status": claim.status,
        "destination": claim.destination,
        "sender": claim.sender or None,
        "block_number": claim.block_number,
        "fee": format(claim.fee_major, "f") if claim.fee_major is not None else None,
        "fee_asset": claim.network.native_symbol,
        "failure_reason": claim.failure_reason or None,
        "explorer_url": claim.explorer_url or None,
        "items": [
            {
                "deposit_address": item.deposit_address.address,
                "asset": item.asset.symbol,
                "amount": format(item.amount_major, "f"),
                "amount_base_units": str(int(item.amount if item.amount is not None else 0)),
            }
            for item in items
        ],
    }


def _announce(claim: Claim, items: list[ClaimItem], invoices: dict[int, Invoice]) -> None:
    claim.refresh_from_db()
    items = list(ClaimItem.objects.filter(claim=claim).select_related("asset", "deposit_address"))
    touched: dict[int, tuple[Invoice, list[ClaimItem]]] = {}
    for item in items:
        invoice = invoices.get(item.deposit_address_id)
        if invoice is not None:
            touched.setdefault(invoice.pk, (invoice, []))[1].append(item)
    type = "invoice.claimed" if claim.status == ClaimStatus.CONFIRMED else "claim.failed"
    for invoice, own in touched.values():
        if InvoiceEvent.objects.filter(invoice=invoice, type=type, data__claim__id=claim.pk):
            continue
        if claim.status == ClaimStatus.CONFIRMED:
            moved = ", ".join(f"{i.amount_major} {i.asset.symbol}" for i in own if i.amount)
            note = f"Claimed {moved or 'nothing'} to {claim.destination}."
        else:
            note = f"Claim failed: {claim.failure_reason} The funds stay uncollected."
        invoice_record_event(
            invoice=invoice, type=type, note=note, data={"claim": claim_snapshot(claim, own)}
        )
