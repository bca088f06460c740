"""The HTTP adapter for outbound clinic webhooks: the only module that POSTs to a clinic."""

from __future__ import annotations

import ipaddress
import socket
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import requests
from django.conf import settings
from requests.adapters import HTTPAdapter


@dataclass(frozen=True)
class PostResult:
    status_code: int | None
    duration_ms: int
    error: str = ""

    @property
    def is_success(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300


@dataclass(frozen=True)
class VettedTarget:
    """A webhook URL checked for delivery: why it must not be called ("" when it may), and the
    vetted address the connection must go to (None where every target is allowed: local mode)."""

    refusal: str
    address: str | None = None


class PinnedAddressAdapter(HTTPAdapter):
    """Connects to one vetted IP address whatever DNS says by the time the socket opens (no
    DNS rebinding between the check and the connection), while TLS still sends the URL's host
    name as SNI and checks the certificate against it (urllib3's `server_hostname` and
    `assert_hostname`). The request keeps the URL's Host header."""

    def __init__(self, *, address: str, hostname: str) -> None:
        self._address = address
        self._hostname = hostname
        super().__init__(max_retries=0)

    def build_connection_pool_key_attributes(
        self, request: requests.PreparedRequest, verify: bool | str, cert: Any = None
    ) -> Any:
        host_params, pool_kwargs = super().build_connection_pool_key_attributes(request, verify, cert)
        pinned_host: dict[str, Any] = {**host_params, "host": self._address}
        pinned_pool: dict[str, Any] = dict(pool_kwargs)
        if pinned_host["scheme"] == "https":
            pinned_pool.update(server_hostname=self._hostname, assert_hostname=self._hostname)
        return pinned_host, pinned_pool


def webhook_post(
    *, url: str, body: bytes, headers: dict[str, str], timeout: float, address: str | None = None
) -> PostResult:
    """POST once, without redirects; with `address` (from webhook_target_vet) the connection
    goes to that address only."""
    started = time.monotonic()
    with requests.Session() as session:
        # No proxy from the environment: the connection must reach the vetted address itself.
        session.trust_env = False
        headers = dict(headers)
        if address is not None:
            parts = urlsplit(url)
            session.mount(
                f"{parts.scheme}://", PinnedAddressAdapter(address=address, hostname=parts.hostname or "")
            )
            headers["Host"] = parts.netloc.rsplit("@", 1)[-1]
        try:
            response = session.post(url, data=body, headers=headers, timeout=timeout, allow_redirects=False)
        except requests.RequestException as error:
            return PostResult(None, _elapsed_ms(started), f"{type(error).__name__}")
    return PostResult(response.status_code, _elapsed_ms(started))


def webhook_target_refusal(url: str) -> str:
    """Why a clinic's webhook URL must not be called, or "" when it may (see webhook_target_vet)."""
    return webhook_target_vet(url).refusal


def webhook_target_vet(url: str) -> VettedTarget:
    """Whether a clinic's webhook URL may be called, and the address to call.

    Outside local mode: https only, and every address the host resolves to must be public —
    no private, loopback, link-local, multicast or reserved target (the cloud metadata
    service, the database, the broker). Checked when the URL is saved and again before each
    delivery, since DNS can change in between; the delivery then connects to the address
    checked here (PinnedAddressAdapter), so the name cannot be re-pointed between the check and
    the connection. Redirects are never followed.
    """
    parts = urlsplit(url)
    allowed_schemes = {"https"} if settings.CLINIC_WEBHOOK_REQUIRE_HTTPS else {"https", "http"}
    if parts.scheme not in allowed_schemes:
        return VettedTarget(f"the URL must start with {' or '.join(sorted(allowed_schemes))}://")
    if not parts.hostname or parts.username or parts.password:
        return VettedTarget("the URL must name a host, without a user name or password")
    if settings.CLINIC_WEBHOOK_ALLOW_PRIVATE_TARGETS:
        return VettedTarget("")
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
        resolved = socket.getaddrinfo(parts.hostname, port, proto=socket.IPPROTO_TCP)
    except (OSError, ValueError, UnicodeError):
        return VettedTarget("the host does not resolve")
    addresses = []
    for *_, address in resolved:
        ip = ipaddress.ip_address(address[0])
        if not ip.is_global or ip.is_multicast:
            return VettedTarget("the host resolves to a private, loopback, link-local or reserved address")
        addresses.append(str(ip))
    if not addresses:
        return VettedTarget("the host does not resolve")
    return VettedTarget("", address=addresses[0])


def _elapsed_ms(started: float) -> int:
    return int((time.monotonic() - started) * 1000)
