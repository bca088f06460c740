"""One patient, however many records: a second registration of the same person in a clinic is
refused with a link to the first; staff merge duplicates explicitly; across clinics the
pharmacy-side history checks see every supply to the person (matched on keyed blind indexes),
while no clinic's API sees another clinic's data."""

from __future__ import annotations

import datetime

import pytest
from django.db import connection

from events.models import Event
from patients.models import Allergy, IdempotencyKey, Patient
from prescriptions import checks
from prescriptions.models import Medication, Prescription, Status
from saga.tasks import prescription_check
from tests.conftest import prescription_body
from tests.patients.factories import AllergyFactory, PatientFactory
from tests.prescriptions.factories import PrescriberFactory, adhd_context, checked, scenario

pytestmark = pytest.mark.django_db

PATIENTS, PRESCRIPTIONS = "/api/v1/patients/", "/api/v1/prescriptions/"
PERSON = {
    "given_name": "Ada",
    "family_name": "Lovelace",
    "birth_date": "1990-12-10",
    "nhs_number": "9434765919",
    "address_line": "1 Synthetic Street",
    "postal_code": "LS1 1AA",
}
METHYLPHENIDATE_10 = "324907005"
CD_ITEM = {
    "dose_text": "One tablet twice a day",
    "quantity": "56",
    "quantity_words": "fifty six",
    "days_supply": 28,
}


def register(setup, key: str = "p1", **fields):  # type: ignore[no-untyped-def]
    return setup.api.post(PATIENTS, {**PERSON, **fields}, format="json", HTTP_IDEMPOTENCY_KEY=key)


@pytest.mark.parametrize(
    "second",
    [
        {},  # the same NHS number and name
        {"given_name": "Augusta", "family_name": "King"},  # the same NHS number, another name
        {"nhs_number": ""},  # the same given name, family name and date of birth
        {"nhs_number": "", "given_name": "  ADA ", "family_name": "lovelace"},  # written differently
    ],
)
def test_a_second_registration_of_one_person_answers_409_with_a_link_and_stores_nothing(clinic_a, second):
    """Source: NHS Data Dictionary (NHS number); Scriptline: one record per person per clinic."""
    first = register(clinic_a).json()

    response = register(clinic_a, key="p2", **second)

    assert response.status_code == 409
    assert response["Content-Type"] == "application/problem+json"
    problem = response.json()
    assert problem["type"] == "/problems/patient-already-registered"
    assert problem["existing_patient_id"] == first["id"]
    assert problem["existing_patient"] == f"{PATIENTS}{first['id']}/"
    assert clinic_a.api.get(problem["existing_patient"]).json()["id"] == first["id"]
    assert Patient.objects.count() == 1
    assert Event.objects.filter(type="patient.registered").count() == 1
    assert IdempotencyKey.objects.count() == 1


@pytest.mark.parametrize(
    "second",
    [
        {"nhs_number": "", "given_name": "Byron"},  # a twin: same family name and birthday
        {"nhs_number": "", "birth_date": "1990-12-11"},
        {"nhs_number": "4010232137"},  # two NHS numbers are two people, whatever their names
    ],
)
def test_another_person_is_registered(clinic_a, second):
    register(clinic_a)

    response = register(clinic_a, key="p2", **second)

    assert response.status_code == 201, response.content
    assert Patient.objects.count() == 2


def test_the_same_person_may_be_registered_by_another_clinic_which_learns_nothing_of_the_first(
    clinic_a, clinic_b
):
    first = register(clinic_a).json()

    response = register(clinic_b)

    assert response.status_code == 201
    assert response.json()["id"] != first["id"]
    assert clinic_b.api.get(f"{PATIENTS}{first['id']}/").status_code == 404
    assert [patient["id"] for patient in clinic_b.api.get(PATIENTS).json()["results"]] == [
        response.json()["id"]
    ]


def test_the_schema_documents_the_link_to_the_existing_patient(client):  # type: ignore[no-untyped-def]
    schema = client.get("/api/schema/", HTTP_ACCEPT="application/json").json()

    problem = schema["components"]["schemas"]["Problem"]["properties"]
    assert "e.g. /api/v1/patients/42/" in problem["existing_patient"]["description"]
    assert "409" in schema["paths"][PATIENTS]["post"]["responses"]


def test_staff_merge_duplicate_records_into_the_oldest(admin_client, clinic_a, paracetamol):
    keep = PatientFactory(clinic=clinic_a.clinic, nhs_number="", given_name="Ada", family_name="Lovelace")
    duplicate = PatientFactory(clinic=clinic_a.clinic, given_name="Ada", family_name="Lovelace")
    AllergyFactory(patient=duplicate, substance="penicillin")

    response = admin_client.post(
        "/admin/patients/patient/",
        {"action": "merge_into_oldest", "_selected_action": [keep.pk, duplicate.pk]},
    )

    assert response.status_code == 302
    duplicate.refresh_from_db()
    assert duplicate.merged_into == keep
    assert list(Allergy.objects.filter(patient=keep).values_list("substance", flat=True)) == ["penicillin"]
    assert Event.objects.get(type="patient.merged").payload == {"into": keep.pk}
    refused = clinic_a.api.post(
        PRESCRIPTIONS,
        prescription_body(duplicate.pk, clinic_a.prescriber.pk, paracetamol),
        format="json",
        HTTP_IDEMPOTENCY_KEY="rx",
    )
    assert refused.status_code == 400
    assert refused.json()["errors"] == [
        {
            "pointer": "#/patient",
            "detail": f"This record was merged into patient {keep.pk}; prescribe for that one.",
        }
    ]
    assert Prescription.objects.count() == 0


def test_records_of_two_clinics_are_never_merged(admin_client, clinic_a, clinic_b):
    first = PatientFactory(clinic=clinic_a.clinic)
    second = PatientFactory(clinic=clinic_b.clinic)

    admin_client.post(
        "/admin/patients/patient/", {"action": "merge_into_oldest", "_selected_action": [first.pk, second.pk]}
    )

    assert Patient.objects.filter(merged_into__isnull=False).count() == 0


# One person as two clinics registered them (factory patients are otherwise all different people).
SAME_PERSON = {"birth_date": datetime.date(1991, 3, 14), "nhs_number": "9434765919"}


def _supplied_by(clinic, patient, days_ago: int, code: str = METHYLPHENIDATE_10, **item):  # type: ignore[no-untyped-def]
    prescription = scenario(
        code=code,
        clinic=clinic,
        patient_object=patient,
        prescriber_object=PrescriberFactory(clinic=clinic, given_name="Zebedee", family_name="Quartermaine"),
        item={**CD_ITEM, **item},
        issued_on=datetime.date.today() - datetime.timedelta(days=days_ago),
        **adhd_context(),
    )
    Prescription.objects.filter(pk=prescription.pk).update(status=Status.DELIVERED)
    return prescription


@pytest.mark.parametrize(
    ("same_person", "expected"),
    [
        ({"nhs_number": "9434765919"}, {"history.early_resupply_elsewhere": "needs_pharmacist"}),
        ({"nhs_number": ""}, {"history.early_resupply_elsewhere": "needs_pharmacist"}),  # name and birthday
        ({"nhs_number": "4010232137", "given_name": "Byron"}, {}),  # someone else
    ],
)
def test_early_resupply_sees_a_supply_to_the_same_person_through_another_clinic(
    formulary, clinic_a, clinic_b, same_person, expected
):
    """Source: Scriptline dispensing policy (guidance): 75% of the previous supply's days, every supply."""
    elsewhere = PatientFactory(
        clinic=clinic_a.clinic, given_name="Ada", family_name="Lovelace", **SAME_PERSON
    )
    _supplied_by(clinic_a.clinic, elsewhere, days_ago=10)
    here = PatientFactory(
        clinic=clinic_b.clinic,
        **{"given_name": "Ada", "family_name": "Lovelace", **SAME_PERSON, **same_person},
    )
    prescription = scenario(
        code=METHYLPHENIDATE_10, clinic=clinic_b.clinic, patient_object=here, item=CD_ITEM, **adhd_context()
    )

    found = {code: severity for code, severity in checked(prescription).items() if code.startswith("history")}

    assert found == expected


def test_duplicate_therapy_sees_a_running_supply_through_another_clinic(formulary, clinic_a, clinic_b):
    """Source: Scriptline policy; BNF guidance on therapeutic duplication."""
    elsewhere = PatientFactory(
        clinic=clinic_a.clinic, given_name="Ada", family_name="Lovelace", **SAME_PERSON
    )
    _supplied_by(clinic_a.clinic, elsewhere, days_ago=5, code="324925007")  # dexamfetamine 5mg
    here = PatientFactory(clinic=clinic_b.clinic, given_name="Ada", family_name="Lovelace", **SAME_PERSON)
    prescription = scenario(
        code=METHYLPHENIDATE_10, clinic=clinic_b.clinic, patient_object=here, item=CD_ITEM, **adhd_context()
    )
    checked(prescription)

    result = next(
        r
        for r in Prescription.objects.get(pk=prescription.pk).check_results
        if r["code"] == "duplicate.with_current"
    )
    assert result["severity"] == "needs_pharmacist"
    assert "Dexamfetamine (supplied recently through another clinic)" in result["message"]


def test_the_person_is_matched_on_blind_indexes_never_on_plaintext(formulary, clinic_a, clinic_b):
    elsewhere = PatientFactory(
        clinic=clinic_a.clinic, given_name="Ada", family_name="Quixotica", **SAME_PERSON
    )
    _supplied_by(clinic_a.clinic, elsewhere, days_ago=10)
    here = PatientFactory(clinic=clinic_b.clinic, given_name="Ada", family_name="Quixotica", **SAME_PERSON)
    prescription = scenario(
        code=METHYLPHENIDATE_10, clinic=clinic_b.clinic, patient_object=here, item=CD_ITEM
    )
    prescription = Prescription.objects.select_related("clinic", "patient", "prescriber").get(
        pk=prescription.pk
    )

    sent: list[str] = []

    def record(execute, sql, params, many, context):  # type: ignore[no-untyped-def]
        # The statement and its parameters, as the server receives them (the checks' reads bind
        # their parameters on the server: they are not in the SQL text).
        sent.append(f"{sql} {params!r}")
        return execute(sql, params, many, context)

    with connection.execute_wrapper(record):
        context = checks.build_context(prescription)

    assert [previous.clinic_id for previous in context.history] == [clinic_a.clinic.pk]
    sql = " ".join(sent)
    assert "9434765919" not in sql
    assert "quixotica" not in sql.lower()
    assert here.nhs_number_index in sql


def test_through_the_api_clinic_b_is_held_for_a_supply_through_clinic_a_and_sees_none_of_its_data(
    formulary, clinic_a, clinic_b
):
    """Family: one patient, many records. The finding names no clinic, date, quantity or prescriber."""
    clinic_a.clinic.name = "Marchbanks Private Clinic"
    clinic_a.clinic.save()
    a_patient = register(clinic_a, key="a").json()
    a_prescriber = PrescriberFactory(clinic=clinic_a.clinic, given_name="Zebedee", family_name="Quartermaine")
    methylphenidate = Medication.objects.get(code=METHYLPHENIDATE_10)
    dated = {
        key: [{k: str(v) for k, v in row.items()} for row in rows] for key, rows in adhd_context().items()
    }
    first = clinic_a.api.post(
        PRESCRIPTIONS,
        prescription_body(a_patient["id"], a_prescriber.pk, methylphenidate, item=CD_ITEM, **dated),
        format="json",
        HTTP_IDEMPOTENCY_KEY="a-rx",
    ).json()
    Prescription.objects.filter(pk=first["id"]).update(status=Status.DELIVERED)
    b_patient = register(clinic_b, key="b").json()

    created = clinic_b.api.post(
        PRESCRIPTIONS,
        prescription_body(b_patient["id"], clinic_b.prescriber.pk, methylphenidate, item=CD_ITEM, **dated),
        format="json",
        HTTP_IDEMPOTENCY_KEY="b-rx",
    ).json()
    prescription_check(Event.objects.get(aggregate_id=created["id"], type="prescription.received").pk)
    detail = clinic_b.api.get(f"{PRESCRIPTIONS}{created['id']}/")
    listing = clinic_b.api.get(PRESCRIPTIONS)

    assert detail.json()["status"] == "awaiting_pharmacist", [
        (r["code"], r["severity"]) for r in detail.json()["check_results"]
    ]
    assert "history.early_resupply_elsewhere" in [r["code"] for r in detail.json()["check_results"]]
    for response in (detail, listing, clinic_b.api.get(PATIENTS)):
        text = response.content.decode()
        for secret in (
            "Marchbanks",
            "Quartermaine",
            "Zebedee",
            f'"id":{first["id"]},',
            f'"patient":{a_patient["id"]},',
        ):
            assert secret not in text.replace(" ", "")
    assert clinic_b.api.get(f"{PRESCRIPTIONS}{first['id']}/").status_code == 404
    assert clinic_b.api.get(f"{PATIENTS}{a_patient['id']}/").status_code == 404
