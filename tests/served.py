"""The app served as the image serves it (bin/container), for tests that talk to it from
outside over HTTP: a free port, and the environment of a production process on its own SQLite
and filesystem broker, whatever database or Redis the test run itself was pointed at."""

import os
import socket
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CONTAINER = str(REPO / "bin" / "container")

# What points a process at the test run's own services (or turns DEBUG on): never inherited.
_NOT_INHERITED = ("CI", "DATABASE_URL", "CELERY_BROKER_URL", "REDIS_URL", "DEBUG")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def production_env(tmp_path: Path, port: int, *, secret: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in _NOT_INHERITED}
    env.update(
        DJANGO_SETTINGS_MODULE="config.settings",
        SECRET_KEY=f"{secret}-secret-key-not-for-production-use-0123456789",
        ALLOWED_HOSTS="127.0.0.1",
        SECURE_COOKIES="0",
        STABLEBILL_VAR_DIR=str(tmp_path / "var"),
        GUNICORN_BIND=f"127.0.0.1:{port}",
        WEB_CONCURRENCY="2",
        PROMETHEUS_MULTIPROC_DIR=str(tmp_path / "metrics"),
        **extra,
    )
    return env
