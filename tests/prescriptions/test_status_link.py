"""The patient's status link: signed, expiring, first name only, gone once cancelled, rate-limited,
and handed to the clinic in the API and in webhooks."""

from __future__ import annotations

import datetime
import re

import pytest
from django.core.cache import cache
from django.test import Client
from django.utils import timezone

from prescriptions import services
from prescriptions.models import Prescription, Status
from prescriptions.status_link import status_link_prescription_id, status_link_token, status_link_url
from tests.support.factories import paid_prescription, shipped_prescription

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _fresh_cache():  # type: ignore[no-untyped-def]
    cache.clear()


def track_path(prescription: Prescription) -> str:
    return f"/track/{status_link_token(prescription=prescription)}/"


def test_the_link_shows_the_plain_status_and_tracking_with_the_first_name_only(formulary):
    prescription = shipped_prescription(
        tracking_number="SIM4440003333",
        patient={"given_name": "Robin", "family_name": "Quarterly", "postal_code": "LS1 1AA"},
    )

    response = Client().get(track_path(prescription))
    body = response.content.decode()

    assert response.status_code == 200
    assert "Hello Robin" in body
    assert re.search(r"Shipped with Royal Mail at \d\d:\d\d, tracking SIM4440003333", body)
    assert 'href="https://www.royalmail.com/track-your-item#/tracking-results/SIM4440003333"' in body
    for identifier in ("Quarterly", "LS1 1AA", prescription.patient.nhs_number, "Paracetamol"):
        assert identifier not in body
    assert response["Content-Security-Policy"].startswith("default-src 'none'")
    assert "no-store" in [directive.strip() for directive in response["Cache-Control"].split(",")]
    assert 'name="viewport"' in body


def test_waiting_for_a_pharmacist_reads_with_our_pharmacist_since_the_time_it_began(formulary):
    from events.models import Event
    from tests.prescriptions.factories import scenario

    prescription = scenario()
    services.prescription_transition(
        prescription_id=prescription.pk,
        to=Status.AWAITING_PHARMACIST,
        event_type="prescription.awaiting_pharmacist",
        actor="test",
    )
    entered = Event.objects.get(
        aggregate_id=prescription.pk, type="prescription.awaiting_pharmacist"
    ).created_at

    body = Client().get(track_path(prescription)).content.decode()

    assert f"With our pharmacist since {timezone.localtime(entered):%H:%M}." in body


def test_the_token_is_the_same_in_the_api_and_every_time(formulary, clinic_a):
    prescription = paid_prescription(clinic=clinic_a.clinic)

    detail = clinic_a.api.get(f"/api/v1/prescriptions/{prescription.pk}/").json()

    assert detail["status_url"] == f"http://127.0.0.1:8000{track_path(prescription)}"
    assert status_link_url(prescription=prescription) == detail["status_url"]
    assert status_link_prescription_id(token=status_link_token(prescription=prescription)) == prescription.pk


def test_the_api_list_is_unchanged_and_carries_no_status_url(formulary, clinic_a):
    paid_prescription(clinic=clinic_a.clinic)

    listed = clinic_a.api.get("/api/v1/prescriptions/").json()["results"]

    assert "status_url" not in listed[0]


def test_the_link_stops_working_when_it_expires(formulary, settings):
    settings.STATUS_LINK_MAX_AGE_DAYS = 30
    prescription = paid_prescription()
    Prescription.objects.filter(pk=prescription.pk).update(
        created_at=timezone.now() - datetime.timedelta(days=30, minutes=1)
    )
    prescription.refresh_from_db()

    response = Client().get(track_path(prescription))

    assert response.status_code == 404
    assert "This link is not available" in response.content.decode()
    assert prescription.patient.given_name not in response.content.decode()


def test_the_link_stops_working_once_the_prescription_is_cancelled(formulary):
    prescription = paid_prescription()
    path = track_path(prescription)
    assert Client().get(path).status_code == 200

    services.prescription_cancel(
        clinic=None, prescription_id=prescription.pk, reason="no longer needed", actor="test"
    )

    response = Client().get(path)
    assert response.status_code == 404
    assert prescription.patient.given_name not in response.content.decode()


@pytest.mark.parametrize(
    "token",
    [
        "nonsense",
        "eyJwIjoxfQ:1tQ2ab:forged-signature-forged-signature-forge",
        "a" * 500,
        "%00",
        "é",
        "eyJwIjoxfQ:1tQ2ab",
    ],
)
def test_a_bad_token_gets_the_not_available_page_never_an_error(token, formulary):
    response = Client().get(f"/track/{token}/")

    assert response.status_code == 404
    assert "This link is not available" in response.content.decode()


def test_a_token_signed_for_something_else_is_refused(formulary, settings):
    prescription = paid_prescription()
    from django.core import signing

    other = signing.dumps({"p": prescription.pk})  # SECRET_KEY, but not the status-link salt

    assert Client().get(f"/track/{other}/").status_code == 404


def test_the_link_is_rate_limited_per_address(formulary, settings):
    settings.STATUS_LINK_RATE_PER_MINUTE = 3
    prescription = paid_prescription()
    path = track_path(prescription)
    client = Client()

    statuses = [client.get(path).status_code for _ in range(4)]
    elsewhere = Client(REMOTE_ADDR="10.9.9.9").get(path).status_code

    assert statuses == [200, 200, 200, 429]
    assert elsewhere == 200


def test_clinic_webhooks_carry_the_status_url(formulary):
    from events import webhooks
    from events.models import ClinicWebhookEndpoint, Event

    prescription = shipped_prescription()
    ClinicWebhookEndpoint.objects.create(
        clinic=prescription.clinic, url="https://clinic.example/h", secret="s"
    )
    event = Event.objects.get(aggregate_id=prescription.pk, type="prescription.shipped")

    delivery = webhooks.webhook_deliveries_create(event_id=event.pk)

    assert delivery.payload["prescription"]["status_url"] == status_link_url(prescription=prescription)
    assert delivery.payload["prescription"]["tracking_number"] == "SIM0123456789"
