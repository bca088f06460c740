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

import functools
import importlib
import logging
from collections.abc import Sequence
from datetime import date, timedelta
from typing import Any

from django.db import connection
from django.db.models import Model
from django.utils import timezone

from common import rows
from patients.models import Allergy, Clinic, CurrentMedication, Diagnosis, Observation, Patient
from patients.selectors import person_patient_ids
from prescriptions.checks.base import REGISTRY, CheckResult, Context, Formulary, Severity
from prescriptions.models import (
    AllergyClass,
    FormularyRelease,
    InteractionRule,
    Medication,
    OffFormularyItem,
    PaediatricDoseRule,
    Prescriber,
    Prescription,
    PrescriptionItem,
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

__all__ = ["CheckResult", "Severity", "build_context", "context_load", "context_run", "outcome", "run_checks"]

logger = logging.getLogger(__name__)

HISTORY_DAYS = 400
NOT_SUPPLIED = (Status.REJECTED, Status.CANCELLED)


def _formulary_read() -> Formulary:
    class_of_ingredient: dict[str, str] = {}
    by_code: dict[str, Medication] = {}
    by_id: dict[int, Medication] = {}
    for medication in Medication.objects.all():
        by_code[medication.code] = medication
        by_id[medication.pk] = medication
        for ingredient in medication.ingredients:
            class_of_ingredient.setdefault(ingredient, medication.therapeutic_class)
    return Formulary(
        loaded=FormularyRelease.objects.exists(),
        interactions=list(InteractionRule.objects.all()),
        allergy_classes=list(AllergyClass.objects.all()),
        class_of_ingredient=class_of_ingredient,
        medications_by_code=by_code,
        medications_by_id=by_id,
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
    with connection.cursor() as cursor:
        cursor.execute(_FINGERPRINT_SQL)
        fingerprint = tuple(cursor.fetchone())
    return _formulary_for(fingerprint)


def _formulary_for(fingerprint: tuple[str, ...]) -> Formulary:
    """The formulary as of `fingerprint` (read by _FINGERPRINT_SQL's columns): the one kept, or
    read again when the tables changed."""
    global _formulary_cache
    if _formulary_cache is not None and _formulary_cache[0] == fingerprint:
        return _formulary_cache[1]
    formulary = _formulary_read()
    _formulary_cache = (fingerprint, formulary)
    return formulary


# --- Reading what the checks need: two statements -----------------------------------------------

# The prescription, its clinic, patient and prescriber, and the formulary's fingerprint.
_PARTIES = (Prescription, Clinic, Patient, Prescriber)
_PRESCRIPTION_SQL = (
    f"SELECT {rows.columns_sql(Prescription, 'p')}, {rows.columns_sql(Clinic, 'c')},"
    f" {rows.columns_sql(Patient, 'pt')}, {rows.columns_sql(Prescriber, 'pr')},"
    f" {_FINGERPRINT_SQL.removeprefix('SELECT ')}"
    f' FROM "{Prescription._meta.db_table}" AS p'
    f' JOIN "{Clinic._meta.db_table}" AS c ON c.id = p.clinic_id'
    f' JOIN "{Patient._meta.db_table}" AS pt ON pt.id = p.patient_id'
    f' JOIN "{Prescriber._meta.db_table}" AS pr ON pr.id = p.prescriber_id'
    " WHERE p.id = %s AND p.status = %s"
)

# Everything else, one UNION ALL: each branch fills its own model's columns (a slot) and NULLs
# in the others, tagged with the slot's number. The history (a CTE) is the person's other
# prescriptions that were supplied, newest first; items are this prescription's and the
# history's.
_RECORD_MODELS: tuple[type[Model], ...] = (
    Prescription,
    PrescriptionItem,
    OffFormularyItem,
    Allergy,
    CurrentMedication,
    Diagnosis,
    Observation,
)
(_HISTORY, _ITEM, _OFF_FORMULARY, _ALLERGY, _CURRENT, _DIAGNOSIS, _OBSERVATION) = range(len(_RECORD_MODELS))


def _branch(slot: int, source: str, where: str) -> str:
    columns = []
    for index, model in enumerate(_RECORD_MODELS):
        for field in model._meta.concrete_fields:
            if index == slot:
                columns.append(f't."{field.column}"')
            else:
                columns.append(f"NULL::{field.db_type(connection)}")
    return f"SELECT {slot}, {', '.join(columns)} FROM {source} AS t WHERE {where}"


@functools.cache
def _records_union_sql() -> str:
    return " UNION ALL ".join(
        (
            _branch(_HISTORY, "history", "TRUE"),
            _branch(
                _ITEM,
                f'"{PrescriptionItem._meta.db_table}"',
                "t.prescription_id = %s OR t.prescription_id IN (SELECT id FROM history)",
            ),
            _branch(_OFF_FORMULARY, f'"{OffFormularyItem._meta.db_table}"', "t.prescription_id = %s"),
            *(
                _branch(slot, f'"{model._meta.db_table}"', "t.patient_id = %s")
                for slot, model in enumerate(_RECORD_MODELS)
                if slot >= _ALLERGY
            ),
        )
    )


def _records_sql(person_sql: str) -> str:
    return (
        f'WITH history AS (SELECT h.* FROM "{Prescription._meta.db_table}" AS h'
        f" WHERE h.patient_id IN ({person_sql}) AND h.issued_on >= %s AND h.id <> %s"
        f" AND NOT (h.status = ANY(%s))) {_records_union_sql()}"
    )


_STARTS = [1]
for _model in _RECORD_MODELS:
    _STARTS.append(_STARTS[-1] + rows.column_count(_model))


def _set_items(prescription: Prescription, related: str, items: Sequence[Model]) -> None:
    """Fill the prefetch cache of `prescription.<related>.all()` with `items`, as
    prefetch_related would."""
    cached = getattr(prescription, related).all()
    cached._result_cache = list(items)
    cached._prefetch_done = True
    if not hasattr(prescription, "_prefetched_objects_cache"):
        prescription._prefetched_objects_cache = {}  # type: ignore[attr-defined]  # Django's prefetch cache
    prescription._prefetched_objects_cache[related] = cached  # type: ignore[attr-defined]  # as above


def _context_read(prescription: Prescription, patient: Patient, formulary: Formulary) -> Context:
    """The context of `prescription` (its clinic, patient and prescriber cached on it): every
    record the checks read, in one statement."""
    today = timezone.localdate()
    # Every supply to this person, through any clinic: the point of pharmacy-side checks. The
    # person's records are matched on keyed blind indexes (patients.selectors), never plaintext.
    person_sql, person_params = person_patient_ids(patient=patient).query.sql_with_params()
    params: list[Any] = [
        *person_params,
        today - timedelta(days=HISTORY_DAYS),
        prescription.pk,
        list(NOT_SUPPLIED),
        prescription.pk,
        prescription.pk,
        *([patient.pk] * 4),
    ]
    found: list[list[Any]] = [[] for _ in _RECORD_MODELS]
    with rows.planned_cursor() as cursor:
        cursor.execute(_records_sql(person_sql), params)
        for row in cursor.fetchall():
            slot = row[0]
            found[slot].append(
                rows.instance_from_columns(_RECORD_MODELS[slot], row[_STARTS[slot] : _STARTS[slot + 1]])
            )
    medications = formulary.medications_by_id
    missing = {item.medication_id for item in found[_ITEM]} - medications.keys()
    if missing:  # added to the formulary since its fingerprint was read
        medications = {**medications, **Medication.objects.in_bulk(missing)}
    history: list[Prescription] = sorted(
        found[_HISTORY], key=lambda other: (other.issued_on, other.pk), reverse=True
    )
    items_of: dict[int, list[PrescriptionItem]] = {other.pk: [] for other in (prescription, *history)}
    for item in sorted(found[_ITEM], key=lambda item: item.pk):
        PrescriptionItem.medication.field.set_cached_value(item, medications[item.medication_id])
        items_of[item.prescription_id].append(item)
    for other in (prescription, *history):
        _set_items(other, "items", items_of[other.pk])
    off_formulary = sorted(found[_OFF_FORMULARY], key=lambda item: item.line)
    _set_items(prescription, "off_formulary_items", off_formulary)
    allergy_records = sorted(found[_ALLERGY], key=lambda record: record.pk)
    return Context(
        prescription=prescription,
        jurisdiction=prescription.clinic.jurisdiction,
        today=today,
        items=items_of[prescription.pk],
        patient=patient,
        prescriber=prescription.prescriber,
        allergies=[allergy.substance.strip().lower() for allergy in allergy_records],
        allergy_records=allergy_records,
        current_medications=sorted(found[_CURRENT], key=lambda record: record.pk),
        diagnoses=sorted(found[_DIAGNOSIS], key=_newest_first("recorded_on"), reverse=True),
        observations=sorted(found[_OBSERVATION], key=_newest_first("observed_on"), reverse=True),
        history=history,
        formulary=formulary,
        off_formulary_items=off_formulary,
    )


def _newest_first(day: str) -> Any:
    def key(record: Model) -> tuple[date, int]:
        return getattr(record, day), record.pk

    return key


def build_context(prescription: Prescription) -> Context:
    """Everything the checks read about a prescription already loaded with its clinic, patient
    and prescriber: the formulary's fingerprint, then the records (two statements)."""
    return _context_read(prescription, prescription.patient, _formulary())


def context_load(prescription_id: int) -> Context | None:
    """The checks' context of a received prescription (None if it is not received) in two
    statements: the prescription with its parties and the formulary's fingerprint, then every
    record the checks read."""
    with rows.planned_cursor() as cursor:
        cursor.execute(_PRESCRIPTION_SQL, [prescription_id, Status.RECEIVED])
        row = cursor.fetchone()
    if row is None:
        return None
    parties: list[Any] = []
    start = 0
    for model in _PARTIES:
        end = start + rows.column_count(model)
        parties.append(rows.instance_from_columns(model, row[start:end]))
        start = end
    prescription, clinic, patient, prescriber = parties
    Prescription.clinic.field.set_cached_value(prescription, clinic)
    Prescription.patient.field.set_cached_value(prescription, patient)
    Prescription.prescriber.field.set_cached_value(prescription, prescriber)
    return _context_read(prescription, patient, _formulary_for(tuple(row[start:])))


def run_checks(prescription: Prescription) -> list[CheckResult]:
    return context_run(build_context(prescription))


def context_run(context: Context) -> list[CheckResult]:
    prescription = context.prescription
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
