"""/healthz and /readyz against real parts: PostgreSQL or SQLite, the cache, the broker, anvil.

Each dependency is taken down for real (a closed port, a node of another chain, a scanner left
behind) and /readyz must answer 503 with the reason, never a 500.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.test import override_settings

from config.celery import app as celery_app
from tests.evm import seed_networks
from tests.ops.conftest import closed_port, rpc
from wallets.models import Network
from wallets.scanner import cursor_reset

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def anvil_network(db, anvil_url):
    """Only the dev network is active, pointed at a real anvil and scanned up to its head."""
    seed_networks()
    Network.objects.update(enabled=False)
    network = Network.objects.get(slug="anvil")
    network.rpc_url, network.enabled = anvil_url, True
    network.save()
    head = int(rpc(anvil_url, "eth_blockNumber"), 16)
    cursor_reset(network=network, next_block=head + 1)
    return network


def readyz(client):
    response = client.get("/readyz")
    assert response["Content-Type"] == "application/json"
    return response.status_code, json.loads(response.content)


def test_healthz_answers_without_touching_anything(client):
    # No database fixture: any query would raise here.
    response = client.get("/healthz")
    assert response.status_code == 200
    assert json.loads(response.content) == {"status": "ok"}


def test_readyz_green_with_every_part_up(client, anvil_network):
    status, body = readyz(client)
    assert status == 200, body
    assert body["status"] == "ok"
    assert set(body["checks"]) == {"database", "cache", "broker", "network:anvil"}
    assert body["checks"]["network:anvil"]["lag_blocks"] == 0


@override_settings(ALLOWED_HOSTS=["billing.example.com"], SECURE_SSL_REDIRECT=True)
def test_health_answers_a_local_probe_before_host_checks_and_tls_redirect(client, anvil_network):
    """A container health check calls http://localhost:8000/readyz in production."""
    assert client.get("/readyz", HTTP_HOST="localhost:8000").status_code == 200
    assert client.get("/healthz", HTTP_HOST="localhost:8000").status_code == 200
    # Everything else still gets the production rules.
    assert client.get("/login/", HTTP_HOST="localhost:8000").status_code == 400


def test_node_down_is_red_with_the_reason(client, anvil_network):
    anvil_network.rpc_url = f"http://127.0.0.1:{closed_port()}/secret-api-key"
    anvil_network.save()
    status, body = readyz(client)
    assert status == 503
    check = body["checks"]["network:anvil"]
    assert check["ok"] is False
    assert check["error"].startswith("node does not answer")
    assert "secret-api-key" not in json.dumps(body)  # provider URLs carry keys
    assert body["checks"]["database"]["ok"] is True


def test_wrong_chain_id_is_red(client, anvil_network):
    other = Network.objects.exclude(pk=anvil_network.pk).first()
    Network.objects.filter(pk=anvil_network.pk).update(chain_id=999_999_001)
    status, body = readyz(client)
    assert status == 503
    assert body["checks"]["network:anvil"]["error"] == "node is chain 31337, expected 999999001"
    assert other is not None


def test_scanner_lag_over_the_threshold_is_red(client, anvil_network, anvil_url, settings):
    settings.READYZ_MAX_SCANNER_LAG_BLOCKS = 20
    rpc(anvil_url, "anvil_mine", hex(25))
    status, body = readyz(client)
    assert status == 503
    check = body["checks"]["network:anvil"]
    assert check["lag_blocks"] == 25
    assert "25 blocks behind" in check["error"]
    assert "READYZ_MAX_SCANNER_LAG_BLOCKS=20" in check["error"]
    settings.READYZ_MAX_SCANNER_LAG_BLOCKS = 25
    assert readyz(client)[0] == 200


def test_network_never_scanned_is_red(client, anvil_network):
    anvil_network.cursor.delete()
    status, body = readyz(client)
    assert status == 503
    assert "not scanned yet" in body["checks"]["network:anvil"]["error"]


def test_cache_down_is_red(client, anvil_network):
    dead = f"redis://127.0.0.1:{closed_port()}/0"
    caches = {
        "default": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": dead}
    }
    with override_settings(CACHES=caches):
        status, body = readyz(client)
    assert status == 503
    assert body["checks"]["cache"]["ok"] is False
    assert "ConnectionError" in body["checks"]["cache"]["error"]
    assert body["checks"]["network:anvil"]["ok"] is True


def test_broker_down_is_red(client, anvil_network, monkeypatch):
    dead = f"redis://127.0.0.1:{closed_port()}/1"
    # Celery derives the write URL from the broker URL; both must point at nothing. The write
    # URL first, so what monkeypatch restores is the real one, not one derived from `dead`.
    monkeypatch.setattr(celery_app.conf, "broker_write_url", dead)
    monkeypatch.setattr(celery_app.conf, "broker_url", dead)
    status, body = readyz(client)
    assert status == 503
    assert body["checks"]["broker"]["ok"] is False
    assert body["checks"]["broker"]["error"]
    assert body["checks"]["database"]["ok"] is True


def test_database_down_is_red_not_a_crash(tmp_path):
    """A whole process whose DATABASE_URL points at nothing: /readyz says so, with a 503."""
    script = (
        "import django, json; django.setup()\n"
        "from django.test import Client\n"
        "r = Client().get('/readyz')\n"
        "print(json.dumps({'status': r.status_code, 'body': json.loads(r.content)}))\n"
    )
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "config.settings",
        "DEBUG": "1",
        "DATABASE_URL": f"postgres://postgres@127.0.0.1:{closed_port()}/nothing",
        "STABLEBILL_VAR_DIR": str(tmp_path),
    }
    env.pop("CELERY_BROKER_URL", None)
    env.pop("REDIS_URL", None)
    result = subprocess.run(
        [sys.executable, "-c", script],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    answer = json.loads(result.stdout.strip().splitlines()[-1])
    assert answer["status"] == 503
    checks = answer["body"]["checks"]
    assert checks["database"]["ok"] is False
    assert "OperationalError" in checks["database"]["error"]
    assert checks["networks"] == {"ok": False, "error": "needs the database"}
    assert checks["cache"]["ok"] is True
