"""Loading the formulary (medications, interactions, allergy classes) from its versioned data file.

The file is the source of truth: loading it twice changes nothing the second time, an entry
that changed is updated, a medication no longer in the file is deactivated (never deleted:
old prescriptions point at it), and interaction and allergy-class rows not in the file are
removed. Each load is recorded as a FormularyRelease, which the checks use to fail closed when
no formulary has been loaded.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

from django.db import transaction
from django.db.models import Model

from prescriptions.models import (
    AllergyClass,
    FormularyRelease,
    InteractionRule,
    Medication,
    PaediatricDoseRule,
    StateValidityLimit,
)

JURISDICTION_OF_SYSTEM = {
    "http://snomed.info/sct": "GB",
    "http://www.nlm.nih.gov/research/umls/rxnorm": "US",
}
MEDICATION_FIELDS = (
    "name",
    "strength",
    "form",
    "price_minor",
    "ingredients",
    "therapeutic_class",
    "unit",
    "strength_value",
    "strength_unit",
    "schedule_gb",
    "schedule_us",
    "max_daily_dose",
)
SEVERITIES = set(InteractionRule.Severity.values)
# GB products name their unit's dm+d unit of measure, a SNOMED CT concept id (6 to 18 digits),
# which NHS EPS messages require on every quantity.
UNIT_OF_MEASURE_CODE = re.compile(r"^[1-9][0-9]{5,17}$")


class FormularyError(ValueError):
    """The data file is not a valid formulary; nothing was loaded."""


def _decimal(value: Any, where: str) -> Decimal | None:
    if value in (None, ""):
        return None
    try:
        return Decimal(str(value))
    except InvalidOperation as error:
        raise FormularyError(f"{where}: {value!r} is not a number") from error


def _medication_values(entry: dict[str, Any], index: int) -> dict[str, Any]:
    where = f"medications[{index}]"
    missing = [key for key in ("code_system", "code", *MEDICATION_FIELDS) if key not in entry]
    if missing:
        raise FormularyError(f"{where}: missing {', '.join(missing)}")
    jurisdiction = JURISDICTION_OF_SYSTEM.get(entry["code_system"])
    if jurisdiction is None:
        raise FormularyError(f"{where}: unknown code system {entry['code_system']!r}")
    if not entry["ingredients"] or not all(isinstance(name, str) for name in entry["ingredients"]):
        raise FormularyError(f"{where}: ingredients must be a non-empty list of names")
    unit_of_measure_code = entry.get("unit_of_measure_code", "")
    if jurisdiction == "GB" and not UNIT_OF_MEASURE_CODE.match(unit_of_measure_code):
        raise FormularyError(f"{where}: a dm+d product needs its unit_of_measure_code, a SNOMED CT code")
    values = {field: entry[field] for field in MEDICATION_FIELDS}
    values["unit_of_measure_code"] = unit_of_measure_code
    values["ingredients"] = [name.strip().lower() for name in entry["ingredients"]]
    values["strength_value"] = _decimal(entry["strength_value"], f"{where}.strength_value")
    values["max_daily_dose"] = _decimal(entry["max_daily_dose"], f"{where}.max_daily_dose")
    # The schedule in the medication's own jurisdiction, which the API has always shown.
    values["controlled_schedule"] = entry["schedule_gb"] if jurisdiction == "GB" else entry["schedule_us"]
    values["is_active"] = True
    return values


def _sync_medications(entries: list[dict[str, Any]], progress: Callable[[str], None]) -> dict[str, int]:
    counts = {"created": 0, "updated": 0, "unchanged": 0, "deactivated": 0}
    existing = {(m.code_system, m.code): m for m in Medication.objects.all()}
    seen = set()
    for index, entry in enumerate(entries):
        values = _medication_values(entry, index)
        key = (entry["code_system"], entry["code"])
        if key in seen:
            raise FormularyError(f"medications[{index}]: duplicate code {key[1]}")
        seen.add(key)
        current = existing.get(key)
        if current is None:
            Medication.objects.create(code_system=key[0], code=key[1], **values)
            counts["created"] += 1
        elif any(getattr(current, field) != value for field, value in values.items()):
            Medication.objects.filter(pk=current.pk).update(**values)
            counts["updated"] += 1
        else:
            counts["unchanged"] += 1
    gone = [m.pk for key, m in existing.items() if key not in seen and m.is_active]
    counts["deactivated"] = Medication.objects.filter(pk__in=gone).update(is_active=False)
    progress(f"medications: {_describe(counts)}")
    return counts


def _sync_rows(
    model: type[Model],
    key_fields: tuple[str, ...],
    rows: list[dict[str, Any]],
    label: str,
    progress: Callable[[str], None],
) -> dict[str, int]:
    counts = {"created": 0, "updated": 0, "unchanged": 0, "removed": 0}
    existing = {
        tuple(getattr(row, field) for field in key_fields): row for row in model._default_manager.all()
    }
    seen = set()
    for values in rows:
        key = tuple(values[field] for field in key_fields)
        seen.add(key)
        current = existing.get(key)
        if current is None:
            model._default_manager.create(**values)
            counts["created"] += 1
        elif any(getattr(current, field) != value for field, value in values.items()):
            model._default_manager.filter(pk=current.pk).update(**values)
            counts["updated"] += 1
        else:
            counts["unchanged"] += 1
    stale = [row.pk for key, row in existing.items() if key not in seen]
    counts["removed"], _ = model._default_manager.filter(pk__in=stale).delete()
    progress(f"{label}: {_describe(counts)}")
    return counts


def _interaction_rows(entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    rows = []
    for index, entry in enumerate(entries):
        where = f"interactions[{index}]"
        missing = [key for key in ("left", "right", "severity", "message", "source") if not entry.get(key)]
        if missing:
            raise FormularyError(f"{where}: missing {', '.join(missing)}")
        if entry["severity"] not in SEVERITIES:
            raise FormularyError(f"{where}: severity must be one of {sorted(SEVERITIES)}")
        rows.append({key: entry[key].strip() for key in ("left", "right", "severity", "message", "source")})
        rows[-1]["left"], rows[-1]["right"] = rows[-1]["left"].lower(), rows[-1]["right"].lower()
    return rows


CROSS_SENSITIVITY_OUTCOMES = {"block", "needs_pharmacist", "info"}
REACTION_BUCKETS = ("severe", "mild", "unknown")


def _cross_sensitivities(entry: dict[str, Any], where: str, names: set[str]) -> list[dict[str, str]]:
    rows = []
    for index, cross in enumerate(entry.get("cross_sensitivities", [])):
        at = f"{where}.cross_sensitivities[{index}]"
        missing = [key for key in ("to", *REACTION_BUCKETS, "message", "source") if not cross.get(key)]
        if missing:
            raise FormularyError(f"{at}: missing {', '.join(missing)}")
        if cross["to"].strip().lower() not in names:
            raise FormularyError(f"{at}: 'to' names no allergy class ({cross['to']!r})")
        wrong = [key for key in REACTION_BUCKETS if cross[key] not in CROSS_SENSITIVITY_OUTCOMES]
        if wrong:
            raise FormularyError(
                f"{at}: {', '.join(wrong)} must be one of {sorted(CROSS_SENSITIVITY_OUTCOMES)}"
            )
        rows.append(
            {
                "to": cross["to"].strip().lower(),
                **{key: cross[key] for key in REACTION_BUCKETS},
                "message": cross["message"].strip(),
                "source": cross["source"].strip(),
            }
        )
    return rows


def _allergy_codes(entry: dict[str, Any], where: str) -> dict[str, str]:
    codes = entry.get("codes", {})
    if not isinstance(codes, dict) or not all(
        isinstance(code, str) and UNIT_OF_MEASURE_CODE.match(code) and isinstance(name, str)
        for code, name in codes.items()
    ):
        raise FormularyError(f"{where}.codes: must map SNOMED CT codes to names")
    return {code: name.strip().lower() for code, name in codes.items()}


def _allergy_rows(entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    rows = []
    names = {str(entry.get("name", "")).strip().lower() for entry in entries}
    for index, entry in enumerate(entries):
        where = f"allergy_classes[{index}]"
        if not entry.get("name") or not entry.get("ingredients") or not entry.get("source"):
            raise FormularyError(f"{where}: name, ingredients and source are required")
        rows.append(
            {
                "name": entry["name"].strip().lower(),
                "aliases": [alias.strip().lower() for alias in entry.get("aliases", [])],
                "ingredients": [name.strip().lower() for name in entry["ingredients"]],
                "source": entry["source"],
                "codes": _allergy_codes(entry, where),
                "cross_sensitivities": _cross_sensitivities(entry, where, names),
            }
        )
    return rows


PAEDIATRIC_LIMITS = ("max_dose", "max_daily", "max_dose_per_kg", "max_daily_per_kg")
ADULT_AGE_MONTHS = 216


def _paediatric_rows(entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Children's dose limits: every rule names its source, an age band under 18 and at least
    one limit (or says the medicine is contraindicated in that band)."""
    rows: list[dict[str, Any]] = []
    for index, entry in enumerate(entries):
        where = f"paediatric_doses[{index}]"
        if any(row["name"] == str(entry.get("name", "")).strip() for row in rows):
            raise FormularyError(f"{where}: duplicate name {entry['name']!r}")
        missing = [
            key
            for key in ("name", "ingredient", "min_age_months", "max_age_months", "dose_unit", "source")
            if entry.get(key) in (None, "")
        ]
        if missing:
            raise FormularyError(f"{where}: missing {', '.join(missing)}")
        low, high = entry["min_age_months"], entry["max_age_months"]
        if not (isinstance(low, int) and isinstance(high, int) and 0 <= low < high <= ADULT_AGE_MONTHS):
            raise FormularyError(f"{where}: the age band must be whole months, 0 <= min < max <= 216")
        row: dict[str, Any] = {
            "name": entry["name"].strip(),
            "ingredient": entry["ingredient"].strip().lower(),
            "forms": [form.strip() for form in entry.get("forms", [])],
            "jurisdictions": list(entry.get("jurisdictions") or ["GB", "US"]),
            "indication": entry.get("indication", ""),
            "indication_codes": [code.strip().upper() for code in entry.get("indication_codes", [])],
            "min_age_months": low,
            "max_age_months": high,
            "dose_unit": entry["dose_unit"],
            "weight_required": bool(entry.get("weight_required")),
            "contraindicated": bool(entry.get("contraindicated")),
            "note": entry.get("note", ""),
            "source": entry["source"],
        }
        for key in (*PAEDIATRIC_LIMITS, "min_weight_kg", "max_weight_kg"):
            value = _decimal(entry.get(key), f"{where}.{key}")
            if value is not None and value <= 0:
                raise FormularyError(f"{where}.{key}: must be positive")
            row[key] = value
        if not row["contraindicated"] and all(row[key] is None for key in PAEDIATRIC_LIMITS):
            raise FormularyError(f"{where}: give at least one limit or mark it contraindicated")
        if set(row["jurisdictions"]) - set(JURISDICTION_OF_SYSTEM.values()):
            raise FormularyError(f"{where}: jurisdictions must be GB and/or US")
        rows.append(row)
    return rows


US_SCHEDULES = frozenset({"II", "III", "IV", "V", "rx"})


def _state_limit_rows(entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """US state limits on filling after issue, each with the law it comes from."""
    rows = []
    for index, entry in enumerate(entries):
        where = f"state_validity[{index}]"
        state, schedule, days = entry.get("state", ""), entry.get("schedule", ""), entry.get("days")
        if not (isinstance(state, str) and len(state) == 2 and state.isalpha() and state.isupper()):
            raise FormularyError(f"{where}: state must be a two-letter code such as TX")
        if schedule not in US_SCHEDULES:
            raise FormularyError(f"{where}: schedule must be one of {sorted(US_SCHEDULES)}")
        if not isinstance(days, int) or not 1 <= days <= 730:
            raise FormularyError(f"{where}: days must be a whole number from 1 to 730")
        if not entry.get("source"):
            raise FormularyError(f"{where}: missing source")
        rows.append({"state": state, "schedule": schedule, "days": days, "source": entry["source"]})
    return rows


def _describe(counts: dict[str, int]) -> str:
    return ", ".join(f"{count} {what}" for what, count in counts.items())


def formulary_load(*, path: Path, progress: Callable[[str], None] = lambda message: None) -> dict[str, Any]:
    """Load the file in one transaction; returns what changed per section."""
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise FormularyError(f"not JSON: {error}") from error
    if not isinstance(data, dict) or not isinstance(data.get("medications"), list):
        raise FormularyError("the file has no 'medications' list")
    if not data.get("version") or not data.get("sources"):
        raise FormularyError("the file must name its version and its sources")
    interactions = _interaction_rows(data.get("interactions", []))
    allergy_classes = _allergy_rows(data.get("allergy_classes", []))
    paediatric_doses = _paediatric_rows(data.get("paediatric_doses", []))
    state_limits = _state_limit_rows(data.get("state_validity", []))
    with transaction.atomic():
        report = {
            "version": data["version"],
            "medications": _sync_medications(data["medications"], progress),
            "interactions": _sync_rows(
                InteractionRule, ("left", "right"), interactions, "interactions", progress
            ),
            "allergy_classes": _sync_rows(
                AllergyClass, ("name",), allergy_classes, "allergy classes", progress
            ),
            "paediatric_doses": _sync_rows(
                PaediatricDoseRule, ("name",), paediatric_doses, "paediatric doses", progress
            ),
            "state_validity": _sync_rows(
                StateValidityLimit, ("state", "schedule"), state_limits, "state validity limits", progress
            ),
        }
        FormularyRelease.objects.create(version=data["version"], summary=report)
    return report
