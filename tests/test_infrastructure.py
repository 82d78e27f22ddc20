"""The real broker and cache: Redis in CI, the embedded defaults elsewhere."""

import os
import time
import uuid

import pytest
from celery.contrib.testing.worker import start_worker
from django.conf import settings
from django.core import mail
from django.core.cache import cache

from config.celery import app
from merchants.services import member_invite


def _require_redis_in_ci() -> None:
    if os.environ.get("CI") and not settings.CACHES["default"]["BACKEND"].endswith("RedisCache"):
        pytest.fail("CI must run with REDIS_URL set.")


def test_cache_round_trip_on_the_configured_backend():
    _require_redis_in_ci()
    key = f"probe-{uuid.uuid4()}"
    cache.set(key, {"amount": "12.50"}, timeout=30)
    assert cache.get(key) == {"amount": "12.50"}
    cache.delete(key)
    assert cache.get(key) is None


def test_the_redis_cache_keeps_one_client_for_every_operation():
    """config/cache.py: Django's own Redis cache builds a client per operation. Making a
    client connects to nothing, so this holds without a Redis server too."""
    from config.cache import RedisCache

    backend = RedisCache("redis://127.0.0.1:6379/15", {})._cache
    first = backend.get_client("a", write=True)
    assert all(backend.get_client(key) is first for key in ("a", "b", "c"))
    assert backend.get_client("b", write=True) is first
    if settings.CACHES["default"]["BACKEND"].endswith("RedisCache"):  # and it still works
        configured = cache._cache  # type: ignore[attr-defined]
        assert configured.get_client("a") is configured.get_client("b")
        cache.set("kept-client", 1, timeout=30)
        assert cache.get("kept-client") == 1


@pytest.fixture
def real_worker():
    """A Celery worker thread on the configured broker; tasks really travel through it."""
    app.conf.task_always_eager = False
    try:
        with start_worker(app, perform_ping_check=False, pool="solo", shutdown_timeout=10):
            yield
    finally:
        app.conf.task_always_eager = True


@pytest.mark.django_db(transaction=True)
def test_invitation_is_sent_by_a_worker_after_commit(real_worker, alice, acme):
    if os.environ.get("CI"):
        assert app.conf.broker_url.startswith("redis://"), "CI runs the broker on Redis"
    member_invite(merchant=acme, email="newcomer@acme.test", role="staff", invited_by=alice)
    deadline = time.monotonic() + 20
    while not mail.outbox and time.monotonic() < deadline:
        time.sleep(0.1)
    assert [m.to for m in mail.outbox] == [["newcomer@acme.test"]]
    assert "/password/reset/key/" in mail.outbox[0].body
