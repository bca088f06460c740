"""OAuth2 tokens at rest and at the door: stored hashed, scopes limited per client, the token
endpoint and invalid tokens throttled per address on the shared cache."""

from __future__ import annotations

import base64
import hashlib

import pytest
from django.core.cache import cache
from django.db import connection
from oauth2_provider.models import AccessToken
from rest_framework.test import APIClient

from patients.models import ClinicClient
from tests.patients.factories import ApplicationFactory, ClinicFactory

pytestmark = pytest.mark.django_db

SECRET = "client-secret-0123456789"


@pytest.fixture(autouse=True)
def empty_cache():  # type: ignore[no-untyped-def]
    cache.clear()
    yield
    cache.clear()


def clinic_client(**fields: object) -> ClinicClient:
    return ClinicClient.objects.create(
        clinic=ClinicFactory(), application=ApplicationFactory(client_secret=SECRET), **fields
    )


def token_request(link: ClinicClient, address: str = "192.0.2.10", **body: str):  # type: ignore[no-untyped-def]
    client = APIClient()
    credentials = base64.b64encode(f"{link.application.client_id}:{SECRET}".encode()).decode()
    client.credentials(HTTP_AUTHORIZATION=f"Basic {credentials}")
    return client.post("/oauth/token/", {"grant_type": "client_credentials", **body}, REMOTE_ADDR=address)


def bearer(token: str, address: str = "192.0.2.10") -> APIClient:
    client = APIClient(REMOTE_ADDR=address)
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")
    return client


# --- hashed at rest ---------------------------------------------------------------------------


def test_the_token_table_holds_no_usable_token_and_the_token_still_works():
    link = clinic_client()

    issued = token_request(link).json()["access_token"]
    with connection.cursor() as cursor:
        cursor.execute("SELECT token, token_checksum FROM oauth2_provider_accesstoken")
        rows = cursor.fetchall()

    assert rows == [("", hashlib.sha256(issued.encode()).hexdigest())]
    assert bearer(issued).get("/api/v1/prescribers/").status_code == 200
    # What the table holds opens nothing.
    assert bearer(rows[0][1]).get("/api/v1/prescribers/").status_code == 401


def test_oauth_system_checks_are_no_longer_silenced(settings):
    from django.core import checks

    assert "oauth2_provider.W006" not in settings.SILENCED_SYSTEM_CHECKS
    ids = {message.id for message in checks.run_checks(include_deployment_checks=True)}
    assert "oauth2_provider.W006" not in ids


# --- scopes per client ----------------------------------------------------------------------


def test_a_read_only_client_gets_read_scopes_and_no_write_scope():
    link = clinic_client(allowed_scopes=["patients:read", "prescriptions:read"])

    default = token_request(link)
    write = token_request(link, scope="prescriptions:write")
    read = token_request(link, scope="patients:read")

    assert default.status_code == 200
    assert sorted(default.json()["scope"].split()) == ["patients:read", "prescriptions:read"]
    assert write.status_code == 400
    assert write.json()["error"] == "invalid_scope"
    assert read.json()["scope"] == "patients:read"
    assert AccessToken.objects.filter(scope__contains="write").count() == 0
    token = default.json()["access_token"]
    assert bearer(token).get("/api/v1/patients/").status_code == 200
    assert bearer(token).post("/api/v1/patients/", {}, format="json").status_code == 403


def test_a_client_gets_every_scope_unless_narrowed():
    response = token_request(clinic_client())

    assert sorted(response.json()["scope"].split()) == [
        "patients:read",
        "patients:write",
        "prescriptions:read",
        "prescriptions:write",
    ]


def test_narrowing_a_clients_scopes_stops_its_wider_tokens_at_once():
    link = clinic_client()
    token = token_request(link).json()["access_token"]

    ClinicClient.objects.filter(pk=link.pk).update(allowed_scopes=["patients:read"])

    assert bearer(token).get("/api/v1/patients/").status_code == 401


# --- throttles ----------------------------------------------------------------------------------


def test_the_token_endpoint_is_throttled_per_address(settings):
    settings.REST_FRAMEWORK = {
        **settings.REST_FRAMEWORK,
        "DEFAULT_THROTTLE_RATES": {**settings.REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"], "token": "3/minute"},
    }
    link = clinic_client()

    statuses = [token_request(link).status_code for _ in range(4)]
    limited = token_request(link)
    elsewhere = token_request(link, address="198.51.100.7")

    assert statuses == [200, 200, 200, 429]
    assert limited["Content-Type"] == "application/problem+json"
    assert 1 <= int(limited["Retry-After"]) <= 60
    assert elsewhere.status_code == 200


def test_an_address_presenting_invalid_tokens_is_refused_even_a_valid_one_until_the_window_ends(settings):
    settings.REST_FRAMEWORK = {
        **settings.REST_FRAMEWORK,
        "DEFAULT_THROTTLE_RATES": {
            **settings.REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"],
            "invalid_token": "3/minute",
        },
    }
    token = token_request(clinic_client()).json()["access_token"]

    guesses = [bearer(f"guess-{n}").get("/api/v1/patients/").status_code for n in range(4)]
    valid_here = bearer(token).get("/api/v1/patients/")
    valid_elsewhere = bearer(token, address="198.51.100.7").get("/api/v1/patients/")

    assert guesses == [401, 401, 401, 429]
    assert valid_here.status_code == 429
    assert valid_here["Content-Type"] == "application/problem+json"
    assert int(valid_here["Retry-After"]) >= 1
    assert valid_elsewhere.status_code == 200
