"""Periodic chain watching. Tasks take ids, load, and call one service."""

import logging

from celery import shared_task
from django.utils import timezone

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
    """Scan one network. Safe to run twice at once: the cursor lock lets one through."""
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
    # Settlement of these transfers into payments joins here with the checkout capability.
