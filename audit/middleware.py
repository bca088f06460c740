from __future__ import annotations

from typing import Any

from auditlog.middleware import AuditlogMiddleware
from django.http import HttpRequest

from audit.services import remote_address


def _principal_label(request: HttpRequest) -> str | None:
    # Read when the log entry is saved: by then DRF has put the API caller on request.user.
    user = getattr(request, "user", None)
    client_id = getattr(user, "client_id", None)
    if client_id:
        return f"client:{client_id}"
    if user is not None and user.is_authenticated:
        return user.email or f"user:{user.pk}"
    return None


class AuditActorMiddleware(AuditlogMiddleware):
    """django-auditlog's middleware, trusting REMOTE_ADDR only (see audit.services), and naming
    the API client in `actor_email` when the change came through the clinic API."""

    @staticmethod
    def _get_remote_addr(request: HttpRequest) -> Any:
        return remote_address(request)

    @staticmethod
    def _get_remote_port(request: HttpRequest) -> int | None:
        return None

    def get_extra_data(self, request: HttpRequest) -> dict[str, Any]:
        return {**super().get_extra_data(request), "actor_email": lambda: _principal_label(request)}
