"""OAuth2 machine clients: short-lived tokens, immediate revocation, rate limits, last use."""

from __future__ import annotations

import datetime

import pytest
from django.conf import settings
from django.core.cache import cache
from django.utils import timezone
from oauth2_provider.models import AccessToken, Application
from rest_framework.test import APIClient

from events.models import Event
from patients.models import ClinicClient
from patients.services import clinic_client_revoke
from tests.patients.factories import ApplicationFactory, ClinicFactory
from tests.prescriptions.factories import PrescriberFactory

pytestmark = pytest.mark.django_db

SECRET = "client-secret-0123456789"


def _client_with_secret() -> ClinicClient:
    application = ApplicationFactory(client_secret=SECRET)
    return ClinicClient.objects.create(clinic=ClinicFactory(), application=application)


def _token_request(application: Application):  # type: ignore[no-untyped-def]
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=_basic(application.client_id, SECRET))
    return client.post("/oauth/token/", {"grant_type": "client_credentials"})


def _basic(user: str, password: str) -> str:
    import base64

    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def test_access_tokens_are_short_lived():
    link = _client_with_secret()

    response = _token_request(link.application)

    assert response.status_code == 200
    assert response.json()["expires_in"] == settings.OAUTH2_PROVIDER["ACCESS_TOKEN_EXPIRE_SECONDS"] == 600


def test_a_revoked_client_gets_no_new_token_and_its_tokens_are_gone():
    link = _client_with_secret()
    assert _token_request(link.application).status_code == 200

    revoked = clinic_client_revoke(clinic_client=link, actor="staff:1")

    assert revoked is True
    assert AccessToken.objects.filter(application=link.application).count() == 0
    response = _token_request(link.application)
    assert response.status_code == 401
    assert AccessToken.objects.filter(application=link.application).count() == 0
    assert Event.objects.filter(type="clinic_client.revoked", aggregate_id=link.pk).count() == 1


def test_revoking_twice_records_one_event():
    link = _client_with_secret()

    first = clinic_client_revoke(clinic_client=link, actor="staff:1")
    second = clinic_client_revoke(clinic_client=link, actor="staff:1")

    assert (first, second) == (True, False)
    assert Event.objects.filter(type="clinic_client.revoked", aggregate_id=link.pk).count() == 1


def test_a_client_over_its_rate_limit_gets_429_problem_with_retry_after(clinic_a, clinic_b, settings):
    cache.clear()
    rates = {**settings.REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"], "client": "2/minute"}
    settings.REST_FRAMEWORK = {**settings.REST_FRAMEWORK, "DEFAULT_THROTTLE_RATES": rates}
    from rest_framework.settings import api_settings
    from rest_framework.throttling import SimpleRateThrottle

    SimpleRateThrottle.THROTTLE_RATES = api_settings.DEFAULT_THROTTLE_RATES
    try:
        statuses = [clinic_a.api.get("/api/v1/patients/").status_code for _ in range(3)]
        limited = clinic_a.api.get("/api/v1/patients/")
        other_client = clinic_b.api.get("/api/v1/patients/")
    finally:
        SimpleRateThrottle.THROTTLE_RATES = {**rates, "client": "1200/minute"}
        cache.clear()

    assert statuses == [200, 200, 429]
    assert limited.status_code == 429
    assert limited["Content-Type"] == "application/problem+json"
    assert 1 <= int(limited["Retry-After"]) <= 60
    assert limited.json()["status"] == 429
    assert other_client.status_code == 200


def test_the_last_use_of_a_client_is_recorded_at_most_once_a_minute(clinic_a):
    link = clinic_a.clinic.clients.get()
    assert link.last_used_at is None

    clinic_a.api.get("/api/v1/prescribers/")
    first_use = ClinicClient.objects.get(pk=link.pk).last_used_at
    clinic_a.api.get("/api/v1/prescribers/")

    assert first_use is not None
    assert timezone.now() - first_use < datetime.timedelta(seconds=10)
    assert ClinicClient.objects.get(pk=link.pk).last_used_at == first_use


def test_an_api_request_makes_a_constant_number_of_queries(clinic_a, django_assert_num_queries):
    clinic_a.api.get("/api/v1/prescribers/")  # records last use once
    # savepoint, token with client and clinic, role and clinic id, count, page, release, reset
    with django_assert_num_queries(7):
        assert clinic_a.api.get("/api/v1/prescribers/").json()["count"] == 1
    PrescriberFactory.create_batch(5, clinic=clinic_a.clinic)
    with django_assert_num_queries(7):
        assert clinic_a.api.get("/api/v1/prescribers/").json()["count"] == 6


def test_a_bearer_header_is_checked_as_the_toolkit_checks_it_and_anything_else_takes_its_path(
    clinic_a, monkeypatch
):
    # Invariant: the header fast path refuses what django-oauth-toolkit refuses (unknown,
    # expired, revoked tokens) and leaves every other way of presenting a token to the toolkit.
    from oauth2_provider import oauth2_backends

    assert clinic_a.api.get("/api/v1/patients/").status_code == 200
    token = AccessToken.objects.get(application__clinic_client__clinic=clinic_a.clinic)

    unknown = APIClient()
    unknown.credentials(HTTP_AUTHORIZATION="Bearer not-a-token-of-ours")
    refused = unknown.get("/api/v1/patients/")
    assert refused.status_code == 401
    assert 'error="invalid_token"' in refused["WWW-Authenticate"]

    AccessToken.objects.filter(pk=token.pk).update(expires=timezone.now() - datetime.timedelta(seconds=1))
    assert clinic_a.api.get("/api/v1/patients/").status_code == 401
    AccessToken.objects.filter(pk=token.pk).update(expires=timezone.now() + datetime.timedelta(hours=1))
    assert clinic_a.api.get("/api/v1/patients/").status_code == 200

    # The token in the query string (RFC 6750 allows it, RFC 9700 forbids it) and other schemes
    # go through the toolkit's own endpoint, and are refused there.
    through_toolkit: list[str] = []
    real_core = oauth2_backends.get_oauthlib_core

    def counting_core():  # type: ignore[no-untyped-def]
        through_toolkit.append("core")
        return real_core()

    monkeypatch.setattr(
        "oauth2_provider.contrib.rest_framework.authentication.get_oauthlib_core", counting_core
    )
    assert clinic_a.api.get("/api/v1/patients/").status_code == 200
    assert through_toolkit == []
    in_query = APIClient()
    assert in_query.get(f"/api/v1/patients/?access_token={clinic_a.token}").status_code == 401
    basic = APIClient()
    basic.credentials(HTTP_AUTHORIZATION=_basic("someone", "secret"))
    assert basic.get("/api/v1/patients/").status_code == 401
    assert through_toolkit == ["core", "core"]

    clinic_client_revoke(clinic_client=ClinicClient.objects.get(clinic=clinic_a.clinic), actor="test")
    assert clinic_a.api.get("/api/v1/patients/").status_code == 401
