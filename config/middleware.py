"""The lean path: staff-only middleware steps aside for the clinic API (/api/v1/, /fhir/) and
for the signed webhooks (/webhooks/).

Clinic requests authenticate with an OAuth2 bearer token (accounts.authentication), and partners'
and Stripe's webhooks with a signature over the body, never with a session cookie, so sessions,
Django users, the second factor and flash messages have nothing to do there. Each class below
is the stock middleware for every other path (the admin, the back office, the token endpoint
keep the full stack); on the lean prefixes it passes the request straight on. django-otp's
middleware has no user to wrap there, so it does nothing; CSRF (DRF's views and the webhooks
are exempt), security headers and the sign-in lockout stay on every path.
"""

from __future__ import annotations

from collections.abc import Awaitable

from django.contrib.auth.middleware import AuthenticationMiddleware
from django.contrib.messages.middleware import MessageMiddleware
from django.contrib.sessions.middleware import SessionMiddleware
from django.core.signals import request_started
from django.db import connections
from django.http import HttpRequest, HttpResponseBase
from django.utils.deprecation import MiddlewareMixin

from accounts.tenancy import TENANT_PREFIXES, connection_health_check_defer

# The signed webhooks (config/urls.py): each view checks the body's signature itself.
WEBHOOK_PREFIX = "/webhooks/"
LEAN_PREFIXES = (*TENANT_PREFIXES, WEBHOOK_PREFIX)


def is_lean_path(request: HttpRequest) -> bool:
    return request.path.startswith(LEAN_PREFIXES)


class StaffOnlyMiddlewareMixin(MiddlewareMixin):
    """Put before a stock middleware class: it then runs on every path but the lean ones."""

    async_capable = False

    def __call__(self, request: HttpRequest) -> HttpResponseBase | Awaitable[HttpResponseBase]:
        if is_lean_path(request):
            return self.get_response(request)
        return super().__call__(request)


class StaffSessionMiddleware(StaffOnlyMiddlewareMixin, SessionMiddleware):
    pass


class StaffAuthenticationMiddleware(StaffOnlyMiddlewareMixin, AuthenticationMiddleware):
    pass


class StaffMessageMiddleware(StaffOnlyMiddlewareMixin, MessageMiddleware):
    pass


def _connections_health_check_defer(**kwargs: object) -> None:
    """request_started receiver, after Django's close_old_connections (connected before it):
    a connection checked a moment ago whose socket is quiet skips its per-request `SELECT 1`
    (accounts.tenancy.connection_health_check_defer)."""
    for wrapper in connections.all(initialized_only=True):
        connection_health_check_defer(wrapper)


# Connected when Django builds its request handler, which loads this module as middleware.
request_started.connect(_connections_health_check_defer, dispatch_uid="connections_health_check_defer")
