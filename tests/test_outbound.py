"""merchants/outbound.py: the SSRF guard on callback URLs and the one POST through it,
exercised against real servers on this machine."""

import contextlib
import os
import shutil
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from merchants.outbound import BlockedURL, OutboundResponse, Target, check_url, post
from merchants.outbound import _send as send_to_checked_target
from tests.local_http import serve_in_background

LONG_BODY = ("é" * 10 + "abcdefghij") * 200  # 4,000 characters, multi-byte in UTF-8


@dataclass
class Request:
    path: str
    host: str
    user_agent: str
    content_type: str
    body: bytes


@dataclass
class Receiver:
    """What a local server saw; `connections` counts TCP connections, requests or not."""

    port: int = 0
    connections: int = 0
    requests: list[Request] = field(default_factory=list)
    release: threading.Event = field(default_factory=threading.Event)

    def url(self, path: str = "/hook", host: str = "127.0.0.1") -> str:
        return f"http://{host}:{self.port}{path}"


class _Handler(BaseHTTPRequestHandler):
    server: "_Server"

    def do_POST(self) -> None:
        receiver = self.server.receiver
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        receiver.requests.append(
            Request(
                path=self.path,
                host=self.headers["Host"],
                user_agent=self.headers["User-Agent"],
                content_type=self.headers.get("Content-Type", ""),
                body=body,
            )
        )
        with contextlib.suppress(OSError):  # the client may have given up already
            if self.path == "/redirect":
                self._answer(302, b"", Location=receiver.url("/landing"))
            elif self.path == "/slow":
                receiver.release.wait(5)
                self._answer(200, b"late")
            elif self.path == "/long":
                self._answer(200, LONG_BODY.encode())
            elif self.path == "/endless":
                # Announces a megabyte, sends 70 KiB, then stalls until the test ends.
                self.send_response(200)
                self.send_header("Content-Length", str(1024 * 1024))
                self.end_headers()
                self.wfile.write(b"x" * 70 * 1024)
                self.wfile.flush()
                receiver.release.wait(5)
            else:
                self._answer(200, b"received")

    def _answer(self, status: int, body: bytes, **headers: str) -> None:
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


class _Server(ThreadingHTTPServer):
    daemon_threads = True  # a handler still sleeping must not hold up teardown

    def __init__(self, address: tuple[str, int], receiver: Receiver) -> None:
        self.receiver = receiver
        super().__init__(address, _Handler)

    def process_request(self, request, client_address):  # type: ignore[no-untyped-def]
        self.receiver.connections += 1
        super().process_request(request, client_address)


class _Server6(_Server):
    address_family = socket.AF_INET6


@pytest.fixture
def serve() -> Iterator[Callable[..., Receiver]]:
    """Starts receivers on this machine (any loopback address, optionally TLS)."""
    started: list[tuple[_Server, Receiver]] = []

    def start(host: str = "127.0.0.1", tls: ssl.SSLContext | None = None) -> Receiver:
        receiver = Receiver()
        server = (_Server6 if ":" in host else _Server)((host, 0), receiver)
        if tls is not None:
            server.socket = tls.wrap_socket(server.socket, server_side=True)
        receiver.port = server.server_address[1]
        serve_in_background(server)
        started.append((server, receiver))
        return receiver

    yield start
    for server, receiver in started:
        receiver.release.set()
        server.shutdown()
        server.server_close()


@pytest.fixture
def receiver(serve: Callable[..., Receiver]) -> Receiver:
    return serve()


def _post(url: str, **kwargs: Any) -> OutboundResponse:
    return post(url, body=b'{"event":"test"}', headers={}, **kwargs)


# What check_url refuses ----------------------------------------------------------------------

REFUSED = [
    # Loopback, however it is spelled.
    ("http://127.0.0.1/", "loopback"),
    ("http://127.0.0.1:8000/admin/", "loopback"),
    ("http://localhost/", "loopback"),
    ("http://0x7f000001/", "loopback"),
    ("http://2130706433/", "loopback"),
    ("http://017700000001/", "loopback"),
    ("http://127.1/", "loopback"),
    ("http://0x7f.1/", "loopback"),
    ("http://[::1]/", "loopback"),
    ("http://[::ffff:127.0.0.1]/", "loopback"),
    ("http://[64:ff9b::7f00:1]/", "loopback"),
    ("http://[2002:7f00:1::]/", "loopback"),
    ("http://[::127.0.0.1]/", "loopback"),
    # Private networks.
    ("http://10.0.0.1/", "private"),
    ("http://172.16.5.4/", "private"),
    ("http://192.168.1.1/", "private"),
    ("http://[::ffff:10.0.0.1]/", "private"),
    ("http://[fc00::1]/", "unique local"),
    ("http://[fd12::1]/", "unique local"),
    ("http://[fec0::1]/", "site-local"),
    # The cloud metadata service and friends.
    ("http://169.254.169.254/latest/meta-data/", "link-local"),
    ("http://[fe80::1]/", "link-local"),
    ("http://100.64.0.1/", "carrier-grade NAT"),
    # Addresses that are not hosts at all.
    ("http://0.0.0.0/", "unspecified"),
    ("http://0/", "unspecified"),
    ("http://[::]/", "unspecified"),
    ("http://255.255.255.255/", "broadcast"),
    ("http://240.0.0.1/", "reserved"),
    ("http://224.0.0.1/", "multicast"),
    ("http://[ff02::1]/", "multicast"),
    ("http://198.18.0.1/", "benchmarking"),
    ("http://192.0.2.1/", "documentation"),
    ("http://203.0.113.9/", "documentation"),
    ("http://[2001:db8::1]/", "documentation"),
    # Syntax.
    ("ftp://example.com/", "https:// or http://"),
    ("file:///etc/passwd", "https:// or http://"),
    ("http://user:pass@example.com/", "user name or password"),
    ("http://example.com@127.0.0.1/", "user name or password"),
    ("http:///no-host", "no host"),
    ("http://example.com:0/", "port"),
    ("http://example.com:99999/", "port"),
    ("http://example.com:http/", "port"),
    ("http://exa mple.com/", "host name is not valid"),
    ("http://1.2.3.08/", "not a valid IP address"),
    ("http://[fe80::1%25eth0]/", "zone index"),
    ("https://example.com/" + "a" * 500, "longer than 500 characters"),
]


@pytest.mark.parametrize(("url", "reason"), REFUSED, ids=[url[:60] for url, _ in REFUSED])
def test_refused_url_names_the_reason(url, reason):
    with pytest.raises(BlockedURL, match=reason):
        check_url(url, allow_private=False)


def test_refusal_message_is_a_sentence_for_the_merchant():
    with pytest.raises(BlockedURL) as refused:
        check_url("http://127.0.0.1/", allow_private=False)
    assert str(refused.value) == (
        "127.0.0.1 is a loopback address; callbacks go to public addresses only."
    )
    with pytest.raises(BlockedURL) as odd:
        check_url("http://2130706433/", allow_private=False)
    assert str(odd.value) == (
        "2130706433 means 127.0.0.1, a loopback address; callbacks go to public addresses only."
    )


def test_localhost_is_refused_for_the_address_it_resolves_to():
    with pytest.raises(BlockedURL, match=r"localhost resolves to (127\.0\.0\.1|::1), a loopback"):
        check_url("http://localhost/", allow_private=False)


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1/",
        "http://0x7f000001/",
        "http://2130706433/",
        "http://127.1/",
        "http://[::ffff:127.0.0.1]/",
        "http://localhost/",
        "http://api.localhost/",
        "http://10.1.2.3/x",
    ],
)
def test_forms_refuse_private_literals_and_localhost_without_dns(url):
    with pytest.raises(BlockedURL, match="public addresses only"):
        check_url(url, allow_private=False, resolve=False)


def test_forms_accept_a_name_without_resolving_it():
    assert check_url("https://hooks.no-such-host.invalid/in", resolve=False) is None


def test_unresolvable_host_is_refused_when_resolving():
    with pytest.raises(BlockedURL, match=r"^no-such-host\.invalid could not be resolved\.$"):
        check_url("http://no-such-host.invalid/", allow_private=False)


@pytest.mark.parametrize(
    ("url", "host", "port", "path"),
    [
        ("http://93.184.215.14/hook", "93.184.215.14", 80, "/hook"),
        ("https://93.184.215.14/hook?merchant=7&x=1", "93.184.215.14", 443, "/hook?merchant=7&x=1"),
        ("https://[2606:4700::1111]:8443/", "2606:4700::1111", 8443, "/"),
        ("http://8.8.8.8", "8.8.8.8", 80, "/"),
        ("http://[::ffff:8.8.8.8]/in", "::ffff:808:808", 80, "/in"),
    ],
)
def test_public_address_is_accepted_and_pinned(url, host, port, path):
    target = check_url(url, allow_private=False, resolve=True)
    assert (target.host, target.port, target.path, target.address) == (host, port, path, host)
    assert target.url == url
    assert target.scheme == url.split(":")[0]


def test_spaces_and_non_ascii_in_the_path_are_percent_encoded():
    target = check_url("https://93.184.215.14/café hooks?q=ü&ok=%41", allow_private=False)
    assert target.path == "/caf%C3%A9%20hooks?q=%C3%BC&ok=%41"


def test_private_targets_follow_the_setting_by_default(settings):
    settings.CALLBACKS_ALLOW_PRIVATE = False
    with pytest.raises(BlockedURL):
        check_url("http://10.0.0.1/")
    settings.CALLBACKS_ALLOW_PRIVATE = True
    assert check_url("http://10.0.0.1/").address == "10.0.0.1"
    with pytest.raises(BlockedURL, match="user name or password"):
        check_url("http://user@10.0.0.1/")  # syntax still applies


# What post() does ----------------------------------------------------------------------------


def test_post_delivers_our_body_and_reports_the_answer(receiver):
    response = post(
        receiver.url("/hook?merchant=7"),
        body=b'{"type":"invoice.paid"}',
        headers={"Content-Type": "application/json", "User-Agent": "spoofed", "Host": "x"},
        allow_private=True,
    )
    assert response.status == 200
    assert response.excerpt == "received"
    assert response.error == ""
    assert response.location == ""
    assert 0 <= response.duration_ms < 5000
    assert receiver.requests == [
        Request(
            path="/hook?merchant=7",
            host=f"127.0.0.1:{receiver.port}",
            user_agent="Stablebill-Webhooks/1",
            content_type="application/json",
            body=b'{"type":"invoice.paid"}',
        )
    ]


def test_redirect_is_reported_and_not_followed(receiver):
    response = _post(receiver.url("/redirect"), allow_private=True)
    assert response.status == 302
    assert response.location == receiver.url("/landing")
    assert [request.path for request in receiver.requests] == ["/redirect"]


def test_slow_receiver_times_out(receiver):
    started = time.monotonic()
    response = _post(receiver.url("/slow"), timeout=0.5, allow_private=True)
    assert time.monotonic() - started < 2
    assert response.status is None
    assert response.error == "Timed out after 0.5 s."
    assert response.duration_ms >= 400


def test_timeout_defaults_to_the_setting(receiver, settings):
    settings.CALLBACK_TIMEOUT_SECONDS = 1
    response = _post(receiver.url("/slow"), allow_private=True)
    assert response.error == "Timed out after 1 s."


def test_closed_port_is_reported_as_refused():
    # Bound but not listening: the port stays ours, and connecting to it is refused.
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
        response = _post(f"http://127.0.0.1:{port}/", allow_private=True)
    assert response.status is None
    assert response.error == "Connection refused."
    assert response.excerpt == ""


def test_excerpt_is_the_first_thousand_characters(receiver):
    response = _post(receiver.url("/long"), allow_private=True)
    assert response.status == 200
    assert response.excerpt == LONG_BODY[:1000]


def test_body_read_stops_at_64_kib_instead_of_waiting_for_the_rest(receiver):
    started = time.monotonic()
    response = _post(receiver.url("/endless"), timeout=3, allow_private=True)
    assert time.monotonic() - started < 2
    assert response.status == 200
    assert response.error == ""
    assert response.excerpt == "x" * 1000


def test_blocked_url_is_refused_before_connecting(receiver):
    with pytest.raises(BlockedURL, match="loopback"):
        _post(receiver.url("/hook"), allow_private=False)
    assert receiver.connections == 0
    assert receiver.requests == []


def test_name_is_connected_at_the_checked_address_and_sent_as_host(serve):
    address = check_url("http://localhost:1/", allow_private=True).address
    assert address in ("127.0.0.1", "::1")
    receiver = serve(address)
    url = f"http://localhost:{receiver.port}/pinned"
    assert check_url(url, allow_private=True).address == address

    response = _post(url, allow_private=True)

    assert response.status == 200
    assert [(r.path, r.host) for r in receiver.requests] == [
        ("/pinned", f"localhost:{receiver.port}")
    ]


def test_connection_never_resolves_the_name_again(receiver):
    # As if DNS had answered 127.0.0.1 at check time and then changed (rebinding): the
    # name below resolves to nothing at all, yet the checked address is what gets reached.
    checked = check_url(receiver.url("/rebound"), allow_private=True)
    target = replace(checked, host="rebound.invalid")
    response = send_to_checked_target(target, body=b"{}", headers={}, timeout=2)
    assert response.status == 200
    assert [(r.path, r.host) for r in receiver.requests] == [
        ("/rebound", f"rebound.invalid:{receiver.port}")
    ]


def test_tls_failure_is_reported_not_raised(receiver):
    # An HTTPS request to a plain HTTP server: the handshake fails.
    response = _post(f"https://127.0.0.1:{receiver.port}/", timeout=2, allow_private=True)
    assert response.status is None
    assert response.error.startswith("TLS failed")


@pytest.fixture
def localhost_certificate(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> ssl.SSLContext:
    """A self-signed certificate for the name "localhost" only, trusted through SSL_CERT_FILE
    (which ssl.create_default_context reads), and a server context presenting it."""
    if shutil.which("openssl") is None:
        if os.environ.get("CI"):
            pytest.fail("CI must have the openssl command (Debian package openssl).")
        pytest.skip("needs the openssl command to make a certificate")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [
            *("openssl", "req", "-x509", "-nodes", "-days", "1", "-subj", "/CN=localhost"),
            *("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"),
            *("-addext", "subjectAltName=DNS:localhost", "-keyout", key, "-out", cert),
        ],
        check=True,
        capture_output=True,
    )
    monkeypatch.setenv("SSL_CERT_FILE", str(cert))
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    return context


def test_https_certificate_is_verified_against_the_name_in_the_url(serve, localhost_certificate):
    address = check_url("http://localhost:1/", allow_private=True).address
    receiver = serve(address, tls=localhost_certificate)

    by_name = _post(f"https://localhost:{receiver.port}/tls", timeout=2, allow_private=True)
    literal = f"[{address}]" if ":" in address else address
    by_address = _post(f"https://{literal}:{receiver.port}/tls", timeout=2, allow_private=True)

    assert (by_name.status, by_name.excerpt) == (200, "received")
    assert [(r.path, r.host) for r in receiver.requests] == [("/tls", f"localhost:{receiver.port}")]
    assert by_address.status is None
    assert "CERTIFICATE_VERIFY_FAILED" in by_address.error


def test_receiver_dripping_its_body_cannot_hold_a_worker_past_the_timeout():
    """The timeout bounds the whole exchange, not each read: a receiver that answers 200 and
    then sends a byte every 0.2 s is cut off at the deadline, its status kept."""
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    stop = threading.Event()

    def drip() -> None:
        conn, _ = listener.accept()
        with conn:
            conn.recv(65536)
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n")
            while not stop.is_set():
                try:
                    conn.sendall(b"x")
                except OSError:
                    return
                time.sleep(0.2)

    thread = threading.Thread(target=drip, daemon=True)
    thread.start()
    started = time.monotonic()
    try:
        response = post(
            f"http://127.0.0.1:{port}/", body=b"{}", headers={}, timeout=1, allow_private=True
        )
    finally:
        stop.set()
        listener.close()
    assert time.monotonic() - started < 2
    assert response.status == 200
    assert 1 <= len(response.excerpt) <= 10


def test_an_unreachable_first_address_falls_back_to_the_next_checked_one():
    # A name answering with a dead address first and a live one second (checked alike).
    hits: list[str] = []

    class Ok(BaseHTTPRequestHandler):
        def do_POST(self):
            hits.append(self.headers["Host"])
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Ok)
    serve_in_background(server)
    try:
        target = Target(
            url="http://receiver.invalid/",
            scheme="http",
            host="receiver.invalid",
            port=server.server_port,
            path="/",
            address="127.0.0.2",  # the server listens on 127.0.0.1 only: refused here
            fallbacks=("127.0.0.1",),
        )
        response = send_to_checked_target(target, body=b"{}", headers={}, timeout=2)
    finally:
        server.shutdown()
        server.server_close()
    assert response.status == 204
    assert hits == [f"receiver.invalid:{server.server_port}"]
