"""Eligibility for ADHD medicines: a recorded diagnosis, the patient's age, and blood
pressure, pulse and weight measured recently enough (NICE NG87 monitoring advice)."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import date, timedelta
from decimal import Decimal

from patients.models import Observation
from prescriptions.checks.base import CheckResult, Context, Severity, check
from prescriptions.models import PrescriptionItem

SOURCE = "NICE guideline NG87 (ADHD: diagnosis and management), sections 1.5-1.8"
SOURCE_LICENCE = "Summaries of Product Characteristics: licensed from age 6"

ADHD_MEDICINES = frozenset(
    {
        "methylphenidate",
        "dexmethylphenidate",
        "lisdexamfetamine",
        "dexamfetamine",
        "amfetamine",
        "atomoxetine",
        "guanfacine",
    }
)
# SNOMED CT "Attention deficit hyperactivity disorder" and its common children; ICD-10 F90.x.
ADHD_SNOMED_CODES = frozenset({"406506008", "192127007", "7461003", "31177006", "1855002"})
ADHD_ICD10_PREFIX = "F90"
MONITORING_MAX_AGE = timedelta(days=183)  # about six months
MINIMUM_LICENSED_AGE = 6
SPECIALIST_OPINION_UNDER = 5
HIGH_SYSTOLIC, HIGH_DIASTOLIC, HIGH_PULSE = Decimal(140), Decimal(90), Decimal(120)


def age_on(birth_date: date, today: date) -> int:
    return today.year - birth_date.year - ((today.month, today.day) < (birth_date.month, birth_date.day))


def has_adhd_diagnosis(context: Context) -> bool:
    for diagnosis in context.diagnoses:
        code = diagnosis.code.strip().upper()
        if code in ADHD_SNOMED_CODES or code.startswith(ADHD_ICD10_PREFIX):
            return True
    return False


def adhd_items(context: Context) -> list[PrescriptionItem]:
    return [item for item in context.items if ADHD_MEDICINES & set(item.medication.ingredients)]


@check("eligibility", source=SOURCE)
def check_adhd_eligibility(context: Context) -> Iterable[CheckResult]:
    items = adhd_items(context)
    if not items:
        return
    first = items[0].pk
    if not has_adhd_diagnosis(context):
        yield CheckResult(
            "eligibility.no_adhd_diagnosis",
            Severity.NEEDS_PHARMACIST,
            "No ADHD diagnosis (SNOMED CT or ICD-10 F90) is recorded for the patient; NICE NG87 "
            "advises ADHD medicines only after a specialist diagnosis. Supply it with the prescription.",
            SOURCE,
            first,
        )
    age = age_on(context.patient.birth_date, context.today)
    if age < MINIMUM_LICENSED_AGE:
        extra = (
            " NICE NG87 advises medication under 5 only after a second specialist opinion."
            if age < SPECIALIST_OPINION_UNDER
            else ""
        )
        yield CheckResult(
            "eligibility.age",
            Severity.NEEDS_PHARMACIST,
            f"The patient is {age}: ADHD medicines are licensed from age {MINIMUM_LICENSED_AGE}.{extra}",
            f"{SOURCE_LICENCE}; {SOURCE}",
            first,
        )
    yield from _monitoring(context, first)


def _latest(context: Context, kind: str) -> Observation | None:
    return next((observation for observation in context.observations if observation.kind == kind), None)


def _monitoring(context: Context, item_id: int) -> Iterable[CheckResult]:
    for kind in (Observation.Kind.BLOOD_PRESSURE, Observation.Kind.PULSE, Observation.Kind.WEIGHT):
        latest = _latest(context, kind)
        label = Observation.Kind(kind).label.split(" (")[0].lower()
        if latest is None or context.today - latest.observed_on > MONITORING_MAX_AGE:
            when = "never recorded" if latest is None else f"last measured {latest.observed_on:%Y-%m-%d}"
            yield CheckResult(
                f"eligibility.{kind}_not_recent",
                Severity.NEEDS_PHARMACIST,
                f"The patient's {label} is {when}; NICE NG87 (guidance, not law) advises measuring it "
                "before and every 6 months during ADHD treatment.",
                SOURCE,
                item_id,
            )
    pressure, pulse = (
        _latest(context, Observation.Kind.BLOOD_PRESSURE),
        _latest(context, Observation.Kind.PULSE),
    )
    if pressure is not None and (
        pressure.value >= HIGH_SYSTOLIC or (pressure.diastolic or 0) >= HIGH_DIASTOLIC
    ):
        yield CheckResult(
            "eligibility.blood_pressure_high",
            Severity.NEEDS_PHARMACIST,
            f"The latest blood pressure is {pressure.value:f}/{pressure.diastolic or 0:f} mmHg; NICE NG87 "
            "advises reviewing the dose if blood pressure rises during treatment.",
            SOURCE,
            item_id,
        )
    if pulse is not None and pulse.value > HIGH_PULSE:
        yield CheckResult(
            "eligibility.pulse_high",
            Severity.NEEDS_PHARMACIST,
            f"The latest pulse is {pulse.value:f} beats a minute; NICE NG87 advises reviewing the dose "
            "for a sustained resting tachycardia over 120.",
            SOURCE,
            item_id,
        )
