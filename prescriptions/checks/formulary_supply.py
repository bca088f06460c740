"""The formulary itself and the arithmetic of quantity and days' supply."""

from __future__ import annotations

from collections.abc import Iterable
from decimal import Decimal

from prescriptions.checks.base import SCRIPTLINE_POLICY, CheckResult, Context, Severity, check
from prescriptions.formulary import JURISDICTION_OF_SYSTEM
from prescriptions.models import PrescriptionItem

MAX_DAYS_SUPPLY = 90
MAX_UNITS_PER_DAY = Decimal(12)
MIN_UNITS_PER_DAY = Decimal("0.1")
# More than this over what the stated dose needs for the days' supply is queried.
QUANTITY_TOLERANCE = Decimal("1.10")


@check("formulary", source="Scriptline formulary (prescriptions/data/formulary.json)")
def check_formulary(context: Context) -> Iterable[CheckResult]:
    source = "Scriptline formulary (prescriptions/data/formulary.json)"
    if not context.formulary.loaded:
        yield CheckResult(
            "formulary.not_loaded",
            Severity.NEEDS_PHARMACIST,
            "No formulary release has been loaded, so interactions and allergy classes cannot be "
            "checked; a pharmacist must check by hand (run manage.py load_formulary).",
            source,
        )
    for item in context.items:
        medication = item.medication
        if not medication.is_active:
            yield CheckResult(
                "formulary.inactive",
                Severity.BLOCK,
                f"{medication} is no longer on the formulary.",
                source,
                item.pk,
            )
        if JURISDICTION_OF_SYSTEM.get(medication.code_system) not in (None, context.jurisdiction):
            yield CheckResult(
                "formulary.wrong_jurisdiction",
                Severity.BLOCK,
                f"{medication} is coded for another jurisdiction ({medication.code_system}); "
                f"prescribe the {context.jurisdiction} product.",
                source,
                item.pk,
            )
        missing = [
            name
            for name, value in (
                ("ingredients", medication.ingredients),
                ("strength", medication.strength_value),
                ("unit", medication.unit),
            )
            if not value
        ]
        if missing:
            yield CheckResult(
                "formulary.incomplete",
                Severity.NEEDS_PHARMACIST,
                f"The formulary entry for {medication} has no {', '.join(missing)}, so the dose, "
                "allergy and interaction checks cannot be relied on; a pharmacist must check by hand.",
                source,
                item.pk,
            )


@check("formulary", source="Scriptline formulary (prescriptions/data/formulary.json)")
def check_off_formulary(context: Context) -> Iterable[CheckResult]:
    for item in context.off_formulary_items:
        name = item.display or "a product"
        yield CheckResult(
            "formulary.not_listed",
            Severity.NEEDS_PHARMACIST,
            f"Item {item.line}: {name} ({item.code_system} {item.code}) is not on the Scriptline "
            "formulary, so it cannot be priced, checked or supplied; a pharmacist must reject the "
            "prescription or ask the clinic to prescribe a listed product.",
            "Scriptline formulary (prescriptions/data/formulary.json)",
        )


def _singular(unit: str) -> str:
    unit = unit.strip().lower()
    return unit[:-1] if unit.endswith("s") else unit


@check("supply", source=SCRIPTLINE_POLICY)
def check_supply(context: Context) -> Iterable[CheckResult]:
    for item in context.items:
        yield from _supply_results(item)


def _supply_results(item: PrescriptionItem) -> Iterable[CheckResult]:
    if item.days_supply > MAX_DAYS_SUPPLY:
        yield CheckResult(
            "supply.days_too_long",
            Severity.NEEDS_PHARMACIST,
            f"{item.days_supply} days' supply is more than {MAX_DAYS_SUPPLY} days; a pharmacist "
            "must confirm it.",
            SCRIPTLINE_POLICY,
            item.pk,
        )
    per_day = Decimal(item.quantity) / item.days_supply
    if per_day > MAX_UNITS_PER_DAY:
        yield CheckResult(
            "supply.quantity_per_day_high",
            Severity.NEEDS_PHARMACIST,
            f"{item.quantity} {item.unit} over {item.days_supply} days is {per_day:.1f} a day, "
            f"more than {MAX_UNITS_PER_DAY}; check the quantity and days' supply.",
            SCRIPTLINE_POLICY,
            item.pk,
        )
    elif per_day < MIN_UNITS_PER_DAY:
        yield CheckResult(
            "supply.quantity_per_day_low",
            Severity.NEEDS_PHARMACIST,
            f"{item.quantity} {item.unit} over {item.days_supply} days is less than one unit "
            "every ten days; check the quantity and days' supply.",
            SCRIPTLINE_POLICY,
            item.pk,
        )
    if item.medication.unit and _singular(item.unit) != _singular(item.medication.unit):
        yield CheckResult(
            "supply.unit_mismatch",
            Severity.NEEDS_PHARMACIST,
            f"The quantity is in {item.unit} but {item.medication} is dispensed in "
            f"{item.medication.unit}s; check the quantity.",
            SCRIPTLINE_POLICY,
            item.pk,
        )
    if item.units_per_day:
        needed = Decimal(item.units_per_day) * item.days_supply
        if Decimal(item.quantity) > needed * QUANTITY_TOLERANCE:
            yield CheckResult(
                "supply.quantity_exceeds_dose",
                Severity.NEEDS_PHARMACIST,
                f"{item.quantity} {item.unit} is more than {item.units_per_day} a day for "
                f"{item.days_supply} days needs ({needed.normalize():f}); check the quantity.",
                SCRIPTLINE_POLICY,
                item.pk,
            )
        elif Decimal(item.quantity) < needed:
            yield CheckResult(
                "supply.quantity_short_of_dose",
                Severity.INFO,
                f"{item.quantity} {item.unit} lasts {Decimal(item.quantity) / Decimal(item.units_per_day):.0f} "
                f"days at {item.units_per_day} a day, less than the {item.days_supply} days stated.",
                SCRIPTLINE_POLICY,
                item.pk,
            )
