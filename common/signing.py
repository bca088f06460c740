"""The `t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>` signature scheme.

Scriptline signs clinic webhooks with it, the pharmacy gateway signs its webhooks to us with
it, and Stripe's `Stripe-Signature` uses the same shape. One implementation for all of them,
tolerant of hostile headers: anything malformed verifies as False, it never raises.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Iterable

MAX_TIMESTAMP_DIGITS = 12
MAX_HEADER_LENGTH = 4096


def signature_digest(*, secret: str, timestamp: int, body: bytes) -> str:
    """Hex HMAC-SHA256 of `"<timestamp>.<body>"` under `secret`."""
    return hmac.new(secret.encode("utf-8"), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()


def signature_header(*, secrets: Iterable[str], body: bytes, timestamp: int | None = None) -> str:
    """`t=...,v1=...[,v1=...]`: one `v1` per secret (several during a rotation's grace period)."""
    moment = int(time.time()) if timestamp is None else timestamp
    parts = [f"t={moment}"]
    parts += [f"v1={signature_digest(secret=secret, timestamp=moment, body=body)}" for secret in secrets]
    return ",".join(parts)


def signature_parse(header: str | None) -> tuple[int, list[str]] | None:
    """The timestamp and every `v1` digest of a header, or None when it is not well formed."""
    if not header or len(header) > MAX_HEADER_LENGTH or not header.isascii():
        return None
    timestamp: int | None = None
    digests: list[str] = []
    for part in header.split(","):
        key, _, value = part.strip().partition("=")
        if key == "t":
            if not value.isdigit() or len(value) > MAX_TIMESTAMP_DIGITS:
                return None
            timestamp = int(value)
        elif key == "v1" and value:
            digests.append(value)
    if timestamp is None or not digests:
        return None
    return timestamp, digests


def signature_verify(
    *,
    header: str | None,
    secrets: Iterable[str],
    body: bytes,
    tolerance_seconds: int,
    now: float | None = None,
) -> bool:
    """True when some `v1` in `header` matches some secret and the timestamp is fresh."""
    parsed = signature_parse(header)
    if parsed is None:
        return False
    timestamp, digests = parsed
    current = time.time() if now is None else now
    if abs(current - timestamp) > tolerance_seconds:
        return False
    for secret in secrets:
        if not secret:
            continue
        expected = signature_digest(secret=secret, timestamp=timestamp, body=body)
        if any(hmac.compare_digest(expected, digest) for digest in digests):
            return True
    return False
