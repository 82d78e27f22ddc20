"""`manage.py doctor`: the configuration checked the way an operator needs it.

Django's `check --deploy` looks at settings one by one; this looks at the deployment: whether
the links in emails will work, whether mail can leave, whether every network's node is the
chain it claims and moves, whether every asset has a rate in every invoice currency and a
contract where it should, whether a worker and beat are alive. Each finding says what is
wrong and how to fix it; any error makes the exit status 1.

It lives in checkout, the app at the top of the dependency graph, because it looks at
networks and assets (wallets), rates (checkout) and callbacks and mail (invoices) together.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import timedelta
from typing import Any
from urllib.parse import urlsplit

from django.conf import settings
from django.core.mail import mailers
from django.core.management.base import BaseCommand, CommandError
from django.db import DEFAULT_DB_ALIAS, connections
from django.db.migrations.executor import MigrationExecutor
from django.http.request import validate_host
from django.utils import timezone

DEV_SECRET_KEY = "insecure-key-for-dev-and-tests"
LOCAL_HOSTS = {"localhost", "127.0.0.1", "::1", "[::1]", "0.0.0.0"}  # noqa: S104
MAIL_THAT_STAYS = ("filebased", "console", "locmem", "dummy")


@dataclass
class Finding:
    level: str  # "ok", "warning" or "error"
    topic: str
    message: str
    fix: str = ""


class Report:
    def __init__(self) -> None:
        self.findings: list[Finding] = []

    def ok(self, topic: str, message: str) -> None:
        self.findings.append(Finding("ok", topic, message))

    def warning(self, topic: str, message: str, fix: str = "") -> None:
        self.findings.append(Finding("warning", topic, message, fix))

    def error(self, topic: str, message: str, fix: str = "") -> None:
        self.findings.append(Finding("error", topic, message, fix))

    def count(self, level: str) -> int:
        return sum(1 for f in self.findings if f.level == level)


class Command(BaseCommand):
    help = "Check the deployment's configuration, nodes, rates, broker and workers."

    def add_arguments(self, parser) -> None:
        parser.add_argument(
            "--head-wait",
            type=float,
            default=20.0,
            help="Seconds to watch each node's head for a new block (0: do not watch).",
        )
        parser.add_argument(
            "--worker-wait",
            type=float,
            default=None,
            help="Seconds to wait for the workers' answers (default: READYZ_TIMEOUT_SECONDS). "
            "With no worker up, doctor waits all of it.",
        )

    def handle(
        self, *args: Any, head_wait: float, worker_wait: float | None, **options: Any
    ) -> None:
        if worker_wait is not None and not 0 < worker_wait <= 600:
            raise CommandError("--worker-wait takes seconds above 0, at most 600.")
        report = Report()
        production = not settings.DEBUG
        for check in (
            lambda: check_secrets_and_hosts(report, production=production),
            lambda: check_site_url(report, production=production),
            lambda: check_email(report, production=production),
            lambda: check_database(report),
        ):
            guarded(report, check)
        if any(f.topic == "database" and f.level == "ok" for f in report.findings):
            guarded(report, lambda: check_networks(report, head_wait=head_wait))
            guarded(report, lambda: check_rates(report))
        wait = settings.READYZ_TIMEOUT_SECONDS if worker_wait is None else worker_wait
        guarded(report, lambda: check_broker_and_workers(report, worker_wait=wait))
        self._print(report)
        errors = report.count("error")
        if errors:
            raise CommandError(f"{errors} error(s) need fixing.", returncode=1)

    def _print(self, report: Report) -> None:
        styles = {
            "ok": ("ok     ", self.style.SUCCESS),
            "warning": ("WARNING", self.style.WARNING),
            "error": ("ERROR  ", self.style.ERROR),
        }
        for finding in report.findings:
            label, style = styles[finding.level]
            self.stdout.write(f"{style(label)} {finding.topic}: {finding.message}")
            if finding.fix:
                self.stdout.write(f"        fix: {finding.fix}")
        self.stdout.write(
            f"{report.count('error')} error(s), {report.count('warning')} warning(s)."
        )


def guarded(report: Report, check) -> None:
    try:
        check()
    except Exception as error:  # one broken part must not hide what the others say
        report.error("doctor", f"a check could not run: {type(error).__name__}: {error}")


def check_secrets_and_hosts(report: Report, *, production: bool) -> None:
    key = settings.SECRET_KEY
    if production and (key == DEV_SECRET_KEY or len(key) < 50 or len(set(key)) < 5):
        report.error(
            "SECRET_KEY",
            "too short or a known value: sessions and reset links can be forged",
            "set SECRET_KEY to 50+ random characters, e.g. python -c "
            '"import secrets; print(secrets.token_urlsafe(50))"',
        )
    else:
        report.ok("SECRET_KEY", "set" if production else "dev key (DEBUG is on)")
    if settings.DEBUG:
        report.warning(
            "DEBUG", "on: error pages show settings and code", "unset DEBUG in production"
        )
    if "*" in settings.ALLOWED_HOSTS:
        report.warning("ALLOWED_HOSTS", "'*' accepts any Host header", "list the site's host names")
    site_host = urlsplit(settings.SITE_URL).hostname or ""
    if site_host and not validate_host(site_host, settings.ALLOWED_HOSTS):
        report.error(
            "ALLOWED_HOSTS",
            f"SITE_URL's host {site_host} is not allowed: every page there would answer 400",
            f"add {site_host} to ALLOWED_HOSTS",
        )
    else:
        report.ok("ALLOWED_HOSTS", ", ".join(settings.ALLOWED_HOSTS))
    if production and not settings.SESSION_COOKIE_SECURE:
        report.warning(
            "SECURE_COOKIES", "off: session cookies travel over plain HTTP", "SECURE_COOKIES=1"
        )
    if production and settings.CALLBACKS_ALLOW_PRIVATE:
        report.warning(
            "CALLBACKS_ALLOW_PRIVATE",
            "on: merchants can make the server call its own network (SSRF)",
            "unset CALLBACKS_ALLOW_PRIVATE",
        )
    if not settings.METRICS_TOKEN:
        report.warning("METRICS_TOKEN", "unset: /metrics is off", "set a long random METRICS_TOKEN")
    elif len(settings.METRICS_TOKEN) < 24:
        report.warning(
            "METRICS_TOKEN", "shorter than 24 characters", "use a long random METRICS_TOKEN"
        )


def check_site_url(report: Report, *, production: bool) -> None:
    url = settings.SITE_URL
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        report.error(
            "SITE_URL",
            f"{url!r} is not an absolute http(s) URL: links in emails and PDFs break",
            "set SITE_URL=https://billing.example.com",
        )
        return
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        report.error(
            "SITE_URL",
            f"{url!r} has a path, query or fragment; the app is served at the root",
            f"set SITE_URL={parts.scheme}://{parts.netloc}",
        )
        return
    if production and parts.hostname in LOCAL_HOSTS:
        report.error(
            "SITE_URL",
            f"{url} points at this machine: payers cannot open the links in their emails",
            "set SITE_URL to the public address, e.g. https://billing.example.com",
        )
        return
    if production and parts.scheme != "https":
        report.error(
            "SITE_URL",
            f"{url} is plain HTTP: payment pages and sign-in must be HTTPS",
            "serve behind a TLS proxy (docs/deploy.md) and set SITE_URL=https://…",
        )
        return
    report.ok("SITE_URL", url)


def check_email(report: Report, *, production: bool) -> None:
    backend = str(settings.MAILERS["default"]["BACKEND"])
    try:
        mailers.create_connection("default")
    except Exception as error:
        report.error(
            "email",
            f"{backend} cannot start: {error}",
            "set the provider's ANYMAIL_* keys (README: Configuration) or fix MAILER_BACKEND",
        )
        return
    if production and any(word in backend for word in MAIL_THAT_STAYS):
        report.warning(
            "email",
            f"{backend} keeps emails on this machine: nobody receives invoices or receipts",
            "set MAILER_BACKEND to an anymail backend and its ANYMAIL_* keys",
        )
    else:
        report.ok("email", backend)
    sender = settings.DEFAULT_FROM_EMAIL
    if production and sender.rstrip(">").endswith(("@localhost", ".localhost")):
        report.warning(
            "DEFAULT_FROM_EMAIL",
            f"{sender} is not a real sender: providers refuse or spam-file it",
            'set DEFAULT_FROM_EMAIL="Acme billing <billing@acme.example>"',
        )


def check_database(report: Report) -> None:
    connection = connections[DEFAULT_DB_ALIAS]
    try:
        connection.ensure_connection()
    except Exception as error:
        report.error("database", f"cannot connect: {error}", "check DATABASE_URL")
        return
    executor = MigrationExecutor(connection)
    pending = executor.migration_plan(executor.loader.graph.leaf_nodes())
    if pending:
        report.error(
            "database",
            f"{len(pending)} migration(s) not applied",
            "run manage.py migrate (bin/container migrate)",
        )
    else:
        report.ok("database", f"{connection.vendor}, migrations applied")


def check_networks(report: Report, *, head_wait: float) -> None:
    from wallets.chain import Chain
    from wallets.models import ChainCursor, Network

    enabled = list(Network.objects.filter(enabled=True).prefetch_related("assets"))
    if not Network.objects.active().exists():
        report.error(
            "networks",
            "no network is enabled with a node: payers have nothing to pay with",
            "set CHAIN_<SLUG>_RPC_URL for a network and enable it in admin",
        )
    cursors = {c.network_id: c for c in ChainCursor.objects.all()}
    for network in enabled:
        topic = f"network {network.slug}"
        url = network.effective_rpc_url
        env_name = f"CHAIN_{network.slug.upper().replace('-', '_')}_RPC_URL"
        if network.is_dev and not settings.CHAIN_DEV_NETWORKS_ALLOWED:
            report.warning(
                topic,
                "a dev chain is enabled but not watched outside DEBUG (its keys are public)",
                "disable it in admin",
            )
            continue
        if not url:
            report.warning(
                topic,
                "enabled but no node is configured: payers cannot choose it",
                f"set {env_name}, or disable the network in admin",
            )
            continue
        chain = Chain(url, timeout=settings.READYZ_TIMEOUT_SECONDS, attempts=2, backoff=0.2)
        try:
            chain_id = chain.chain_id()
            head = chain.head()
        except Exception:
            report.error(
                topic,
                "the node does not answer",
                f"check {env_name} and that the node is reachable from here",
            )
            continue
        if chain_id != network.chain_id:
            report.error(
                topic,
                f"the node is chain {chain_id}, not {network.name}'s {network.chain_id}",
                f"point {env_name} at a {network.name} node",
            )
            continue
        report.ok(topic, f"node answers, chain {chain_id}, head {head}")
        _check_head_moves(report, topic, network, chain, head, head_wait)
        _check_confirmations(report, topic, network)
        _check_contracts(report, topic, network, chain)
        _check_scanner(report, topic, network, cursors.get(network.pk), head)


def _check_head_moves(report, topic, network, chain, head: int, head_wait: float) -> None:
    if head_wait <= 0:
        return
    deadline = time.monotonic() + head_wait
    while time.monotonic() < deadline:
        time.sleep(min(1.0, head_wait))
        if chain.head() > head:
            report.ok(topic, "new blocks arrive")
            return
    message = f"no new block in {head_wait:g} s: the node may be stuck or still syncing"
    if network.is_dev:
        report.ok(topic, f"{message} (a dev chain mines on demand)")
    else:
        report.warning(topic, message, "check the node's sync status, or use another provider")


def _check_confirmations(report, topic, network) -> None:
    confirmations = network.effective_confirmations
    env_name = f"CHAIN_{network.slug.upper().replace('-', '_')}_CONFIRMATIONS"
    if not network.is_dev and confirmations < 3:
        report.warning(
            topic,
            f"{confirmations} confirmation(s): a small reorg can undo a payment",
            f"raise {env_name} (or the network's confirmations in admin)",
        )
    elif confirmations > 1000:
        report.warning(
            topic,
            f"{confirmations} confirmations: payers wait hours",
            f"lower {env_name}",
        )


def _check_contracts(report, topic, network, chain) -> None:
    for asset in network.assets.all():
        if not asset.enabled or asset.symbol == network.native_symbol:
            continue
        if not asset.contract_address:
            report.error(
                topic,
                f"{asset.symbol} is enabled without a contract address",
                "set it in admin (Assets) or disable the asset",
            )
        elif not chain.has_code(asset.contract_address):
            report.error(
                topic,
                f"no contract at {asset.symbol}'s address {asset.contract_address}",
                "check the asset's contract address for this network in admin",
            )
    factory = getattr(network, "factory_address", "")
    if factory and not chain.has_code(factory):
        report.error(
            topic,
            f"no deposit factory at {factory}: forwarder addresses cannot be claimed",
            "deploy the factory (contracts/) and set its address on the network",
        )


def _check_scanner(report, topic, network, cursor, head: int) -> None:
    if cursor is None:
        report.warning(topic, "never scanned", "start a worker and one beat (bin/container)")
        return
    lag = max(0, head + 1 - cursor.next_block)
    if lag > settings.READYZ_MAX_SCANNER_LAG_BLOCKS:
        report.warning(
            topic,
            f"the scanner is {lag} blocks behind the head",
            "check the worker's log; more workers on the chain queue do not help one network",
        )
    stale = timedelta(seconds=max(120, 10 * network.effective_poll_seconds))
    if timezone.now() - cursor.updated_at > stale:
        report.warning(
            topic,
            f"the scanner last ran {cursor.updated_at:%Y-%m-%d %H:%M} UTC",
            "is beat running (exactly one) beside a worker?",
        )


def check_rates(report: Report) -> None:
    from checkout.rates import RateUnavailable, provider
    from merchants.money import CURRENCIES, price_gap
    from wallets.models import Asset, Network

    active = Network.objects.active()
    assets = sorted(
        set(Asset.objects.filter(network__in=active, enabled=True).values_list("symbol", flat=True))
    )
    rates = provider()
    missing = []
    # Codes without a live source or an approved static price are not offered at all (not an
    # error, but the operator should know why).
    unpriced = sorted({code for code in (*assets, *CURRENCIES) if price_gap(code)})
    if unpriced:
        report.warning(
            "rates",
            f"not offered: {', '.join(unpriced)} ({price_gap(unpriced[0])})",
        )
    for asset in assets:
        for currency in CURRENCIES:
            if asset in unpriced or currency in unpriced:
                continue
            try:
                rates.rate(asset, currency)
            except RateUnavailable:
                missing.append(f"{asset}/{currency}")
    if missing:
        report.error(
            "rates",
            f"no rate for {', '.join(missing)}: invoices in those currencies cannot be paid so",
            f"check RATE_PROVIDER={settings.RATE_PROVIDER}"
            + (" and RATE_HTTP_URL" if settings.RATE_PROVIDER == "http" else " and RATE_*_USD"),
        )
    elif assets:
        report.ok("rates", f"{', '.join(assets)} priced in {', '.join(CURRENCIES)}")
    else:
        report.warning("rates", "no enabled asset on an active network to price")


def check_broker_and_workers(report: Report, *, worker_wait: float) -> None:
    from config.celery import app
    from config.health import check_broker

    broker = urlsplit(settings.CELERY_BROKER_URL).scheme or settings.CELERY_BROKER_URL
    try:
        check_broker()
    except Exception as error:
        report.error(
            "broker",
            f"{broker} does not answer: {type(error).__name__}",
            "check CELERY_BROKER_URL and that the broker runs",
        )
        return
    report.ok("broker", broker)
    replies = app.control.ping(timeout=worker_wait) or []
    if not replies:
        report.error(
            "workers",
            "no Celery worker answers: payments are not watched, emails and callbacks wait",
            "start one: bin/container worker (and exactly one bin/container beat)",
        )
    else:
        names = sorted(name for reply in replies for name in reply)
        report.ok("workers", f"{len(names)} answering ({', '.join(names)})")
