"""`manage.py doctor`, one misconfiguration at a time, against real parts (anvil, the broker).

Every run here has no Celery worker (tests run tasks inline), so the worker check is always an
error; each test looks for its own finding. tests/ops/test_container.py runs doctor against a
deployment with a live worker, where it exits 0.
"""

import os
import subprocess
import sys
from io import StringIO
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command

from config.celery import app as celery_app
from tests.chain import running_anvil
from tests.evm import seed_networks
from tests.ops.conftest import closed_port, rpc
from wallets.models import Network
from wallets.scanner import cursor_reset

REPO = Path(__file__).resolve().parents[2]
GOOD_KEY = "k" * 20 + "0123456789abcdefghijklmnopqrstuvwxyz"
POSTMARK = "anymail.backends.postmark.EmailBackend"


@pytest.fixture
def production(settings):
    """A sane production configuration; each test breaks one thing."""
    settings.DEBUG = False
    settings.SECRET_KEY = GOOD_KEY
    settings.ALLOWED_HOSTS = ["billing.example.com"]
    settings.SITE_URL = "https://billing.example.com"
    settings.SESSION_COOKIE_SECURE = True
    settings.CALLBACKS_ALLOW_PRIVATE = False
    settings.METRICS_TOKEN = "m" * 32
    settings.MAILERS = {"default": {"BACKEND": POSTMARK}}
    settings.ANYMAIL = {"POSTMARK_SERVER_TOKEN": "server-token"}
    settings.DEFAULT_FROM_EMAIL = "Acme billing <billing@acme.example>"
    settings.READYZ_TIMEOUT_SECONDS = 1
    return settings


@pytest.fixture
def anvil_network(db, anvil_url):
    """Only the dev network is active: a real anvil with a deployed token, scanned to its head."""
    seed_networks()
    Network.objects.update(enabled=False)
    network = Network.objects.get(slug="anvil")
    network.rpc_url, network.enabled = anvil_url, True
    network.save()
    # Any contract will do for "there is code at the address": deploy one demo token.
    from contracts.deploy import deploy_demo_tokens

    tokens = deploy_demo_tokens(anvil_url)
    network.assets.filter(symbol="USDC").update(contract_address=tokens["USDC"].lower())
    network.assets.filter(symbol="USDT").update(contract_address=tokens["USDT"].lower())
    cursor_reset(network=network, next_block=int(rpc(anvil_url, "eth_blockNumber"), 16) + 1)
    return network


# No worker answers in these tests: doctor waits out the whole worker wait each time.
NO_WORKER_WAIT = ("--worker-wait", "0.2")


def doctor(*args):
    out = StringIO()
    try:
        call_command("doctor", "--head-wait", "0", *NO_WORKER_WAIT, *args, stdout=out)
        code = 0
    except CommandError as error:
        assert error.returncode == 1
        code = 1
    return code, out.getvalue()


def findings(output: str, level: str) -> list[str]:
    return [line.split(None, 1)[1] for line in output.splitlines() if line.startswith(level)]


def test_a_sane_configuration_has_only_the_missing_worker(production, anvil_network):
    code, output = doctor()
    assert code == 1
    assert findings(output, "ERROR") == [
        "workers: no Celery worker answers: payments are not watched, emails and callbacks wait"
    ], output
    assert findings(output, "WARNING") == []
    assert "ok      network anvil: node answers, chain 31337" in output
    assert "ok      rates: ETH, USDC, USDT priced in USD, EUR, GBP, CHF, USDT, USDC, ETH" in output
    assert "ok      broker: " in output


@pytest.mark.parametrize(
    ("key", "expected"),
    [("short", "SECRET_KEY: too short"), ("insecure-key-for-dev-and-tests", "SECRET_KEY: too")],
)
def test_weak_secret_key(production, anvil_network, key, expected):
    production.SECRET_KEY = key
    code, output = doctor()
    assert code == 1
    assert any(line.startswith(expected) for line in findings(output, "ERROR")), output
    assert "fix: set SECRET_KEY to 50+ random characters" in output


@pytest.mark.parametrize(
    ("site_url", "expected"),
    [
        ("billing.example.com", "is not an absolute http(s) URL"),
        ("https://billing.example.com/app/", "has a path, query or fragment"),
        ("http://billing.example.com", "is plain HTTP"),
        ("https://localhost", "points at this machine"),
    ],
)
def test_site_url_forms(production, anvil_network, site_url, expected):
    production.SITE_URL = site_url
    production.ALLOWED_HOSTS = ["billing.example.com", "localhost"]
    code, output = doctor()
    assert code == 1
    assert any(
        line.startswith("SITE_URL:") and expected in line for line in findings(output, "ERROR")
    ), output


def test_site_url_host_not_allowed(production, anvil_network):
    production.ALLOWED_HOSTS = ["other.example.com"]
    _, output = doctor()
    assert (
        "ALLOWED_HOSTS: SITE_URL's host billing.example.com is not allowed: every page there"
        " would answer 400" in findings(output, "ERROR")
    )
    assert "fix: add billing.example.com to ALLOWED_HOSTS" in output


def test_email_provider_without_its_key(production, anvil_network):
    production.ANYMAIL = {}
    _, output = doctor()
    (line,) = [f for f in findings(output, "ERROR") if f.startswith("email:")]
    assert POSTMARK in line and "server_token" in line
    assert "fix: set the provider's ANYMAIL_* keys" in output


def test_file_email_in_production_and_a_localhost_sender(production, anvil_network, tmp_path):
    production.MAILERS = {
        "default": {
            "BACKEND": "django.core.mail.backends.filebased.EmailBackend",
            "OPTIONS": {"file_path": str(tmp_path)},
        }
    }
    production.DEFAULT_FROM_EMAIL = "Stablebill <billing@localhost>"
    _, output = doctor()
    warnings = findings(output, "WARNING")
    assert any(w.startswith("email:") and "keeps emails on this machine" in w for w in warnings)
    assert any(w.startswith("DEFAULT_FROM_EMAIL:") for w in warnings)


def test_node_down(production, anvil_network):
    Network.objects.filter(pk=anvil_network.pk).update(rpc_url=f"http://127.0.0.1:{closed_port()}")
    _, output = doctor()
    assert "network anvil: the node does not answer" in findings(output, "ERROR")
    assert "fix: check CHAIN_ANVIL_RPC_URL and that the node is reachable from here" in output


def test_node_of_another_chain(production, anvil_network):
    Network.objects.filter(pk=anvil_network.pk).update(chain_id=8453_0001)
    _, output = doctor()
    (line,) = [f for f in findings(output, "ERROR") if "the node is chain" in f]
    assert line.startswith("network anvil: the node is chain 31337, not ")
    assert line.endswith("'s 84530001")


def test_few_confirmations_on_a_real_network(production, anvil_network):
    Network.objects.filter(pk=anvil_network.pk).update(confirmations=1, is_dev=False)
    _, output = doctor()
    assert any(
        "1 confirmation(s): a small reorg can undo a payment" in w
        for w in findings(output, "WARNING")
    ), output


def test_token_without_a_contract(production, anvil_network):
    nowhere = "0x" + "ab" * 20
    anvil_network.assets.filter(symbol="USDT").update(contract_address=nowhere)
    anvil_network.assets.filter(symbol="USDC").update(contract_address="")
    _, output = doctor()
    errors = findings(output, "ERROR")
    assert f"network anvil: no contract at USDT's address {nowhere}" in errors
    assert "network anvil: USDC is enabled without a contract address" in errors


def test_head_not_moving_on_a_real_network(production, anvil_network):
    Network.objects.filter(pk=anvil_network.pk).update(is_dev=False)
    out = StringIO()
    with pytest.raises(CommandError):
        call_command("doctor", "--head-wait", "1.5", *NO_WORKER_WAIT, stdout=out)
    assert any("no new block in 1.5 s" in w for w in findings(out.getvalue(), "WARNING"))


def test_head_moving(production, db):
    seed_networks()
    Network.objects.update(enabled=False)
    with running_anvil(block_time=0.5) as url:
        Network.objects.filter(slug="anvil").update(rpc_url=url, enabled=True, is_dev=False)
        out = StringIO()
        with pytest.raises(CommandError):
            call_command("doctor", "--head-wait", "5", *NO_WORKER_WAIT, stdout=out)
    assert "ok      network anvil: new blocks arrive" in out.getvalue()


def test_scanner_behind_and_stale(production, anvil_network, anvil_url):
    production.READYZ_MAX_SCANNER_LAG_BLOCKS = 5
    rpc(anvil_url, "anvil_mine", hex(10))
    from wallets.models import ChainCursor

    ChainCursor.objects.filter(network=anvil_network).update(updated_at="2020-01-01T00:00:00+00:00")
    _, output = doctor()
    warnings = findings(output, "WARNING")
    assert "network anvil: the scanner is 10 blocks behind the head" in warnings
    assert "network anvil: the scanner last ran 2020-01-01 00:00 UTC" in warnings


def test_missing_rate(production, anvil_network):
    production.STATIC_RATES = {
        pair: rate for pair, rate in production.STATIC_RATES.items() if pair != ("CHF", "USD")
    }
    _, output = doctor()
    # A code nothing can price is not offered (merchants.money.price_gap): the doctor says so,
    # and checks the pairs that are offered.
    (line,) = [f for f in findings(output, "WARNING") if f.startswith("rates:")]
    assert "not offered: CHF" in line and "EUR" not in line
    assert [f for f in findings(output, "ERROR") if f.startswith("rates:")] == []


def test_an_offered_pair_the_provider_cannot_price_is_an_error(production, anvil_network):
    production.RATE_PROVIDER = "http"
    production.RATE_HTTP_URL = "http://127.0.0.1:9/price"  # nothing listens there
    production.RATE_STATIC_APPROVED = []
    _, output = doctor()
    (line,) = [f for f in findings(output, "ERROR") if f.startswith("rates:")]
    assert "ETH/USD" in line and "USDC/EUR" in line
    assert "USDC/USD" not in line  # the peg needs no source


def test_dev_chain_outside_debug(production, anvil_network):
    production.CHAIN_DEV_NETWORKS_ALLOWED = False
    _, output = doctor()
    assert (
        "network anvil: a dev chain is enabled but not watched outside DEBUG (its keys are public)"
        in findings(output, "WARNING")
    )
    assert any(f.startswith("networks: no network is enabled") for f in findings(output, "ERROR"))


def test_no_network_with_a_node(production, db):
    seed_networks()
    Network.objects.update(rpc_url="")
    _, output = doctor()
    assert any(f.startswith("networks: no network is enabled") for f in findings(output, "ERROR"))
    assert any(
        f.startswith("network ethereum: enabled but no node") for f in findings(output, "WARNING")
    )


def test_broker_down(production, anvil_network, monkeypatch):
    dead = f"redis://127.0.0.1:{closed_port()}/1"
    # Celery derives the write URL from the broker URL; both must point at nothing. The write
    # URL first, so what monkeypatch restores is the real one, not one derived from `dead`.
    monkeypatch.setattr(celery_app.conf, "broker_write_url", dead)
    monkeypatch.setattr(celery_app.conf, "broker_url", dead)
    _, output = doctor()
    assert any(
        f.startswith("broker: ") and "does not answer" in f for f in findings(output, "ERROR")
    ), output


def test_database_down_in_a_real_process(tmp_path):
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "config.settings",
        "DEBUG": "1",
        "DATABASE_URL": f"postgres://postgres@127.0.0.1:{closed_port()}/nothing",
        "STABLEBILL_VAR_DIR": str(tmp_path),
        "READYZ_TIMEOUT_SECONDS": "1",
    }
    env.pop("CELERY_BROKER_URL", None)
    result = subprocess.run(
        [sys.executable, "manage.py", "doctor", "--head-wait", "0", *NO_WORKER_WAIT],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 1
    assert "ERROR   database: cannot connect" in result.stdout
    assert "fix: check DATABASE_URL" in result.stdout
    assert "network" not in result.stdout  # skipped: they need the database


def test_check_deploy_is_clean_with_production_settings(tmp_path):
    """`manage.py check --deploy` in a process configured as docs/deploy.md says."""
    # The browser tests set DJANGO_ALLOW_ASYNC_UNSAFE in this process; no deployment does.
    dropped = ("DEBUG", "CI", "DJANGO_ALLOW_ASYNC_UNSAFE")
    env = {k: v for k, v in os.environ.items() if k not in dropped}
    env.update(
        DJANGO_SETTINGS_MODULE="config.settings",
        SECRET_KEY=GOOD_KEY,
        ALLOWED_HOSTS="billing.example.com",
        SITE_URL="https://billing.example.com",
        CSRF_TRUSTED_ORIGINS="https://billing.example.com",
        STABLEBILL_VAR_DIR=str(tmp_path),
        BEHIND_TLS_PROXY="1",
        SECURE_SSL_REDIRECT="1",
        SECURE_HSTS_SECONDS="31536000",
        SECURE_HSTS_INCLUDE_SUBDOMAINS="1",
        SECURE_HSTS_PRELOAD="1",
        MAILER_BACKEND=POSTMARK,
        ANYMAIL_POSTMARK_SERVER_TOKEN="server-token",
    )
    result = subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "System check identified no issues (0 silenced)." in result.stdout


@pytest.mark.parametrize("seconds", ["0", "-1", "601", "nan"])
def test_a_worker_wait_out_of_bounds_is_refused_before_any_check(production, seconds):
    with pytest.raises(CommandError, match="--worker-wait takes seconds above 0"):
        call_command("doctor", "--worker-wait", seconds, stdout=StringIO())
