"""Bad input on the prescription fields the clinical checks read: every problem is listed as
a pointer, and nothing is stored."""

from __future__ import annotations

import datetime

import pytest

from events.models import Event
from patients.models import Diagnosis, IdempotencyKey, Observation
from prescriptions.models import Prescription
from tests.conftest import prescription_body

pytestmark = pytest.mark.django_db

TODAY = datetime.date.today()
TOMORROW = (TODAY + datetime.timedelta(days=1)).isoformat()


def post(setup, body):  # type: ignore[no-untyped-def]
    return setup.api.post("/api/v1/prescriptions/", body, format="json", HTTP_IDEMPOTENCY_KEY="clinical-1")


@pytest.mark.parametrize(
    ("fields", "pointer", "detail"),
    [
        (
            {"observations": [{"kind": "pulse", "value": "400", "observed_on": TODAY.isoformat()}]},
            "#/observations/0/value",
            "Must be between 20 and 250 for pulse.",
        ),
        (
            {"observations": [{"kind": "blood_pressure", "value": "120", "observed_on": TODAY.isoformat()}]},
            "#/observations/0/diastolic",
            "Blood pressure needs the diastolic value.",
        ),
        (
            {
                "observations": [
                    {"kind": "weight", "value": "70", "diastolic": "60", "observed_on": TODAY.isoformat()}
                ]
            },
            "#/observations/0/diastolic",
            "Only blood pressure has a diastolic value.",
        ),
        (
            {"observations": [{"kind": "pulse", "value": "70", "observed_on": TOMORROW}]},
            "#/observations/0/observed_on",
            "Cannot be in the future.",
        ),
        (
            {
                "diagnoses": [
                    {
                        "code_system": "http://hl7.org/fhir/sid/icd-10",
                        "code": "F90.0",
                        "recorded_on": TOMORROW,
                    }
                ]
            },
            "#/diagnoses/0/recorded_on",
            "Cannot be in the future.",
        ),
        (
            {
                "diagnoses": [
                    {
                        "code_system": "http://hl7.org/fhir/sid/icd-10",
                        "code": "F90 0!",
                        "recorded_on": TODAY.isoformat(),
                    }
                ]
            },
            "#/diagnoses/0/code",
            None,
        ),
        (
            {
                "earliest_fill_date": (TODAY - datetime.timedelta(days=1)).isoformat(),
                "issued_on": TODAY.isoformat(),
            },
            "#/earliest_fill_date",
            "Must be on or after the prescribing date and within 180 days of it.",
        ),
        (
            {
                "earliest_fill_date": (TODAY + datetime.timedelta(days=181)).isoformat(),
                "issued_on": TODAY.isoformat(),
            },
            "#/earliest_fill_date",
            "Must be on or after the prescribing date and within 180 days of it.",
        ),
        ({"repeats": 13}, "#/repeats", None),
        (
            {"observations": [{"kind": "egfr", "value": "250", "observed_on": TODAY.isoformat()}]},
            "#/observations/0/value",
            "Must be between 1 and 200 for egfr.",
        ),
        (
            {"observations": [{"kind": "height", "value": "12", "observed_on": TODAY.isoformat()}]},
            "#/observations/0/value",
            "Must be between 30 and 250 for height.",
        ),
        ({"clinical_context": {"breastfeeding": "often"}}, "#/clinical_context/breastfeeding", None),
        ({"clinical_context": {"hepatic_impairment": "bad"}}, "#/clinical_context/hepatic_impairment", None),
    ],
)
def test_bad_clinical_fields_are_refused_with_a_pointer_and_nothing_is_stored(
    clinic_a, patient_a, paracetamol, fields, pointer, detail
):  # type: ignore[no-untyped-def]
    response = post(clinic_a, prescription_body(patient_a.pk, clinic_a.prescriber.pk, paracetamol, **fields))

    assert response.status_code == 400, response.content
    assert response["Content-Type"] == "application/problem+json"
    errors = response.json()["errors"]
    assert [error["pointer"] for error in errors] == [pointer]
    if detail is not None:
        assert errors[0]["detail"] == detail
    assert Prescription.objects.count() == 0
    assert Diagnosis.objects.count() == 0
    assert Observation.objects.count() == 0
    assert IdempotencyKey.objects.count() == 0
    assert not Event.objects.filter(aggregate_type="prescription").exists()


def test_several_bad_clinical_fields_are_all_listed(clinic_a, patient_a, paracetamol):  # type: ignore[no-untyped-def]
    body = prescription_body(
        patient_a.pk,
        clinic_a.prescriber.pk,
        paracetamol,
        observations=[{"kind": "pulse", "value": "400", "observed_on": TOMORROW}],
        diagnoses=[{"code_system": "nope", "code": "F90.0", "recorded_on": TODAY.isoformat()}],
    )

    response = post(clinic_a, body)

    assert response.status_code == 400
    assert sorted(error["pointer"] for error in response.json()["errors"]) == [
        "#/diagnoses/0/code_system",
        "#/observations/0/observed_on",
    ]
    assert Prescription.objects.count() == 0


def test_valid_clinical_fields_are_recorded_on_the_patient(clinic_a, patient_a, paracetamol):  # type: ignore[no-untyped-def]
    body = prescription_body(
        patient_a.pk,
        clinic_a.prescriber.pk,
        paracetamol,
        observations=[
            {"kind": "blood_pressure", "value": "118", "diastolic": "76", "observed_on": TODAY.isoformat()}
        ],
        diagnoses=[
            {
                "code_system": "http://hl7.org/fhir/sid/icd-10",
                "code": "F90.0",
                "recorded_on": TODAY.isoformat(),
            }
        ],
    )

    response = post(clinic_a, body)

    assert response.status_code == 201, response.content
    assert list(Diagnosis.objects.values_list("patient_id", "code")) == [(patient_a.pk, "F90.0")]
    assert list(Observation.objects.values_list("kind", "value", "diastolic")) == [
        ("blood_pressure", 118, 76)
    ]


def test_a_clinical_context_sent_with_a_prescription_updates_only_the_fields_it_names(
    clinic_a, patient_a, paracetamol
):  # type: ignore[no-untyped-def]
    patient_a.hepatic_impairment = "mild"
    patient_a.save(update_fields=["hepatic_impairment"])
    body = prescription_body(
        patient_a.pk,
        clinic_a.prescriber.pk,
        paracetamol,
        clinical_context={"pregnant": True, "cardiac_history": ["palpitations"]},
        observations=[{"kind": "egfr", "value": "58", "observed_on": TODAY.isoformat()}],
    )

    response = post(clinic_a, body)

    assert response.status_code == 201, response.content
    patient_a.refresh_from_db()
    assert (patient_a.pregnant, patient_a.cardiac_history, patient_a.hepatic_impairment) == (
        True,
        ["palpitations"],
        "mild",
    )
    assert patient_a.observations.get().kind == "egfr"
