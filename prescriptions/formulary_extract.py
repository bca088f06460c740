"""Importing a pharmacy's catalogue from a dm+d-style or RxNorm-style CSV extract.

The formulary file (prescriptions.formulary) holds the curated clinical data; an extract adds
or updates products by code so a pharmacy can load its full catalogue. It never deactivates a
product it does not list. The file is read whole and refused whole: a bad row names its line
and nothing is stored.

dm+d style (VMP columns as in the NHSBSA dm+d release): VPID, NM, INGREDIENT, STRNT_NMRTR_VAL,
STRNT_NMRTR_UOM, DF (dose form), UNIT, UNIT_DOSE_UOMCD, CONTROL_DRUG_CATEGORY; optional
STRNT_DNMTR_VAL (a liquid's volume, ml), PRICE_MINOR, MAX_DAILY_DOSE, THERAPEUTIC_CLASS.

RxNorm style (RXNCONSO columns): RXCUI, STR, TTY; only clinical and branded drugs (SCD, SBD)
are imported, the strength and dose form read from STR ("methylphenidate hydrochloride 10 MG
Oral Tablet"); optional INGREDIENT, DEA_SCHEDULE (CII..CV), PRICE_MINOR, MAX_DAILY_DOSE,
THERAPEUTIC_CLASS.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Callable
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

from django.db import transaction

from prescriptions.formulary import UNIT_OF_MEASURE_CODE, FormularyError
from prescriptions.models import FormularyRelease, Medication

SNOMED = "http://snomed.info/sct"
RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"
DMD_COLUMNS = (
    "VPID",
    "NM",
    "INGREDIENT",
    "STRNT_NMRTR_VAL",
    "STRNT_NMRTR_UOM",
    "DF",
    "UNIT",
    "UNIT_DOSE_UOMCD",
    "CONTROL_DRUG_CATEGORY",
)
RXNORM_COLUMNS = ("RXCUI", "STR", "TTY")
RXNORM_PRODUCTS = frozenset({"SCD", "SBD"})
# dm+d controlled drug categories ("Schedule 2 (CD)") -> the schedule number.
DMD_SCHEDULE = re.compile(r"^Schedule ([1-5])", re.I)
DEA_SCHEDULES = {"CII": "II", "CIII": "III", "CIV": "IV", "CV": "V", "": ""}
RXNORM_STRENGTH = re.compile(
    r"^(?P<name>.+?) (?P<value>\d+(?:\.\d+)?) (?P<unit>MG|MCG)(?P<per_ml>/ML)? (?P<form>.+?)(?: \[.+\])?$"
)
RXNORM_FORMS = {
    "Oral Tablet": ("tablet", "tablet"),
    "Oral Capsule": ("capsule", "capsule"),
    "Extended Release Oral Tablet": ("extended-release tablet", "tablet"),
    "Extended Release Oral Capsule": ("extended-release capsule", "capsule"),
    "Delayed Release Oral Capsule": ("gastro-resistant capsule", "capsule"),
    "Chewable Tablet": ("chewable tablet", "tablet"),
    "Oral Solution": ("oral solution", "ml"),
    "Oral Suspension": ("oral suspension", "ml"),
}
UNITS = {"MG": "mg", "MCG": "microgram", "mg": "mg", "microgram": "microgram", "mcg": "microgram"}
MAX_ROWS = 200_000
CURATED = frozenset({"max_daily_dose", "therapeutic_class"})


def _decimal(value: str, where: str, *, required: bool = True) -> Decimal | None:
    if not value.strip():
        if required:
            raise FormularyError(f"{where}: a number is required")
        return None
    try:
        number = Decimal(value.strip())
    except InvalidOperation as error:
        raise FormularyError(f"{where}: {value!r} is not a number") from error
    if number <= 0:
        raise FormularyError(f"{where}: must be positive")
    return number


def _price(row: dict[str, str], where: str) -> int:
    text = (row.get("PRICE_MINOR") or "0").strip()
    if not text.isdigit():
        raise FormularyError(f"{where}.PRICE_MINOR: a whole number of minor units")
    return int(text)


def _dmd_row(row: dict[str, str], where: str) -> dict[str, Any]:
    code = row["VPID"].strip()
    if not code.isdigit() or not 6 <= len(code) <= 18:
        raise FormularyError(f"{where}.VPID: not a SNOMED CT identifier")
    uom = row["UNIT_DOSE_UOMCD"].strip()
    if not UNIT_OF_MEASURE_CODE.match(uom):
        raise FormularyError(f"{where}.UNIT_DOSE_UOMCD: a dm+d unit of measure (SNOMED CT code) is required")
    numerator = _decimal(row["STRNT_NMRTR_VAL"], f"{where}.STRNT_NMRTR_VAL")
    denominator = _decimal(row.get("STRNT_DNMTR_VAL", ""), f"{where}.STRNT_DNMTR_VAL", required=False)
    unit = UNITS.get(row["STRNT_NMRTR_UOM"].strip())
    if unit is None:
        raise FormularyError(f"{where}.STRNT_NMRTR_UOM: mg or microgram")
    category = row["CONTROL_DRUG_CATEGORY"].strip()
    schedule = DMD_SCHEDULE.match(category)
    if category and schedule is None and not category.lower().startswith("no controlled"):
        raise FormularyError(f"{where}.CONTROL_DRUG_CATEGORY: {category!r} is not a dm+d category")
    assert numerator is not None
    per_unit = numerator / denominator if denominator else numerator
    strength = f"{numerator.normalize():f}{row['STRNT_NMRTR_UOM'].strip()}" + (
        f"/{denominator.normalize():f}ml" if denominator else ""
    )
    return {
        "code_system": SNOMED,
        "code": code,
        "name": row["NM"].strip(),
        "ingredients": [row["INGREDIENT"].strip().lower()],
        "form": row["DF"].strip().lower(),
        "strength": strength,
        "strength_value": per_unit,
        "strength_unit": unit,
        "unit": row["UNIT"].strip().lower(),
        "unit_of_measure_code": uom,
        "schedule_gb": schedule.group(1) if schedule else "",
        "schedule_us": "",
        "controlled_schedule": schedule.group(1) if schedule else "",
        "price_minor": _price(row, where),
        "max_daily_dose": _decimal(row.get("MAX_DAILY_DOSE", ""), f"{where}.MAX_DAILY_DOSE", required=False),
        "therapeutic_class": (row.get("THERAPEUTIC_CLASS") or "").strip(),
    }


def _rxnorm_row(row: dict[str, str], where: str) -> dict[str, Any] | None:
    if row["TTY"].strip() not in RXNORM_PRODUCTS:
        return None
    code = row["RXCUI"].strip()
    if not code.isdigit():
        raise FormularyError(f"{where}.RXCUI: not an RxNorm concept id")
    name = re.sub(r"^\d+ HR ", "", row["STR"].strip())
    found = RXNORM_STRENGTH.match(name)
    if found is None or found["form"] not in RXNORM_FORMS:
        raise FormularyError(
            f"{where}.STR: cannot read a single strength and a known dose form from {name!r}"
        )
    form, unit = RXNORM_FORMS[found["form"]]
    schedule = DEA_SCHEDULES.get((row.get("DEA_SCHEDULE") or "").strip().upper())
    if schedule is None:
        raise FormularyError(f"{where}.DEA_SCHEDULE: one of CII, CIII, CIV, CV or blank")
    ingredient = (row.get("INGREDIENT") or found["name"].split()[0]).strip().lower()
    value = Decimal(found["value"])
    return {
        "code_system": RXNORM,
        "code": code,
        "name": row["STR"].strip(),
        "ingredients": [ingredient],
        "form": form,
        "strength": f"{found['value']}{UNITS[found['unit']]}" + ("/ml" if found["per_ml"] else ""),
        "strength_value": value,
        "strength_unit": UNITS[found["unit"]],
        "unit": unit,
        "unit_of_measure_code": "",
        "schedule_gb": "",
        "schedule_us": schedule,
        "controlled_schedule": schedule,
        "price_minor": _price(row, where),
        "max_daily_dose": _decimal(row.get("MAX_DAILY_DOSE", ""), f"{where}.MAX_DAILY_DOSE", required=False),
        "therapeutic_class": (row.get("THERAPEUTIC_CLASS") or "").strip(),
    }


def _read(path: Path) -> tuple[str, list[dict[str, Any]], int]:
    with path.open(newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle)
        columns = set(reader.fieldnames or ())
        parse: Callable[[dict[str, str], str], dict[str, Any] | None]
        if set(DMD_COLUMNS) <= columns:
            style, parse = "dm+d", _dmd_row
        elif set(RXNORM_COLUMNS) <= columns:
            style, parse = "RxNorm", _rxnorm_row
        else:
            raise FormularyError(
                "the header is neither a dm+d extract (VPID, NM, ...) nor an RxNorm extract (RXCUI, STR, TTY)"
            )
        rows, skipped, seen = [], 0, set()
        for line, row in enumerate(reader, start=2):
            if line > MAX_ROWS:
                raise FormularyError(f"more than {MAX_ROWS} rows")
            values = parse(row, f"line {line}")
            if values is None:
                skipped += 1
                continue
            if values["code"] in seen:
                raise FormularyError(f"line {line}: duplicate code {values['code']}")
            seen.add(values["code"])
            rows.append(values)
    return style, rows, skipped


def formulary_import_extract(
    *, path: Path, progress: Callable[[str], None] = lambda message: None
) -> dict[str, Any]:
    """Add or update the extract's products in one transaction; returns what changed."""
    if not FormularyRelease.objects.exists():
        # The checks take a recorded release to mean the interaction and allergy data are there.
        raise FormularyError("load the formulary file first: an extract carries no interaction data")
    style, rows, skipped = _read(path)
    counts = {"created": 0, "updated": 0, "unchanged": 0, "skipped": skipped}
    existing = {
        (medication.code_system, medication.code): medication
        for medication in Medication.objects.filter(code__in=[row["code"] for row in rows])
    }
    with transaction.atomic():
        for row in rows:
            values = {**row, "is_active": True}
            key = (values.pop("code_system"), values.pop("code"))
            current = existing.get(key)
            if current is not None:
                # A blank in the extract never erases the curated clinical data of the formulary file.
                values = {
                    field: value
                    for field, value in values.items()
                    if value not in (None, "") or field not in CURATED
                }
            if current is None:
                Medication.objects.create(code_system=key[0], code=key[1], **values)
                counts["created"] += 1
            elif any(getattr(current, field) != value for field, value in values.items()):
                Medication.objects.filter(pk=current.pk).update(**values)
                counts["updated"] += 1
            else:
                counts["unchanged"] += 1
        version = f"{style} extract {path.name}"[:40]
        report = {"version": version, "extract": counts}
        FormularyRelease.objects.create(version=version, summary=report)
    progress(f"{style} extract: " + ", ".join(f"{count} {what}" for what, count in counts.items()))
    return report
