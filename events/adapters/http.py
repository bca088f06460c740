"""The HTTP adapter for outbound clinic webhooks: the only module that POSTs to a clinic."""

from __future__ import annotations

import ipaddress
import socket
import time
from dataclasses import dataclass
from urllib.parse import urlsplit

import requests
from django.conf import settings


@dataclass(frozen=True)
class PostResult:
    status_code: int | None
    duration_ms: int
    error: str = ""

    @property
    def is_success(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300


def webhook_post(*, url: str, body: bytes, headers: dict[str, str], timeout: float) -> PostResult:
    started = time.monotonic()
    try:
        response = requests.post(url, data=body, headers=headers, timeout=timeout, allow_redirects=False)
    except requests.RequestException as error:
        return PostResult(None, _elapsed_ms(started), f"{type(error).__name__}")
    return PostResult(response.status_code, _elapsed_ms(started))


def webhook_target_refusal(url: str) -> str:
    """Why a clinic's webhook URL must not be called, or "" when it may.

    Outside local mode: https only, and every address the host resolves to must be public —
    no private, loopback, link-local, multicast or reserved target (the cloud metadata
    service, the database, the broker). Checked when the URL is saved and again before each
    delivery, since DNS can change in between; redirects are never followed.
    """
    parts = urlsplit(url)
    allowed_schemes = {"https"} if settings.CLINIC_WEBHOOK_REQUIRE_HTTPS else {"https", "http"}
    if parts.scheme not in allowed_schemes:
        return f"the URL must start with {' or '.join(sorted(allowed_schemes))}://"
    if not parts.hostname or parts.username or parts.password:
        return "the URL must name a host, without a user name or password"
    if settings.CLINIC_WEBHOOK_ALLOW_PRIVATE_TARGETS:
        return ""
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
        resolved = socket.getaddrinfo(parts.hostname, port, proto=socket.IPPROTO_TCP)
    except (OSError, ValueError, UnicodeError):
        return "the host does not resolve"
    for *_, address in resolved:
        ip = ipaddress.ip_address(address[0])
        if not ip.is_global or ip.is_multicast:
            return "the host resolves to a private, loopback, link-local or reserved address"
    return ""


def _elapsed_ms(started: float) -> int:
    return int((time.monotonic() - started) * 1000)
