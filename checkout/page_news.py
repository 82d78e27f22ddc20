"""News of changes to what the payer's page shows, pushed by PostgreSQL (LISTEN/NOTIFY).

Every open payment page asks for its status every few seconds, and a held status request used
to look at the database five times a second; almost every time nothing had changed. Triggers
on the tables the page reads (checkout/migrations/0006_page_news.py) send a notice at commit
naming what changed: an invoice (its own row, its payments, refunds and the transfers to its
deposit address), a merchant's name, logo or colour, a customer, or `*` for the asset
catalogue. A trigger fires whatever wrote the row (a save, a queryset update, raw SQL, admin),
so no code path can forget to announce a change.

One thread per web process listens and numbers what it hears. A request that read a page's
state when the numbering stood at N may use that state again for as long as nothing it names
was heard after N. The listener also sends itself a beat every BEAT_SECONDS: notices arrive
in commit order, so once a beat is back, every change committed before it was sent has been
heard. Whenever the last beat back is older than STALE_SECONDS (a lost connection, a stuck
thread, a transaction-pooling PgBouncer that breaks LISTEN), nothing is vouched for and every
request reads the database, as without this module.
"""

import logging
import os
import threading
import time
from collections.abc import Iterable

from django.conf import settings
from django.db import connection

logger = logging.getLogger(__name__)

CHANNEL = "stablebill_page"
EVERYTHING = "*"
BEAT_SECONDS = 1.0
# A change committed after the last beat back may still be on its way: this bounds how long
# a request may be answered from a state older than the database's.
STALE_SECONDS = 3.0
# A listener that heard no beat for this long drops its connection and makes a new one.
RECONNECT_SECONDS = 10.0
# Names heard are kept to compare against; past this many they are forgotten together, and
# every state read before is then taken as out of date.
MAX_NAMES = 200_000


def invoice_news(invoice_id: int) -> str:
    return f"i:{invoice_id}"


def merchant_news(merchant_id: int) -> str:
    return f"m:{merchant_id}"


def customer_news(customer_id: int) -> str:
    return f"c:{customer_id}"


class Listener:
    """The numbering of the notices this process heard (see the module's docstring)."""

    def __init__(self) -> None:
        self._changed = threading.Condition()
        self._heard = 0  # notices heard so far: the mark a read is taken at
        self._epoch = 0  # a new connection, or names forgotten: older marks vouch for nothing
        self._last: dict[str, int] = {}  # name -> the number of the last notice naming it
        self._beat_back_at = -1e9  # when the last beat that came back was sent (monotonic)
        self._pid: int | None = None
        self._thread: threading.Thread | None = None
        self._connected = threading.Event()
        self._stopping = threading.Event()
        self._beat_asked = threading.Event()

    # What requests ask ---------------------------------------------------------------------

    def mark(self) -> tuple[int, int] | None:
        """Where the numbering stands, taken before a read; None when nothing is vouched for."""
        self._start()
        with self._changed:
            if not self._fresh():
                return None
            return self._epoch, self._heard

    def unchanged(self, mark: tuple[int, int] | None, names: Iterable[str]) -> bool:
        """Whether nothing in `names` (or the catalogue) changed since `mark` was taken."""
        if mark is None:
            return False
        with self._changed:
            return self._unchanged(mark, names)

    def wait(self, mark: tuple[int, int] | None, names: tuple[str, ...], seconds: float) -> None:
        """Return when something in `names` changed since `mark`, or after `seconds`."""
        deadline = time.monotonic() + seconds
        with self._changed:
            while (left := deadline - time.monotonic()) > 0 and self._unchanged(mark, names):
                self._changed.wait(left)

    def _unchanged(self, mark: tuple[int, int] | None, names: Iterable[str]) -> bool:
        if mark is None or not self._fresh() or mark[0] != self._epoch:
            return False
        seen = mark[1]
        last = self._last
        return last.get(EVERYTHING, 0) <= seen and all(last.get(name, 0) <= seen for name in names)

    def _fresh(self) -> bool:
        return time.monotonic() - self._beat_back_at <= STALE_SECONDS

    # The listening thread --------------------------------------------------------------------

    def _start(self) -> None:
        pid = os.getpid()
        if self._pid == pid:
            return
        with self._changed:
            if self._pid == pid:
                return
            # A forked worker inherits the numbering but not the thread that kept it.
            self._pid, self._beat_back_at = pid, -1e9
            self._epoch += 1
            self._stopping.clear()
            self._thread = threading.Thread(
                target=self._run, args=(_connection_params(),), name="page-news", daemon=True
            )
            self._thread.start()

    def stop(self, seconds: float = 5.0) -> None:
        """End the thread and close its connection (the test suite does, before it drops
        its databases); the next request starts it again."""
        with self._changed:
            thread, self._thread, self._pid = self._thread, None, None
            self._stopping.set()
        if thread is not None:
            thread.join(seconds)

    def _run(self, params: dict) -> None:
        import psycopg

        pause = 0.5
        while not self._stopping.is_set():
            try:
                with psycopg.connect(**params, autocommit=True) as conn:
                    conn.execute(f"LISTEN {CHANNEL}")
                    with self._changed:
                        self._epoch += 1  # what was heard on another connection: not known
                    self._connected.set()
                    pause = 0.5
                    self._listen(conn)
            except Exception:
                logger.warning("Page news: listening failed; reconnecting", exc_info=True)
            with self._changed:
                self._beat_back_at = -1e9
                self._epoch += 1
                self._changed.notify_all()  # waiting requests go back to reading the database
            self._connected.clear()
            self._stopping.wait(pause)
            pause = min(pause * 2, 10.0)

    def _listen(self, conn) -> None:
        beats: dict[str, float] = {}  # beats on their way back, with when they were sent
        number = 0
        connected_at = next_beat = time.monotonic()
        prefix = f"beat:{os.getpid()}:{id(conn)}:"
        while not self._stopping.is_set():
            now = time.monotonic()
            if now >= next_beat or self._beat_asked.is_set():
                self._beat_asked.clear()
                number += 1
                beats[f"{prefix}{number}"] = now
                conn.execute("SELECT pg_notify(%s, %s)", (CHANNEL, f"{prefix}{number}"))
                next_beat = now + BEAT_SECONDS
            # Short waits, so that stop() is quick.
            for notice in conn.notifies(timeout=min(0.25, max(0.0, next_beat - now))):
                sent = beats.pop(notice.payload, None)
                if sent is not None:
                    for older in [beat for beat, at in beats.items() if at < sent]:
                        del beats[older]
                    with self._changed:
                        self._beat_back_at = max(self._beat_back_at, sent)
                elif not notice.payload.startswith("beat:"):
                    self._heard_of(notice.payload)
            if time.monotonic() - max(self._beat_back_at, connected_at) > RECONNECT_SECONDS:
                raise ConnectionError("no beat came back")

    def _heard_of(self, name: str) -> None:
        with self._changed:
            self._heard += 1
            if len(self._last) >= MAX_NAMES:
                self._last.clear()
                self._epoch += 1
            self._last[name] = self._heard
            self._changed.notify_all()

    def caught_up(self, seconds: float) -> bool:
        """Wait until every change committed before this call has been heard (a beat sent
        after it came back); False if that took longer than `seconds`. For tests."""
        self._start()
        since = time.monotonic()
        deadline = since + seconds
        self._beat_asked.set()  # rather than wait for the next one
        with self._changed:
            while self._beat_back_at < since:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._changed.wait(min(left, 0.05))
        return True

    def wait_connected(self, seconds: float) -> bool:
        """For tests and start-up checks: whether the listener is connected and vouching."""
        self._start()
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if self._connected.is_set() and self.mark() is not None:
                return True
            time.sleep(0.01)
        return False


def _connection_params() -> dict:
    """The database Django uses, connected to directly: the listener's connection is its own
    and outlives requests. Django's own adapters and cursor factory are left out (it runs
    no query of Django's), as are pool options."""
    params = connection.get_connection_params()
    for key in ("cursor_factory", "context", "pool", "prepare_threshold"):
        params.pop(key, None)
    # A peer that vanished without a word is noticed in seconds, not at TCP's own timeout.
    params.setdefault("keepalives", 1)
    params.setdefault("keepalives_idle", 5)
    params.setdefault("keepalives_interval", 2)
    params.setdefault("keepalives_count", 3)
    params["application_name"] = "stablebill page news"
    return params


listener = Listener()


def enabled() -> bool:
    """Whether page states may be kept between requests on this connection: PostgreSQL with
    the listener switched on, and no transaction open (its own writes, uncommitted, would
    never be announced)."""
    return (
        connection.vendor == "postgresql"
        and settings.DATABASE_LISTEN
        and not connection.in_atomic_block
    )
