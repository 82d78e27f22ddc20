"""The one way out to merchant-supplied URLs (callbacks), guarded against SSRF.

A callback URL is chosen by whoever holds an API key, so without a guard it could make this
server call its own admin ports, the cloud metadata service or the office network. The
guard resolves the name, refuses every address that is not globally routable, whatever its
spelling (`0x7f000001`, `2130706433`, `127.1`, `[::ffff:127.0.0.1]` all resolve to loopback),
and then connects to exactly the address it checked, so a DNS answer that changes between
check and connect (rebinding) cannot slip through. Redirects are reported, never followed.
"""

import http.client
import ipaddress
import socket
import ssl
import time
from dataclasses import dataclass
from urllib.parse import urlsplit

from django.conf import settings

MAX_URL_LENGTH = 500
BODY_LIMIT = 64 * 1024
EXCERPT_CHARS = 1000
USER_AGENT = "Stablebill-Webhooks/1"

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

# Ranges Python's `is_global` may miss or that we name for a clearer message.
_NAMED_V4 = (
    (ipaddress.ip_network("127.0.0.0/8"), "a loopback address"),
    (ipaddress.ip_network("10.0.0.0/8"), "a private address"),
    (ipaddress.ip_network("172.16.0.0/12"), "a private address"),
    (ipaddress.ip_network("192.168.0.0/16"), "a private address"),
    (ipaddress.ip_network("169.254.0.0/16"), "a link-local address"),
    (ipaddress.ip_network("100.64.0.0/10"), "a carrier-grade NAT address"),
    (ipaddress.ip_network("0.0.0.0/8"), "an unspecified address"),
    (ipaddress.ip_network("224.0.0.0/4"), "a multicast address"),
    (ipaddress.ip_network("240.0.0.0/4"), "a reserved address"),
    (ipaddress.ip_network("198.18.0.0/15"), "a benchmarking address"),
    (ipaddress.ip_network("192.0.0.0/24"), "a reserved address"),
    (ipaddress.ip_network("192.0.2.0/24"), "a documentation address"),
    (ipaddress.ip_network("198.51.100.0/24"), "a documentation address"),
    (ipaddress.ip_network("203.0.113.0/24"), "a documentation address"),
)
_NAMED_V6 = (
    (ipaddress.ip_network("::1/128"), "a loopback address"),
    (ipaddress.ip_network("::/128"), "an unspecified address"),
    (ipaddress.ip_network("fe80::/10"), "a link-local address"),
    (ipaddress.ip_network("fc00::/7"), "a private (unique local) address"),
    (ipaddress.ip_network("fec0::/10"), "a site-local address"),
    (ipaddress.ip_network("ff00::/8"), "a multicast address"),
    (ipaddress.ip_network("2001:db8::/32"), "a documentation address"),
)
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_SIX_TO_FOUR = ipaddress.ip_network("2002::/16")
_V4_COMPATIBLE = ipaddress.ip_network("::/96")


class BlockedURL(ValueError):
    """A URL we will not call; the message says why, in words for a merchant."""


@dataclass(frozen=True)
class Target:
    url: str
    scheme: str
    host: str
    port: int
    path: str
    address: str


@dataclass(frozen=True)
class OutboundResponse:
    status: int | None
    excerpt: str
    duration_ms: int
    error: str
    location: str = ""


def _embedded_v4(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 one carries (mapped, NAT64, 6to4, compatible), if any."""
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address in _NAT64:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    if address.sixtofour is not None:
        return address.sixtofour
    if address in _V4_COMPATIBLE and int(address) > 1:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return None


def blocked_reason(address: IPAddress) -> str | None:
    """Why we refuse to call this address, or None for a public one."""
    if isinstance(address, ipaddress.IPv6Address):
        embedded = _embedded_v4(address)
        if embedded is not None:
            return blocked_reason(embedded)
        for network, reason in _NAMED_V6:
            if address in network:
                return reason
    else:
        if address == ipaddress.IPv4Address("255.255.255.255"):
            return "a broadcast address"
        for network, reason in _NAMED_V4:
            if address in network:
                return reason
    if not address.is_global:
        return "a reserved address"
    return None


def _allow_private(allow_private: bool | None) -> bool:
    return settings.CALLBACKS_ALLOW_PRIVATE if allow_private is None else allow_private


def check_url(
    url: str, *, allow_private: bool | None = None, resolve: bool = True
) -> Target | None:
    """The target to connect to, or BlockedURL. With `resolve=False` (forms, where DNS may not
    be set up yet) only the syntax and literal addresses are checked, and a name gives None."""
    if len(url) > MAX_URL_LENGTH:
        raise BlockedURL(f"The URL is longer than {MAX_URL_LENGTH} characters.")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise BlockedURL("The URL is not valid.") from None
    if parts.scheme not in ("http", "https"):
        raise BlockedURL("Callback URLs start with https:// or http://.")
    if parts.username is not None or parts.password is not None:
        raise BlockedURL("Callback URLs may not carry a user name or password.")
    host = parts.hostname
    if not host:
        raise BlockedURL("The URL has no host.")
    port = port or (443 if parts.scheme == "https" else 80)
    if not 1 <= port <= 65535:
        raise BlockedURL("The port is out of range.")
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    allow = _allow_private(allow_private)
    if not resolve:
        try:
            literal = ipaddress.ip_address(host)
        except ValueError:
            if host.rstrip(".").lower() in ("localhost", "localhost.localdomain") and not allow:
                raise BlockedURL(
                    f"{host} is a loopback address; callbacks go to public addresses only."
                ) from None
            return None
        reason = None if allow else blocked_reason(literal)
        if reason:
            raise BlockedURL(f"{host} is {reason}; callbacks go to public addresses only.")
        return Target(url, parts.scheme, host, port, path, str(literal))
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError):
        raise BlockedURL(f"{host} could not be resolved.") from None
    addresses: list[IPAddress] = []
    for info in infos:
        # Strip an IPv6 zone ("fe80::1%eth0"): the address decides, not the interface.
        raw = str(info[4][0]).split("%", 1)[0]
        address = ipaddress.ip_address(raw)
        if address not in addresses:
            addresses.append(address)
    if not addresses:
        raise BlockedURL(f"{host} could not be resolved.")
    if not allow:
        for address in addresses:
            reason = blocked_reason(address)
            if reason:
                raise BlockedURL(
                    f"{host} resolves to {address}, {reason}; "
                    "callbacks go to public addresses only."
                )
    return Target(url, parts.scheme, host, port, path, str(addresses[0]))


class _PinnedHTTP(http.client.HTTPConnection):
    def __init__(self, target: Target, timeout: float) -> None:
        super().__init__(target.host, target.port, timeout=timeout)
        self._address = target.address

    def connect(self) -> None:
        self.sock = socket.create_connection((self._address, self.port), self.timeout)


class _PinnedHTTPS(http.client.HTTPSConnection):
    def __init__(self, target: Target, timeout: float) -> None:
        super().__init__(
            target.host, target.port, timeout=timeout, context=ssl.create_default_context()
        )
        self._address = target.address

    def connect(self) -> None:
        sock = socket.create_connection((self._address, self.port), self.timeout)
        # The certificate is checked against the name the merchant gave, not the address.
        self.sock = self._context.wrap_socket(sock, server_hostname=self.host)  # type: ignore[attr-defined]


def post(
    url: str,
    *,
    body: bytes,
    headers: dict[str, str],
    timeout: float | None = None,
    allow_private: bool | None = None,
) -> OutboundResponse:
    """POST once. Network failures come back as a response with `status=None` and `error`;
    only a refused URL raises (BlockedURL), before any connection is made."""
    target = check_url(url, allow_private=allow_private, resolve=True)
    assert target is not None  # resolve=True always gives a target or raises
    timeout = float(settings.CALLBACK_TIMEOUT_SECONDS if timeout is None else timeout)
    connection_class = _PinnedHTTPS if target.scheme == "https" else _PinnedHTTP
    connection = connection_class(target, timeout)
    started = time.monotonic()

    def elapsed() -> int:
        return int((time.monotonic() - started) * 1000)

    try:
        connection.request(
            "POST", target.path, body=body, headers={"User-Agent": USER_AGENT, **headers}
        )
        response = connection.getresponse()
        content = response.read(BODY_LIMIT)
        return OutboundResponse(
            status=response.status,
            excerpt=content.decode("utf-8", errors="replace")[:EXCERPT_CHARS],
            duration_ms=elapsed(),
            error="",
            location=response.getheader("Location", "") or "",
        )
    except TimeoutError:
        return OutboundResponse(None, "", elapsed(), f"Timed out after {timeout:g} s.")
    except ConnectionRefusedError:
        return OutboundResponse(None, "", elapsed(), "Connection refused.")
    except ssl.SSLError as error:
        return OutboundResponse(None, "", elapsed(), f"TLS failed: {error.reason or error}.")
    except (http.client.HTTPException, OSError) as error:
        text = " ".join(str(error).split()) or type(error).__name__
        return OutboundResponse(None, "", elapsed(), f"Connection failed: {text}"[:300])
    finally:
        connection.close()
