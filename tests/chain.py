"""A throwaway local dev chain for tests: anvil from node_modules, on a free port.

    from tests.chain import running_anvil

    def test_something():
        with running_anvil() as rpc_url:          # a block per transaction, mined at once
            ...
        with running_anvil(block_time=0.5) as rpc_url:   # interval mining
            ...

or as a fixture:

    @pytest.fixture(scope="module")
    def rpc_url():
        with running_anvil() as url:
            yield url

anvil comes from the npm package pinned in package.json (`make node_modules`). When it is
missing the test is skipped, except in CI (CI set), where that is a failure.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
NODE_MODULES = REPO_ROOT / "node_modules"
ANVIL_BIN = NODE_MODULES / ".bin" / "anvil"
CHAIN_ID = 31337
STARTUP_TIMEOUT = 30.0  # seconds


def require_node_modules(*needed: Path) -> None:
    """Skip the calling test when the npm dev tools are not installed; fail in CI instead."""
    missing = [p for p in needed if not p.exists()]
    if not missing:
        return
    names = ", ".join(str(p.relative_to(REPO_ROOT)) for p in missing)
    if os.environ.get("CI"):
        pytest.fail(
            f"CI must have the npm dev tools installed ({names} is missing): make node_modules"
        )
    pytest.skip(f"{names} is missing: run `make node_modules` (needs npm)")


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _chain_id(rpc_url: str) -> int | None:
    body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "eth_chainId", "params": []})
    request = urllib.request.Request(
        rpc_url, data=body.encode(), headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=1) as response:
            return int(json.load(response)["result"], 16)
    except (OSError, ValueError, KeyError):
        return None


def _stop(process: subprocess.Popen[bytes]) -> None:
    """Stop anvil and the node wrapper in front of it: they share a process group."""
    if process.poll() is not None:
        return
    try:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=5)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    except ProcessLookupError:
        pass


def _start(port: int, block_time: float | None, log: IO[bytes]) -> subprocess.Popen[bytes]:
    args = [str(ANVIL_BIN), "--host", "127.0.0.1", "--port", str(port)]
    args += ["--chain-id", str(CHAIN_ID)]
    if block_time is not None:
        args += ["--block-time", str(block_time)]
    return subprocess.Popen(
        args,
        cwd=REPO_ROOT,
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # its own process group, so _stop reaches the real binary
    )


@contextmanager
def running_anvil(block_time: float | None = None) -> Iterator[str]:
    """Start anvil (chain id 31337, in-memory state, anvil's default dev accounts) on a free
    127.0.0.1 port, wait until it answers eth_chainId, yield its RPC URL, kill it on exit.

    block_time: seconds between blocks (anvil --block-time, fractions allowed); None mines a
    block for each transaction as it arrives.
    """
    require_node_modules(ANVIL_BIN)
    with tempfile.TemporaryFile() as log:
        for _attempt in range(3):  # the free port can be taken between probing and binding
            port = _free_port()
            rpc_url = f"http://127.0.0.1:{port}"
            process = _start(port, block_time, log)
            try:
                deadline = time.monotonic() + STARTUP_TIMEOUT
                while process.poll() is None and time.monotonic() < deadline:
                    if _chain_id(rpc_url) == CHAIN_ID:
                        break
                    time.sleep(0.05)
                else:
                    if process.poll() is None:
                        raise RuntimeError(
                            f"anvil did not answer at {rpc_url} in {STARTUP_TIMEOUT:.0f} s"
                        )
                    continue  # it exited: most likely the port was taken; try another
                yield rpc_url
                return
            finally:
                _stop(process)
        log.seek(0)
        output = log.read().decode(errors="replace")[-2000:]
        raise RuntimeError(f"anvil failed to start three times; its last output:\n{output}")
