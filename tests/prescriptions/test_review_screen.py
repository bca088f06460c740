"""The pharmacist's screen shows its working: the facts behind each finding, the prescriber's
registration, how long each prescription has waited, a required reason, and keyboard shortcuts."""

from __future__ import annotations

import datetime
import re

import pytest
from django.utils import timezone

from prescriptions.models import PharmacistReview, Prescription, Status
from tests.prescriptions.test_admin import awaiting, review_url
from tests.support.factories import StaffClient, pharmacist_create

pytestmark = pytest.mark.django_db


@pytest.fixture
def pharmacist_client():  # type: ignore[no-untyped-def]
    client = StaffClient()
    client.force_login(pharmacist_create())
    return client


def test_each_finding_shows_the_facts_it_used(formulary, pharmacist_client):
    prescription = awaiting()
    results = [
        *prescription.check_results,
        {
            "code": "dose.weight_based",
            "severity": "needs_pharmacist",
            "message": "Dose above 1 mg/kg/day",
            "source": "BNFc",
            "facts": {
                "age_years": 9,
                "weight_kg": "28.0",
                "mg_per_kg_per_day": "1.4",
                "last_supplies": [{"issued_on": "2026-11-01", "days_supply": 28, "days_remaining": 3}],
                "allergies": [{"substance": "penicillin", "reaction": "rash"}],
            },
        },
    ]
    Prescription.objects.filter(pk=prescription.pk).update(check_results=results)

    body = pharmacist_client.get(review_url(prescription)).content.decode()

    row = body[body.index('data-check="dose.weight_based"') :]
    row = row[: row.index("</tr>")]
    assert "<dt>age (years)</dt><dd>9</dd>" in row
    assert "<dt>weight (kg)</dt><dd>28.0</dd>" in row
    assert "<dt>mg/kg/day</dt><dd>1.4</dd>" in row
    assert "<dt>days remaining</dt><dd>3</dd>" in row
    assert "<dt>substance</dt><dd>penicillin</dd>" in row
    assert "<dt>reaction</dt><dd>rash</dd>" in row


def test_facts_are_escaped(formulary, pharmacist_client):
    prescription = awaiting()
    hostile = {
        "code": "x",
        "severity": "info",
        "message": "m",
        "source": "s",
        "facts": {"<b>": "<script>1</script>"},
    }
    Prescription.objects.filter(pk=prescription.pk).update(check_results=[hostile])

    body = pharmacist_client.get(review_url(prescription)).content.decode()

    assert "<script>1</script>" not in body
    assert "&lt;script&gt;1&lt;/script&gt;" in body


def test_the_review_shows_the_prescribers_registration_and_the_wait(formulary, pharmacist_client):
    prescription = awaiting()
    prescriber = prescription.prescriber

    body = pharmacist_client.get(review_url(prescription)).content.decode()

    assert re.search(
        rf"<b>Prescriber:</b> {prescriber.given_name} {prescriber.family_name},\s+"
        rf"General Medical Council \(GB\) {prescriber.registration_number}",
        body,
    )
    assert "Waiting for a pharmacist since" in body


def test_the_review_has_keyboard_shortcuts_and_a_next_link(formulary, pharmacist_client):
    first, second = awaiting(), awaiting()

    body = pharmacist_client.get(review_url(first)).content.decode()

    assert '<script src="/static/prescriptions/review.js" defer></script>' in body
    assert f'data-next-url="/admin/prescriptions/prescription/{second.pk}/review/"' in body
    assert "<kbd>a</kbd> approve, <kbd>r</kbd> reject" in body


def test_a_decision_without_a_reason_is_refused_and_nothing_changes(formulary, pharmacist_client):
    prescription = awaiting()

    response = pharmacist_client.post(review_url(prescription), {"decision": "approved", "reason": "  "})

    assert response.status_code == 200
    assert "This field is required." in response.content.decode()
    assert PharmacistReview.objects.count() == 0
    assert Prescription.objects.get(pk=prescription.pk).status == Status.AWAITING_PHARMACIST


def test_the_queue_shows_how_long_each_has_waited_and_marks_the_long_waits(formulary, pharmacist_client):
    waiting = awaiting()
    long_waiting = awaiting()
    Prescription.objects.filter(pk=long_waiting.pk).update(
        updated_at=timezone.now() - datetime.timedelta(hours=3, minutes=5)
    )

    body = pharmacist_client.get("/admin/prescriptions/pharmacistqueue/").content.decode()

    assert (
        '<span class="waited-long">3 h 05 min</span>' in body
        or '<span class="waited-long">3 h 04 min</span>' in body
    )
    assert '<span class="waited">0 min</span>' in body
    assert f"Review #{waiting.pk}" in body
