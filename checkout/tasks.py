"""Periodic chain watching and payment housekeeping. Tasks take ids, load, call services."""

import logging

from celery import shared_task
from django.utils import timezone

from checkout.services import payments_cancel_ended, payments_expire, payments_fail_stuck
from checkout.settlement import settle_pending, settle_report
from wallets.models import ChainCursor, Network
from wallets.scanner import scan_network

logger = logging.getLogger(__name__)


@shared_task(ignore_result=True)
def watch_networks() -> None:
    """Beat's tick: queue a watch for every active network whose poll interval has passed."""
    now = timezone.now()
    last_scan = dict(ChainCursor.objects.values_list("network_id", "updated_at"))
    for network in Network.objects.active():
        previous = last_scan.get(network.pk)
        if previous is None or (now - previous).total_seconds() >= network.effective_poll_seconds:
            watch_network.delay(network.pk)


@shared_task(ignore_result=True, acks_late=True)
def watch_network(network_id: int) -> None:
    """Scan one network, then settle what it found. Safe to run twice at once: the cursor
    lock lets one scan through, and settlement is idempotent."""
    network = Network.objects.filter(pk=network_id, enabled=True).first()
    if network is None:
        return
    report = scan_network(network=network)
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


@shared_task(ignore_result=True)
def end_payments() -> None:
    """Timers that ran out, deposits stuck unconfirmed, payments of invoices that ended."""
    payments_expire()
    payments_fail_stuck()
    payments_cancel_ended()
