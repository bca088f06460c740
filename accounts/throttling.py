"""Rate limiting for the clinic API: one request budget per machine client."""

from __future__ import annotations

from typing import Any

from rest_framework.request import Request
from rest_framework.throttling import SimpleRateThrottle

from accounts.authentication import ClinicPrincipal


class ClientRateThrottle(SimpleRateThrottle):
    """Per-client request budget (settings REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"]["client"])."""

    scope = "client"

    def get_cache_key(self, request: Request, view: Any) -> str | None:
        if not isinstance(request.user, ClinicPrincipal):
            return None
        return self.cache_format % {"scope": self.scope, "ident": request.user.client_id}
