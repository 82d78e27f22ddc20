import os
import shutil
import threading
from pathlib import Path

import pytest
from django.core.cache import cache
from django.core.servers.basehttp import WSGIServer
from django.db import connection
from django.test.testcases import LiveServerThread

from checkout import page_news
from config.celery import app as celery_app
from merchants.models import Role
from tests import pg_flush, template_db
from tests.evm import dev_network, tester  # noqa: F401 (fixtures for every test directory)
from tests.factories import (
    PASSWORD,
    CustomerFactory,
    MembershipFactory,
    MerchantFactory,
)


class _SerialLiveServer(WSGIServer):
    """One request at a time, for a test database that is one shared in-memory SQLite
    connection: the threaded live server would run the browser's parallel requests (a preview
    and a totals refresh) on that one connection at once, and sqlite3 answers "bad parameter or
    other API misuse", which drops the session mid-test. Django's handler sends
    `Connection: close` from a server without threads, so a kept-alive browser never blocks it."""

    def __init__(self, *args, connections_override=None, **kwargs):
        super().__init__(*args, **kwargs)

    def process_request(self, request, client_address):
        # A background thread of the test (the e2e watcher) on that same connection takes
        # this lock too, so a request and a watcher round never run on it at once
        # ("database table is locked").
        with SHARED_SQLITE_CONNECTION:
            super().process_request(request, client_address)


# Held by whatever uses the one in-memory SQLite test connection from another thread.
SHARED_SQLITE_CONNECTION = threading.Lock()


if connection.vendor == "sqlite":
    LiveServerThread.server_class = _SerialLiveServer


def _scan_static_files_once() -> None:
    from django.conf import settings

    whitenoise = "whitenoise.middleware.WhiteNoiseMiddleware"
    if whitenoise in settings.MIDDLEWARE:
        middleware = list(settings.MIDDLEWARE)
        middleware[middleware.index(whitenoise)] = (
            "tests.static_files.ScannedOnceWhiteNoiseMiddleware"
        )
        settings.MIDDLEWARE = middleware


# Every Client builds the middleware anew; see tests/static_files.py.
_scan_static_files_once()

# pytest-xdist's worker id ("gw0", "gw1", ...) when `make test` runs the suite in parallel; None
# in a plain pytest run. Each worker has its own test database (pytest-django suffixes the name
# with it), its own anvil (tests/chain.py) and temporary folders; the Redis they share is split
# below.
XDIST_WORKER = os.environ.get("PYTEST_XDIST_WORKER")


def _share_redis_between_workers(worker: str) -> None:
    """Workers share REDIS_URL's and CELERY_BROKER_URL's databases: give each its own keys."""
    from django.conf import settings
    from django.core.cache import caches

    conf = settings.CACHES["default"]
    if conf["BACKEND"] == "config.cache.RedisCache":
        # cache.clear() (every test's start) empties this worker's keys only; see the module.
        conf["BACKEND"] = "tests.worker_cache.WorkerRedisCache"
        conf["KEY_PREFIX"] = f"test-{worker}"
        caches._settings = caches.settings = caches.configure_settings(None)  # as setting_changed
    if str(celery_app.conf.broker_url).startswith("redis"):
        # The real-worker tests (tests/test_infrastructure.py, invoices/test_delivery.py) would
        # otherwise consume each other's tasks and run them against the wrong test database.
        options = dict(celery_app.conf.broker_transport_options or {})
        options["global_keyprefix"] = f"test-{worker}:"
        celery_app.conf.broker_transport_options = options


pg_flush.install()
if XDIST_WORKER:
    _share_redis_between_workers(XDIST_WORKER)
    template_db.install()
else:
    template_db.run_key()  # before the workers start, so they inherit it


def pytest_configure(config):
    if not XDIST_WORKER and getattr(config.option, "numprocesses", None):
        from tests import rewrite_cache

        rewrite_cache.warm(config, Path(__file__).resolve().parent)


def pytest_xdist_auto_num_workers(config):
    """`-n auto` (`make test`): two workers more than there are cores. Much of the suite waits
    rather than computes (on subprocesses it starts: gunicorn, a Celery worker, anvil, inner
    pytest runs, the chaos scenario's killed rounds, which hold one worker for over a minute;
    on a browser; on PostgreSQL), and a core would sit idle while its only worker waits. On
    2 cores and PostgreSQL, 4 workers took 177 s where 3 took 192 s."""
    return (os.cpu_count() or 1) + 2


# The suite's long tests, by module, with roughly what each module takes on a quiet machine
# (seconds, PostgreSQL). `pytest_collection_modifyitems` below starts them first, spread over
# the workers. Only the order depends on these figures; a stale one costs time, not coverage.
LONG_MODULES = {
    "tests/api/test_schemathesis.py": 100,
    "tests/chaos/test_chaos.py": 80,
    "tests/ops/test_devserver.py": 35,
    "tests/ops/test_container.py": 46,
    "tests/api/test_schemathesis_cli.py": 45,
    "tests/checkout/test_state_machine.py": 30,
    "tests/wallets/test_scanner_faults.py": 30,
    "tests/wallets/test_keys_migration.py": 22,
    "tests/ops/test_gunicorn.py": 20,
    "tests/test_sqlite_locking.py": 20,
    "tests/ops/test_fresh_clone.py": 16,
    "tests/e2e/": 45,
}
# Folders whose modules stay together on one worker, as one of the long "modules" above: the
# browser tests share a session's Chromium and live server, which every worker that ran one of
# them would start again.
GROUPED_FOLDERS = ("tests/e2e/",)
# Modules of independent tests (no module-scoped fixture) whose tests may go to different
# workers: one Schemathesis test per API operation, the longest about 40 s.
SPLIT_MODULES = {"tests/api/test_schemathesis.py"}


def _xdist_shares(count: int, workers: int) -> list[int]:
    """How many of `count` tests each of `workers` gets at the start under `--dist worksteal`:
    contiguous shares of the collection, sized as xdist's WorkStealingScheduling sizes them."""
    sizes, left = [], count
    for i in range(workers):
        sizes.append(left // (workers - i))
        left -= sizes[-1]
    return sizes


def pytest_collection_modifyitems(config, items):
    """Under pytest-xdist's worksteal, each worker starts on a contiguous share of the
    collection and idle workers steal from the tail of the longest queue; a long test is never
    stolen once it runs. In collection order the long modules (tests/api, tests/chaos,
    tests/checkout) all fall into the first worker's share and run one after the other there,
    for minutes after the others are done. So each share starts with its own long modules (the
    longest first, each to the share with the least long work so far; the tests of a
    SPLIT_MODULES module one by one) and is filled up with the rest in collection order.
    Every worker computes the same order (xdist checks)."""
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "0") or 0)
    if workers < 2:
        return
    groups: dict[str, list] = {}
    rest = []
    for index, item in enumerate(items):
        module = item.nodeid.split("::", 1)[0]
        module = next((f for f in GROUPED_FOLDERS if module.startswith(f)), module)
        if module in SPLIT_MODULES:
            groups[f"{module}::{index}"] = [item]
        elif module in LONG_MODULES:
            groups.setdefault(module, []).append(item)
        else:
            rest.append(item)

    def cost(key: str) -> float:
        module = key.split("::", 1)[0]
        if module in SPLIT_MODULES:
            return LONG_MODULES[module] / sum(k.startswith(module + "::") for k in groups)
        return LONG_MODULES[module]

    heads: list[list] = [[] for _ in range(workers)]
    load = [0.0] * workers
    for key in sorted(groups, key=lambda k: -cost(k)):  # stable: ties in collection order
        share = load.index(min(load))
        heads[share] += groups[key]
        load[share] += cost(key)
    ordered = []
    for head, size in zip(heads, _xdist_shares(len(items), workers), strict=True):
        fill = max(0, size - len(head))
        ordered += head + rest[:fill]
        rest = rest[fill:]
    items[:] = ordered + rest


def on_postgres() -> bool:
    return connection.vendor == "postgresql"


def require_postgres() -> None:
    """Concurrency tests need real row locks. In CI (CI=true) PostgreSQL must be there."""
    if on_postgres():
        return
    if os.environ.get("CI"):
        pytest.fail("CI must run these tests on PostgreSQL: set DATABASE_URL.")
    pytest.skip("needs PostgreSQL (set DATABASE_URL=postgres://...)")


@pytest.fixture(scope="session")
def django_db_setup(django_db_setup, django_db_blocker):
    """pytest-django's, and before it drops the test database: the page-news listener
    (checkout/page_news.py), started by any request that read a payer's page outside a
    transaction, holds a connection to it."""
    yield
    page_news.listener.stop()
    with django_db_blocker.unblock():
        _end_stray_sessions()


def _end_stray_sessions() -> None:
    """End what else is still connected to this process's test database: PostgreSQL will not
    drop a database in use, and a thread or child process a test left running (a worker, a
    watcher, a server) would leave the database behind. Each xdist worker has a database of
    its own, so every such session is this run's."""
    if connection.vendor != "postgresql":
        return
    from django.db import OperationalError

    for attempt in (1, 2):
        try:
            with connection.cursor() as cursor:
                cursor.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                    " WHERE datname = current_database() AND pid <> pg_backend_pid()"
                )
            return
        except OperationalError:
            # This process's own connection may be gone by now (a test that forked a
            # worker and killed it, a server that dropped an idle session): open a new one.
            if attempt == 2:
                raise
            connection.close()


@pytest.fixture(autouse=True)
def _test_settings(settings, tmp_path):
    # Tasks run inline unless a test starts a real worker (tests/test_infrastructure.py).
    celery_app.conf.task_always_eager = True
    # Rate limits and cached rates live in the cache: every test starts without them.
    cache.clear()
    settings.MEDIA_ROOT = tmp_path / "media"
    settings.SITE_URL = "http://testserver"
    # The operator approves the static table in tests, as DEBUG does; the rate tests take the
    # approval away to show what production does without a live source.
    settings.RATE_STATIC_APPROVED = ["*"]
    if connection.vendor == "sqlite":
        # The serial live server above answers one request at a time but tells the app it
        # runs threads (wsgiref always does): a payment page's status request waiting there
        # would hold up every other request. It polls instead, as under sync workers.
        settings.PAY_STATUS_HOLD_SLOTS = 0


@pytest.fixture
def acme(db):
    return MerchantFactory(name="Acme Tools")


@pytest.fixture
def globex(db):
    return MerchantFactory(name="Globex")


@pytest.fixture
def alice(acme):
    """Owner of Acme."""
    return MembershipFactory(merchant=acme, role=Role.OWNER, user__email="alice@acme.test").user


@pytest.fixture
def bob(acme):
    """Staff at Acme: a teammate who creates invoices."""
    return MembershipFactory(merchant=acme, role=Role.STAFF, user__email="bob@acme.test").user


@pytest.fixture
def victor(acme):
    """Viewer at Acme: may look, may not change."""
    return MembershipFactory(merchant=acme, role=Role.VIEWER, user__email="victor@acme.test").user


@pytest.fixture
def charlie(globex):
    """Owner of Globex: an outsider to everything Acme owns."""
    return MembershipFactory(
        merchant=globex, role=Role.OWNER, user__email="charlie@globex.test"
    ).user


def _client_for(client_factory, user):
    """A browser signed in through the real sign-in page, as a person would be (so the
    session carries allauth's record of a recent sign-in, which money changes need)."""
    c = client_factory()
    response = c.post("/login/", {"login": user.email, "password": PASSWORD})
    assert response.status_code == 302, response.content[:2000]
    return c


@pytest.fixture
def client_for():
    from django.test import Client

    return lambda user: _client_for(Client, user)


@pytest.fixture
def acme_customer(acme):
    return CustomerFactory(merchant=acme, name="Ada Lovelace", email="ada@example.org")


@pytest.fixture(scope="session")
def chromium_path():
    """Where Chromium lives. Session-scoped so pytest-playwright's session fixtures can use it."""
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        if os.environ.get("CI"):
            pytest.fail("CI must have Chromium installed (apt-get install chromium).")
        pytest.skip("Chromium is not installed (apt-get install chromium)")
    return path


@pytest.fixture(autouse=True)
def _fast_password_hasher(settings):
    # The production hasher takes about a second per hash; tests sign people in by the hundred.
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


def pytest_sessionfinish(session, exitstatus):
    if getattr(session.config, "workeroutput", None) is not None:  # a pytest-xdist worker
        return
    template_db.drop_migrated_sqlite()
    if session.config.getoption("numprocesses", None):
        template_db.drop_template()
