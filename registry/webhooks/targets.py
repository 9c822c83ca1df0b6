"""Where a webhook may be sent, and sending it there without being redirected elsewhere.

A registry that posts to URLs its admins type is a server-side request forgery tool unless
targets are judged: HTTPS only, and only hosts that resolve to public addresses, except hosts
an operator allowlisted (WEBHOOK_ALLOWED_HOSTS: plain HTTP and private addresses allowed) or
everything when WEBHOOK_ALLOW_PRIVATE_TARGETS is on. The check runs when a subscription is
made and again at every send; the connection then goes to the very address that was judged
(the name is resolved once, the TLS certificate still checked against the name), so a DNS
answer that changes in between cannot redirect it. Redirects are not followed, and at most
RESPONSE_LIMIT bytes of an answer are read.
"""

from __future__ import annotations

import ipaddress
import socket
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

import certifi
import urllib3

RESPONSE_LIMIT = 4096
Resolver = Callable[[str, int], list[str]]


class TargetRefused(ValueError):
    """The URL may not receive webhooks (the message says why)."""


@dataclass(frozen=True)
class TargetPolicy:
    allowed_hosts: frozenset[str] = frozenset()
    allow_private: bool = False

    @classmethod
    def from_config(cls, config: object) -> TargetPolicy:
        hosts = str(getattr(config, "WEBHOOK_ALLOWED_HOSTS", "") or "")
        return cls(
            frozenset(h.strip().lower() for h in hosts.split(",") if h.strip()),
            bool(getattr(config, "WEBHOOK_ALLOW_PRIVATE_TARGETS", False)),
        )


@dataclass(frozen=True)
class Target:
    scheme: str
    host: str
    port: int
    path: str  # with the query string
    allowlisted: bool

    @property
    def host_header(self) -> str:
        default = 443 if self.scheme == "https" else 80
        name = f"[{self.host}]" if ":" in self.host else self.host
        return name if self.port == default else f"{name}:{self.port}"


def parse_target(url: str, policy: TargetPolicy) -> Target:
    """The URL's parts, or TargetRefused for one no webhook may use (no DNS here)."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as error:
        raise TargetRefused(f"not a valid URL: {error}") from None
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        raise TargetRefused("must be an http(s) URL")
    host = (parts.hostname or "").lower()
    if not host:
        raise TargetRefused("must name a host")
    if parts.username is not None or parts.password is not None:
        raise TargetRefused("must not carry credentials; receivers verify the signature")
    if parts.fragment:
        raise TargetRefused("must not have a #fragment")
    allowlisted = host in policy.allowed_hosts
    if scheme == "http" and not allowlisted:
        raise TargetRefused("must be https (plain http only for hosts in WEBHOOK_ALLOWED_HOSTS)")
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    return Target(scheme, host, port or (443 if scheme == "https" else 80), path, allowlisted)


def system_resolver(host: str, port: int) -> list[str]:
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(info[4][0] for info in infos))


def address_problem(address: str) -> str | None:
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if ip.is_loopback:
        return "loopback"
    if ip.is_link_local:
        return "link-local"
    if ip.is_private or ip.is_reserved or ip.is_unspecified or ip.is_multicast:
        return "private or reserved"
    if not ip.is_global:
        return "not globally routable"
    return None


def judged_address(target: Target, policy: TargetPolicy, resolve: Resolver) -> str:
    """The address to connect to: every address the name has must be acceptable (a name
    with one private address among public ones is refused, not tried in turn)."""
    try:
        addresses = resolve(target.host, target.port)
    except OSError as error:
        raise TargetRefused(f"cannot resolve {target.host}: {error}") from None
    if not addresses:
        raise TargetRefused(f"{target.host} has no address")
    if not (target.allowlisted or policy.allow_private):
        for address in addresses:
            problem = address_problem(address)
            if problem is not None:
                raise TargetRefused(
                    f"{target.host} resolves to {address}, a {problem} address; allow it with "
                    "WEBHOOK_ALLOWED_HOSTS or WEBHOOK_ALLOW_PRIVATE_TARGETS"
                )
    return addresses[0]


@dataclass(frozen=True)
class Response:
    status: int | None  # None: no answer (the error says why)
    latency_ms: float
    error: str | None
    body: bytes = b""


def post(
    target: Target,
    address: str,
    body: bytes,
    headers: Mapping[str, str],
    *,
    connect_timeout: float,
    read_timeout: float,
) -> Response:
    """POST to `address` (the judged one), naming `target.host` for Host, SNI and the
    certificate check. Never raises for a network failure: the Response says it."""
    started = time.perf_counter()
    timeout = urllib3.Timeout(connect=connect_timeout, read=read_timeout)
    pool: urllib3.HTTPConnectionPool
    if target.scheme == "https":
        pool = urllib3.HTTPSConnectionPool(
            address,
            target.port,
            timeout=timeout,
            retries=False,
            maxsize=1,
            cert_reqs="CERT_REQUIRED",
            ca_certs=certifi.where(),
            server_hostname=target.host,
            assert_hostname=target.host,
        )
    else:
        pool = urllib3.HTTPConnectionPool(
            address, target.port, timeout=timeout, retries=False, maxsize=1
        )
    try:
        answer = pool.urlopen(
            "POST",
            target.path,
            body=body,
            headers={**headers, "Host": target.host_header},
            redirect=False,
            retries=False,
            preload_content=False,
            assert_same_host=False,
        )
        try:
            content = answer.read(RESPONSE_LIMIT)
        finally:
            answer.release_conn()
        return Response(answer.status, _ms(started), None, content)
    except urllib3.exceptions.HTTPError as error:
        return Response(None, _ms(started), _describe(error))
    except OSError as error:
        return Response(None, _ms(started), f"{type(error).__name__}: {error}")
    finally:
        pool.close()


def _ms(started: float) -> float:
    return round((time.perf_counter() - started) * 1000, 3)


def _describe(error: Exception) -> str:
    reason = getattr(error, "reason", None)
    text = str(reason or error)
    return f"{type(error).__name__}: {text}"[:500]
