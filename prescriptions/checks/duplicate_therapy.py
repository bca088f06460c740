"""Duplicate therapy: two medicines of the same ingredient or class at once; and the daily dose
of one ingredient added up over the prescription and the medicines the patient already takes."""

from __future__ import annotations

from collections.abc import Iterable
from decimal import Decimal

from prescriptions.checks.base import CheckResult, Context, Severity, check, daily_amount, describe_amount
from prescriptions.checks.interactions import current_medicines, recent_supplies

SOURCE = "Scriptline dispensing policy; BNF guidance on therapeutic duplication"
SOURCE_CUMULATIVE = (
    "BNF maximum daily dose, counted over every product of the same ingredient the patient takes "
    "(e.g. paracetamol: 4 g a day from all sources, MHRA)"
)
TO_MILLIGRAMS = {"mg": Decimal(1), "microgram": Decimal("0.001"), "g": Decimal(1000)}


@check("duplicate", source=SOURCE)
def check_duplicate_therapy(context: Context) -> Iterable[CheckResult]:
    current, _unknown = current_medicines(context, include_washout=False)
    recent = recent_supplies(context)
    for index, item in enumerate(context.items):
        medication = item.medication
        ingredients = set(medication.ingredients)
        for other in context.items[index + 1 :]:
            if ingredients & set(other.medication.ingredients):
                yield CheckResult(
                    "duplicate.ingredient",
                    Severity.NEEDS_PHARMACIST,
                    f"{medication} and {other.medication} on this prescription share an ingredient; "
                    "confirm both are intended.",
                    SOURCE,
                    item.pk,
                )
            elif (
                medication.therapeutic_class
                and medication.therapeutic_class == other.medication.therapeutic_class
            ):
                yield CheckResult(
                    "duplicate.class",
                    Severity.NEEDS_PHARMACIST,
                    f"{medication.name} and {other.medication.name} on this prescription are both "
                    f"{medication.therapeutic_class.replace('_', ' ')}s; confirm both are intended.",
                    SOURCE,
                    item.pk,
                )
        # The same ingredient in the history is a re-supply or titration step (history checks).
        for taken in current + [medicine for medicine in recent if not (medicine.ingredients & ingredients)]:
            same_ingredient = bool(taken.ingredients & ingredients)
            same_class = (
                medication.therapeutic_class and taken.therapeutic_class == medication.therapeutic_class
            )
            if same_ingredient or same_class:
                yield CheckResult(
                    "duplicate.with_current",
                    Severity.NEEDS_PHARMACIST,
                    f"{medication.name} duplicates {taken.label}, which the patient already takes "
                    f"({'same ingredient' if same_ingredient else 'same class'}); confirm the old one stops.",
                    SOURCE,
                    item.pk,
                )


def _in_unit(amount: Decimal, unit: str, wanted: str) -> Decimal | None:
    if unit not in TO_MILLIGRAMS or wanted not in TO_MILLIGRAMS:
        return None
    return amount * TO_MILLIGRAMS[unit] / TO_MILLIGRAMS[wanted]


@check("cumulative_dose", source=SOURCE_CUMULATIVE)
def check_cumulative_daily_dose(context: Context) -> Iterable[CheckResult]:
    """One ingredient's daily dose from this prescription plus what the patient already takes."""
    current, _unknown = current_medicines(context, include_washout=False)
    for index, item in enumerate(context.items):
        medication = item.medication
        own = daily_amount(item)
        if len(medication.ingredients) != 1 or own is None or medication.max_daily_dose is None:
            continue
        ingredient, unit = medication.ingredients[0], medication.strength_unit
        if any(ingredient in other.medication.ingredients for other in context.items[:index]):
            continue  # counted once, at the first item of the ingredient
        parts = [(f"{medication.name} on this prescription", own)]
        for other in context.items[index + 1 :]:
            amount = daily_amount(other)
            if other.medication.ingredients == [ingredient] and amount is not None:
                converted = _in_unit(amount, other.medication.strength_unit, unit)
                if converted is not None:
                    parts.append((f"{other.medication.name} on this prescription", converted))
        for medicine in current:
            if medicine.ingredients != frozenset({ingredient}) or medicine.daily_dose is None:
                continue
            converted = _in_unit(medicine.daily_dose, medicine.daily_dose_unit, unit)
            if converted is not None:
                parts.append((f"{medicine.label}, which the patient already takes", converted))
        total = sum((amount for _label, amount in parts), Decimal(0))
        if len(parts) < 2 or total <= medication.max_daily_dose:
            continue
        listed = "; ".join(f"{describe_amount(amount, unit)} a day from {label}" for label, amount in parts)
        yield CheckResult(
            "cumulative_dose.above_maximum",
            Severity.NEEDS_PHARMACIST,
            f"Together the patient would take {describe_amount(total, unit)} of {ingredient} a day, more than "
            f"the maximum of {describe_amount(medication.max_daily_dose, unit)} a day by "
            f"{describe_amount(total - medication.max_daily_dose, unit)} ({listed}). Check which one the "
            "patient should stop.",
            SOURCE_CUMULATIVE,
            item.pk,
        )
