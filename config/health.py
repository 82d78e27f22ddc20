"""Health checks for load balancers and orchestrators: /healthz and /readyz.

/healthz says the process answers and touches nothing else, so a slow database never gets a
web process restarted. /readyz says whether this deployment can take payments right now:
database, cache, broker, and for every active network a node that answers with the right
chain id and a scanner no more than READYZ_MAX_SCANNER_LAG_BLOCKS behind its head. Each check
catches its own failure and reports the reason, so /readyz is red, never a 500.

Both are answered by a middleware placed first, before host validation and the TLS redirect:
a container's health check calls http://localhost:8000/readyz, which is neither an allowed
host nor HTTPS in production.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from django.conf import settings
from django.core.cache import cache
from django.db import connection
from django.http import HttpRequest, HttpResponse, JsonResponse

logger = logging.getLogger(__name__)


@dataclass
class Check:
    ok: bool
    error: str = ""
    details: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"ok": self.ok, **self.details}
        if self.error:
            out["error"] = self.error
        return out


def _guarded(name: str, probe: Callable[[], Check]) -> Check:
    try:
        return probe()
    except Exception as error:  # a dependency down must show as red, whatever it raises
        logger.warning("readiness check %s failed: %s", name, error)
        return Check(False, f"{type(error).__name__}: {error}"[:300])


def check_database() -> Check:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
        cursor.fetchone()
    return Check(True)


def check_cache() -> Check:
    token = secrets.token_hex(8)
    cache.set("stablebill:readyz", token, 10)
    if cache.get("stablebill:readyz") != token:
        return Check(False, "the cache did not keep a value")
    return Check(True)


def check_broker() -> Check:
    from config.celery import app

    with app.connection_for_write() as conn:
        conn.ensure_connection(
            max_retries=1,
            interval_start=0,
            interval_step=0,
            timeout=settings.READYZ_TIMEOUT_SECONDS,
        )
    return Check(True)


@dataclass
class NetworkStatus:
    """What one network's node and scanner look like now (shared with metrics and doctor)."""

    slug: str
    ok: bool
    error: str = ""
    chain_id: int | None = None
    head: int | None = None
    next_block: int | None = None
    last_round: Any = None  # datetime of the cursor's last move

    @property
    def lag_blocks(self) -> int | None:
        if self.head is None or self.next_block is None:
            return None
        return max(0, self.head + 1 - self.next_block)


def redact(message: str, url: str) -> str:
    """The message without any part of the URL: provider URLs carry API keys in the host,
    the path or the query, and error texts repeat them piecemeal."""
    parts = urlsplit(url)
    secrets_in_url = [url, parts.netloc, parts.hostname or "", parts.query]
    if len(parts.path) > 1:
        secrets_in_url.append(parts.path)
    for secret in sorted(filter(None, secrets_in_url), key=len, reverse=True):
        message = message.replace(secret, "<rpc url>")
    return message


def network_statuses(*, timeout: float) -> list[NetworkStatus]:
    """Ask each active network's node for its chain id and head, compare with the cursor."""
    from wallets.chain import Chain
    from wallets.models import ChainCursor, Network

    cursors = {c.network_id: c for c in ChainCursor.objects.all()}
    statuses = []
    for network in Network.objects.active().order_by("slug"):
        url = network.effective_rpc_url
        cursor = cursors.get(network.pk)
        status = NetworkStatus(
            slug=network.slug,
            ok=False,
            next_block=cursor.next_block if cursor else None,
            last_round=cursor.updated_at if cursor else None,
        )
        try:
            chain = Chain(url, timeout=timeout, attempts=1)
            status.chain_id = chain.chain_id()
            if status.chain_id != network.chain_id:
                status.error = f"node is chain {status.chain_id}, expected {network.chain_id}"
            else:
                status.head = chain.head()
        except Exception as error:  # a dead or odd node is a red check, never a crash
            status.error = redact(f"node does not answer: {error}", url)[:300]
        if not status.error:
            lag = status.lag_blocks
            if lag is None:
                status.error = "not scanned yet (no cursor): is a worker with beat running?"
            elif lag > (limit := settings.READYZ_MAX_SCANNER_LAG_BLOCKS):
                status.error = (
                    f"scanner is {lag} blocks behind the head"
                    f" (more than READYZ_MAX_SCANNER_LAG_BLOCKS={limit})"
                )
            else:
                status.ok = True
        statuses.append(status)
    return statuses


def readiness() -> dict[str, Check]:
    checks = {
        "database": _guarded("database", check_database),
        "cache": _guarded("cache", check_cache),
        "broker": _guarded("broker", check_broker),
    }
    if not checks["database"].ok:
        checks["networks"] = Check(False, "needs the database")
        return checks
    try:
        statuses = network_statuses(timeout=settings.READYZ_TIMEOUT_SECONDS)
    except Exception as error:
        checks["networks"] = Check(False, f"{type(error).__name__}: {error}"[:300])
        return checks
    for status in statuses:
        details: dict[str, Any] = {"head": status.head, "lag_blocks": status.lag_blocks}
        checks[f"network:{status.slug}"] = Check(status.ok, status.error, details)
    return checks


def healthz(request: HttpRequest) -> HttpResponse:
    return JsonResponse({"status": "ok"})


def readyz(request: HttpRequest) -> HttpResponse:
    checks = readiness()
    ok = all(check.ok for check in checks.values())
    body = {
        "status": "ok" if ok else "fail",
        "checks": {name: check.as_dict() for name, check in checks.items()},
    }
    return JsonResponse(body, status=200 if ok else 503)


class HealthCheckMiddleware:
    """Answers /healthz, /readyz and /metrics before anything else looks at the request."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        from config.metrics import metrics_view

        self.get_response = get_response
        self.routes: dict[str, Callable[[HttpRequest], HttpResponse]] = {
            "/healthz": healthz,
            "/readyz": readyz,
            "/metrics": metrics_view,
        }

    def __call__(self, request: HttpRequest) -> HttpResponse:
        view = self.routes.get(request.path_info.rstrip("/"))
        if view is not None and request.method in ("GET", "HEAD"):
            response = view(request)
            response["Cache-Control"] = "no-store"
            return response
        return self.get_response(request)
