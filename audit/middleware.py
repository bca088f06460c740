from __future__ import annotations

from typing import Any

from auditlog.middleware import AuditlogMiddleware
from django.http import HttpRequest

from audit.services import remote_address


class AuditActorMiddleware(AuditlogMiddleware):
    """django-auditlog's middleware, trusting REMOTE_ADDR only (see audit.services)."""

    @staticmethod
    def _get_remote_addr(request: HttpRequest) -> Any:
        return remote_address(request)

    @staticmethod
    def _get_remote_port(request: HttpRequest) -> int | None:
        return None
