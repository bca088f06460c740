"""Hardening that Django 5.2 does not ship: a content security policy on the admin, NUL
characters refused before they reach PostgreSQL, no caching of patient data."""

from __future__ import annotations

from collections.abc import Callable

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.utils.cache import add_never_cache_headers

from api.problems import problem_response


class AdminContentSecurityPolicyMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        response = self.get_response(request)
        if request.path.startswith("/admin/"):
            response.setdefault("Content-Security-Policy", settings.ADMIN_CONTENT_SECURITY_POLICY)
        return response


class RejectNullCharactersMiddleware:
    """PostgreSQL text cannot hold NUL: a query parameter containing one is a 400, not a 500."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if request.path.startswith("/api/") and any(
            "\x00" in key or "\x00" in value for key, values in request.GET.lists() for value in values
        ):
            return problem_response(
                request, 400, "bad-request", "Query parameters must not contain NUL characters."
            )
        return self.get_response(request)


# Responses that carry patient data (or may, such as an error echoing a field): never stored by
# a browser, proxy or client cache. The clinic API (REST and FHIR), the patient status link,
# the token endpoint.
NO_STORE_PREFIXES = ("/api/v1/", "/fhir/", "/track/", "/oauth/")


class NoStoreMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        response = self.get_response(request)
        if request.path.startswith(NO_STORE_PREFIXES):
            add_never_cache_headers(response)
        return response
