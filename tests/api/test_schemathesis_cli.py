"""Schemathesis from outside, as an integrator would run it: its CLI with `--checks all` against
the app served by gunicorn as the image runs it (production settings: no DEBUG, private
callback targets refused), on a database of its own holding the demo business, with an API
key of that business. The run is bounded (few examples per operation) and seeded, so it is
the same run every time; it passes only when Schemathesis reports no failure at all.

Its phases are the examples, fuzzing and stateful ones. The coverage phase (boundary and
schema-violating values of every input) took 312 of the run's 354 s; it is
tests/api/test_schemathesis.py's, which runs it in-process with every check on every
operation. What only this run shows is the served app answering as documented under
production settings, and the stateful phase's chains of operations through the API's links.
"""

import re
import subprocess
import time
import urllib.error
import urllib.request

import pytest

from tests.served import CONTAINER, REPO, free_port, production_env
from tests.template_db import migrated_sqlite

SCHEMATHESIS = str(REPO / ".venv" / "bin" / "schemathesis")

# The release step (`bin/container migrate`, here in the same process: each Django start is a
# second of CPU), the demo business (seed_demo) and a key of its owner, printed last.
MAKE_KEY = """
from django.core.management import call_command
from merchants.integrations import api_key_create
from merchants.models import Membership
call_command("migrate", interactive=False, verbosity=0)
call_command("seed_demo", stdout=open("/dev/null", "w"))
owner = Membership.objects.select_related("merchant", "user").get(user__email="{email}")
print(api_key_create(merchant=owner.merchant, name="Schemathesis", by=owner.user).plaintext)
"""


def _up(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError):
        return False


@pytest.fixture
def served(tmp_path):
    port = free_port()
    # Its own SQLite and filesystem broker: never whatever DATABASE_URL names.
    env = production_env(
        tmp_path,
        port,
        secret="schemathesis-test",
        SITE_URL=f"http://127.0.0.1:{port}",
        # Fuzzing, not rate limiting: 429 is documented, but would hide everything behind it.
        API_RATE_PER_MINUTE="1000000",
        # No live rate source offline: the operator approves the static table (the demo
        # business prices in EUR), so every currency is offered.
        RATE_STATIC_APPROVED="*",
    )
    # On a copy of the run's migrated database (tests/template_db.py): nothing left to apply.
    migrated_sqlite(tmp_path / "var")
    made = subprocess.run(
        [CONTAINER, "manage", "shell", "-c", MAKE_KEY.format(email="demo@stablebill.localhost")],
        cwd=REPO,
        env=env,
        timeout=300,
        capture_output=True,
        text=True,
    )
    assert made.returncode == 0, made.stdout + made.stderr
    key = made.stdout.strip().splitlines()[-1]
    assert key.startswith("sb_"), made.stdout + made.stderr
    log_path = tmp_path / "gunicorn.log"
    log = open(log_path, "wb")  # noqa: SIM115
    process = subprocess.Popen(
        [CONTAINER, "web"], cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while not _up(f"{base}/healthz"):
        assert process.poll() is None, log_path.read_text()
        assert time.monotonic() < deadline, log_path.read_text()
        time.sleep(0.3)
    yield base, key, tmp_path
    process.terminate()
    process.wait(timeout=30)
    log.close()


def test_schemathesis_cli_with_all_checks_finds_nothing(served):
    base, key, tmp_path = served
    run = subprocess.run(
        [
            SCHEMATHESIS,
            "--config-file",
            str(REPO / "schemathesis.toml"),
            "run",
            f"{base}/api/openapi.json",
            "--checks",
            "all",
            "--header",
            f"Authorization: Bearer {key}",
            "--phases",
            "examples,fuzzing,stateful",
            "--max-examples",
            "15",
            "--seed",
            "16",
            "--generation-deterministic",  # and so no example database either
            "--workers",
            "2",
            "--no-color",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=1200,
    )

    assert run.returncode == 0, run.stdout[-20000:] + run.stderr[-5000:]
    # Every operation the document lists was tried.
    counts = re.search(r"Selected: (\d+)/(\d+)\s+Tested: (\d+)", run.stdout)
    assert counts, run.stdout[-5000:]
    selected, total, tested = map(int, counts.groups())
    assert selected == total == tested > 0, run.stdout[-5000:]
