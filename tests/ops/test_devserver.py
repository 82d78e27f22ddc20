"""`make run`'s process tree (bin/devserver): Ctrl-C stops every part, a rerun reuses state,
a taken port is named.

The server runs in a session of its own on free ports with its own var/ folder, and is
stopped the way a terminal does it: SIGINT to its foreground process group.
"""

import json
import os
import signal
import socket
import sqlite3
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

from tests.chain import ANVIL_BIN, require_node_modules

REPO = Path(__file__).resolve().parents[2]
DEVSERVER = REPO / "bin" / "devserver"
STARTUP_SECONDS = 240  # migrations, demo data and contract deployment on a busy machine


def _default_signals() -> None:
    for number in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(number, signal.SIG_DFL)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def descendants(pid: int) -> set[int]:
    """Every process below pid, found through /proc (children in other sessions included)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    found, todo = set(), [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.add(child)
            todo.append(child)
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def rpc(url: str, method: str, *params):
    body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": method, "params": params}).encode()
    request = urllib.request.Request(url, body, {"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=5) as response:
        return json.loads(response.read())["result"]


def demo_rows(var: Path) -> tuple[int, int]:
    with sqlite3.connect(var / "stablebill.sqlite3") as db:
        users = db.execute("SELECT count(*) FROM merchants_user").fetchone()[0]
        invoices = db.execute("SELECT count(*) FROM invoices_invoice").fetchone()[0]
    return users, invoices


class Devserver:
    def __init__(self, var: Path):
        self.var = var
        self.port, self.anvil_port = free_port(), free_port()
        self.proc: subprocess.Popen | None = None
        self.tree: set[int] = set()

    def env(self, **extra):
        env = {
            k: v
            for k, v in os.environ.items()
            if k not in ("DATABASE_URL", "CELERY_BROKER_URL", "REDIS_URL", "CI")
        }
        env.update(
            DEBUG="1",
            PORT=str(self.port),
            ANVIL_PORT=str(self.anvil_port),
            SITE_URL=f"http://127.0.0.1:{self.port}",
            STABLEBILL_VAR_DIR=str(self.var),
            DJANGO_SETTINGS_MODULE="config.settings",
        )
        env.update(extra)
        return env

    def start(self):
        self.log = open(self.var.parent / "devserver.log", "ab")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [str(DEVSERVER)],
            cwd=REPO,
            env=self.env(),
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            # As a terminal's shell starts it: Ctrl-C and TERM at their defaults. This test
            # process may have inherited them ignored, and a signal ignored when bash starts
            # can never be trapped, so the devserver would not see the Ctrl-C at all.
            preexec_fn=_default_signals,
        )
        deadline = time.monotonic() + STARTUP_SECONDS
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, self.output()
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/login/", timeout=2):
                    break
            except OSError:
                time.sleep(0.5)
        else:
            pytest.fail(f"devserver did not answer within {STARTUP_SECONDS} s:\n{self.output()}")
        self.tree = descendants(self.proc.pid)

    def output(self) -> str:
        return (self.var.parent / "devserver.log").read_text(errors="replace")

    def interrupt(self) -> float:
        """Ctrl-C as a terminal sends it; returns the seconds until every process is gone."""
        assert self.proc is not None
        started = time.monotonic()
        os.killpg(self.proc.pid, signal.SIGINT)
        watched = self.tree | {self.proc.pid}
        while time.monotonic() - started < 10:
            self.proc.poll()
            if not any(alive(pid) for pid in watched):
                break
            time.sleep(0.05)
        return time.monotonic() - started

    def kill_leftovers(self):
        for pid in self.tree | ({self.proc.pid} if self.proc else set()):
            if alive(pid):
                os.kill(pid, signal.SIGKILL)
        self.log.close()


@pytest.fixture
def devserver(tmp_path):
    require_node_modules(ANVIL_BIN)
    server = Devserver(tmp_path / "var")
    yield server
    server.kill_leftovers()


def test_ctrl_c_stops_everything_and_a_rerun_reuses_state(devserver):
    devserver.start()
    commands = {
        pid: Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        for pid in devserver.tree
        if alive(pid)
    }
    parts = " | ".join(commands.values())
    for part in (
        "anvil",
        "celery -A config worker",
        "-Q celery,chain,callbacks,email",
        "celery -A config beat",
    ):
        assert part in parts, parts
    assert "runserver" in parts
    anvil_url = f"http://127.0.0.1:{devserver.anvil_port}"
    tokens = json.loads((devserver.var / "demo-chain.json").read_text())
    login = (devserver.var / "demo-login.txt").read_text()
    block_before = int(rpc(anvil_url, "eth_blockNumber"), 16)
    rows = demo_rows(devserver.var)
    assert rows[0] == 1 and rows[1] > 0

    seconds = devserver.interrupt()
    left = sorted(pid for pid in devserver.tree | {devserver.proc.pid} if alive(pid))
    assert not left, f"left behind: {[commands.get(pid, pid) for pid in left]}"
    assert seconds < 5, f"shutdown took {seconds:.1f} s"
    assert devserver.proc.returncode == 130

    devserver.start()
    # The chain came back from its saved state: same tokens, no new deployment, blocks kept.
    assert json.loads((devserver.var / "demo-chain.json").read_text()) == tokens
    assert int(rpc(anvil_url, "eth_blockNumber"), 16) >= block_before
    assert rpc(anvil_url, "eth_getCode", tokens["USDC"], "latest") not in ("0x", "0x0")
    # The same database and demo data: same login, same invoices, one demo user.
    assert (devserver.var / "demo-login.txt").read_text() == login
    assert demo_rows(devserver.var) == rows
    seconds = devserver.interrupt()
    assert not any(alive(pid) for pid in devserver.tree)
    assert seconds < 5


@pytest.mark.parametrize("variable", ["PORT", "ANVIL_PORT"])
def test_a_taken_port_is_named_with_its_variable(tmp_path, variable):
    server = Devserver(tmp_path / "var")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = server.env(**{variable: str(port)})
        result = subprocess.run(
            [str(DEVSERVER)], cwd=REPO, env=env, capture_output=True, text=True, timeout=60
        )
    assert result.returncode == 1
    assert f"Port {port} ({variable}) on 127.0.0.1 is not available" in result.stderr
    assert f"make run {variable}=<port>" in result.stderr
    # Nothing started: the check runs before migrations.
    assert not (tmp_path / "var" / "stablebill.sqlite3").exists()
