"""Periodic chain watching and payment housekeeping. Tasks take ids, load, call services."""

import logging
from datetime import timedelta

from celery import shared_task
from django.db.models import Q
from django.utils import timezone

from checkout.claims import claims_auto, claims_settle
from checkout.models import OPEN_PAYMENT, Payment
from checkout.refunds import refunds_open_automatic, refunds_watch
from checkout.services import (
    payments_cancel_ended,
    payments_expire,
    payments_fail_stuck,
    payments_requote,
)
from checkout.settlement import payments_fail_held, settle_pending, settle_report
from wallets.chain import ChainError
from wallets.claim_watch import watch_claims
from wallets.claims import relayer_address
from wallets.models import ChainCursor, Network
from wallets.scanner import round_queue, scan_network

logger = logging.getLogger(__name__)
# The watcher keeps watching a payment's address this long after the payment ended.
LATE_PAYMENT_WATCH = timedelta(hours=24)


@shared_task(ignore_result=True)
def watch_networks() -> None:
    """Beat's tick: queue a watch for every active network whose poll interval has passed."""
    now = timezone.now()
    last_scan = dict(ChainCursor.objects.values_list("network_id", "updated_at"))
    for network in Network.objects.active():
        previous = last_scan.get(network.pk)
        due = previous is None or (now - previous).total_seconds() >= network.effective_poll_seconds
        # Never a second round in the broker, or behind a running one: a slow node makes
        # rounds later, never more.
        if due and round_queue(network=network):
            watch_network.delay(network.pk)


@shared_task(ignore_result=True, acks_late=True)
def watch_network(network_id: int) -> None:
    """Scan one network, then settle what it found. Safe to run twice at once: the round
    lease lets one round through, and settlement is idempotent."""
    network = Network.objects.filter(pk=network_id, enabled=True).first()
    if network is None:
        return
    report = scan_network(network=network, native_watch=native_watch_addresses(network=network))
    if report.skipped or report.halted:
        return
    if report.new or report.confirmed or report.orphaned or report.revived:
        logger.info(
            "%s blocks %s-%s: %s new, %s confirmed, %s orphaned, %s revived",
            network.slug,
            report.from_block,
            report.to_block,
            len(report.new),
            len(report.confirmed),
            len(report.orphaned),
            len(report.revived),
        )
    settle_report(report)
    settle_pending(network_id=network.pk)
    try:
        refunds_watch(network=network)
    except ChainError as error:
        logger.warning("Refunds on %s not checked this round: %s", network.slug, error)
    if network.deposit_factory:
        # Claims of forwarder deposit addresses: their own step under the same lease.
        watch_claims(network=network, relayer=relayer_address(network))
        claims_settle(network_id=network.pk)
        claims_auto(network=network)


def native_watch_addresses(*, network: Network) -> list[str]:
    """Deposit addresses of native-coin payments on the network that are open or ended less
    than a day ago: their balances are reconciled each round (ETH sent by contracts)."""
    since = timezone.now() - LATE_PAYMENT_WATCH
    return list(
        Payment.objects.filter(network=network, asset__contract_address="")
        .filter(Q(status__in=OPEN_PAYMENT) | Q(finalized_at__gte=since))
        .values_list("deposit_address__address", flat=True)
    )


@shared_task(ignore_result=True)
def end_payments() -> None:
    """Timers that ran out, compliance holds whose time ended, deposits stuck unconfirmed,
    payments of invoices that ended, volatile quotes to renew, and the refund requests of
    invoices that failed or were cancelled after money arrived."""
    payments_expire()
    payments_fail_held()
    payments_fail_stuck()
    payments_cancel_ended()
    payments_requote()
    refunds_open_automatic()


@shared_task(ignore_result=True)
def value_held_deposits() -> None:
    """Credit the deposits held as awaiting valuation once a rate for them exists."""
    from checkout.settlement import settle_awaiting_valuation

    posted = settle_awaiting_valuation()
    if posted:
        logger.info("Valued and credited %s held deposit(s)", posted)
