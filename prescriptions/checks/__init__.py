"""The clinical check engine: every rule for the clinic's jurisdiction, on every prescription.

Each rule is a small function in one module per family (formulary and supply, allergy,
interactions, duplicate therapy, dose, identity, prescriber, eligibility, history and the
controlled-drug law of GB and the US); each result has a code, a severity, a message a
clinician understands and the rule's source. The outcome is decided by the most severe
result: any BLOCK rejects, any NEEDS_PHARMACIST (every controlled drug gets one) waits for a
pharmacist, otherwise the prescription is approved.

The engine fails closed: a check that raises, or cannot run for want of data, gives a
NEEDS_PHARMACIST result naming why, never a silent pass.
"""

from __future__ import annotations

import importlib
import logging
from datetime import timedelta

from django.db import connection
from django.utils import timezone

from patients.models import Observation
from patients.selectors import person_patient_ids
from prescriptions.checks.base import REGISTRY, CheckResult, Context, Formulary, Severity
from prescriptions.models import (
    AllergyClass,
    FormularyRelease,
    InteractionRule,
    Medication,
    PaediatricDoseRule,
    Prescription,
    StateValidityLimit,
    Status,
)

# One module per rule family; importing a module registers its checks, in this order.
FAMILIES = (
    "formulary_supply",
    "identity",
    "prescriber",
    "allergy",
    "interactions",
    "duplicate_therapy",
    "dose",
    "paediatric",
    "eligibility",
    "patient_context",
    "history",
    "validity",
    "cd_law_gb",
    "cd_law_us",
)
for _family in FAMILIES:
    importlib.import_module(f"prescriptions.checks.{_family}")

__all__ = ["CheckResult", "Severity", "build_context", "outcome", "run_checks"]

logger = logging.getLogger(__name__)

HISTORY_DAYS = 400
NOT_SUPPLIED = (Status.REJECTED, Status.CANCELLED)


def _formulary_read() -> Formulary:
    class_of_ingredient: dict[str, str] = {}
    by_code: dict[str, Medication] = {}
    for medication in Medication.objects.all():
        by_code[medication.code] = medication
        for ingredient in medication.ingredients:
            class_of_ingredient.setdefault(ingredient, medication.therapeutic_class)
    return Formulary(
        loaded=FormularyRelease.objects.exists(),
        interactions=list(InteractionRule.objects.all()),
        allergy_classes=list(AllergyClass.objects.all()),
        class_of_ingredient=class_of_ingredient,
        medications_by_code=by_code,
        paediatric_rules=list(PaediatricDoseRule.objects.all()),
        state_limits={(limit.state, limit.schedule): limit for limit in StateValidityLimit.objects.all()},
    )


# The formulary and rule tables change rarely (manage.py load_formulary, the admin) and every
# prescription's checks read them all. A process keeps what it read while this fingerprint of
# the tables stays the same: a committed insert, update or delete changes a table's row count,
# the transaction ids that wrote its rows (xmin) or where its row versions sit (ctid; an update
# writes a new version), and the next check reads the tables again.
FORMULARY_TABLES = (
    Medication,
    FormularyRelease,
    InteractionRule,
    AllergyClass,
    PaediatricDoseRule,
    StateValidityLimit,
)
_FINGERPRINT_SQL = "SELECT " + ", ".join(
    "(SELECT count(*) || ':' || coalesce(sum(xmin::text::bigint), 0) || ':' || coalesce(sum(hashtext(ctid::text)), 0)"
    f" FROM {model._meta.db_table})"
    for model in FORMULARY_TABLES
)
_formulary_cache: tuple[tuple[str, ...], Formulary] | None = None


def _formulary() -> Formulary:
    global _formulary_cache
    with connection.cursor() as cursor:
        cursor.execute(_FINGERPRINT_SQL)
        fingerprint = tuple(cursor.fetchone())
    if _formulary_cache is not None and _formulary_cache[0] == fingerprint:
        return _formulary_cache[1]
    formulary = _formulary_read()
    _formulary_cache = (fingerprint, formulary)
    return formulary


def build_context(prescription: Prescription) -> Context:
    """Everything the checks read, in a fixed number of queries."""
    patient = prescription.patient
    today = timezone.localdate()
    # Every supply to this person, through any clinic: the point of pharmacy-side checks. The
    # person's records are matched on keyed blind indexes (patients.selectors), never plaintext.
    history = list(
        Prescription.objects.filter(
            patient_id__in=person_patient_ids(patient=patient),
            issued_on__gte=today - timedelta(days=HISTORY_DAYS),
        )
        .exclude(pk=prescription.pk)
        .exclude(status__in=NOT_SUPPLIED)
        .prefetch_related("items__medication")
        .order_by("-issued_on", "-id")
    )
    allergy_records = list(patient.allergies.all())
    return Context(
        prescription=prescription,
        jurisdiction=prescription.clinic.jurisdiction,
        today=today,
        items=list(prescription.items.all()),
        patient=patient,
        prescriber=prescription.prescriber,
        allergies=[allergy.substance.strip().lower() for allergy in allergy_records],
        allergy_records=allergy_records,
        current_medications=list(patient.current_medications.all()),
        diagnoses=list(patient.diagnoses.all()),
        observations=list(Observation.objects.filter(patient_id=patient.pk).order_by("-observed_on", "-id")),
        history=history,
        formulary=_formulary(),
        off_formulary_items=list(prescription.off_formulary_items.all()),
    )


def run_checks(prescription: Prescription) -> list[CheckResult]:
    context = build_context(prescription)
    results: list[CheckResult] = []
    for rule in REGISTRY:
        if context.jurisdiction not in rule.jurisdictions:
            continue
        try:
            results.extend(rule.function(context))
        except Exception as error:  # noqa: BLE001 - fail closed: any failure goes to a pharmacist
            # The type only: an exception's text may quote patient data.
            logger.error(
                "check %s could not run on prescription %s: %s",
                rule.code,
                prescription.pk,
                type(error).__name__,
            )
            results.append(
                CheckResult(
                    f"{rule.code}.could_not_run",
                    Severity.NEEDS_PHARMACIST,
                    f"The {rule.code.replace('_', ' ')} check could not run ({type(error).__name__}); "
                    "a pharmacist must check this by hand.",
                    rule.source,
                )
            )
    return results


def outcome(results: list[CheckResult]) -> str:
    severities = {result.severity for result in results}
    if Severity.BLOCK in severities:
        return Status.REJECTED
    if Severity.NEEDS_PHARMACIST in severities:
        return Status.AWAITING_PHARMACIST
    return Status.APPROVED
