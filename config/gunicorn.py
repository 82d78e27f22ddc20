"""gunicorn settings for production (`gunicorn -c config/gunicorn.py config.wsgi`).

Request-latency metrics are per process; with several workers prometheus-client keeps them in
files under PROMETHEUS_MULTIPROC_DIR so a scrape of any worker sees all of them. The master
empties that folder at start (old numbers of a previous run would count twice) and marks each
worker that exits, so gauges of dead workers drop out.
"""

import os
import shutil
import tempfile
from pathlib import Path

bind = os.environ.get("GUNICORN_BIND", f"0.0.0.0:{os.environ.get('PORT', '8000')}")
workers = int(os.environ.get("WEB_CONCURRENCY", "2"))
# Threads, not one request per process: the payment page's status request may wait up to
# PAY_STATUS_HOLD_SECONDS for news, and a waiting request must not take a whole worker.
# The app waits in at most PAY_STATUS_HOLD_SLOTS of them per process, below this number.
worker_class = "gthread"
threads = int(os.environ.get("GUNICORN_THREADS", "16"))
timeout = int(os.environ.get("GUNICORN_TIMEOUT", "60"))
accesslog = "-"
forwarded_allow_ips = os.environ.get("FORWARDED_ALLOW_IPS", "127.0.0.1")

os.environ.setdefault(
    "PROMETHEUS_MULTIPROC_DIR", str(Path(tempfile.gettempdir()) / "stablebill-metrics")
)


def on_starting(server):
    folder = Path(os.environ["PROMETHEUS_MULTIPROC_DIR"])
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)


def child_exit(server, worker):
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)
