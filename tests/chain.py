"""A local dev chain for tests: anvil from node_modules, on a free port.

    from tests.chain import running_anvil

    def test_something():
        with running_anvil() as rpc_url:          # a block per transaction, mined at once
            ...
        with running_anvil(block_time=0.5) as rpc_url:   # interval mining, its own process
            ...

or as a fixture:

    @pytest.fixture(scope="module")
    def rpc_url():
        with running_anvil() as url:
            yield url

Every `with running_anvil()` starts at genesis: block 0, anvil's default dev accounts funded,
nothing deployed, a block mined per transaction; what the block does to the chain is gone when
it ends. Without block_time the chain is one anvil per test process (per xdist worker), started
on first use and lent to one block at a time: on entry it stands at an evm_snapshot taken at
genesis, on exit it goes back there (evm_revert) and its mining mode is reset, which costs
milliseconds where starting anvil costs about half a second. Its RPC URL is the same for every
block in a process. A block that needs a process of its own (to stop or kill the node, to pass
it to a subprocess that outlives the block, ...) asks for `running_anvil(fresh=True)`; a block
opened while the shared one is lent (nested, or from another thread) gets a fresh one too.
What a revert does not undo, and so a test must not change on the shared chain: the clock
(evm_increaseTime, anvil_setTime, evm_setNextBlockTimestamp), the accounts' impersonation, the
gas and base-fee settings.

anvil comes from the npm package pinned in package.json (`make node_modules`). When it is
missing the test is skipped, except in CI (CI set), where that is a failure.
"""

from __future__ import annotations

import atexit
import json
import os
import signal
import socket
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
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
def _launched(block_time: float | None, log: IO[bytes]) -> Iterator[tuple[str, subprocess.Popen]]:
    """Start anvil on a free port and wait until it answers; stop it on exit."""
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
            yield rpc_url, process
            return
        finally:
            _stop(process)
    log.seek(0)
    output = log.read().decode(errors="replace")[-2000:]
    raise RuntimeError(f"anvil failed to start three times; its last output:\n{output}")


def _rpc(rpc_url: str, method: str, *params: object) -> object:
    body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": method, "params": list(params)})
    request = urllib.request.Request(
        rpc_url, data=body.encode(), headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        answer = json.load(response)
    if "error" in answer:
        raise RuntimeError(f"anvil {method}: {answer['error']}")
    return answer["result"]


class _SharedAnvil:
    """The one anvil of this process that `running_anvil()` lends out, always at genesis."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.lent = False
        self._stack: ExitStack | None = None
        self._process: subprocess.Popen[bytes] | None = None
        self.rpc_url = ""
        self._snapshot = ""

    def borrow(self) -> bool:
        with self.lock:
            if self.lent:
                return False
            self.lent = True
            return True

    def open(self) -> str:
        if self._process is None or self._process.poll() is not None:
            self.close()
            stack = ExitStack()
            try:
                # Its output, for the error when it will not start; closed with the process.
                log = stack.enter_context(tempfile.TemporaryFile())  # noqa: SIM115
                self.rpc_url, self._process = stack.enter_context(_launched(None, log))
                self._snapshot = str(_rpc(self.rpc_url, "evm_snapshot"))
            except BaseException:
                stack.close()
                raise
            self._stack = stack
        return self.rpc_url

    def give_back(self) -> None:
        """Back to genesis for the next block; a chain that will not go back is stopped, and
        the next block starts a new one."""
        try:
            if self._process is not None and self._process.poll() is None:
                # evm_revert drops the snapshot it went back to: take the next one at once.
                if _rpc(self.rpc_url, "evm_revert", self._snapshot) is not True:
                    raise RuntimeError("evm_revert refused the genesis snapshot")
                # Mining mode, timestamp interval and the pool are not in a snapshot.
                _rpc(self.rpc_url, "evm_setIntervalMining", 0)
                _rpc(self.rpc_url, "evm_setAutomine", True)
                _rpc(self.rpc_url, "anvil_removeBlockTimestampInterval")
                _rpc(self.rpc_url, "anvil_dropAllTransactions")
                if _rpc(self.rpc_url, "eth_blockNumber") != "0x0":
                    raise RuntimeError("anvil is not back at genesis")
                self._snapshot = str(_rpc(self.rpc_url, "evm_snapshot"))
        except (OSError, RuntimeError, ValueError):
            self.close()
        finally:
            with self.lock:
                self.lent = False

    def close(self) -> None:
        stack, self._stack, self._process = self._stack, None, None
        if stack is not None:
            stack.close()


_shared = _SharedAnvil()
atexit.register(_shared.close)


@contextmanager
def running_anvil(block_time: float | None = None, *, fresh: bool = False) -> Iterator[str]:
    """An anvil at genesis (chain id 31337, in-memory state, anvil's default dev accounts) on
    127.0.0.1; yields its RPC URL. See the module docstring for the shared one.

    block_time: seconds between blocks (anvil --block-time, fractions allowed), in an anvil of
    its own; None mines a block for each transaction as it arrives.
    fresh: an anvil process of its own, started for this block and killed at its end.
    """
    require_node_modules(ANVIL_BIN)
    if block_time is None and not fresh and _shared.borrow():
        try:
            yield _shared.open()
        finally:
            _shared.give_back()
        return
    with tempfile.TemporaryFile() as log, _launched(block_time, log) as (rpc_url, _process):
        yield rpc_url
