"""The embedded default (SQLite) with a worker writing: requests never answer 500.

These tests run the real app in a subprocess on a SQLite file, configured only by the
environment as `make run` does (whatever database this test run uses), and hold SQLite's
write lock from another connection the way a worker's transaction does.
"""

import json
import os
import socket
import sqlite3
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest

from tests.template_db import migrated_sqlite

ROOT = Path(__file__).resolve().parent.parent
# Stands up a business with an API key and prints the key, in the subprocess's database.
# The release step, in the shell process that sets up the business (one Django start less).
MIGRATE = """
from django.core.management import call_command
call_command("migrate", interactive=False, verbosity=0)
"""
SETUP = """
from merchants.integrations import api_key_create
from merchants.models import User
from merchants.services import merchant_create
owner = User.objects.create_user(email="owner@lock.test", password="not-used-here-123")
merchant = merchant_create(name="Lock Test", owner=owner)
keys = [api_key_create(merchant=merchant, name=f"key {i}", by=owner).plaintext for i in range(2)]
print("KEYS=" + ",".join(keys))
"""
# What the settings really do to a connection: the journal mode, and whether a transaction
# takes the write lock when it begins (probed by a second connection that may not wait).
PROBE = """
import sqlite3
from django.db import connection, transaction
with connection.cursor() as cursor:
    cursor.execute("PRAGMA journal_mode")
    print("JOURNAL=" + cursor.fetchone()[0])
    cursor.execute("PRAGMA busy_timeout")
    print("BUSY_MS=" + str(cursor.fetchone()[0]))
with transaction.atomic():
    other = sqlite3.connect(connection.settings_dict["NAME"], timeout=0, isolation_level=None)
    try:
        other.execute("BEGIN IMMEDIATE")
        print("LOCKED_AT_BEGIN=no")
        other.execute("ROLLBACK")
    except sqlite3.OperationalError as error:
        print("LOCKED_AT_BEGIN=yes " + str(error))
    other.close()
"""


def _env(var_dir: Path, **extra: str) -> dict[str, str]:
    env = {
        key: value
        for key, value in os.environ.items()
        # The embedded default: no database, cache or broker server, whatever this run uses.
        if key not in ("DATABASE_URL", "REDIS_URL", "CELERY_BROKER_URL", "DJANGO_SETTINGS_MODULE")
    }
    env.update(
        STABLEBILL_VAR_DIR=str(var_dir),
        SECRET_KEY="sqlite-locking-test",
        DEBUG="0",
        DJANGO_SETTINGS_MODULE="config.settings",
        **extra,
    )
    return env


def _manage(var_dir: Path, *args: str, **extra: str) -> str:
    done = subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env=_env(var_dir, **extra),
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def _lines(output: str) -> dict[str, str]:
    return dict(line.split("=", 1) for line in output.splitlines() if "=" in line)


@pytest.fixture(scope="module")
def embedded(tmp_path_factory):
    """A migrated SQLite file with a business and two API keys."""
    var_dir = tmp_path_factory.mktemp("sqlite-var")
    migrated_sqlite(var_dir)  # a copy of the run's migrated database (tests/template_db.py)
    keys = _lines(_manage(var_dir, "shell", "-c", MIGRATE + SETUP))["KEYS"].split(",")
    return var_dir, keys


class Server:
    """The app under gunicorn on the embedded defaults, as a deployment without servers."""

    def __init__(self, var_dir: Path, **extra: str) -> None:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self.log = var_dir / f"server-{self.port}.log"
        self.process = subprocess.Popen(
            [
                str(Path(sys.executable).with_name("gunicorn")),
                "config.wsgi",
                "--bind",
                f"127.0.0.1:{self.port}",
                "--workers",
                "1",
                "--threads",
                "4",
                "--timeout",
                "60",
            ],
            cwd=ROOT,
            env=_env(var_dir, **extra),
            stdout=self.log.open("w"),
            stderr=subprocess.STDOUT,
        )
        # Ready once the app answers (gunicorn listens before its worker has loaded Django);
        # a request without a key touches no key.
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if self.get("/api/v1/invoices", "")[0] == 401:
                    return
            except OSError:
                time.sleep(0.2)
        self.stop()
        raise AssertionError("gunicorn did not start:\n" + self.log.read_text()[-3000:])

    def get(self, path: str, key: str) -> tuple[int, dict]:
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.port}{path}", headers={"Authorization": f"Bearer {key}"}
        )
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as error:
            return error.code, {"body": error.read().decode(errors="replace")[:2000]}

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=20)


class WriteLock:
    """Another connection holding SQLite's write lock for `seconds`, as a worker's
    transaction does; records when it really held it."""

    def __init__(self, database: Path, seconds: float) -> None:
        self.database, self.seconds = database, seconds
        self.held, self.released_at = threading.Event(), 0.0
        self.thread = threading.Thread(target=self._hold, daemon=True)

    def _hold(self) -> None:
        connection = sqlite3.connect(self.database, timeout=30, isolation_level=None)
        connection.execute("BEGIN IMMEDIATE")
        connection.execute("UPDATE merchants_apikey SET name = name")
        self.held.set()
        time.sleep(self.seconds)
        self.released_at = time.monotonic()
        connection.execute("COMMIT")
        connection.close()

    def __enter__(self) -> "WriteLock":
        self.thread.start()
        assert self.held.wait(10), "could not take the write lock"
        return self

    def __exit__(self, *exc) -> None:
        self.thread.join(30)


def _last_used(database: Path, key: str) -> str | None:
    prefix = key.removeprefix("sb_").split("_")[0]
    with sqlite3.connect(database) as connection:
        return connection.execute(
            "SELECT last_used_at FROM merchants_apikey WHERE prefix = ?", (prefix,)
        ).fetchone()[0]


def test_settings_put_sqlite_in_wal_mode_with_immediate_transactions(embedded):
    var_dir, _keys = embedded
    probed = _lines(_manage(var_dir, "shell", "-c", PROBE))
    assert probed["JOURNAL"] == "wal"
    assert probed["BUSY_MS"] == "20000"
    assert probed["LOCKED_AT_BEGIN"].startswith("yes database is locked")


def test_api_read_answers_200_while_a_worker_holds_the_write_lock(embedded):
    var_dir, keys = embedded
    database = var_dir / "stablebill.sqlite3"
    server = Server(var_dir)
    try:
        with WriteLock(database, seconds=1.5) as lock:
            asked_at = time.monotonic()
            status, body = server.get("/api/v1/invoices", keys[0])
            answered_at = time.monotonic()
    finally:
        server.stop()
    assert status == 200, body
    assert body["items"] == []
    # The request came while the lock was held; its one write (the key's bookkeeping) waited
    # for the lock instead of failing (the busy timeout is longer), then went through.
    assert asked_at < lock.released_at <= answered_at
    assert _last_used(database, keys[0]) is not None
    assert "database is locked" not in server.log.read_text()


def test_bookkeeping_write_that_times_out_is_logged_and_the_request_still_succeeds(embedded):
    var_dir, keys = embedded
    database = var_dir / "stablebill.sqlite3"
    server = Server(var_dir, SQLITE_BUSY_TIMEOUT_SECONDS="1")
    try:
        with WriteLock(database, seconds=2):
            status, body = server.get("/api/v1/invoices", keys[1])
    finally:
        server.stop()
    assert status == 200, body
    assert _last_used(database, keys[1]) is None
    log = server.log.read_text()
    assert "last use not recorded: database is locked" in log
    assert "Internal Server Error" not in log
