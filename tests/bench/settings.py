"""Production settings with the benchmark's URLs in front, for the app served by gunicorn in
tests/bench/bench_checkout.py (`gunicorn config.wsgi` with DJANGO_SETTINGS_MODULE pointing
here). Everything else is exactly what production runs."""

from config.settings import *  # noqa: F403

ROOT_URLCONF = "tests.bench.urls"
