"""Prometheus metrics at /metrics, for the operator only (a bearer token, METRICS_TOKEN).

Two kinds of numbers, kept apart so many gunicorn workers give one consistent answer:
- what the database and the nodes know (payments by status, callbacks and emails by status,
  scanner lag and last round per network) is computed at scrape time by a collector, so every
  process answers the same and nothing has to be aggregated;
- what each process sees (request latency) lives in the process, or, when
  PROMETHEUS_MULTIPROC_DIR is set (config/gunicorn.py sets it), in prometheus-client's shared
  files, which the scrape merges over every worker, dead ones included.
"""

from __future__ import annotations

import logging
import os
import secrets
import time
from collections.abc import Callable, Iterator

from django.conf import settings
from django.db.models import Count
from django.http import HttpRequest, HttpResponse
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

logger = logging.getLogger(__name__)

# Not in the default registry: the scrape builds its own (see registry()).
REQUEST_LATENCY = Histogram(
    "stablebill_http_request_duration_seconds",
    "Time from the request reaching Django to the response leaving it.",
    ["method", "route", "status"],
    registry=None,
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)


def _multiprocess() -> bool:
    return bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))


class DatabaseCollector(Collector):
    """Gauges read from the database and the nodes when Prometheus asks."""

    def collect(self) -> Iterator[Metric]:
        yield from self._section("payments", self._payments)
        yield from self._section("callbacks", self._callbacks)
        yield from self._section("emails", self._emails)
        yield from self._section("networks", self._networks)

    def _section(self, name: str, build: Callable[[], list[Metric]]) -> Iterator[Metric]:
        # A dependency down makes one section missing and flagged, never the whole scrape.
        error = GaugeMetricFamily(
            f"stablebill_metrics_{name}_error",
            f"1 when the {name} metrics could not be read at this scrape.",
        )
        try:
            metrics = build()
        except Exception as failure:
            logger.warning("metrics section %s failed: %s", name, failure)
            error.add_metric([], 1)
            yield error
            return
        error.add_metric([], 0)
        yield error
        yield from metrics

    @staticmethod
    def _by_status(name: str, help_text: str, rows, statuses) -> GaugeMetricFamily:
        counts = {row["status"]: row["n"] for row in rows}
        gauge = GaugeMetricFamily(name, help_text, labels=["status"])
        for status in statuses:
            gauge.add_metric([status], counts.get(status, 0))
        return gauge

    def _payments(self) -> list[Metric]:
        from checkout.models import Payment, PaymentStatus

        rows = Payment.objects.values("status").annotate(n=Count("id")).order_by()
        return [
            self._by_status(
                "stablebill_payments",
                "Payments (orders) by status.",
                rows,
                PaymentStatus.values,
            )
        ]

    def _callbacks(self) -> list[Metric]:
        from invoices.models import CallbackDelivery, CallbackStatus

        rows = CallbackDelivery.objects.values("status").annotate(n=Count("id")).order_by()
        return [
            self._by_status(
                "stablebill_callbacks",
                "Callback deliveries by status (pending: still to be delivered or retried).",
                rows,
                CallbackStatus.values,
            )
        ]

    def _emails(self) -> list[Metric]:
        from invoices.models import EmailDelivery, EmailStatus

        rows = EmailDelivery.objects.values("status").annotate(n=Count("id")).order_by()
        return [self._by_status("stablebill_emails", "Emails by status.", rows, EmailStatus.values)]

    def _networks(self) -> list[Metric]:
        from config.health import network_statuses

        up = GaugeMetricFamily(
            "stablebill_node_up",
            "1 when the network's node answers with the right chain id.",
            labels=["network"],
        )
        lag = GaugeMetricFamily(
            "stablebill_scanner_lag_blocks",
            "Blocks between the node's head and the scanner's cursor.",
            labels=["network"],
        )
        last_round = GaugeMetricFamily(
            "stablebill_scanner_last_round_timestamp_seconds",
            "When the scanner last moved its cursor (Unix time).",
            labels=["network"],
        )
        for status in network_statuses(timeout=settings.READYZ_TIMEOUT_SECONDS):
            up.add_metric([status.slug], 1 if status.head is not None else 0)
            if status.lag_blocks is not None:
                lag.add_metric([status.slug], status.lag_blocks)
            if status.last_round is not None:
                last_round.add_metric([status.slug], status.last_round.timestamp())
        return [up, lag, last_round]


def registry() -> CollectorRegistry:
    registry = CollectorRegistry()
    if _multiprocess():
        MultiProcessCollector(registry)
    else:
        registry.register(REQUEST_LATENCY)
    registry.register(DatabaseCollector())
    return registry


def _authorized(request: HttpRequest) -> bool:
    token = settings.METRICS_TOKEN
    given = request.headers.get("Authorization", "").removeprefix("Bearer ").strip()
    return bool(token) and secrets.compare_digest(given.encode(), token.encode())


def metrics_view(request: HttpRequest) -> HttpResponse:
    if not settings.METRICS_TOKEN:
        # Off unless the operator chose a token: nothing here for the public.
        return HttpResponse("Not found", status=404, content_type="text/plain")
    if not _authorized(request):
        response = HttpResponse("A metrics token is required.", status=401)
        response["WWW-Authenticate"] = 'Bearer realm="metrics"'
        return response
    return HttpResponse(generate_latest(registry()), content_type=CONTENT_TYPE_LATEST)


class RequestMetricsMiddleware:
    """Times every request Django handles, labelled by its URL pattern (bounded labels)."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        started = time.perf_counter()
        response = self.get_response(request)
        match = getattr(request, "resolver_match", None)
        route = match.route if match is not None else "unmatched"
        REQUEST_LATENCY.labels(request.method, route, str(response.status_code)).observe(
            time.perf_counter() - started
        )
        return response
