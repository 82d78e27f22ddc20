"""The production web server as the image runs it (bin/container web: gunicorn with
config/gunicorn.py) with two workers. Request latency counted by either worker shows in one scrape; health checks answer."""

import subprocess
import time
import urllib.error
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.served import CONTAINER, REPO, free_port, production_env
from tests.template_db import migrated_sqlite

TOKEN = "gunicorn-test-token"


def get(url, **headers):
    request = urllib.request.Request(url, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


@pytest.fixture
def gunicorn(tmp_path):
    port = free_port()
    # Its own SQLite and filesystem broker: never migrate whatever DATABASE_URL names.
    env = production_env(tmp_path, port, secret="gunicorn-test", METRICS_TOKEN=TOKEN)
    # The image's release step. (Its build step, collectstatic, compresses ~25 MB of API-docs
    # bundles: minutes here, so this test asks pages that need no static files.)
    # On a copy of the run's migrated database (tests/template_db.py), so this finds nothing
    # left to apply.
    migrated_sqlite(tmp_path / "var")
    subprocess.run([CONTAINER, "migrate", "-v", "0"], cwd=REPO, env=env, check=True, timeout=300)
    log = open(tmp_path / "gunicorn.log", "wb")  # noqa: SIM115
    process = subprocess.Popen(
        [CONTAINER, "web"],
        cwd=REPO,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        assert process.poll() is None, (tmp_path / "gunicorn.log").read_text()
        try:
            if get(f"{base}/healthz")[0] == 200:
                break
        except OSError:
            time.sleep(0.3)
    yield base, tmp_path
    process.terminate()
    process.wait(timeout=30)
    log.close()


def test_latency_of_every_worker_in_one_scrape(gunicorn):
    base, tmp_path = gunicorn
    for _ in range(40):  # enough requests that both workers serve some
        assert get(f"{base}/api/openapi.json")[0] == 200
    pids = {p.name for p in (tmp_path / "metrics").iterdir()}
    assert len([name for name in pids if name.startswith("histogram_")]) == 2, pids
    status, text = get(f"{base}/metrics", Authorization=f"Bearer {TOKEN}")
    assert status == 200, text
    count = None
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if (
                sample.name == "stablebill_http_request_duration_seconds_count"
                and sample.labels.get("route") == "api/openapi.json"
            ):
                count = sample.value
    assert count == 40
    assert get(f"{base}/metrics")[0] == 401
