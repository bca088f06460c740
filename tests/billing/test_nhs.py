"""NHS prescriptions: charge or exemption (table-driven), and the monthly claim batch."""

from __future__ import annotations

import csv
import datetime
import io
import uuid
from unittest import mock

import pytest

from billing.models import ClaimBatch, ClaimItem, NhsCharge, NhsChargeRate
from billing.services import nhs
from events.models import Event
from prescriptions.models import Prescription, Status
from tests.billing.factories import approved_prescription, event_types
from tests.conftest import prescription_body
from tests.patients.factories import PatientFactory
from tests.pharmacy.factories import force_status

pytestmark = pytest.mark.django_db
ISSUED = datetime.date(2026, 11, 20)


def patient_aged(setup, years: int):  # type: ignore[no-untyped-def]
    return PatientFactory(clinic=setup.clinic, birth_date=ISSUED.replace(year=ISSUED.year - years))


def post_nhs(setup, patient, medication, exemption=None, **overrides):  # type: ignore[no-untyped-def]
    body = prescription_body(
        patient.pk, setup.prescriber.pk, medication, issued_on=str(ISSUED), funding="nhs"
    )
    if exemption is not None:
        body["nhs_exemption"] = exemption
    body.update(overrides)
    return setup.api.post(
        "/api/v1/prescriptions/", body, format="json", HTTP_IDEMPOTENCY_KEY=str(uuid.uuid4())
    )


@pytest.mark.parametrize(
    ("age", "exemption", "accepted"),
    [
        (15, {"category": "age_under_16"}, True),
        (16, {"category": "age_under_16"}, False),
        (60, {"category": "age_60_or_over"}, True),
        (59, {"category": "age_60_or_over"}, False),
        (17, {"category": "age_16_to_18_in_education", "evidence": "Leeds College"}, True),
        (17, {"category": "age_16_to_18_in_education"}, False),
        (30, {"category": "maternity_certificate", "evidence": "MAT-123"}, True),
        (30, {"category": "maternity_certificate", "evidence": ""}, False),
        (30, {"category": "prepayment_certificate", "evidence": "PPC-9"}, True),
        (30, {"category": "medical_certificate", "evidence": "MED-1"}, True),
        (30, {"category": "not_a_category", "evidence": "x"}, False),
        (30, None, True),
    ],
)
def test_exemptions_are_checked_against_the_table_and_the_date_of_birth(
    clinic_a, paracetamol, age, exemption, accepted
):  # type: ignore[no-untyped-def]
    response = post_nhs(clinic_a, patient_aged(clinic_a, age), paracetamol, exemption)

    assert response.status_code == (201 if accepted else 400), response.json()
    if accepted:
        prescription = Prescription.objects.get()
        assert prescription.funding == "nhs"
        assert prescription.nhs_exemption_category == (exemption or {}).get("category", "")
    else:
        assert response.json()["errors"][0]["pointer"].startswith("#/nhs_exemption")
        assert not Prescription.objects.exists()


def test_nhs_funding_is_refused_for_a_clinic_outside_great_britain(clinic_a, paracetamol):  # type: ignore[no-untyped-def]
    clinic_a.clinic.jurisdiction = "US"
    clinic_a.clinic.save()

    response = post_nhs(clinic_a, patient_aged(clinic_a, 30), paracetamol)

    assert response.status_code == 400
    assert response.json()["errors"] == [
        {"pointer": "#/funding", "detail": "NHS funding is only available to clinics in Great Britain."}
    ]
    assert not Prescription.objects.exists()


def test_an_exemption_on_a_private_prescription_is_refused(clinic_a, paracetamol):  # type: ignore[no-untyped-def]
    response = post_nhs(
        clinic_a, patient_aged(clinic_a, 10), paracetamol, {"category": "age_under_16"}, funding="private"
    )

    assert response.status_code == 400
    assert response.json()["errors"][0]["pointer"] == "#/nhs_exemption"
    assert not Prescription.objects.exists()


@pytest.mark.parametrize(
    ("on", "pence"),
    [
        (datetime.date(2024, 4, 30), 965),
        (datetime.date(2024, 5, 1), 990),
        (datetime.date(2026, 3, 31), 990),
        (datetime.date(2026, 4, 1), 990),
    ],
)
def test_the_charge_rate_is_the_one_in_force_on_the_date(on, pence):  # type: ignore[no-untyped-def]
    assert nhs.nhs_charge_rate_on(on=on).amount_minor == pence


def test_a_new_rate_applies_from_its_date(db):  # type: ignore[no-untyped-def]
    NhsChargeRate.objects.create(effective_from=datetime.date(2027, 4, 1), amount_minor=1015, source="test")

    assert nhs.nhs_charge_rate_on(on=datetime.date(2027, 3, 31)).amount_minor == 990
    assert nhs.nhs_charge_rate_on(on=datetime.date(2027, 4, 1)).amount_minor == 1015


def test_a_charged_nhs_prescription_records_the_per_item_charge_and_is_funded(clinic_a, paracetamol):  # type: ignore[no-untyped-def]
    prescription = approved_prescription(clinic_a, paracetamol, funding="nhs", issued_on=ISSUED)

    assert nhs.nhs_charge_record(prescription_id=prescription.pk) == "nhs-funded"
    assert nhs.nhs_charge_record(prescription_id=prescription.pk) == "not-approved"

    charge = NhsCharge.objects.get(prescription=prescription)
    assert (charge.items, charge.charge_per_item_minor, charge.total_minor) == (1, 990, 990)
    assert charge.is_exempt is False
    assert Prescription.objects.get(pk=prescription.pk).status == Status.NHS_FUNDED
    funded = Event.objects.get(aggregate_id=prescription.pk, type="prescription.nhs_funded")
    assert funded.payload == {
        "from": "approved",
        "to": "nhs_funded",
        "nhs_charge_id": charge.pk,
        "exempt": False,
        "charge_minor": 990,
    }


def test_an_exempt_nhs_prescription_is_free_and_its_age_exemption_verified(clinic_a, paracetamol):  # type: ignore[no-untyped-def]
    prescription = approved_prescription(
        clinic_a,
        paracetamol,
        funding="nhs",
        issued_on=ISSUED,
        patient=patient_aged(clinic_a, 70),
        nhs_exemption={"category": "age_60_or_over", "evidence": ""},
    )

    nhs.nhs_charge_record(prescription_id=prescription.pk)

    charge = NhsCharge.objects.get(prescription=prescription)
    assert (charge.exemption_category, charge.exemption_verified, charge.total_minor) == (
        "age_60_or_over",
        True,
        0,
    )
    assert charge.rate is None
    assert event_types(prescription)[-1] == "prescription.nhs_funded"


def dispensed_nhs_prescription(setup, medication, when: datetime.datetime, **fields) -> Prescription:  # type: ignore[no-untyped-def]
    prescription = approved_prescription(setup, medication, funding="nhs", issued_on=ISSUED, **fields)
    nhs.nhs_charge_record(prescription_id=prescription.pk)
    force_status(prescription, Status.DISPENSED)
    from prescriptions.services import prescription_record_event

    # The event log is append-only: the clock is set when the event is written instead.
    with mock.patch("django.utils.timezone.now", return_value=when):
        prescription_record_event(prescription_id=prescription.pk, event_type="prescription.dispensed")
    return prescription


def at(day: int, month: int = 11) -> datetime.datetime:
    return datetime.datetime(2026, month, day, 12, tzinfo=datetime.UTC)


def test_a_claim_built_twice_for_the_same_month_contains_each_item_once(clinic_a, paracetamol):  # type: ignore[no-untyped-def]
    charged = dispensed_nhs_prescription(clinic_a, paracetamol, at(3))
    exempt = dispensed_nhs_prescription(
        clinic_a,
        paracetamol,
        at(25),
        patient=patient_aged(clinic_a, 12),
        nhs_exemption={"category": "age_under_16", "evidence": ""},
    )
    next_month = dispensed_nhs_prescription(clinic_a, paracetamol, at(2, month=12))
    approved_prescription(clinic_a, paracetamol)  # private: never claimed

    first = nhs.claim_batch_build(month=datetime.date(2026, 11, 15))
    second = nhs.claim_batch_build(month=datetime.date(2026, 11, 1))

    assert second.pk == first.pk
    assert first.month == datetime.date(2026, 11, 1)
    assert sorted(ClaimItem.objects.filter(batch=first).values_list("prescription_id", flat=True)) == sorted(
        [charged.pk, exempt.pk]
    )
    assert nhs.claim_batch_totals(batch_id=first.pk) == {
        "items": 2,
        "exempt_items": 1,
        "charges_collected_minor": 990,
    }
    december = nhs.claim_batch_build(month=datetime.date(2026, 12, 1))
    assert list(ClaimItem.objects.filter(batch=december).values_list("prescription_id", flat=True)) == [
        next_month.pk
    ]


def test_an_item_missed_by_a_submitted_month_lands_in_the_next_claim_once(clinic_a, paracetamol):  # type: ignore[no-untyped-def]
    november = nhs.claim_batch_build(month=datetime.date(2026, 11, 1))
    nhs.claim_batch_submit(batch_id=november.pk)
    late = dispensed_nhs_prescription(clinic_a, paracetamol, at(30))

    nhs.claim_batch_build(month=datetime.date(2026, 11, 1))
    december = nhs.claim_batch_build(month=datetime.date(2026, 12, 1))
    nhs.claim_batch_build(month=datetime.date(2027, 1, 1))

    assert ClaimItem.objects.filter(batch=november).count() == 0
    assert list(ClaimItem.objects.values_list("batch_id", "prescription_id")) == [(december.pk, late.pk)]
    assert ClaimBatch.objects.get(pk=november.pk).status == ClaimBatch.Status.SUBMITTED


def test_the_claim_csv_has_one_row_per_item_and_a_totals_row(clinic_a, paracetamol):  # type: ignore[no-untyped-def]
    prescription = dispensed_nhs_prescription(clinic_a, paracetamol, at(3))
    batch = nhs.claim_batch_build(month=datetime.date(2026, 11, 1))

    rows = list(csv.reader(io.StringIO(nhs.claim_batch_csv(batch_id=batch.pk))))

    assert rows[0] == nhs.CSV_COLUMNS
    item = prescription.items.get()
    assert rows[1] == [
        "2026-11",
        str(prescription.pk),
        str(item.pk),
        clinic_a.clinic.ods_code,
        paracetamol.code,
        "Paracetamol",
        "28.00",
        "tablet",
        at(3).isoformat(),
        "",
        "990",
    ]
    assert rows[2] == ["TOTAL", "", "1", "", "", "0 exempt", "", "", "", "", "990"]
    assert len(rows) == 3
