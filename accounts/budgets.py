"""Budgets per address on the shared cache: the token endpoint, and requests presenting a token
that is not valid (a guesser, or a client with a stale token, is slowed down)."""

from __future__ import annotations

import time
from typing import cast

from django.conf import settings
from django.core.cache import cache
from django.http import HttpRequest
from rest_framework.throttling import SimpleRateThrottle


def address_of(request: HttpRequest) -> str:
    return request.META.get("REMOTE_ADDR", "") or "unknown"


def budget_spent(*, scope: str, ident: str, record: bool) -> int | None:
    """A fixed-window budget per `ident` on the shared cache (rates in REST_FRAMEWORK
    DEFAULT_THROTTLE_RATES[scope]): counts one use when `record`, and returns the seconds to
    wait once the window's budget is spent, else None."""
    rates = cast(dict[str, str], settings.REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"])
    parsed = SimpleRateThrottle.parse_rate(None, rates[scope])  # type: ignore[arg-type]  # no instance: it would need a scope
    limit, window = cast(tuple[int, int], parsed)  # a configured rate has both parts
    now = time.time()
    key = f"budget:{scope}:{ident}:{int(now // window)}"
    if record:
        cache.add(key, 0, timeout=window)
        used = cache.incr(key)
        spent = used > limit
    else:
        spent = cache.get(key, 0) >= limit
    return max(1, int(window - now % window)) if spent else None
