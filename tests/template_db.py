"""One migration per `make test` run instead of one per pytest-xdist worker.

Each worker has a test database of its own (pytest-django suffixes its name with the worker
id), and migrating one is some 10 to 30 s of CPU (most of it Django rendering the migration
states), which every worker used to spend at once at the start of the run. Here the first
worker to get there migrates its database as usual and leaves a copy of it, the template; every
other worker's database is a copy of that template (PostgreSQL: CREATE DATABASE ... TEMPLATE;
SQLite: the in-memory database filled from the template file with SQLite's backup API). A copy
holds exactly what the migration left: the schema, the rows the data migrations seed, the
content types and permissions.

The template belongs to one run: its name carries a key the controller makes at start and
hands to its workers in the environment, and the controller removes the template at the end
(`drop_template`). A run without workers (-n 0) migrates as before.
"""

from __future__ import annotations

import fcntl
import os
import sqlite3
import tempfile
import uuid
from pathlib import Path

from django.conf import settings
from django.db import connections

ENV_KEY = "STABLEBILL_TEST_TEMPLATE_KEY"


def run_key() -> str:
    """This run's key: made by the controller, which imports tests/conftest.py before
    pytest-xdist starts its workers, and inherited by them (its children). It starts with the
    controller's pid, so a pytest run of the suite started from inside one of its tests
    makes a key of its own rather than taking, and at its end removing, the outer run's."""
    owner = os.environ.get(ENV_KEY, "").split("-")[0]
    if owner not in (str(os.getpid()), str(os.getppid())):
        os.environ[ENV_KEY] = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
    return os.environ[ENV_KEY]


def owns_template() -> bool:
    return run_key().split("-")[0] == str(os.getpid())


def _template_name(settings_dict: dict) -> str:
    # NAME is still the configured (non-test) name when the test database is created.
    return f"test_{settings_dict['NAME']}_tpl_{run_key()}"


def _sqlite_template(settings_dict: dict) -> Path:
    return Path(tempfile.gettempdir()) / f"{_template_name({'NAME': 'sqlite'})}.sqlite3"


def _lock_path() -> Path:
    return Path(tempfile.gettempdir()) / f"stablebill-test-template-{run_key()}.lock"


def _pg_exists(creation, name: str) -> bool:
    with creation._nodb_cursor() as cursor:
        cursor.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name])
        return cursor.fetchone() is not None


def install() -> None:
    """Wrap create_test_db of the PostgreSQL and SQLite backends (in a worker process)."""
    from django.db.backends.base.creation import BaseDatabaseCreation

    original = BaseDatabaseCreation.create_test_db

    def create_test_db(self, verbosity=1, autoclobber=False, serialize=None, keepdb=False):
        vendor = self.connection.vendor
        in_memory = vendor == "sqlite" and self.is_in_memory_db(self._get_test_db_name())
        if (
            keepdb
            or self.connection.alias != "default"
            or not (vendor == "postgresql" or in_memory)
        ):
            return original(self, verbosity, autoclobber, serialize, keepdb)
        with open(_lock_path(), "a") as lock:
            # One worker migrates; the others wait here the while, then copy.
            fcntl.flock(lock, fcntl.LOCK_EX)
            if vendor == "postgresql":
                template = _template_name(self.connection.settings_dict)
                if _pg_exists(self, template):
                    return _pg_copy(self, template, verbosity, autoclobber)
                name = original(self, verbosity, autoclobber, serialize, keepdb)
                # A template must have no session open while it is copied: close ours.
                self.connection.close()
                with self._nodb_cursor() as cursor:
                    cursor.execute(f'CREATE DATABASE "{template}" TEMPLATE "{name}"')
                return name
            path = _sqlite_template(self.connection.settings_dict)
            if path.exists():
                return _sqlite_copy(self, path, verbosity, autoclobber)
            name = original(self, verbosity, autoclobber, serialize, keepdb)
            partial = path.with_suffix(".partial")
            target = sqlite3.connect(partial)
            self.connection.connection.backup(target)
            target.close()
            partial.replace(path)
            return name

    BaseDatabaseCreation.create_test_db = create_test_db


def _switch_to(creation, name: str) -> None:
    creation.connection.close()
    settings.DATABASES[creation.connection.alias]["NAME"] = name
    creation.connection.settings_dict["NAME"] = name


def _finish(creation) -> None:
    """What create_test_db does after migrating, for a copy."""
    from django.core.management import call_command

    call_command("createcachetable", database=creation.connection.alias)
    creation.connection.ensure_connection()


def _pg_copy(creation, template: str, verbosity: int, autoclobber: bool) -> str:
    name = creation._get_test_db_name()
    if verbosity >= 1:
        creation.log(f"Copying test database {name} from the run's template {template}...")
    test = creation.connection.settings_dict["TEST"]
    before = test.get("TEMPLATE")
    test["TEMPLATE"] = template  # CREATE DATABASE ... TEMPLATE, as Django writes it
    try:
        creation._create_test_db(verbosity, autoclobber, False)
    finally:
        test["TEMPLATE"] = before
    _switch_to(creation, name)
    _finish(creation)
    return name


def _sqlite_copy(creation, path: Path, verbosity: int, autoclobber: bool) -> str:
    name = creation._create_test_db(verbosity, autoclobber, False)
    if verbosity >= 1:
        creation.log(f"Copying the in-memory test database from the run's template {path}...")
    _switch_to(creation, name)
    creation.connection.ensure_connection()
    source = sqlite3.connect(path)
    source.backup(creation.connection.connection)
    source.close()
    _finish(creation)
    return name


def _migrated_sqlite_path() -> Path:
    return Path(tempfile.gettempdir()) / f"stablebill-migrated-{run_key()}.sqlite3"


def migrated_sqlite(var_dir: Path) -> Path:
    """Put a migrated embedded database (VAR_DIR/stablebill.sqlite3) into `var_dir`, for the
    tests that serve the app from a subprocess (gunicorn, the container roles, the SQLite
    locking tests, the Schemathesis CLI run). The first caller of the run migrates one file
    (`manage.py migrate`, some 12 s of CPU); every caller gets a copy, so its own
    `migrate` step only finds nothing left to apply (2 s). The migrations depend on no
    setting but AUTH_USER_MODEL, so one file fits every environment these tests use. Migrating
    a fresh database from scratch stays tested: tests/ops/test_fresh_clone.py, the devserver's
    first start, and every worker's test database on SQLite."""
    import shutil
    import subprocess
    import sys

    template = _migrated_sqlite_path()
    with open(template.with_suffix(".lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not template.exists():
            scratch = Path(tempfile.mkdtemp(prefix="stablebill-migrate-"))
            env = {
                k: v
                for k, v in os.environ.items()
                if k not in ("CI", "DATABASE_URL", "CELERY_BROKER_URL", "REDIS_URL")
            }
            env.update(DEBUG="1", STABLEBILL_VAR_DIR=str(scratch))
            subprocess.run(
                [sys.executable, "manage.py", "migrate", "--no-input", "-v", "0"],
                cwd=Path(__file__).resolve().parents[1],
                env=env,
                check=True,
                timeout=600,
            )
            _sqlite_file_copy(scratch / "stablebill.sqlite3", template)
            shutil.rmtree(scratch, ignore_errors=True)
    var_dir.mkdir(parents=True, exist_ok=True)
    target = var_dir / "stablebill.sqlite3"
    _sqlite_file_copy(template, target)
    return target


def _sqlite_file_copy(source: Path, target: Path) -> None:
    # The backup API, not a file copy: the app runs SQLite in WAL mode.
    partial = target.with_name(target.name + ".partial")
    src, dst = sqlite3.connect(source), sqlite3.connect(partial)
    src.backup(dst)
    src.close()
    dst.close()
    partial.replace(target)


def pg_template(cursor) -> str | None:
    """The run's PostgreSQL template database (made once a worker migrated), if there is one."""
    cursor.execute(
        "SELECT datname FROM pg_database WHERE datname LIKE %s", [f"test\\_%\\_tpl\\_{run_key()}"]
    )
    row = cursor.fetchone()
    return row[0] if row else None


def drop_migrated_sqlite() -> None:
    """At the end of the run (the controller, or a run without workers)."""
    if owns_template():
        _migrated_sqlite_path().unlink(missing_ok=True)
        _migrated_sqlite_path().with_suffix(".lock").unlink(missing_ok=True)


def drop_template() -> None:
    """At the end of the run (the controller): remove the template, if a worker made one."""
    if not owns_template():
        return
    connection = connections["default"]
    settings_dict = connection.settings_dict
    Path(_lock_path()).unlink(missing_ok=True)
    if connection.vendor == "sqlite":
        _sqlite_template(settings_dict).unlink(missing_ok=True)
        return
    if connection.vendor != "postgresql":
        return
    import psycopg

    params = connection.get_connection_params()
    admin = {k: v for k, v in params.items() if k in ("host", "port", "user", "password")}
    with psycopg.connect(dbname="postgres", autocommit=True, **admin) as db:
        db.execute(f'DROP DATABASE IF EXISTS "{_template_name(settings_dict)}"')
