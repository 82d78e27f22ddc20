import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

app = Celery("stablebill")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
# Periodic work joins this schedule as each capability lands (chain watching, expiry, reminders).
app.conf.beat_schedule = {}
