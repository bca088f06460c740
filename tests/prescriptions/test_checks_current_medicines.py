"""Current medicines with start, stop and dose: washout after stopping, duplicate therapy only
with what is still taken, and one ingredient's daily dose added up across sources."""

from __future__ import annotations

import datetime
from decimal import Decimal

import pytest
from django.utils import timezone

from prescriptions.models import Prescription
from tests.patients.factories import CurrentMedicationFactory
from tests.prescriptions.factories import adhd_context, checked, scenario

pytestmark = pytest.mark.django_db

PARACETAMOL, PHENELZINE, METHYLPHENIDATE_10 = "322236009", "321886008", "324907005"
LISDEXAMFETAMINE_30 = "21640111000001103"
CD_ITEM = {
    "dose_text": "One tablet twice a day",
    "quantity": 56,
    "quantity_words": "fifty six",
    "days_supply": 28,
}


def days_ago(days: int) -> datetime.date:
    return timezone.localdate() - datetime.timedelta(days=days)


def findings(prescription, prefix: str) -> dict[str, str]:  # type: ignore[no-untyped-def]
    return {code: severity for code, severity in checked(prescription).items() if code.startswith(prefix)}


def message(prescription, code: str) -> dict:  # type: ignore[no-untyped-def]
    results = Prescription.objects.get(pk=prescription.pk).check_results
    return next(result for result in results if result["code"] == code)


@pytest.mark.parametrize(
    ("name", "stopped_days_ago", "code", "expected"),
    [
        # MAOI then a stimulant: contraindicated during and within 14 days after (SmPC 4.3).
        ("Phenelzine 15mg tablets", None, METHYLPHENIDATE_10, {"interaction.contraindicated": "block"}),
        ("Phenelzine 15mg tablets", 0, METHYLPHENIDATE_10, {"interaction.contraindicated": "block"}),
        ("Phenelzine 15mg tablets", 10, METHYLPHENIDATE_10, {"interaction.contraindicated": "block"}),
        ("Phenelzine 15mg tablets", 13, METHYLPHENIDATE_10, {"interaction.contraindicated": "block"}),
        ("Phenelzine 15mg tablets", 14, METHYLPHENIDATE_10, {}),
        ("Phenelzine 15mg tablets", 60, METHYLPHENIDATE_10, {}),
        # Fluoxetine then an MAOI: 5 weeks (fluoxetine SmPC 4.3; BNF).
        ("Fluoxetine 20mg capsules", 34, PHENELZINE, {"interaction.contraindicated": "block"}),
        ("Fluoxetine 20mg capsules", 35, PHENELZINE, {}),
        # Sertraline then an MAOI: 2 weeks (BNF changing antidepressants).
        ("Sertraline 50mg tablets", 13, PHENELZINE, {"interaction.contraindicated": "block"}),
        ("Sertraline 50mg tablets", 14, PHENELZINE, {}),
        # A medicine with no washout stops counting once stopped.
        ("Clonidine 100 microgram tablets", 1, METHYLPHENIDATE_10, {}),
        (
            "Clonidine 100 microgram tablets",
            None,
            METHYLPHENIDATE_10,
            {"interaction.major": "needs_pharmacist"},
        ),
        # Unknown and stopped within the longest washout: still a pharmacist's question.
        (
            "Nardil-like tonic",
            20,
            METHYLPHENIDATE_10,
            {"interaction.unrecognised_medicine": "needs_pharmacist"},
        ),
        ("Nardil-like tonic", 40, METHYLPHENIDATE_10, {}),
    ],
)
def test_a_stopped_medicine_still_interacts_during_its_washout(
    formulary, name, stopped_days_ago, code, expected
):
    """Sources: stimulant, atomoxetine and SSRI SmPCs 4.3; BNF Antidepressant drugs (washout)."""
    item = (
        CD_ITEM
        if code == METHYLPHENIDATE_10
        else {"dose_text": "One tablet three times a day", "quantity": 42}
    )
    prescription = scenario(code=code, item=item, **adhd_context())
    stopped = None if stopped_days_ago is None else days_ago(stopped_days_ago)
    CurrentMedicationFactory(
        patient=prescription.patient, name=name, started_on=days_ago(400), stopped_on=stopped
    )

    assert findings(prescription, "interaction") == expected


def test_the_washout_finding_names_the_stop_date_and_the_washout_source(formulary):
    prescription = scenario(code=METHYLPHENIDATE_10, item=CD_ITEM, **adhd_context())
    CurrentMedicationFactory(
        patient=prescription.patient, name="Phenelzine 15mg tablets", stopped_on=days_ago(10)
    )
    checked(prescription)

    result = message(prescription, "interaction.contraindicated")
    assert f"stopped on {days_ago(10):%Y-%m-%d}, 10 days ago, within its 14-day washout" in result["message"]
    assert "which the patient stopped recently" in result["message"]
    assert "MAOIs 14 days" in result["source"]


@pytest.mark.parametrize(
    ("stopped_on", "expected"),
    [
        (None, {"duplicate.with_current": "needs_pharmacist"}),
        (days_ago(-7), {"duplicate.with_current": "needs_pharmacist"}),  # stops next week: still taken
        (days_ago(1), {}),
    ],
)
def test_duplicate_therapy_counts_only_what_is_still_taken(formulary, stopped_on, expected):
    """Source: Scriptline policy; BNF guidance on therapeutic duplication."""
    prescription = scenario(
        code=LISDEXAMFETAMINE_30,
        item={**CD_ITEM, "unit": "capsule", "dose_text": "One capsule each morning", "quantity": 28,
              "quantity_words": "twenty eight"},
        **adhd_context(),
    )  # fmt: skip
    CurrentMedicationFactory(
        patient=prescription.patient, name="Dexamfetamine 5mg tablets", stopped_on=stopped_on
    )

    assert findings(prescription, "duplicate") == expected


@pytest.mark.parametrize(
    ("current", "expected"),
    [
        ({"daily_dose": Decimal(3000), "daily_dose_unit": "mg"}, {}),
        (
            {"daily_dose": Decimal(3500), "daily_dose_unit": "mg"},
            {"cumulative_dose.above_maximum": "needs_pharmacist"},
        ),
        (
            {"daily_dose": Decimal("3.5"), "daily_dose_unit": "g"},
            {"cumulative_dose.above_maximum": "needs_pharmacist"},
        ),
        ({"daily_dose": Decimal(3500), "daily_dose_unit": "mg", "stopped_on": days_ago(2)}, {}),
        ({}, {}),  # no dose reported: nothing to add up
    ],
)
def test_the_daily_dose_of_one_ingredient_is_added_up_with_current_medicines(formulary, current, expected):
    """Source: BNF maximum daily dose of paracetamol, 4 g from all sources (MHRA)."""
    prescription = scenario(code=PARACETAMOL)  # 2 tablets of 500 mg a day: 1 g
    CurrentMedicationFactory(patient=prescription.patient, name="Paracetamol 500mg caplets", **current)

    assert findings(prescription, "cumulative_dose") == expected


def test_the_cumulative_dose_finding_says_by_how_much_and_from_where(formulary):
    prescription = scenario(code=PARACETAMOL)
    CurrentMedicationFactory(
        patient=prescription.patient,
        name="Co-codamol 30/500",
        code="",
        daily_dose=Decimal(3500),
        daily_dose_unit="mg",
    )
    CurrentMedicationFactory(
        patient=prescription.patient,
        name="Paracetamol 500mg caplets",
        daily_dose=Decimal(3500),
        daily_dose_unit="mg",
    )
    checked(prescription)

    assert message(prescription, "cumulative_dose.above_maximum")["message"] == (
        "Together the patient would take 4500 mg of paracetamol a day, more than the maximum of 4000 mg a day "
        "by 500 mg (1000 mg a day from Paracetamol on this prescription; 3500 mg a day from Paracetamol 500mg "
        "caplets, which the patient already takes). Check which one the patient should stop."
    )
