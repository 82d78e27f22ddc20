import os

from celery import Celery
from celery.schedules import crontab

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

app = Celery("stablebill")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
# Periodic work: each network is polled at its own interval, decided by the tick.
app.conf.beat_schedule = {
    "watch-networks": {"task": "checkout.tasks.watch_networks", "schedule": 2.0},
    # Payment reminders, once a day in the morning (TIME_ZONE); each reminder goes out once.
    "send-reminders": {
        "task": "invoices.tasks.send_reminders",
        "schedule": crontab(hour=9, minute=0),
    },
    "end-payments": {"task": "checkout.tasks.end_payments", "schedule": 15.0},
    # Deposits held for want of a rate are retried each minute and credited once one exists.
    "value-held-deposits": {"task": "checkout.tasks.value_held_deposits", "schedule": 60.0},
    # Callback retries come due at 5 s at the earliest, so the sweep runs that often.
    "callbacks-sweep": {"task": "invoices.tasks.callbacks_sweep", "schedule": 5.0},
    "prune-idempotency-keys": {
        "task": "merchants.tasks.prune_idempotency_keys",
        "schedule": crontab(minute=17),
    },
}
