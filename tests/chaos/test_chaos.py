"""Chaos: the real watcher against anvil behind a faulty node, its workers SIGKILLed mid-round
over and over; at the end every deposit is credited exactly once and every callback delivered.

Bounded: at least 12 kills on PostgreSQL (8 on SQLite, where one writer at a time makes each
round slower), each at a random moment of its round, within about a minute. Each kill costs
a lease (3 s) of waiting and some 5 s in all, and the test is the suite's longest, so the
count sets the length of `make test`: 12 kills spread over the rounds still land in every
phase of one (the chain id check, fetches, the writes) and between every payment of the
schedule (tests/chaos/scenario.py pays at a quarter, half and three quarters of the kills). The scenario runs in its own process (tests/chaos/
scenario.py) on a database of its own, which its forked workers share.
"""

import json
import os
import subprocess
import sys
import uuid
from decimal import Decimal
from pathlib import Path

import psycopg
import pytest
from django.db import connection

from tests import template_db
from tests.chain import REPO_ROOT, running_anvil

KILLS = {"postgresql": 12, "sqlite": 8}
SECONDS = 240


def _database(tmp_path: Path):
    """A database URL for the scenario's own database, and how to drop it afterwards."""
    # A copy of a migrated database where the run has one (tests/template_db.py): the
    # scenario's `migrate` then has nothing to apply.
    if connection.vendor == "sqlite":
        return f"sqlite:///{template_db.migrated_sqlite(tmp_path / 'db')}", lambda: None
    params = connection.get_connection_params()
    name = f"chaos_{uuid.uuid4().hex[:8]}"
    admin = dict(
        host=params.get("host", "127.0.0.1"),
        port=params.get("port", 5432),
        user=params.get("user", "postgres"),
        dbname="postgres",
        autocommit=True,
    )
    if params.get("password"):
        admin["password"] = params["password"]
    with psycopg.connect(**admin) as db:
        template = template_db.pg_template(db.cursor())
        db.execute(f'CREATE DATABASE "{name}"' + (f' TEMPLATE "{template}"' if template else ""))

    def drop() -> None:
        with psycopg.connect(**admin) as db:
            db.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    user = admin["user"]
    return f"postgres://{user}@{admin['host']}:{admin['port']}/{name}", drop


@pytest.mark.django_db
def test_killed_workers_and_a_faulty_node_lose_and_double_nothing(tmp_path):
    kills = KILLS[connection.vendor]
    url, drop = _database(tmp_path)
    env = {
        **os.environ,
        "DATABASE_URL": url,
        "DEBUG": "1",  # the dev chain is watched under DEBUG only
        "SECRET_KEY": "chaos",
        "STABLEBILL_VAR_DIR": str(tmp_path / "var"),
        "CELERY_BROKER_URL": "memory://",
        # The shortest lease the settings allow for this timeout (more than 2 x 0.4 + 2 s):
        # each kill leaves the network blocked for a lease, so the lease sets the pace.
        "CHAIN_RPC_TIMEOUT_SECONDS": "0.4",
        "CHAIN_ROUND_LEASE_SECONDS": "3",
    }
    (tmp_path / "var").mkdir()
    try:
        with running_anvil() as rpc_url:
            result = subprocess.run(
                [sys.executable, "-m", "tests.chaos.scenario", rpc_url, str(kills), str(SECONDS)],
                cwd=REPO_ROOT,
                env=env,
                capture_output=True,
                text=True,
                timeout=SECONDS + 180,
            )
    finally:
        drop()
    assert result.returncode == 0, result.stderr[-5000:]
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    print(json.dumps({k: v for k, v in summary.items() if k != "transfers"}, indent=1))

    assert summary["kills"] >= kills, summary["kills"]
    assert summary["failed_rounds"] == 0
    for fault in ("lag", "drop", "delay", "bad_gateway", "range_refused"):
        assert summary["faults"].get(fault, 0) > 0, summary["faults"]
    cases = summary["cases"]
    # Every unit that reached a deposit address is recorded and posted once, to the base unit.
    for name, case in cases.items():
        assert case["sent"] == case["on_chain"] == case["recorded"], (name, case)
        assert case["deposit_postings"] == case["confirmed_transfers"], (name, case)
        assert case["live_transfers"] == case["confirmed_transfers"], (name, case)
    eth_sent = sum(int(cases[c]["sent"]) for c in cases if c.startswith("eth"))
    usdc_sent = sum(int(cases[c]["sent"]) for c in cases if c.startswith("usdc"))
    assert Decimal(summary["holdings"]["ETH"]) == Decimal(eth_sent).scaleb(-18)
    assert Decimal(summary["holdings"]["USDC"]) == Decimal(usdc_sent).scaleb(-6)
    # Split payments arrive as several transfers; forwarded ETH is found by tracing.
    assert cases["usdc_split"]["confirmed_transfers"] == 2
    assert cases["eth_split"]["confirmed_transfers"] == 3
    assert int(cases["eth_big"]["sent"]) > 10 * 10**18
    statuses = {name: (case["payment"], case["invoice"]) for name, case in cases.items()}
    assert statuses == {
        "usdc_exact": ("paid", "paid"),
        "usdc_split": ("paid", "paid"),
        "usdc_over": ("overpaid", "unresolved"),
        "eth_big": ("paid", "paid"),
        "eth_forwarded": ("paid", "paid"),
        "eth_split": ("paid", "paid"),
    }
    callbacks = summary["callbacks"]
    # One delivery per event, each received under its own webhook-id exactly once.
    assert callbacks["undelivered"] == 0
    assert callbacks["events_with_deliveries"] == callbacks["deliveries"]
    assert callbacks["missing_ids"] == [] and callbacks["repeated_ids"] == []
    assert callbacks["received"] == callbacks["distinct_ids"] == callbacks["deliveries"]
    assert callbacks["confirmed_events"] == sum(c["confirmed_transfers"] for c in cases.values())
    assert summary["ledger_check"] == "ok", summary["ledger_check"]
