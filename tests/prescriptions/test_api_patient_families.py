"""One case per patient-data family, end to end through the clinic API: register the patient,
submit the prescription, run the saga's check consumer on the received event (as the worker
does), and read the outcome back through the API."""

from __future__ import annotations

import datetime

import pytest
from django.utils import timezone

from events.models import Event
from prescriptions.models import Medication
from saga.tasks import prescription_check
from tests.conftest import prescription_body
from tests.prescriptions.factories import adhd_context

pytestmark = pytest.mark.django_db

PATIENTS, PRESCRIPTIONS = "/api/v1/patients/", "/api/v1/prescriptions/"
CEFALEXIN, METHYLPHENIDATE_10 = "323653004", "324907005"
PATIENT = {
    "given_name": "Ada",
    "family_name": "Lovelace",
    "birth_date": "1990-12-10",
    "nhs_number": "9434765919",
    "address_line": "1 Synthetic Street",
    "postal_code": "LS1 1AA",
}


def register(setup, key: str = "patient", **fields) -> dict:  # type: ignore[no-untyped-def]
    response = setup.api.post(PATIENTS, {**PATIENT, **fields}, format="json", HTTP_IDEMPOTENCY_KEY=key)
    assert response.status_code == 201, response.content
    return response.json()


def prescribe_and_check(setup, body: dict, key: str = "prescription") -> dict:  # type: ignore[no-untyped-def]
    created = setup.api.post(PRESCRIPTIONS, body, format="json", HTTP_IDEMPOTENCY_KEY=key)
    assert created.status_code == 201, created.content
    identifier = created.json()["id"]
    received = Event.objects.get(aggregate_id=identifier, type="prescription.received")
    prescription_check(received.pk)
    response = setup.api.get(f"{PRESCRIPTIONS}{identifier}/")
    assert response.status_code == 200
    return response.json()


def json_dates(context: dict) -> dict:
    return {
        key: [{name: str(value) for name, value in entry.items()} for entry in rows]
        for key, rows in context.items()
    }


def test_a_coded_penicillin_anaphylaxis_rejects_a_cephalosporin_through_the_api(clinic_a, formulary):
    """Family: allergies as clinical data. Source: BNF Penicillins, hypersensitivity."""
    patient = register(
        clinic_a,
        allergies=[
            {
                "substance": "Penicillin V",
                "code": "764146007",
                "criticality": "high",
                "reactions": [{"manifestation": "anaphylaxis", "code": "39579001", "severity": "severe"}],
            }
        ],
    )
    body = prescription_body(patient["id"], clinic_a.prescriber.pk, Medication.objects.get(code=CEFALEXIN))
    body["items"][0].update(unit="capsule", dose_text="One capsule four times a day")

    prescription = prescribe_and_check(clinic_a, body)

    assert prescription["status"] == "rejected"
    finding = next(r for r in prescription["check_results"] if r["code"] == "allergy.cross_sensitivity")
    assert finding["severity"] == "block"
    assert "allergic to Penicillin V (severe anaphylaxis; criticality high)" in finding["message"]
    assert "cephalosporins" in finding["message"]
    assert "Penicillin" in prescription["status_reason"]


def test_an_maoi_stopped_ten_days_ago_rejects_methylphenidate_through_the_api(clinic_a, formulary):
    """Family: current medicines with dates. Source: methylphenidate SmPC 4.3 (MAOI within 14 days)."""
    stopped = timezone.localdate() - datetime.timedelta(days=10)
    patient = register(
        clinic_a,
        current_medications=[
            {"name": "Phenelzine 15mg tablets", "code": "321886008", "started_on": "2025-01-06",
             "stopped_on": stopped.isoformat(), "daily_dose": "45", "daily_dose_unit": "mg"}
        ],
    )  # fmt: skip
    body = prescription_body(
        patient["id"],
        clinic_a.prescriber.pk,
        Medication.objects.get(code=METHYLPHENIDATE_10),
        item={
            "dose_text": "One tablet twice a day",
            "quantity": "56",
            "quantity_words": "fifty six",
            "days_supply": 28,
        },
        **json_dates(adhd_context()),
    )

    prescription = prescribe_and_check(clinic_a, body)

    assert prescription["status"] == "rejected"
    finding = next(r for r in prescription["check_results"] if r["code"] == "interaction.contraindicated")
    assert f"stopped on {stopped:%Y-%m-%d}, 10 days ago, within its 14-day washout" in finding["message"]


def test_a_cardiac_history_sent_with_a_stimulant_waits_for_a_pharmacist_through_the_api(clinic_a, formulary):
    """Family: patient context. Source: NICE NG87 (cardiology opinion before ADHD medicines)."""
    patient = register(clinic_a)
    body = prescription_body(
        patient["id"],
        clinic_a.prescriber.pk,
        Medication.objects.get(code=METHYLPHENIDATE_10),
        item={
            "dose_text": "One tablet twice a day",
            "quantity": "56",
            "quantity_words": "fifty six",
            "days_supply": 28,
        },
        clinical_context={"cardiac_history": ["exertional_syncope"]},
        **json_dates(adhd_context()),
    )

    prescription = prescribe_and_check(clinic_a, body)

    assert prescription["status"] == "awaiting_pharmacist"
    finding = next(r for r in prescription["check_results"] if r["code"] == "context.cardiac_history")
    assert finding["severity"] == "needs_pharmacist"
    assert "fainting on exertion" in finding["message"]
    detail = clinic_a.api.get(f"{PATIENTS}{patient['id']}/").json()
    assert detail["clinical_context"]["cardiac_history"] == ["exertional_syncope"]
