"""Duplicate therapy: two medicines of the same ingredient or class at once."""

from __future__ import annotations

from collections.abc import Iterable

from prescriptions.checks.base import CheckResult, Context, Severity, check
from prescriptions.checks.interactions import current_medicines, recent_supplies

SOURCE = "Scriptline dispensing policy; BNF guidance on therapeutic duplication"


@check("duplicate", source=SOURCE)
def check_duplicate_therapy(context: Context) -> Iterable[CheckResult]:
    current, _unknown = current_medicines(context)
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
        for other in current + [medicine for medicine in recent if not (medicine.ingredients & ingredients)]:
            same_ingredient = bool(other.ingredients & ingredients)
            same_class = (
                medication.therapeutic_class and other.therapeutic_class == medication.therapeutic_class
            )
            if same_ingredient or same_class:
                yield CheckResult(
                    "duplicate.with_current",
                    Severity.NEEDS_PHARMACIST,
                    f"{medication.name} duplicates {other.label}, which the patient already takes "
                    f"({'same ingredient' if same_ingredient else 'same class'}); confirm the old one stops.",
                    SOURCE,
                    item.pk,
                )
