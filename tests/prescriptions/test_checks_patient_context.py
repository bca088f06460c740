"""Patient context the rules need: pregnancy, breastfeeding, eGFR, hepatic impairment, cardiac
history before ADHD medicines (NICE NG87) and height for children. Each row names its source."""

from __future__ import annotations

import datetime

import pytest
from django.utils import timezone

from prescriptions.models import Prescription
from tests.prescriptions.factories import adhd_context, checked, scenario

pytestmark = pytest.mark.django_db

PARACETAMOL, METHYLPHENIDATE_10, ATOMOXETINE_40 = "322236009", "324907005", "39112111000001107"
ATORVASTATIN, CODEINE, METFORMIN, PREGABALIN = "320000009", "322280009", "325278007", "415160008"
DULOXETINE, DIAZEPAM, RAMIPRIL = "9283111000001106", "321226002", "408051007"
CD_ITEM = {
    "dose_text": "One tablet twice a day",
    "quantity": 56,
    "quantity_words": "fifty six",
    "days_supply": 28,
}
CAPSULE = {**CD_ITEM, "unit": "capsule", "dose_text": "One capsule twice a day"}


def days_ago(days: int) -> datetime.date:
    return timezone.localdate() - datetime.timedelta(days=days)


def context_findings(prescription) -> dict[str, str]:  # type: ignore[no-untyped-def]
    return {code: severity for code, severity in checked(prescription).items() if code.startswith("context")}


def prescribe(
    code: str, patient: dict | None = None, observations: list | None = None, item: dict | None = None
):  # type: ignore[no-untyped-def]
    adhd = adhd_context()
    return scenario(
        code=code,
        item=item or CD_ITEM,
        patient=patient,
        diagnoses=adhd["diagnoses"],
        observations=adhd["observations"] + (observations or []),
    )


@pytest.mark.parametrize(
    ("code", "patient", "expected"),
    [
        # SmPCs 4.6: ADHD medicines in pregnancy only if the benefit outweighs the risk.
        (METHYLPHENIDATE_10, {"pregnant": True}, {"context.pregnancy": "needs_pharmacist"}),
        (ATOMOXETINE_40, {"pregnant": True}, {"context.pregnancy": "needs_pharmacist"}),
        # Atorvastatin SmPC 4.3: contraindicated in pregnancy.
        (ATORVASTATIN, {"pregnant": True}, {"context.pregnancy": "block"}),
        # Ramipril SmPC 4.3/4.6: trimester-dependent, so a pharmacist confirms.
        (RAMIPRIL, {"pregnant": True}, {"context.pregnancy": "needs_pharmacist"}),
        (METHYLPHENIDATE_10, {"pregnant": False}, {}),
        (METHYLPHENIDATE_10, {"pregnant": None}, {}),
        (PARACETAMOL, {"pregnant": True}, {}),
        # MHRA 2013: codeine contraindicated while breastfeeding.
        (CODEINE, {"breastfeeding": True}, {"context.breastfeeding": "block"}),
        (METHYLPHENIDATE_10, {"breastfeeding": True}, {"context.breastfeeding": "needs_pharmacist"}),
        (CODEINE, {"breastfeeding": False}, {}),
    ],
)
def test_pregnancy_and_breastfeeding(formulary, code, patient, expected):
    """Sources: SmPCs section 4.6; atorvastatin SmPC 4.3; MHRA Drug Safety Update July 2013 (codeine)."""
    item = CAPSULE if code == ATOMOXETINE_40 else CD_ITEM
    assert context_findings(prescribe(code, patient, item=item)) == expected


@pytest.mark.parametrize(
    ("code", "egfr", "measured_days_ago", "expected"),
    [
        # Metformin SmPC 4.2/4.3: contraindicated below 30; at most 1 g a day at 30-44.
        (METFORMIN, 25, 10, {"context.renal": "block"}),
        (METFORMIN, 40, 10, {"context.renal": "needs_pharmacist"}),
        (METFORMIN, 45, 10, {}),
        (METFORMIN, 25, 400, {}),  # more than a year old: not used
        # Pregabalin SmPC 4.2: reduce below 60 mL/min.
        (PREGABALIN, 55, 10, {"context.renal": "needs_pharmacist"}),
        (PARACETAMOL, 10, 10, {}),
    ],
)
def test_renal_function_from_the_latest_egfr(formulary, code, egfr, measured_days_ago, expected):
    """Sources: metformin SmPC 4.2/4.3 and MHRA 2016; pregabalin SmPC 4.2."""
    observation = {"kind": "egfr", "value": egfr, "observed_on": days_ago(measured_days_ago)}
    assert context_findings(prescribe(code, observations=[observation])) == expected


@pytest.mark.parametrize(
    ("code", "impairment", "expected"),
    [
        # Atomoxetine SmPC 4.2: 50% in moderate, 25% in severe.
        (ATOMOXETINE_40, "moderate", {"context.hepatic": "needs_pharmacist"}),
        (ATOMOXETINE_40, "mild", {}),
        # Duloxetine SmPC 4.3: contraindicated in liver disease with hepatic impairment.
        (DULOXETINE, "mild", {"context.hepatic": "block"}),
        # Diazepam SmPC 4.3: contraindicated in severe hepatic impairment.
        (DIAZEPAM, "severe", {"context.hepatic": "block"}),
        (DIAZEPAM, "moderate", {}),
        (DULOXETINE, "none", {}),
        (DULOXETINE, "", {}),
    ],
)
def test_hepatic_impairment(formulary, code, impairment, expected):
    """Sources: atomoxetine SmPC 4.2; duloxetine SmPC 4.3; diazepam SmPC 4.3."""
    item = CAPSULE if code in (ATOMOXETINE_40, DULOXETINE) else CD_ITEM
    assert context_findings(prescribe(code, {"hepatic_impairment": impairment}, item=item)) == expected


@pytest.mark.parametrize(
    ("code", "patient", "expected"),
    [
        (
            METHYLPHENIDATE_10,
            {"cardiac_history": ["congenital_heart_disease"]},
            {"context.cardiac_history": "needs_pharmacist"},
        ),
        (
            ATOMOXETINE_40,
            {"cardiac_history": ["palpitations", "heart_murmur"]},
            {"context.cardiac_history": "needs_pharmacist"},
        ),
        (
            METHYLPHENIDATE_10,
            {"cardiac_history": ["cardiac_surgery"], "cardiology_review_on": datetime.date(2026, 1, 5)},
            {"context.cardiac_history_reviewed": "info"},
        ),
        (METHYLPHENIDATE_10, {"cardiac_history": []}, {}),
        (PARACETAMOL, {"cardiac_history": ["congenital_heart_disease"]}, {}),
    ],
)
def test_cardiac_history_before_adhd_medicines_needs_a_cardiology_opinion(formulary, code, patient, expected):
    """Source: NICE NG87 (guidance, not law): cardiology opinion and ECG before ADHD medication."""
    item = CAPSULE if code == ATOMOXETINE_40 else CD_ITEM
    assert context_findings(prescribe(code, patient, item=item)) == expected


def test_the_cardiac_finding_names_the_history_and_what_to_check(formulary):
    prescription = prescribe(
        METHYLPHENIDATE_10, {"cardiac_history": ["congenital_heart_disease", "exertional_syncope"]}
    )
    checked(prescription)

    result = next(
        r
        for r in Prescription.objects.get(pk=prescription.pk).check_results
        if r["code"] == "context.cardiac_history"
    )
    assert result["message"] == (
        "The patient has a cardiac history (congenital heart disease, fainting on exertion or in response to "
        "fright or noise) and no cardiology opinion is recorded: NICE NG87 advises an ECG and a cardiology "
        "opinion before starting Methylphenidate. Confirm one was obtained (send cardiology_review_on) before supply."
    )
    assert result["source"].startswith("NICE guideline NG87 (guidance, not law)")


@pytest.mark.parametrize(
    ("age", "height_days_ago", "expected"),
    [
        (10, None, {"context.height_not_recent": "info"}),
        (10, 200, {"context.height_not_recent": "info"}),
        (10, 30, {}),
        (30, None, {}),
    ],
)
def test_a_child_on_an_adhd_medicine_has_a_recent_height(formulary, age, height_days_ago, expected):
    """Source: NICE NG87 (guidance, not law): height every 6 months in children on ADHD medicines."""
    born = timezone.localdate().replace(year=timezone.localdate().year - age) - datetime.timedelta(days=30)
    heights = (
        []
        if height_days_ago is None
        else [{"kind": "height", "value": 140, "observed_on": days_ago(height_days_ago)}]
    )
    prescription = prescribe(ATOMOXETINE_40, {"birth_date": born}, observations=heights, item=CAPSULE)

    assert context_findings(prescription) == expected
