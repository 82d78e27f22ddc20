"""A fault-injecting JSON-RPC proxy in front of a real node (anvil), for tests.

It misbehaves the way hosted RPC backends do, each fault with its own probability, from a
seeded random source so a failing run can be repeated:

- lag: the answer comes from a backend 1-2 blocks behind (eth_blockNumber reports less,
  eth_getBlockByNumber above that answers null, as a load balancer's stale backend does);
- drop: the connection closes without an answer;
- delay: the answer comes after `delay_seconds` (past the client's timeout);
- bad_gateway: HTTP 502 with an HTML page;
- eth_getLogs wider than `max_log_range` blocks is refused with a provider's message;
- methods in `refuse_methods` answer "method not found" (tracing on most hosted nodes).

Batches (JSON arrays) are forwarded as batches; lag applies to each request in them.

    with FaultProxy(anvil_url, lag=0.2, drop=0.05, seed=1) as proxy:
        Chain(proxy.url, timeout=1) ...
"""

from __future__ import annotations

import contextlib
import json
import random
import threading
import time
import urllib.request
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from tests.local_http import serve_in_background


class FaultProxy:
    def __init__(
        self,
        upstream: str,
        *,
        lag: float = 0.0,
        drop: float = 0.0,
        delay: float = 0.0,
        bad_gateway: float = 0.0,
        delay_seconds: float = 3.0,
        max_log_range: int | None = None,
        refuse_methods: frozenset[str] = frozenset(),
        seed: int = 0,
    ) -> None:
        self.upstream = upstream
        self.rates = {"lag": lag, "drop": drop, "delay": delay, "bad_gateway": bad_gateway}
        self.delay_seconds = delay_seconds
        self.max_log_range = max_log_range
        self.refuse_methods = refuse_methods
        self.posts = 0  # HTTP requests (a batch is one)
        self.random = random.Random(seed)
        self.lock = threading.Lock()
        self.faults: Counter[str] = Counter()
        self.requests: Counter[str] = Counter()
        self.enabled = True
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                proxy._handle(self, body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = serve_in_background(self.server)

    def __enter__(self) -> FaultProxy:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    # ---------------------------------------------------------------------------------------

    def _roll(self, fault: str) -> bool:
        if not self.enabled:
            return False
        with self.lock:
            hit = self.random.random() < self.rates[fault]
            if hit:
                self.faults[fault] += 1
            return hit

    def _upstream(self, payload: Any) -> Any:
        request = urllib.request.Request(
            self.upstream,
            data=json.dumps(payload).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.load(response)

    def _handle(self, handler: BaseHTTPRequestHandler, body: bytes) -> None:
        payload = json.loads(body)
        items = payload if isinstance(payload, list) else [payload]
        with self.lock:
            self.posts += 1
        for item in items:
            self.requests[item.get("method", "?")] += 1
        if self._roll("drop"):
            handler.close_connection = True
            with contextlib.suppress(OSError):
                handler.connection.shutdown(2)
            return
        if self._roll("bad_gateway"):
            return self._send(
                handler, 502, b"<html><body>502 Bad Gateway</body></html>", "text/html"
            )
        if self._roll("delay"):
            time.sleep(self.delay_seconds)
        lag = 0
        if self._roll("lag"):
            with self.lock:
                lag = self.random.choice((1, 2))
        answers = [self._answer(item, lag) for item in items]
        result = answers if isinstance(payload, list) else answers[0]
        self._send(handler, 200, json.dumps(result).encode(), "application/json")

    def _answer(self, item: dict[str, Any], lag: int) -> Any:
        method = item.get("method")
        params = item.get("params") or []
        if method in self.refuse_methods:
            return {
                "jsonrpc": "2.0",
                "id": item.get("id"),
                "error": {"code": -32601, "message": f"the method {method} does not exist"},
            }
        if method == "eth_getLogs" and self.max_log_range is not None:
            query = params[0]
            width = int(query["toBlock"], 16) - int(query["fromBlock"], 16) + 1
            if width > self.max_log_range:
                self.faults["range_refused"] += 1
                return {
                    "jsonrpc": "2.0",
                    "id": item.get("id"),
                    "error": {"code": -32005, "message": "query returned more than 10000 results"},
                }
        if lag and method in ("eth_blockNumber", "eth_getBlockByNumber"):
            head = int(
                self._upstream({"jsonrpc": "2.0", "id": 0, "method": "eth_blockNumber"})["result"],
                16,
            )
            behind = max(0, head - lag)
            if method == "eth_blockNumber":
                return {"jsonrpc": "2.0", "id": item.get("id"), "result": hex(behind)}
            number = params[0] if params else "latest"
            if isinstance(number, str) and number.startswith("0x") and int(number, 16) > behind:
                return {"jsonrpc": "2.0", "id": item.get("id"), "result": None}
        return self._upstream(item)

    @staticmethod
    def _send(handler: BaseHTTPRequestHandler, status: int, data: bytes, kind: str) -> None:
        try:
            handler.send_response(status)
            handler.send_header("Content-Type", kind)
            handler.send_header("Content-Length", str(len(data)))
            handler.end_headers()
            handler.wfile.write(data)
        except OSError:
            pass
