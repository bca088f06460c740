"""Clinical checks: what each prescription's outcome is, and why."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from events.models import Event
from prescriptions import checks, services
from prescriptions.checks import CheckResult, Severity
from prescriptions.models import Prescription, Status
from tests.patients.factories import ClinicFactory, PatientFactory
from tests.prescriptions.factories import MedicationFactory, PrescriberFactory

PARACETAMOL = {"code": "322236009", "name": "Paracetamol", "strength": "500mg"}
METHYLPHENIDATE = {
    "code": "324907005",
    "name": "Methylphenidate",
    "strength": "10mg",
    "controlled_schedule": "2",
}
WITHDRAWN = {"code": "900001", "name": "Ranitidine", "strength": "150mg", "is_active": False}


def checked(*, jurisdiction: str = "GB", items: list[dict]) -> tuple[str | None, Prescription]:
    clinic = ClinicFactory(jurisdiction=jurisdiction)
    prescription = services.prescription_create(
        clinic=clinic,
        patient=PatientFactory(clinic=clinic),
        prescriber=PrescriberFactory(clinic=clinic),
        items=[
            {
                "medication": MedicationFactory(**item.get("medication", PARACETAMOL)),
                "dose_text": "As directed",
                "quantity": Decimal(item.get("quantity", "28")),
                "unit": "tablet",
                "days_supply": item.get("days_supply", 7),
            }
            for item in items
        ],
    )
    target = services.prescription_run_checks(prescription_id=prescription.pk)
    prescription.refresh_from_db()
    return target, prescription


def codes(prescription: Prescription) -> list[str]:
    return [result["code"] for result in prescription.check_results]


CASES = [
    pytest.param([{}], Status.APPROVED, [], id="plain-paracetamol-28-over-7-days"),
    pytest.param(
        [{"medication": METHYLPHENIDATE}],
        Status.AWAITING_PHARMACIST,
        ["controlled_drug.pharmacist_approval"],
        id="schedule-2-controlled-drug",
    ),
    pytest.param(
        [{"days_supply": 120, "quantity": "120"}],
        Status.AWAITING_PHARMACIST,
        ["supply.days_too_long"],
        id="120-days-supply",
    ),
    pytest.param(
        [{"quantity": "1000"}],
        Status.AWAITING_PHARMACIST,
        ["supply.quantity_per_day_high"],
        id="1000-tablets-over-7-days",
    ),
    pytest.param(
        [{"quantity": "1", "days_supply": 90}],
        Status.AWAITING_PHARMACIST,
        ["supply.quantity_per_day_low"],
        id="1-tablet-over-90-days",
    ),
    pytest.param(
        [{"quantity": "84", "days_supply": 7}],
        Status.APPROVED,
        [],
        id="exactly-12-a-day",
    ),
    pytest.param(
        [{"quantity": "360", "days_supply": 90}],
        Status.APPROVED,
        [],
        id="exactly-90-days",
    ),
    pytest.param(
        [{"medication": WITHDRAWN}],
        Status.REJECTED,
        ["formulary.inactive"],
        id="inactive-medication",
    ),
    pytest.param(
        [{"medication": METHYLPHENIDATE}, {"medication": WITHDRAWN}],
        Status.REJECTED,
        ["controlled_drug.pharmacist_approval", "formulary.inactive"],
        id="block-beats-pharmacist",
    ),
    pytest.param(
        [{"medication": METHYLPHENIDATE, "quantity": "1000", "days_supply": 7}],
        Status.AWAITING_PHARMACIST,
        ["supply.quantity_per_day_high", "controlled_drug.pharmacist_approval"],
        id="two-findings-on-one-item",
    ),
]


@pytest.mark.django_db
@pytest.mark.parametrize(("items", "expected_status", "expected_codes"), CASES)
def test_the_checks_decide_the_outcome(items, expected_status, expected_codes):
    target, prescription = checked(items=items)

    assert target == expected_status
    assert prescription.status == expected_status
    assert codes(prescription) == expected_codes
    event = Event.objects.get(aggregate_id=prescription.pk, sequence=2)
    assert event.type == f"prescription.{expected_status}"
    assert event.payload == {"from": "received", "to": expected_status, "checks": expected_codes}
    assert event.actor == "checks"


@pytest.mark.django_db
def test_an_inactive_medication_is_rejected_with_a_reason_naming_it():
    _target, prescription = checked(items=[{"medication": WITHDRAWN}])

    assert prescription.status == Status.REJECTED
    assert prescription.status_reason == "Ranitidine 150mg tablet is no longer on the formulary."
    assert prescription.check_results == [
        {
            "code": "formulary.inactive",
            "severity": "block",
            "message": "Ranitidine 150mg tablet is no longer on the formulary.",
            "source": "Scriptline dispensing policy",
            "item": prescription.items.get().pk,
        }
    ]


@pytest.mark.django_db
def test_a_prescription_waiting_for_a_pharmacist_has_no_rejection_reason():
    _target, prescription = checked(items=[{"medication": METHYLPHENIDATE}])

    assert prescription.status_reason == ""


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("jurisdiction", "source"),
    [("GB", "Misuse of Drugs Regulations 2001"), ("US", "21 CFR 1306")],
)
def test_the_controlled_drug_rule_cites_the_jurisdictions_law(jurisdiction, source):
    _target, prescription = checked(jurisdiction=jurisdiction, items=[{"medication": METHYLPHENIDATE}])

    (result,) = prescription.check_results
    assert result["source"] == source
    assert result["message"] == (
        "Methylphenidate is a Schedule 2 controlled drug: a pharmacist must approve it before it "
        "is dispatched."
    )


@pytest.mark.django_db
def test_running_the_checks_twice_changes_nothing_the_second_time():
    first, prescription = checked(items=[{"medication": METHYLPHENIDATE}])
    before = Prescription.objects.filter(pk=prescription.pk).values().get()

    second = services.prescription_run_checks(prescription_id=prescription.pk)

    assert first == Status.AWAITING_PHARMACIST
    assert second is None
    assert Prescription.objects.filter(pk=prescription.pk).values().get() == before
    assert list(Event.objects.filter(aggregate_id=prescription.pk).values_list("type", flat=True)) == [
        "prescription.received",
        "prescription.awaiting_pharmacist",
    ]


@pytest.mark.django_db
def test_checks_of_a_prescription_that_does_not_exist_do_nothing():
    assert services.prescription_run_checks(prescription_id=987654) is None
    assert Event.objects.count() == 0


# --- the outcome rule, for any combination of results ------------------------------------------

results = st.lists(
    st.builds(
        CheckResult,
        code=st.sampled_from(["a.b", "c.d", "e.f"]),
        severity=st.sampled_from([Severity.BLOCK, Severity.NEEDS_PHARMACIST, Severity.INFO]),
        message=st.text(max_size=20),
        source=st.just("test"),
        item=st.none() | st.integers(min_value=1),
    ),
    max_size=8,
)


@given(results)
def test_the_outcome_is_decided_by_the_most_severe_result(found):
    severities = [result.severity for result in found]

    decided = checks.outcome(found)

    if Severity.BLOCK in severities:
        assert decided == Status.REJECTED
    elif Severity.NEEDS_PHARMACIST in severities:
        assert decided == Status.AWAITING_PHARMACIST
    else:
        assert decided == Status.APPROVED


@given(results, st.data())
def test_a_block_anywhere_rejects_whatever_else_was_found(found, data):
    position = data.draw(st.integers(min_value=0, max_value=len(found)))
    block = CheckResult("formulary.inactive", Severity.BLOCK, "gone", "test")

    assert checks.outcome([*found[:position], block, *found[position:]]) == Status.REJECTED


@given(st.lists(st.sampled_from([Severity.INFO]), max_size=5))
def test_no_results_or_only_information_approves(severities):
    found = [CheckResult("note", severity, "fyi", "test") for severity in severities]

    assert checks.outcome(found) == Status.APPROVED
