"""Validity windows and start dates: a rule table with the law of each row, property tests on
the calendar arithmetic (month ends, leap years), intake refusals and the held prescription
through the API and the saga.

Sources: Human Medicines Regulations 2012, regulation 217(5) and (7) (GB, six months beginning
with the appropriate date); Misuse of Drugs Regulations 2001, regulation 16 (GB Schedule 2-4,
28 days); 21 CFR 1306.22(a) (US Schedules III-V, six months); 21 CFR 1306.12 (US Schedule II,
no federal limit); 22 Texas Administrative Code 315.3(a)(4) (Texas Schedule II, 30 days)."""

from __future__ import annotations

import datetime

import pytest
from dateutil.relativedelta import relativedelta
from hypothesis import given
from hypothesis import strategies as st

from events.models import Event
from pharmacy.models import Dispatch
from prescriptions import services
from prescriptions.checks.validity import last_day_of_months_beginning_with, months_after
from prescriptions.models import Medication, Prescription, Status
from saga import holds
from tests.conftest import prescription_body
from tests.patients.factories import PatientFactory
from tests.prescriptions.factories import adhd_context, checked, scenario
from tests.prescriptions.test_admin import make_staff

TODAY = datetime.date.today()
PARACETAMOL, US_PARACETAMOL, US_DIAZEPAM, US_METHYLPHENIDATE = "322236009", "313782", "197591", "1091170"


def days_ago(days: int) -> datetime.date:
    return TODAY - datetime.timedelta(days=days)


def six_months_before(day: datetime.date) -> datetime.date:
    """The signing date whose six-month window (beginning with it) ends on `day`."""
    candidate = day - relativedelta(months=6)
    while last_day_of_months_beginning_with(candidate, 6) < day:
        candidate += datetime.timedelta(days=1)
    return candidate


def dates_findings(prescription) -> dict[str, str]:  # type: ignore[no-untyped-def]
    return {k: v for k, v in checked(prescription).items() if k.startswith(("dates", "cd_gb.expired"))}


US_CD_ITEM = {
    "dose_text": "One tablet twice a day",
    "quantity": 56,
    "quantity_words": "fifty six",
    "days_supply": 28,
}


ROWS = [
    # (code, jurisdiction, state, fields, expected, source)
    (PARACETAMOL, "GB", "", {"issued_on": six_months_before(TODAY)}, {}, "HMR 2012 reg 217(5): last day"),
    (
        PARACETAMOL,
        "GB",
        "",
        {"issued_on": six_months_before(TODAY) - datetime.timedelta(days=1)},
        {"dates.expired": "block"},
        "HMR 2012 reg 217(5): one day after the six months",
    ),
    (
        PARACETAMOL,
        "GB",
        "",
        {"issued_on": days_ago(250), "start_date": days_ago(100)},
        {},
        "HMR 2012 reg 217(7): six months run from the later start date",
    ),
    (
        PARACETAMOL,
        "GB",
        "",
        {"start_date": TODAY + datetime.timedelta(days=4)},
        {"dates.supply_held": "needs_pharmacist"},
        "reg 217(7)",
    ),
    (
        US_PARACETAMOL,
        "US",
        "NY",
        {"issued_on": days_ago(380)},
        {"dates.expired": "block"},
        "Scriptline policy: 12 months",
    ),
    (US_PARACETAMOL, "US", "NY", {"issued_on": days_ago(300)}, {}, "Scriptline policy: 12 months"),
    (
        US_DIAZEPAM,
        "US",
        "NY",
        {
            "issued_on": TODAY - relativedelta(months=6) - datetime.timedelta(days=1),
            "two_factor_signed_at": "now",
        },
        {"dates.expired": "block"},
        "21 CFR 1306.22(a): Schedule IV, six months after issue",
    ),
    (
        US_DIAZEPAM,
        "US",
        "NY",
        {"issued_on": TODAY - relativedelta(months=6), "two_factor_signed_at": "now"},
        {},
        "21 CFR 1306.22(a): the last day",
    ),
    (
        US_METHYLPHENIDATE,
        "US",
        "TX",
        {"issued_on": days_ago(31), "two_factor_signed_at": "now"},
        {"dates.expired": "block"},
        "22 TAC 315.3(a)(4): Texas Schedule II, 30 days",
    ),
    (
        US_METHYLPHENIDATE,
        "US",
        "NY",
        {"issued_on": days_ago(31), "two_factor_signed_at": "now"},
        {},
        "21 CFR 1306: no federal expiry for Schedule II, and no New York limit in the formulary",
    ),
]


@pytest.mark.django_db
@pytest.mark.parametrize(("code", "jurisdiction", "state", "fields", "expected", "source"), ROWS)
def test_validity_windows(formulary, code, jurisdiction, state, fields, expected, source):
    from django.utils import timezone

    fields = {**fields}
    if fields.get("two_factor_signed_at") == "now":
        fields["two_factor_signed_at"] = timezone.now()
    us = jurisdiction == "US"
    prescription = scenario(
        code=code,
        jurisdiction=jurisdiction,
        patient={"region": state} if us else None,
        prescriber={"licensed_states": [state]} if us else None,
        item=US_CD_ITEM if us else None,
        **({**adhd_context(), **fields} if us else fields),
    )

    assert dates_findings(prescription) == expected, source


@pytest.mark.django_db
def test_an_expired_finding_says_until_when_and_by_how_much(formulary):
    """HMR 2012 regulation 217(5)."""
    issued = six_months_before(TODAY) - datetime.timedelta(days=3)
    prescription = scenario(code=PARACETAMOL, issued_on=issued)
    checked(prescription)

    finding = next(
        r for r in Prescription.objects.get(pk=prescription.pk).check_results if r["code"] == "dates.expired"
    )

    last = last_day_of_months_beginning_with(issued, 6)
    assert (
        f"could be supplied until {last.day} {last:%B %Y} (six months beginning with the appropriate date)"
        in (finding["message"])
    )
    # Three days before the latest signing date still valid today: expired by one to three days,
    # as month lengths fall (1 December: signed 30 May, valid to 29 November, 2 days later).
    late = (TODAY - last).days
    assert 1 <= late <= 3
    assert f"today is {late} day{'s' if late != 1 else ''} later" in finding["message"]
    assert finding["source"].startswith("Human Medicines Regulations 2012, regulation 217(5)")
    assert finding["facts"]["signed on"] == f"{issued:%Y-%m-%d}"
    assert finding["facts"]["valid until"].startswith(f"{last:%Y-%m-%d}")


# --- Calendar arithmetic ----------------------------------------------------------------------------
dates = st.dates(min_value=datetime.date(1990, 1, 1), max_value=datetime.date(2100, 12, 31))


@given(day=dates, months=st.integers(min_value=1, max_value=24))
def test_a_period_of_months_ends_the_day_before_the_corresponding_date_or_on_the_month_end(day, months):
    corresponding = day + relativedelta(months=months)  # clamped to the month's end
    expected = corresponding - datetime.timedelta(days=1) if corresponding.day == day.day else corresponding

    assert last_day_of_months_beginning_with(day, months) == expected
    assert months_after(day, months) == corresponding


@given(day=dates)
def test_six_months_is_never_shorter_than_181_days_or_longer_than_184(day):
    length = (last_day_of_months_beginning_with(day, 6) - day).days + 1

    assert 181 <= length <= 184


@given(first=dates, second=dates)
def test_a_later_appropriate_date_never_ends_sooner(first, second):
    early, late = sorted((first, second))

    assert last_day_of_months_beginning_with(early, 6) <= last_day_of_months_beginning_with(late, 6)


@pytest.mark.parametrize(
    ("start", "last"),
    [
        (datetime.date(2027, 8, 31), datetime.date(2028, 2, 29)),  # leap February: its last day
        (datetime.date(2026, 8, 31), datetime.date(2027, 2, 28)),
        (datetime.date(2027, 8, 29), datetime.date(2028, 2, 28)),  # 29 February exists in 2028
        (datetime.date(2028, 2, 29), datetime.date(2028, 8, 28)),
        (datetime.date(2026, 1, 1), datetime.date(2026, 6, 30)),
        (datetime.date(2026, 12, 31), datetime.date(2027, 6, 30)),
    ],
)
def test_six_months_beginning_with_across_month_ends_and_leap_years(start, last):
    assert last_day_of_months_beginning_with(start, 6) == last


# --- Intake ------------------------------------------------------------------------------------------
@pytest.mark.django_db
@pytest.mark.parametrize(
    ("fields", "pointer"),
    [
        ({"issued_on": (TODAY + datetime.timedelta(days=1)).isoformat()}, "#/issued_on"),
        ({"start_date": (TODAY - datetime.timedelta(days=1)).isoformat()}, "#/start_date"),
        ({"start_date": (TODAY + datetime.timedelta(days=181)).isoformat()}, "#/start_date"),
    ],
)
def test_a_future_signing_date_or_a_start_date_the_law_does_not_allow_is_refused(
    clinic_a, patient_a, paracetamol, fields, pointer
):
    body = prescription_body(patient_a.pk, clinic_a.prescriber.pk, paracetamol, **fields)

    response = clinic_a.api.post("/api/v1/prescriptions/", body, format="json", HTTP_IDEMPOTENCY_KEY="date-1")

    assert response.status_code == 400
    assert [error["pointer"] for error in response.json()["errors"]] == [pointer]
    assert not Prescription.objects.exists()


# --- Held until the start date, through the API and the saga ---------------------------------------
@pytest.mark.django_db
def test_a_start_date_holds_the_prescription_until_that_day(clinic_a, formulary, django_user_model):
    """HMR 2012 regulation 217(7): nothing is supplied before the appropriate date."""
    patient = PatientFactory(clinic=clinic_a.clinic)
    start = TODAY + datetime.timedelta(days=3)
    body = prescription_body(
        patient.pk,
        clinic_a.prescriber.pk,
        Medication.objects.get(code=PARACETAMOL),
        start_date=start.isoformat(),
    )
    created = clinic_a.api.post("/api/v1/prescriptions/", body, format="json", HTTP_IDEMPOTENCY_KEY="held-1")
    assert created.status_code == 201, created.content
    prescription_id = created.json()["id"]
    assert created.json()["appropriate_date"] == start.isoformat()

    services.prescription_run_checks(prescription_id=prescription_id)
    prescription = Prescription.objects.get(pk=prescription_id)
    assert prescription.status == Status.AWAITING_PHARMACIST
    held = next(r for r in prescription.check_results if r["code"] == "dates.supply_held")
    assert (
        f"Not to be supplied before {start.day} {start:%B %Y} (the prescriber's start date)"
        in held["message"]
    )

    pharmacist = make_staff(django_user_model, "pharmacist")
    services.prescription_review(
        prescription_id=prescription_id,
        pharmacist=pharmacist,
        decision="approved",
        reason="Start date checked.",
    )
    services.prescription_transition(
        prescription_id=prescription_id, to=Status.PAID, event_type="prescription.paid"
    )

    holds.dispatch_unless_held(prescription_id=prescription_id)

    assert not Dispatch.objects.filter(prescription_id=prescription_id).exists()
    timeline = clinic_a.api.get(f"/api/v1/prescriptions/{prescription_id}/").json()["timeline"]
    held_event = next(event for event in timeline if event["type"] == "prescription.held")
    assert held_event["payload"]["until"] == start.isoformat()
    assert "Not to be supplied before" in held_event["payload"]["reason"]

    assert holds.held_prescriptions_release(today=start - datetime.timedelta(days=1)) == []
    assert not Dispatch.objects.filter(prescription_id=prescription_id).exists()

    assert holds.held_prescriptions_release(today=start) == [prescription_id]
    assert Dispatch.objects.filter(prescription_id=prescription_id).count() == 1
    assert holds.held_prescriptions_release(today=start) == []
    assert Event.objects.filter(aggregate_id=prescription_id, type="prescription.hold_released").count() == 1


@pytest.mark.django_db
def test_a_held_prescription_is_not_counted_as_stuck(formulary):
    from django.utils import timezone

    from saga.reconciler import stuck_prescriptions

    held = scenario(code=PARACETAMOL, start_date=TODAY + datetime.timedelta(days=3))
    due = scenario(code=PARACETAMOL)
    old = timezone.now() - datetime.timedelta(hours=2)
    Prescription.objects.filter(pk__in=[held.pk, due.pk]).update(status=Status.PAID, updated_at=old)

    assert list(stuck_prescriptions(older_than_seconds=60).values_list("pk", flat=True)) == [due.pk]
