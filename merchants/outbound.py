"""The one way out to merchant-supplied URLs (callbacks), guarded against SSRF.

A callback URL is chosen by whoever holds an API key, so without a guard it could make this
server call its own admin ports, the cloud metadata service or the office network. The
guard refuses every address that is not globally routable, however it is spelled
(`0x7f000001`, `2130706433`, `127.1` and `[::ffff:127.0.0.1]` are all loopback), refuses a
name if any of its addresses is refused, and then connects to exactly the address it checked,
so a DNS answer that changes between check and connect (rebinding) cannot slip through.
Redirects are reported, never followed: following one would be a second, unchecked request.
"""

import http.client
import ipaddress
import re
import socket
import ssl
import string
import time
from dataclasses import dataclass
from typing import Literal, overload
from urllib.parse import quote, urlsplit

from django.conf import settings

MAX_URL_LENGTH = 500
BODY_LIMIT = 64 * 1024
EXCERPT_CHARS = 1000
USER_AGENT = "Stablebill-Webhooks/1"
PUBLIC_ONLY = "callbacks go to public addresses only."

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

# Spelled out rather than left to `is_global`, whose ranges differ between Python releases,
# and so that the merchant is told which kind of address it was. The first match names it.
_BLOCKED_V4 = tuple(
    (ipaddress.IPv4Network(network), reason)
    for network, reason in (
        ("0.0.0.0/8", "an unspecified address"),
        ("10.0.0.0/8", "a private address"),
        ("100.64.0.0/10", "a carrier-grade NAT address"),
        ("127.0.0.0/8", "a loopback address"),
        ("169.254.0.0/16", "a link-local address"),
        ("172.16.0.0/12", "a private address"),
        ("192.0.0.0/24", "a reserved address"),
        ("192.0.2.0/24", "a documentation address"),
        ("192.88.99.0/24", "a reserved address"),
        ("192.168.0.0/16", "a private address"),
        ("198.18.0.0/15", "a benchmarking address"),
        ("198.51.100.0/24", "a documentation address"),
        ("203.0.113.0/24", "a documentation address"),
        ("224.0.0.0/4", "a multicast address"),
        ("255.255.255.255/32", "a broadcast address"),
        ("240.0.0.0/4", "a reserved address"),
    )
)
# IPv6 addresses that carry an IPv4 one are judged by that IPv4 address before this table.
_BLOCKED_V6 = tuple(
    (ipaddress.IPv6Network(network), reason)
    for network, reason in (
        ("::/128", "an unspecified address"),
        ("::1/128", "a loopback address"),
        ("::/8", "a reserved address"),
        ("64:ff9b:1::/48", "a local-use NAT64 address"),
        ("100::/64", "a reserved address"),
        ("2001:db8::/32", "a documentation address"),
        ("3fff::/20", "a documentation address"),
        ("5f00::/16", "a reserved address"),
        ("fc00::/7", "a private (unique local) address"),
        ("fe80::/10", "a link-local address"),
        ("fec0::/10", "a site-local address"),
        ("ff00::/8", "a multicast address"),
    )
)
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
_V4_TRANSLATED = ipaddress.IPv6Network("::ffff:0:0:0/96")
_V4_COMPATIBLE = ipaddress.IPv6Network("::/96")
# One DNS label (RFC 1123, plus "_", which real names carry) after IDNA encoding.
_LABEL = re.compile(r"[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?", re.IGNORECASE)
# Browsers send a path with spaces or non-ASCII characters percent-encoded; http.client
# refuses them. `%` stays as it is so that escapes the merchant wrote survive.
_PATH_SAFE = string.punctuation


class BlockedURL(ValueError):
    """A URL we will not call; the message says why, in words for a merchant."""


@dataclass(frozen=True)
class Target:
    """A checked URL. `host` is the name to send and verify TLS against (IP literals in their
    standard spelling); `address` is the only address we may connect to."""

    url: str
    scheme: str
    host: str
    port: int
    path: str
    address: str
    # Every checked address, `address` first: tried in turn when one cannot be reached (an
    # IPv6 answer on a machine without IPv6, one server of several down).
    fallbacks: tuple[str, ...] = ()


@dataclass(frozen=True)
class OutboundResponse:
    """What came back. Network failures are answers too (`status=None`, `error` set), so that
    a delivery log can show the merchant why their receiver was not reached."""

    status: int | None
    excerpt: str
    duration_ms: int
    error: str
    location: str = ""


def _embedded_v4(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 one leads to (mapped, translated, NAT64, 6to4, compatible):
    `[::ffff:127.0.0.1]` reaches loopback as surely as `127.0.0.1` does."""
    low = ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address in _V4_TRANSLATED or address in _NAT64:
        return low
    if address.sixtofour is not None:
        return address.sixtofour
    if address in _V4_COMPATIBLE and int(address) > 1:  # "::" and "::1" are IPv6's own
        return low
    return None


def blocked_reason(address: IPAddress) -> str | None:
    """Why we refuse to call this address ("a loopback address"), or None for a public one."""
    if isinstance(address, ipaddress.IPv6Address):
        embedded = _embedded_v4(address)
        if embedded is not None:
            return blocked_reason(embedded)
        for network6, reason in _BLOCKED_V6:
            if address in network6:
                return reason
    else:
        for network4, reason in _BLOCKED_V4:
            if address in network4:
                return reason
    if not address.is_global:
        return "a reserved address"
    return None


def _ipv4_number(part: str) -> int | None:
    """One part of a numeric host as resolvers (inet_aton) and browsers (WHATWG) read it:
    `0x` prefix hexadecimal, leading `0` octal, else decimal."""
    if not part:
        return None
    radix, digits = 10, part
    if part[:2].lower() == "0x":
        radix, digits = 16, part[2:]
    elif len(part) > 1 and part[0] == "0":
        radix, digits = 8, part[1:]
    if not digits:
        return 0
    allowed = "0123456789abcdef"[:radix]
    if not all(char in allowed for char in digits.lower()):
        return None
    return int(digits, radix)


def _numeric_ipv4(host: str) -> ipaddress.IPv4Address | None:
    """The address a numeric host such as `127.1` or `0x7f000001` means, or None for a name.

    `ipaddress` accepts only dotted decimal, but resolvers connect to the other spellings
    too, so we read them the same way; without DNS (forms) they are still caught."""
    parts = host.split(".")
    if len(parts) > 1 and parts[-1] == "":
        parts.pop()
    last = parts[-1]
    if not (last.isascii() and last.isdigit()) and _ipv4_number(last) is None:
        return None
    numbers: list[int] = []
    for part in parts:
        number = _ipv4_number(part)
        if number is None or len(parts) > 4:
            raise BlockedURL(f"{host} is not a valid IP address.")
        numbers.append(number)
    *head, tail = numbers
    if any(number > 255 for number in head) or tail >= 256 ** (5 - len(parts)):
        raise BlockedURL(f"{host} is not a valid IP address.")
    value = tail + sum(number << (8 * (3 - index)) for index, number in enumerate(head))
    return ipaddress.IPv4Address(value)


def _literal_address(host: str) -> IPAddress | None:
    """The address a host literally is, None for a valid name, BlockedURL for neither."""
    if ":" in host:
        if "%" in host:
            # A zone index names a local interface: only meaningful for link-local targets.
            raise BlockedURL("Callback URLs may not name a network interface (zone index).")
        try:
            return ipaddress.IPv6Address(host)
        except ValueError:
            raise BlockedURL(f"{host} is not a valid IP address.") from None
    address = _numeric_ipv4(host)
    if address is not None:
        return address
    try:
        name = host.encode("idna").decode("ascii")
    except UnicodeError:
        raise BlockedURL("The host name is not valid.") from None
    name = name.removesuffix(".")
    if len(name) > 253 or not all(_LABEL.fullmatch(label) for label in name.split(".")):
        raise BlockedURL("The host name is not valid.")
    return None


def _allow_private(allow_private: bool | None) -> bool:
    return settings.CALLBACKS_ALLOW_PRIVATE if allow_private is None else allow_private


@overload
def check_url(
    url: str, *, allow_private: bool | None = None, resolve: Literal[True] = True
) -> Target: ...
@overload
def check_url(url: str, *, allow_private: bool | None = None, resolve: bool) -> Target | None: ...
def check_url(
    url: str, *, allow_private: bool | None = None, resolve: bool = True
) -> Target | None:
    """The target to connect to, or BlockedURL with a reason for the merchant.

    With `resolve=False` (forms, where DNS may not be set up yet) only the syntax and literal
    addresses are checked, and a name gives None: DNS is checked again at every delivery
    anyway, since a name may point elsewhere by then. When private targets are allowed (tests,
    development) names are still resolved, so that the connection is pinned all the same."""
    if len(url) > MAX_URL_LENGTH:
        raise BlockedURL(f"The URL is longer than {MAX_URL_LENGTH} characters.")
    try:
        parts = urlsplit(url)
    except ValueError:
        raise BlockedURL("The URL is not valid.") from None
    if parts.scheme not in ("http", "https"):
        raise BlockedURL("Callback URLs start with https:// or http://.")
    if "@" in parts.netloc:
        # Credentials would be sent to whoever answers, and `a@b` hides the real host.
        raise BlockedURL("Callback URLs may not carry a user name or password.")
    host = parts.hostname
    if not host:
        raise BlockedURL("The URL has no host.")
    try:
        port = parts.port
    except ValueError:
        port = -1
    if port is None:
        port = 443 if parts.scheme == "https" else 80
    if not 1 <= port <= 65535:
        raise BlockedURL("The port must be a number from 1 to 65535.")
    path = quote(parts.path or "/", safe=_PATH_SAFE)
    if parts.query:
        path += "?" + quote(parts.query, safe=_PATH_SAFE)
    allow = _allow_private(allow_private)

    literal = _literal_address(host)
    if literal is not None:
        reason = None if allow else blocked_reason(literal)
        if reason:
            as_written = literal.version == 6 or host == str(literal)
            what = f"{host} is" if as_written else f"{host} means {literal},"
            raise BlockedURL(f"{what} {reason}; {PUBLIC_ONLY}")
        return Target(url, parts.scheme, str(literal), port, path, str(literal))

    if not resolve:
        # Resolvers answer "localhost" and its subdomains (RFC 6761) without asking DNS.
        name = host.removesuffix(".")
        if not allow and (name == "localhost" or name.endswith(".localhost")):
            raise BlockedURL(f"{host} is a loopback address; {PUBLIC_ONLY}")
        return None
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError):
        raise BlockedURL(f"{host} could not be resolved.") from None
    addresses: list[IPAddress] = []
    for info in infos:
        # A zone ("fe80::1%eth0") does not change which machine the address is.
        address = ipaddress.ip_address(str(info[4][0]).split("%", 1)[0])
        if address not in addresses:
            addresses.append(address)
    if not addresses:
        raise BlockedURL(f"{host} could not be resolved.")
    if not allow:
        # Any refused address refuses the name: we pin one address, but another resolver
        # (or a retry) might have picked the bad one.
        for address in addresses:
            reason = blocked_reason(address)
            if reason:
                raise BlockedURL(f"{host} resolves to {address}, {reason}; {PUBLIC_ONLY}")
    return Target(
        url,
        parts.scheme,
        host,
        port,
        path,
        str(addresses[0]),
        tuple(str(address) for address in addresses[1:]),
    )


def _connect_checked(target: Target, timeout: float | None) -> socket.socket:
    """A connection to the first checked address that answers, never to anything else."""
    error: OSError | None = None
    for address in (target.address, *target.fallbacks):
        try:
            return socket.create_connection((address, target.port), timeout)
        except TimeoutError:
            raise  # the receiver's time is spent; the next address would only add to it
        except OSError as failure:
            error = failure
    assert error is not None
    raise error


class _PinnedHTTPConnection(http.client.HTTPConnection):
    """http.client would resolve the name again when connecting; this uses the checked
    address and keeps the name for the Host header."""

    def __init__(self, target: Target, timeout: float) -> None:
        super().__init__(target.host, target.port, timeout=timeout)
        self.target = target

    def connect(self) -> None:
        self.sock = _connect_checked(self.target, self.timeout)


class _PinnedHTTPSConnection(http.client.HTTPSConnection):
    """As _PinnedHTTPConnection, with the certificate verified against the name in the URL
    (SNI too): the address alone would prove nothing about who answers."""

    def __init__(self, target: Target, timeout: float) -> None:
        self.tls_context = ssl.create_default_context()
        super().__init__(target.host, target.port, timeout=timeout, context=self.tls_context)
        self.target = target

    def connect(self) -> None:
        sock = _connect_checked(self.target, self.timeout)
        self.sock = self.tls_context.wrap_socket(sock, server_hostname=self.host)


def post(
    url: str,
    *,
    body: bytes,
    headers: dict[str, str],
    timeout: float | None = None,
    allow_private: bool | None = None,
) -> OutboundResponse:
    """POST once to a merchant's URL. Only a refused URL raises (BlockedURL), before any
    connection is made; network failures come back as a response with `status=None`."""
    target = check_url(url, allow_private=allow_private, resolve=True)
    seconds: float = settings.CALLBACK_TIMEOUT_SECONDS if timeout is None else timeout
    return _send(target, body=body, headers=headers, timeout=seconds)


def _read_within(
    connection: http.client.HTTPConnection, response: http.client.HTTPResponse, deadline: float
) -> bytes:
    """At most BODY_LIMIT bytes of the body, and no later than the deadline: the timeout
    bounds the whole exchange, so a receiver dripping a byte at a time cannot hold a worker.
    What arrived by then is kept; the status line already says how the callback went."""
    chunks: list[bytes] = []
    size = 0
    while size < BODY_LIMIT:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            break
        if connection.sock is not None:
            connection.sock.settimeout(remaining)
        try:
            chunk = response.read1(min(8192, BODY_LIMIT - size))
        except TimeoutError:
            break
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks)


def _send(
    target: Target, *, body: bytes, headers: dict[str, str], timeout: float
) -> OutboundResponse:
    """POST to a target that check_url has passed. Kept apart from post() only so that tests
    can show the connection goes to `target.address` whatever the name would resolve to."""
    connection_class = _PinnedHTTPSConnection if target.scheme == "https" else _PinnedHTTPConnection
    connection = connection_class(target, timeout)
    # The Host header must be the checked name, and receivers recognise us by our agent.
    sent = {
        name: value for name, value in headers.items() if name.lower() not in ("host", "user-agent")
    }
    sent["User-Agent"] = USER_AGENT
    started = time.monotonic()

    def failed(error: str) -> OutboundResponse:
        duration_ms = int((time.monotonic() - started) * 1000)
        return OutboundResponse(status=None, excerpt="", duration_ms=duration_ms, error=error)

    try:
        connection.request("POST", target.path, body=body, headers=sent)
        response = connection.getresponse()
        # Enough to show the merchant what their receiver said, without letting a receiver
        # make us download (or wait for) an endless body.
        content = _read_within(connection, response, started + timeout)
        return OutboundResponse(
            status=response.status,
            excerpt=content.decode("utf-8", errors="replace")[:EXCERPT_CHARS],
            duration_ms=int((time.monotonic() - started) * 1000),
            error="",
            location=response.getheader("Location", "") or "",
        )
    except TimeoutError:
        return failed(f"Timed out after {timeout:g} s.")
    except ConnectionRefusedError:
        return failed("Connection refused.")
    except ssl.SSLError as error:
        return failed(f"TLS failed: {error.reason or error}.")
    except (http.client.HTTPException, OSError) as error:
        text = " ".join(str(error).split()) or type(error).__name__
        return failed(f"Connection failed: {text}"[:300])
    finally:
        connection.close()
