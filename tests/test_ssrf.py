"""The SSRF guard on callback URLs (merchants/outbound.py): every address that is not
globally routable is refused, however it is written, before any connection is made."""

from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from merchants.integrations import check_callback_url
from merchants.outbound import BlockedURL, check_url, post
from tests.local_http import serve_in_background

REFUSED = [
    ("http://127.0.0.1/", "loopback"),
    ("http://localhost/", "loopback"),
    ("http://0x7f000001/", "loopback"),
    ("http://2130706433/", "loopback"),
    ("http://017700000001/", "loopback"),
    ("http://127.1/", "loopback"),
    ("http://[::1]/", "loopback"),
    ("http://[::ffff:127.0.0.1]/", "loopback"),
    ("http://[64:ff9b::7f00:1]/", "loopback"),
    ("http://[2002:7f00:1::]/", "loopback"),
    ("http://10.0.0.1/", "private"),
    ("http://172.16.5.4/", "private"),
    ("http://192.168.1.1/", "private"),
    ("http://[::ffff:10.0.0.1]/", "private"),
    ("http://[fc00::1]/", "private"),
    ("http://[fd12::1]/", "private"),
    ("http://169.254.169.254/latest/meta-data/", "link-local"),
    ("http://[fe80::1]/", "link-local"),
    ("http://100.64.0.1/", "carrier-grade NAT"),
    ("http://0.0.0.0/", "unspecified"),
    ("http://[::]/", "unspecified"),
    ("http://255.255.255.255/", "broadcast"),
    ("http://240.0.0.1/", "reserved"),
    ("http://198.18.0.1/", "benchmarking"),
    ("http://224.0.0.1/", "multicast"),
    ("http://192.0.2.1/", "documentation"),
    ("ftp://example.com/", "https:// or http://"),
    ("http://user:secret@example.com/", "user name or password"),
    ("http:///nohost", "no host"),
]


@pytest.mark.parametrize(("url", "reason"), REFUSED, ids=[u for u, _ in REFUSED])
def test_refused_callback_address(url, reason):
    with pytest.raises(BlockedURL, match=reason):
        check_url(url, allow_private=False)


@pytest.mark.parametrize(
    "url",
    ["http://127.0.0.1/", "http://10.1.2.3/x", "http://[::1]/", "http://localhost/"],
)
def test_forms_refuse_literal_private_addresses_without_dns(url, settings):
    settings.CALLBACKS_ALLOW_PRIVATE = False
    from django.core.exceptions import ValidationError

    with pytest.raises(ValidationError) as error:
        check_callback_url(url)
    assert "public addresses only" in error.value.message_dict["url"][0]


@pytest.mark.parametrize(
    ("url", "address"),
    [
        ("http://93.184.215.14/hook", "93.184.215.14"),
        ("https://[2606:4700::1111]/hook", "2606:4700::1111"),
    ],
)
def test_public_addresses_pass_and_are_pinned(url, address):
    target = check_url(url, allow_private=False)
    assert target is not None
    assert target.address == address


def test_unresolvable_host_is_refused():
    with pytest.raises(BlockedURL, match="could not be resolved"):
        check_url("http://no-such-host.invalid/", allow_private=False)


class _Counting(BaseHTTPRequestHandler):
    hits: list[str] = []

    def do_POST(self):
        _Counting.hits.append(self.headers["Host"])
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, *args):
        pass


@pytest.fixture
def local_server():
    _Counting.hits = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Counting)
    serve_in_background(server)
    yield server.server_port
    server.shutdown()
    server.server_close()


def test_blocked_url_is_refused_before_any_connection(local_server):
    with pytest.raises(BlockedURL):
        post(f"http://127.0.0.1:{local_server}/", body=b"{}", headers={}, allow_private=False)
    assert _Counting.hits == []


def test_allowed_private_target_is_reached_at_the_checked_address_with_its_name(local_server):
    target = check_url(f"http://localhost:{local_server}/", allow_private=True)
    assert target is not None
    assert target.address in ("127.0.0.1", "::1")
    response = post(
        f"http://localhost:{local_server}/in", body=b"{}", headers={}, allow_private=True
    )
    assert response.status == 200
    assert response.excerpt == "ok"
    assert _Counting.hits == [f"localhost:{local_server}"]
