"""The lean path (config/middleware.py): sessions, users and flash messages are the staff's only."""

from __future__ import annotations

import pytest
from django.http import HttpRequest, HttpResponse
from django.test import RequestFactory

from config.middleware import StaffAuthenticationMiddleware, StaffMessageMiddleware, StaffSessionMiddleware


def _through_staff_middleware(path: str) -> HttpRequest:
    seen: list[HttpRequest] = []

    def view(request: HttpRequest) -> HttpResponse:
        seen.append(request)
        return HttpResponse()

    chain = StaffSessionMiddleware(StaffAuthenticationMiddleware(StaffMessageMiddleware(view)))
    chain(RequestFactory().post(path))
    return seen[0]


@pytest.mark.parametrize(
    "path",
    [
        "/api/v1/prescriptions/",
        "/fhir/Bundle",
        "/webhooks/gateway/",
        "/webhooks/stripe/",
        "/webhooks/partners/x/stock/",
    ],
)
def test_the_clinic_api_and_the_signed_webhooks_get_no_session_user_or_messages(path: str) -> None:
    request = _through_staff_middleware(path)
    assert not hasattr(request, "session")
    assert not hasattr(request, "user")
    assert not hasattr(request, "_messages")


@pytest.mark.parametrize("path", ["/admin/", "/support/", "/o/token/", "/webhooksx/"])
def test_every_other_path_keeps_the_staff_middleware(path: str) -> None:
    request = _through_staff_middleware(path)
    assert hasattr(request, "session")
    assert hasattr(request, "user")
    assert hasattr(request, "_messages")
