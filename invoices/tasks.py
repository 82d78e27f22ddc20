"""Delivery work. Tasks take ids, load, and call one service."""

from celery import shared_task

from invoices.delivery import email_delivery_send, reminders_queue


@shared_task(ignore_result=True, acks_late=True)
def email_send(delivery_id: int) -> None:
    """Safe to run twice for one email: the service claims the row before sending."""
    email_delivery_send(delivery_id=delivery_id)


@shared_task(ignore_result=True)
def send_reminders() -> None:
    """Beat's daily tick: queue the reminders due today (each goes out at most once)."""
    reminders_queue()
