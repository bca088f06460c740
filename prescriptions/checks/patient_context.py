"""Patient context the rules need: pregnancy, breastfeeding, renal function (eGFR), hepatic
impairment, cardiac history before ADHD medicines, and height for children on them.

Each table names its source. The context is optional: a rule that needs a value which is not
recorded says nothing unless its source asks for the value before supply.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal

from patients.models import Observation, Patient
from prescriptions.checks.base import CheckResult, Context, Severity, check
from prescriptions.checks.eligibility import ADHD_MEDICINES, age_on
from prescriptions.models import PrescriptionItem

SOURCE_PREGNANCY = "SmPCs section 4.6 (pregnancy and breast-feeding); BNF pregnancy and breast-feeding advice"
SOURCE_RENAL = "SmPCs sections 4.2 and 4.3 (renal impairment); BNF renal impairment advice"
SOURCE_HEPATIC = "SmPCs sections 4.2 and 4.3 (hepatic impairment); BNF hepatic impairment advice"
SOURCE_CARDIAC = (
    "NICE guideline NG87 (guidance, not law), before starting medication: refer for a cardiology opinion "
    "(and ECG) if there is a history of heart disease, cardiac surgery, sudden cardiac death in a young "
    "relative, exertional symptoms, palpitations, chest pain, heart failure, a murmur or hypertension"
)
SOURCE_HEIGHT = (
    "NICE guideline NG87 (guidance, not law), monitoring: measure height every 6 months in children"
)
EGFR_MAX_AGE = timedelta(days=365)
HEIGHT_MAX_AGE = timedelta(days=183)
ADULT_AGE = 18
CARDIAC_MEDICINES = frozenset({"methylphenidate", "lisdexamfetamine", "dexamfetamine", "atomoxetine"})


@dataclass(frozen=True)
class Caution:
    """What a medicine (an ingredient, or "class:<therapeutic class>") needs in a condition."""

    names: frozenset[str]
    severity: str
    advice: str
    source: str


def _caution(names: str, severity: str, advice: str, source: str) -> Caution:
    return Caution(frozenset(names.split()), severity, advice, source)


PREGNANCY = [
    _caution(
        "methylphenidate lisdexamfetamine dexamfetamine atomoxetine guanfacine",
        Severity.NEEDS_PHARMACIST,
        "the SmPC advises use in pregnancy only when the benefit clearly outweighs the risk to the fetus; "
        "confirm the prescriber has weighed this with the patient",
        "Methylphenidate, lisdexamfetamine, dexamfetamine, atomoxetine and guanfacine SmPCs section 4.6",
    ),
    _caution(
        "class:statin",
        Severity.BLOCK,
        "statins are contraindicated in pregnancy",
        "Atorvastatin SmPC sections 4.3 and 4.6; BNF atorvastatin (avoid in pregnancy)",
    ),
    _caution(
        "class:ace_inhibitor class:angiotensin_receptor_blocker",
        Severity.NEEDS_PHARMACIST,
        "ACE inhibitors and angiotensin receptor blockers are contraindicated in the second and third "
        "trimesters and not recommended in the first; confirm the trimester and the plan with the prescriber",
        "Ramipril, lisinopril and losartan SmPCs sections 4.3 and 4.6; BNF (avoid in pregnancy)",
    ),
    _caution(
        "class:nsaid",
        Severity.NEEDS_PHARMACIST,
        "NSAIDs are contraindicated from 20 weeks (third trimester) and best avoided throughout pregnancy",
        "Ibuprofen SmPC sections 4.3 and 4.6; MHRA Drug Safety Update (NSAIDs from 20 weeks of pregnancy)",
    ),
]
BREASTFEEDING = [
    _caution(
        "codeine",
        Severity.BLOCK,
        "codeine is contraindicated in breastfeeding (risk of morphine toxicity in the infant)",
        "MHRA Drug Safety Update July 2013 (codeine); codeine SmPC section 4.3",
    ),
    _caution(
        "methylphenidate lisdexamfetamine dexamfetamine atomoxetine guanfacine tramadol",
        Severity.NEEDS_PHARMACIST,
        "the SmPC advises against use while breastfeeding, or a decision to stop breastfeeding or the medicine",
        "SmPCs section 4.6 (methylphenidate, amfetamines, atomoxetine, guanfacine, tramadol)",
    ),
]
# (names, eGFR below which the caution applies, severity, advice, source): lowest threshold first.
RENAL = [
    (
        _caution(
            "metformin",
            Severity.BLOCK,
            "metformin is contraindicated when eGFR is below 30",
            "Metformin SmPC sections 4.2 and 4.3; MHRA Drug Safety Update 2016",
        ),
        Decimal(30),
    ),
    (
        _caution(
            "metformin",
            Severity.NEEDS_PHARMACIST,
            "with eGFR 30-44 the maximum metformin dose is 1000 mg a day; check the dose and other risk factors",
            "Metformin SmPC section 4.2",
        ),
        Decimal(45),
    ),
    (
        _caution(
            "class:nsaid",
            Severity.NEEDS_PHARMACIST,
            "NSAIDs are contraindicated in severe renal failure and best avoided when eGFR is below 30",
            "Ibuprofen SmPC section 4.3; BNF NSAIDs (renal impairment)",
        ),
        Decimal(30),
    ),
    (
        _caution(
            "pregabalin",
            Severity.NEEDS_PHARMACIST,
            "pregabalin is reduced when creatinine clearance is below 60 mL/min; check the dose",
            "Pregabalin SmPC section 4.2",
        ),
        Decimal(60),
    ),
]
# Child-Pugh: mild (A), moderate (B), severe (C). The caution applies at its level and above.
HEPATIC_LEVELS = {"mild": 1, "moderate": 2, "severe": 3}
HEPATIC = [
    (
        _caution(
            "duloxetine",
            Severity.BLOCK,
            "duloxetine is contraindicated in liver disease resulting in hepatic impairment",
            "Duloxetine SmPC section 4.3",
        ),
        "mild",
    ),
    (
        _caution(
            "diazepam alprazolam",
            Severity.BLOCK,
            "benzodiazepines are contraindicated in severe hepatic impairment (risk of encephalopathy)",
            "Diazepam and alprazolam SmPCs section 4.3; BNF",
        ),
        "severe",
    ),
    (
        _caution(
            "atomoxetine",
            Severity.NEEDS_PHARMACIST,
            "atomoxetine is reduced to 50% of the usual dose in moderate and 25% in severe hepatic impairment",
            "Atomoxetine SmPC section 4.2",
        ),
        "moderate",
    ),
    (
        _caution(
            "class:statin",
            Severity.NEEDS_PHARMACIST,
            "atorvastatin is contraindicated in active liver disease; confirm the liver disease is not active",
            "Atorvastatin SmPC section 4.3",
        ),
        "mild",
    ),
    (
        _caution(
            "paracetamol",
            Severity.NEEDS_PHARMACIST,
            "paracetamol doses may need reducing in hepatic impairment (dose-related toxicity); check the dose",
            "BNF paracetamol (hepatic impairment); paracetamol SmPC section 4.4",
        ),
        "moderate",
    ),
]


def _names_of(item: PrescriptionItem) -> set[str]:
    medication = item.medication
    return {*medication.ingredients, f"class:{medication.therapeutic_class}"}


def _matching(context: Context, cautions: list[Caution]) -> Iterable[tuple[PrescriptionItem, Caution]]:
    for item in context.items:
        for caution in cautions:
            if _names_of(item) & caution.names:
                yield item, caution
                break


def _latest(context: Context, kind: str, max_age: timedelta) -> Observation | None:
    for observation in context.observations:
        if observation.kind == kind:
            return observation if context.today - observation.observed_on <= max_age else None
    return None


@check("context", source=SOURCE_PREGNANCY)
def check_pregnancy_and_breastfeeding(context: Context) -> Iterable[CheckResult]:
    patient: Patient = context.patient
    if patient.pregnant:
        for item, caution in _matching(context, PREGNANCY):
            yield CheckResult(
                "context.pregnancy",
                caution.severity,
                f"The patient is recorded as pregnant: {caution.advice} ({item.medication.name}).",
                caution.source,
                item.pk,
            )
    if patient.breastfeeding:
        for item, caution in _matching(context, BREASTFEEDING):
            yield CheckResult(
                "context.breastfeeding",
                caution.severity,
                f"The patient is recorded as breastfeeding: {caution.advice} ({item.medication.name}).",
                caution.source,
                item.pk,
            )


@check("context", source=SOURCE_RENAL)
def check_renal_function(context: Context) -> Iterable[CheckResult]:
    egfr = _latest(context, Observation.Kind.EGFR, EGFR_MAX_AGE)
    if egfr is None:
        return
    for item in context.items:
        for caution, below in RENAL:
            if _names_of(item) & caution.names and egfr.value < below:
                yield CheckResult(
                    "context.renal",
                    caution.severity,
                    f"eGFR is {egfr.value:f} mL/min/1.73m2 (measured {egfr.observed_on:%Y-%m-%d}), below "
                    f"{below}: {caution.advice} ({item.medication.name}).",
                    caution.source,
                    item.pk,
                )
                break


@check("context", source=SOURCE_HEPATIC)
def check_hepatic_impairment(context: Context) -> Iterable[CheckResult]:
    level = HEPATIC_LEVELS.get(context.patient.hepatic_impairment, 0)
    if not level:
        return
    for item in context.items:
        for caution, from_level in HEPATIC:
            if _names_of(item) & caution.names and level >= HEPATIC_LEVELS[from_level]:
                yield CheckResult(
                    "context.hepatic",
                    caution.severity,
                    f"The patient has {context.patient.hepatic_impairment} hepatic impairment: {caution.advice} "
                    f"({item.medication.name}).",
                    caution.source,
                    item.pk,
                )
                break


@check("context", source=SOURCE_CARDIAC)
def check_cardiac_history(context: Context) -> Iterable[CheckResult]:
    history = context.patient.cardiac_history or []
    items = [item for item in context.items if CARDIAC_MEDICINES & set(item.medication.ingredients)]
    if not history or not items:
        return
    conditions = ", ".join(Patient.CardiacHistory(value).label.lower() for value in history)
    reviewed = context.patient.cardiology_review_on
    if reviewed is not None:
        yield CheckResult(
            "context.cardiac_history_reviewed",
            Severity.INFO,
            f"Cardiac history ({conditions}); a cardiology opinion was recorded on {reviewed:%Y-%m-%d}.",
            SOURCE_CARDIAC,
            items[0].pk,
        )
        return
    yield CheckResult(
        "context.cardiac_history",
        Severity.NEEDS_PHARMACIST,
        f"The patient has a cardiac history ({conditions}) and no cardiology opinion is recorded: NICE NG87 "
        f"advises an ECG and a cardiology opinion before starting {items[0].medication.name}. Confirm one was "
        "obtained (send cardiology_review_on) before supply.",
        SOURCE_CARDIAC,
        items[0].pk,
    )


@check("context", source=SOURCE_HEIGHT)
def check_height_of_children(context: Context) -> Iterable[CheckResult]:
    items = [item for item in context.items if ADHD_MEDICINES & set(item.medication.ingredients)]
    if not items or age_on(context.patient.birth_date, context.today) >= ADULT_AGE:
        return
    height = _latest(context, Observation.Kind.HEIGHT, HEIGHT_MAX_AGE)
    if height is None:
        yield CheckResult(
            "context.height_not_recent",
            Severity.INFO,
            "No height measured in the last 6 months for a child on an ADHD medicine: NICE NG87 advises "
            "measuring height every 6 months and plotting it on a growth chart.",
            SOURCE_HEIGHT,
            items[0].pk,
        )
