"""The image's entrypoint roles, run outside a container the way compose.yaml runs them.

One deployment on this machine: `bin/container migrate`, then web (gunicorn), worker and beat
with production settings, a real anvil as the network's node. It must turn /readyz green on
its own (beat ticks, the worker scans, the cursor catches up) and `bin/container doctor` must
find no error. Then compose.yaml and the Dockerfile are checked against the README and the
scripts they rely on.
"""

import json
import os
import re
import signal
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import yaml

from tests.chain import running_anvil
from tests.ops.conftest import closed_port
from tests.template_db import migrated_sqlite

REPO = Path(__file__).resolve().parents[2]
CONTAINER = str(REPO / "bin" / "container")
README = (REPO / "README.md").read_text()
DEPLOY = (REPO / "docs" / "deploy.md").read_text()
COMPOSE = yaml.safe_load((REPO / "compose.yaml").read_text())
DOCKERFILE = (REPO / "Dockerfile").read_text()


def get(url):
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


@pytest.fixture
def deployment(tmp_path):
    processes = []
    port = closed_port()
    with running_anvil(block_time=1) as anvil_url:
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("CHAIN_", "DATABASE_URL", "CELERY_", "REDIS_URL", "CI", "DEBUG"))
        }
        env.update(
            DJANGO_SETTINGS_MODULE="config.settings",
            SECRET_KEY="container-test-" + "s3cr3t-k3y-" * 5,
            SITE_URL="https://billing.example.com",
            ALLOWED_HOSTS="billing.example.com",
            STABLEBILL_VAR_DIR=str(tmp_path / "var"),
            PROMETHEUS_MULTIPROC_DIR=str(tmp_path / "metrics"),
            GUNICORN_BIND=f"127.0.0.1:{port}",
            WEB_CONCURRENCY="1",
            WORKER_CONCURRENCY="1",
            METRICS_TOKEN="container-test-metrics-token-0123456789",
            MAILER_BACKEND="anymail.backends.postmark.EmailBackend",
            ANYMAIL_POSTMARK_SERVER_TOKEN="server-token",
            DEFAULT_FROM_EMAIL="Acme billing <billing@acme.example>",
            LOG_FORMAT="json",
            READYZ_TIMEOUT_SECONDS="2",
            CHAIN_ANVIL_POLL_SECONDS="1",
        )
        log = open(tmp_path / "processes.log", "wb")  # noqa: SIM115

        def run(*args, timeout=300):
            return subprocess.run(
                [CONTAINER, *args],
                cwd=REPO,
                env=env,
                capture_output=True,
                text=True,
                timeout=timeout,
            )

        # The release step, on a copy of the run's migrated database (tests/template_db.py):
        # migrating from scratch is tests/ops/test_fresh_clone.py's.
        migrated_sqlite(tmp_path / "var")
        assert run("migrate", "-v", "0").returncode == 0
        # The operator points the dev network at its node; tokens come from our deploy script.
        # Outside DEBUG only real networks are watched: this node plays one. (One process for
        # both steps: each Django start is a second of CPU.)
        setup = run(
            "manage",
            "shell",
            "-c",
            "from django.core.management import call_command as c; "
            f"c('devchain_setup', rpc_url={anvil_url!r}); "
            "from wallets.models import Network as N; "
            "N.objects.filter(slug='anvil').update(is_dev=False)",
        )
        assert setup.returncode == 0, setup.stdout + setup.stderr
        for role in ("web", "worker", "beat"):
            processes.append(
                subprocess.Popen(
                    [CONTAINER, role],
                    cwd=REPO,
                    env=env,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            )
        try:
            yield f"http://127.0.0.1:{port}", run, processes, tmp_path
        finally:
            for process in processes:
                if process.poll() is None:
                    os.killpg(process.pid, signal.SIGTERM)
            # Shutting down is not what this test is about: a worker's warm shutdown waits for
            # its running scan round (up to some 10 s here), so whatever still runs after 3 s
            # is killed.
            for process in processes:
                try:
                    process.wait(timeout=3)
                except subprocess.TimeoutExpired:
                    os.killpg(process.pid, signal.SIGKILL)
                    process.wait()
            log.close()


def test_web_worker_and_beat_come_up_ready_and_doctor_is_clean(deployment):
    base, run, processes, tmp_path = deployment
    deadline, body = time.monotonic() + 180, ""
    while time.monotonic() < deadline:
        for process in processes:
            assert process.poll() is None, (tmp_path / "processes.log").read_text()[-3000:]
        try:
            status, body = get(f"{base}/readyz")
            if status == 200:
                break
        except OSError:
            pass
        time.sleep(0.25)
    else:
        pytest.fail(f"/readyz never turned green: {body}")
    checks = json.loads(body)["checks"]
    assert checks["network:anvil"]["ok"] is True
    assert set(checks) == {"database", "cache", "broker", "network:anvil"}

    doctor = run("doctor", "--head-wait", "5", timeout=180)
    assert doctor.returncode == 0, doctor.stdout + doctor.stderr
    assert "0 error(s)" in doctor.stdout
    assert re.search(r"ok +workers: 1 answering", doctor.stdout), doctor.stdout
    assert "ok      network anvil: new blocks arrive" in doctor.stdout

    # Logs are JSON lines when LOG_FORMAT=json.
    lines = (tmp_path / "processes.log").read_text().splitlines()
    records = [json.loads(line) for line in lines if line.startswith('{"time"')]
    assert records and all({"time", "level", "logger", "message"} <= set(r) for r in records)


def test_unknown_role_is_a_usage_error():
    result = subprocess.run([CONTAINER, "serve"], capture_output=True, text=True)
    assert result.returncode == 2
    assert "usage: bin/container web|worker|beat|migrate|doctor|manage" in result.stderr


def documented_variables() -> set[str]:
    table = [line for line in README.splitlines() if line.startswith("| `")]
    names = set()
    for row in table:
        names.update(re.findall(r"`([A-Z][A-Z0-9_<>*]+)`", row.split("|")[1]))
    return names


def is_documented(name: str, documented: set[str]) -> bool:
    if name in documented:
        return True
    return any(
        ("*" in pattern and name.startswith(pattern.rstrip("*")))
        or ("<SLUG>" in pattern and re.fullmatch(pattern.replace("<SLUG>", "[A-Z0-9_]+"), name))
        for pattern in documented
    )


def test_compose_services_roles_and_health_checks():
    services = COMPOSE["services"]
    assert set(services) == {"migrate", "web", "worker", "beat", "postgres", "redis"}
    roles = {name: services[name]["command"] for name in ("migrate", "web", "worker", "beat")}
    assert roles == {"migrate": ["migrate"], "web": ["web"], "worker": ["worker"], "beat": ["beat"]}
    usage = subprocess.run([CONTAINER], capture_output=True, text=True).stderr
    for role in roles.values():
        assert role[0] in usage  # every role compose uses exists in the entrypoint
    assert "/readyz" in " ".join(services["web"]["healthcheck"]["test"])
    assert services["beat"]["deploy"]["replicas"] == 1
    for name in ("web", "worker", "beat"):
        deps = services[name]["depends_on"]
        assert deps["migrate"]["condition"] == "service_completed_successfully"
        assert deps["postgres"]["condition"] == "service_healthy"
        assert deps["redis"]["condition"] == "service_healthy"
    for name in ("postgres", "redis", "worker"):
        assert services[name]["healthcheck"]["test"]


def test_every_compose_variable_is_in_the_readme_table():
    documented = documented_variables()
    text = (REPO / "compose.yaml").read_text()
    app_services = ("migrate", "web", "worker", "beat")
    names = set()
    for name in app_services:
        names.update(COMPOSE["services"][name]["environment"])
    # Variables compose itself reads from .env for the postgres container are compose-only.
    compose_only = {"POSTGRES_PASSWORD", "POSTGRES_DB", "POSTGRES_USER", "HOSTNAME"}
    names.update(re.findall(r"\$\{([A-Z][A-Z0-9_]*)", text))
    missing = sorted(n for n in names - compose_only if not is_documented(n, documented))
    assert not missing, f"compose.yaml uses variables the README table lacks: {missing}"
    for name in compose_only - {"HOSTNAME", "POSTGRES_DB", "POSTGRES_USER"}:
        assert name in DEPLOY


def test_every_setting_read_from_the_environment_is_in_the_readme_table():
    settings_text = (REPO / "config" / "settings.py").read_text()
    names = set(
        re.findall(
            r'env_(?:str|int|float|bool|list|decimal)\(\s*"([A-Z][A-Z0-9_]*)"', settings_text
        )
    )
    documented = documented_variables()
    missing = sorted(n for n in names if not is_documented(n, documented))
    assert not missing, f"settings read variables the README table lacks: {missing}"


def test_dockerfile_builds_from_the_lock_file_as_a_non_root_user():
    stages = re.findall(r"^FROM\s+\S+\s+AS\s+(\w+)", DOCKERFILE, flags=re.M)
    assert stages == ["build", "runtime"]
    assert "pip install --require-hashes -r requirements.lock" in DOCKERFILE
    assert "stablebill-system-packages run" in DOCKERFILE
    users = re.findall(r"^USER\s+(\S+)", DOCKERFILE, flags=re.M)
    assert users == ["stablebill"]
    assert 'ENTRYPOINT ["bin/container"]' in DOCKERFILE
    copied = re.findall(r"^COPY\s+(?:--from=\w+\s+)?(\S+)", DOCKERFILE, flags=re.M)
    for source in copied:
        if source != "/app" and source != ".":
            assert (REPO / source).exists(), source
    ignored = (REPO / ".dockerignore").read_text().split()
    assert {".venv", "node_modules", "var", ".git", ".env"} <= set(ignored)
