"""The clinic API for patients: registration, validation, scoped and paginated reads."""

from __future__ import annotations

import datetime
from decimal import Decimal

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from events.models import Event, OutboxMessage
from patients.models import Allergy, CurrentMedication, IdempotencyKey, Patient
from tests.patients.factories import AllergyFactory, CurrentMedicationFactory, PatientFactory

pytestmark = pytest.mark.django_db

PATIENTS = "/api/v1/patients/"


def register(setup, body, key="patient-1"):  # type: ignore[no-untyped-def]
    return setup.api.post(PATIENTS, body, format="json", HTTP_IDEMPOTENCY_KEY=key)


def a_patient_body(**overrides):  # type: ignore[no-untyped-def]
    return {
        "given_name": "Grace",
        "family_name": "Hopper",
        "birth_date": "1986-12-09",
        "sex": "female",
        "nhs_number": "9434765919",
        "address_line": "2 Test Row",
        "city": "York",
        "region": "North Yorkshire",
        "postal_code": "YO1 7HH",
        "email": "grace@example.org",
        "phone": "+447700900123",
        "allergies": [
            {
                "substance": "penicillin",
                "reaction": "rash",
                "code": "764146007",
                "category": "allergy",
                "criticality": "high",
                "reactions": [{"manifestation": "anaphylaxis", "code": "39579001", "severity": "severe"}],
            }
        ],
        "current_medications": [
            {
                "name": "Sertraline 50mg tablets",
                "code": "321949006",
                "started_on": None,
                "stopped_on": None,
                "dose_text": "",
                "daily_dose": None,
                "daily_dose_unit": "",
            }
        ],
        **overrides,
    }


def pointers(response) -> list[str]:  # type: ignore[no-untyped-def]
    return sorted(error["pointer"] for error in response.json()["errors"])


def assert_nothing_stored() -> None:
    assert Patient.objects.count() == 0
    assert Allergy.objects.count() == 0
    assert CurrentMedication.objects.count() == 0
    assert Event.objects.count() == 0
    assert IdempotencyKey.objects.count() == 0


# --- registration -------------------------------------------------------------------------


def test_it_registers_a_patient_with_allergies_and_current_medications(clinic_a):
    response = register(clinic_a, a_patient_body())

    assert response.status_code == 201, response.content
    body = response.json()
    patient = Patient.objects.get()
    assert set(body) == {
        "id",
        "given_name",
        "family_name",
        "birth_date",
        "sex",
        "nhs_number",
        "address_line",
        "city",
        "region",
        "postal_code",
        "email",
        "phone",
        "allergies",
        "current_medications",
        "clinical_context",
        "created_at",
    }
    assert body == {
        **a_patient_body(),
        "clinical_context": body["clinical_context"],
        "id": patient.pk,
        "created_at": body["created_at"],
    }
    assert patient.clinic == clinic_a.clinic
    assert list(
        patient.allergies.values("substance", "reaction", "code", "category", "criticality", "reactions")
    ) == [
        {
            "substance": "penicillin",
            "reaction": "rash",
            "code": "764146007",
            "category": "allergy",
            "criticality": "high",
            "reactions": [{"manifestation": "anaphylaxis", "code": "39579001", "severity": "severe"}],
        }
    ]
    assert list(patient.current_medications.values("name", "code", "stopped_on")) == [
        {"name": "Sertraline 50mg tablets", "code": "321949006", "stopped_on": None}
    ]


def test_registration_records_a_patient_registered_event_that_names_no_identifier(clinic_a):
    response = register(clinic_a, a_patient_body())

    event = Event.objects.get()
    assert event.aggregate_type == "patient"
    assert event.aggregate_id == response.json()["id"]
    assert event.sequence == 1
    assert event.clinic_id == clinic_a.clinic.pk
    assert event.type == "patient.registered"
    assert event.payload == {}
    assert event.actor.startswith("client:")
    assert OutboxMessage.objects.count() == 0


def test_only_the_required_fields_are_needed_and_the_rest_default_to_blank(clinic_a):
    response = register(clinic_a, {"given_name": "Alan", "family_name": "Turing", "birth_date": "1954-06-07"})

    assert response.status_code == 201, response.content
    body = response.json()
    assert body["sex"] == "unknown"
    assert body["nhs_number"] == ""
    assert body["email"] == ""
    assert body["allergies"] == []
    assert body["current_medications"] == []


def test_an_nhs_number_written_with_spaces_is_stored_without_them(clinic_a):
    response = register(clinic_a, a_patient_body(nhs_number="943 476 5919"))

    assert response.status_code == 201, response.content
    assert response.json()["nhs_number"] == "9434765919"
    assert Patient.objects.get().nhs_number == "9434765919"


# --- validation ---------------------------------------------------------------------------


@pytest.mark.parametrize("nhs_number", ["1234567890", "943476591", "94347659190", "943476591X"])
def test_an_invalid_nhs_number_is_refused_with_a_pointer_to_it(clinic_a, nhs_number):
    response = register(clinic_a, a_patient_body(nhs_number=nhs_number))

    assert response.status_code == 400
    assert response["Content-Type"] == "application/problem+json"
    assert response.json()["type"] == "/problems/validation-error"
    assert pointers(response) == ["#/nhs_number"]
    assert_nothing_stored()


def test_a_birth_date_in_the_future_is_refused(clinic_a):
    tomorrow = timezone.localdate() + datetime.timedelta(days=1)

    response = register(clinic_a, a_patient_body(birth_date=tomorrow.isoformat()))

    assert response.status_code == 400
    assert response.json()["errors"] == [
        {"pointer": "#/birth_date", "detail": "Date of birth cannot be in the future."}
    ]
    assert_nothing_stored()


def test_a_birth_date_of_today_is_accepted(clinic_a):
    response = register(clinic_a, a_patient_body(birth_date=timezone.localdate().isoformat()))

    assert response.status_code == 201


def test_every_invalid_field_is_listed_at_once(clinic_a):
    body = a_patient_body(
        birth_date="2999-01-01",
        sex="dragon",
        nhs_number="1234567890",
        email="not-an-email",
        allergies=[{"substance": "latex"}, {"reaction": "hives"}],
    )
    del body["given_name"]

    response = register(clinic_a, body)

    assert response.status_code == 400
    problem = response.json()
    assert problem["title"] == "Your request has invalid fields"
    assert problem["detail"] == "6 field(s) are invalid; see errors."
    assert pointers(response) == [
        "#/allergies/1/substance",
        "#/birth_date",
        "#/email",
        "#/given_name",
        "#/nhs_number",
        "#/sex",
    ]
    assert_nothing_stored()


def test_the_older_allergy_shape_is_still_accepted_and_gets_the_defaults(clinic_a):
    response = register(clinic_a, a_patient_body(allergies=[{"substance": "penicillin", "reaction": "rash"}]))

    assert response.status_code == 201, response.content
    assert response.json()["allergies"] == [
        {
            "substance": "penicillin",
            "reaction": "rash",
            "code": "",
            "category": "allergy",
            "criticality": "",
            "reactions": [],
        }
    ]


@pytest.mark.parametrize(
    ("allergy", "pointer"),
    [
        ({"substance": "penicillin", "code": "0123"}, "#/allergies/0/code"),
        ({"substance": "penicillin", "code": "penicillin"}, "#/allergies/0/code"),
        ({"substance": "penicillin", "category": "food"}, "#/allergies/0/category"),
        ({"substance": "penicillin", "criticality": "very"}, "#/allergies/0/criticality"),
        (
            {"substance": "penicillin", "reactions": [{"manifestation": ""}]},
            "#/allergies/0/reactions/0/manifestation",
        ),
        (
            {"substance": "penicillin", "reactions": [{"manifestation": "rash", "severity": "awful"}]},
            "#/allergies/0/reactions/0/severity",
        ),
        (
            {"substance": "penicillin", "reactions": [{"manifestation": "rash", "code": "12"}]},
            "#/allergies/0/reactions/0/code",
        ),
        ({"substance": "penicillin", "reactions": "anaphylaxis"}, "#/allergies/0/reactions"),
    ],
)
def test_a_bad_allergy_value_is_refused_with_a_pointer_and_nothing_is_stored(clinic_a, allergy, pointer):
    response = register(clinic_a, a_patient_body(allergies=[allergy]))

    assert response.status_code == 400
    assert response["Content-Type"] == "application/problem+json"
    assert pointers(response) == [pointer]
    assert_nothing_stored()


TOMORROW = (timezone.localdate() + datetime.timedelta(days=1)).isoformat()


@pytest.mark.parametrize(
    ("medicine", "pointer"),
    [
        ({"started_on": TOMORROW}, "#/current_medications/0/started_on"),
        ({"started_on": "2026-02-01", "stopped_on": "2026-01-01"}, "#/current_medications/0/stopped_on"),
        ({"stopped_on": "2999-01-01"}, "#/current_medications/0/stopped_on"),
        ({"daily_dose": "45"}, "#/current_medications/0/daily_dose_unit"),
        ({"daily_dose_unit": "mg"}, "#/current_medications/0/daily_dose"),
        ({"daily_dose": "-1", "daily_dose_unit": "mg"}, "#/current_medications/0/daily_dose"),
        ({"daily_dose": "45", "daily_dose_unit": "tablets"}, "#/current_medications/0/daily_dose_unit"),
    ],
)
def test_a_bad_current_medicine_value_is_refused_with_a_pointer_and_nothing_is_stored(
    clinic_a, medicine, pointer
):
    body = a_patient_body(current_medications=[{"name": "Phenelzine 15mg tablets", **medicine}])

    response = register(clinic_a, body)

    assert response.status_code == 400
    assert pointers(response) == [pointer]
    assert_nothing_stored()


def test_a_current_medicine_keeps_its_dates_and_daily_dose(clinic_a):
    medicine = {
        "name": "Phenelzine 15mg tablets",
        "code": "321886008",
        "started_on": "2025-06-01",
        "stopped_on": "2026-01-20",
        "dose_text": "One tablet three times a day",
        "daily_dose": "45.000",
        "daily_dose_unit": "mg",
    }

    response = register(clinic_a, a_patient_body(current_medications=[medicine]))

    assert response.status_code == 201, response.content
    assert response.json()["current_medications"] == [medicine]
    stored = CurrentMedication.objects.get()
    assert (stored.stopped_on, stored.daily_dose) == (datetime.date(2026, 1, 20), Decimal(45))


def test_the_schema_documents_the_current_medicine_fields_with_units_and_examples(client):  # type: ignore[no-untyped-def]
    schema = client.get("/api/schema/", HTTP_ACCEPT="application/json").json()

    fields = schema["components"]["schemas"]["CurrentMedicationRequest"]["properties"]
    assert fields["stopped_on"]["format"] == "date"
    assert "14 days for an MAOI" in fields["stopped_on"]["description"]
    assert "(mg)" in fields["daily_dose"]["description"]
    assert "mg, microgram or g" in fields["daily_dose_unit"]["description"]
    examples = schema["paths"][PATIENTS]["post"]["requestBody"]["content"]["application/json"]["examples"]
    medicine = next(iter(examples.values()))["value"]["current_medications"][0]
    assert medicine["daily_dose_unit"] == "mg"


@pytest.mark.parametrize(
    ("context", "pointer"),
    [
        ({"pregnant": "maybe"}, "#/clinical_context/pregnant"),
        ({"hepatic_impairment": "Child-Pugh D"}, "#/clinical_context/hepatic_impairment"),
        ({"cardiac_history": ["broken heart"]}, "#/clinical_context/cardiac_history/0"),
        ({"cardiac_history": ["palpitations", "palpitations"]}, "#/clinical_context/cardiac_history"),
        ({"cardiac_history": "palpitations"}, "#/clinical_context/cardiac_history"),
        ({"cardiology_review_on": TOMORROW}, "#/clinical_context/cardiology_review_on"),
    ],
)
def test_a_bad_clinical_context_value_is_refused_with_a_pointer_and_nothing_is_stored(
    clinic_a, context, pointer
):
    response = register(clinic_a, a_patient_body(clinical_context=context))

    assert response.status_code == 400
    assert pointers(response) == [pointer]
    assert_nothing_stored()


def test_the_clinical_context_is_stored_and_shown(clinic_a):
    context = {
        "pregnant": True,
        "breastfeeding": False,
        "hepatic_impairment": "moderate",
        "cardiac_history": ["congenital_heart_disease", "palpitations"],
        "cardiology_review_on": "2026-10-01",
    }

    response = register(clinic_a, a_patient_body(clinical_context=context))

    assert response.status_code == 201, response.content
    assert response.json()["clinical_context"] == context
    patient = Patient.objects.get()
    assert (patient.pregnant, patient.hepatic_impairment) == (True, "moderate")
    assert patient.clinical_context_updated_on == timezone.localdate()


def test_without_a_clinical_context_nothing_is_recorded(clinic_a):
    response = register(clinic_a, a_patient_body())

    assert response.json()["clinical_context"] == {
        "pregnant": None,
        "breastfeeding": None,
        "hepatic_impairment": "",
        "cardiac_history": [],
        "cardiology_review_on": None,
    }


def test_the_schema_documents_the_clinical_context_with_units_and_examples(client):  # type: ignore[no-untyped-def]
    schema = client.get("/api/schema/", HTTP_ACCEPT="application/json").json()

    fields = schema["components"]["schemas"]["ClinicalContextRequest"]["properties"]
    assert "Child-Pugh" in fields["hepatic_impairment"]["description"]
    assert "NICE NG87" in fields["cardiac_history"]["description"]
    assert fields["cardiology_review_on"]["format"] == "date"
    observation = schema["components"]["schemas"]["ObservationInputRequest"]["properties"]["value"]
    assert "mL/min/1.73m2 (egfr, e.g. 58)" in observation["description"]
    assert "cm (height, e.g. 132.5)" in observation["description"]
    examples = schema["paths"][PATIENTS]["post"]["requestBody"]["content"]["application/json"]["examples"]
    assert next(iter(examples.values()))["value"]["clinical_context"]["cardiac_history"] == [
        "congenital_heart_disease"
    ]


def test_the_schema_documents_the_allergy_fields_with_examples(client):  # type: ignore[no-untyped-def]
    schema = client.get("/api/schema/", HTTP_ACCEPT="application/json").json()

    fields = schema["components"]["schemas"]["AllergyRequest"]["properties"]
    assert fields["code"]["oneOf"][0]["pattern"] == "^[1-9][0-9]{5,17}$"
    assert "764146007" in fields["code"]["description"]
    assert "intolerance (non-immune)" in fields["category"]["description"]
    reaction = schema["components"]["schemas"]["AllergyReactionRequest"]["properties"]
    assert "39579001" in reaction["code"]["description"]
    examples = schema["paths"][PATIENTS]["post"]["requestBody"]["content"]["application/json"]["examples"]
    allergy = next(iter(examples.values()))["value"]["allergies"][0]
    assert allergy["code"] == "764146007"
    assert allergy["reactions"][0]["severity"] == "severe"


# --- reads --------------------------------------------------------------------------------


def test_the_list_shows_only_the_clinics_own_patients_newest_first(clinic_a, clinic_b):
    own = PatientFactory.create_batch(3, clinic=clinic_a.clinic)
    PatientFactory.create_batch(2, clinic=clinic_b.clinic)

    response = clinic_a.api.get(PATIENTS)

    assert response.status_code == 200
    body = response.json()
    assert body["count"] == 3
    assert [patient["id"] for patient in body["results"]] == [patient.pk for patient in reversed(own)]


def test_the_list_is_paginated_fifty_to_a_page(clinic_a):
    PatientFactory.create_batch(51, clinic=clinic_a.clinic)

    first = clinic_a.api.get(PATIENTS).json()
    second = clinic_a.api.get(PATIENTS, {"page": 2}).json()

    assert first["count"] == 51
    assert len(first["results"]) == 50
    assert first["previous"] is None
    assert first["next"] == "http://testserver/api/v1/patients/?page=2"
    assert len(second["results"]) == 1
    assert second["next"] is None
    assert {patient["id"] for patient in first["results"]}.isdisjoint(
        patient["id"] for patient in second["results"]
    )


def test_a_clinic_reads_its_own_patient_in_detail(clinic_a):
    patient = PatientFactory(clinic=clinic_a.clinic)
    AllergyFactory(patient=patient, substance="latex", reaction="")

    response = clinic_a.api.get(f"{PATIENTS}{patient.pk}/")

    assert response.status_code == 200
    assert response.json()["id"] == patient.pk
    assert response.json()["allergies"] == [
        {
            "substance": "latex",
            "reaction": "",
            "code": "",
            "category": "allergy",
            "criticality": "",
            "reactions": [],
        }
    ]


def test_another_clinics_patient_is_not_found(clinic_a, clinic_b):
    foreign = PatientFactory(clinic=clinic_b.clinic, given_name="Secret")

    response = clinic_a.api.get(f"{PATIENTS}{foreign.pk}/")

    assert response.status_code == 404
    assert response["Content-Type"] == "application/problem+json"
    assert response.json()["type"] == "/problems/not-found"
    assert "Secret" not in response.content.decode()


def test_the_list_query_count_does_not_grow_with_the_number_of_patients(clinic_a):
    def add(count: int) -> None:
        for patient in PatientFactory.create_batch(count, clinic=clinic_a.clinic):
            AllergyFactory(patient=patient)
            AllergyFactory(patient=patient, substance="latex")
            CurrentMedicationFactory(patient=patient, name="Sertraline")

    add(2)
    clinic_a.api.get(PATIENTS)  # the client's first use is recorded once (last_used_at)
    with CaptureQueriesContext(connection) as small:
        assert clinic_a.api.get(PATIENTS).status_code == 200
    add(10)
    with CaptureQueriesContext(connection) as large:
        response = clinic_a.api.get(PATIENTS)

    assert response.json()["count"] == 12
    assert all(len(patient["allergies"]) == 2 for patient in response.json()["results"])
    assert len(large) == len(small)
