"""Delivery work. Tasks take ids, load, and call one service."""

from celery import shared_task

from invoices import callbacks
from invoices.delivery import email_delivery_send, reminders_queue


@shared_task(ignore_result=True, acks_late=True)
def email_send(delivery_id: int) -> None:
    """Safe to run twice for one email: the service claims the row before sending."""
    email_delivery_send(delivery_id=delivery_id)


@shared_task(ignore_result=True)
def send_reminders() -> None:
    """Beat's daily tick: queue the reminders due today (each goes out at most once)."""
    reminders_queue()


@shared_task(ignore_result=True, acks_late=True)
def callback_deliver(delivery_id: int, manual: bool = False) -> None:
    """Safe to run twice: the delivery is leased before its request, and a duplicate finds
    nothing to claim."""
    callbacks.callback_deliver(delivery_id=delivery_id, manual=manual)


@shared_task(ignore_result=True)
def callbacks_sweep() -> None:
    """Beat's tick: queue retries that are due and deliveries a dead worker left behind,
    never one whose task is still waiting on the broker."""
    callbacks.callbacks_queue_due()
