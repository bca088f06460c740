"""Allergies: against each ingredient, and against its allergy class (cross-sensitivity)."""

from __future__ import annotations

from collections.abc import Iterable

from prescriptions.checks.base import CheckResult, Context, Severity, check

SOURCE = "BNF hypersensitivity and cross-sensitivity (formulary allergy classes)"


@check("allergy", source=SOURCE)
def check_allergies(context: Context) -> Iterable[CheckResult]:
    if not context.allergies:
        return
    classes = context.formulary.allergy_classes
    known = set(context.formulary.class_of_ingredient)
    for allergy_class in classes:
        known |= {allergy_class.name, *allergy_class.aliases, *allergy_class.ingredients}
    for substance in sorted(set(context.allergies)):
        if substance not in known:
            yield CheckResult(
                "allergy.unrecognised",
                Severity.NEEDS_PHARMACIST,
                f"The recorded allergy '{substance}' is not a substance the formulary knows, so it "
                "cannot be checked automatically; a pharmacist must confirm it is unrelated.",
                SOURCE,
            )
    for item in context.items:
        ingredients = set(item.medication.ingredients)
        for substance in sorted(set(context.allergies)):
            if substance in ingredients:
                yield CheckResult(
                    "allergy.ingredient",
                    Severity.BLOCK,
                    f"The patient is allergic to {substance}, an ingredient of {item.medication.name}.",
                    SOURCE,
                    item.pk,
                )
                continue
            for allergy_class in classes:
                members = set(allergy_class.ingredients)
                named = substance in {allergy_class.name, *allergy_class.aliases} or substance in members
                if named and ingredients & members:
                    yield CheckResult(
                        "allergy.class",
                        Severity.BLOCK,
                        f"The patient is allergic to {substance}; {item.medication.name} belongs to the "
                        f"same allergy class ({allergy_class.name}) and may cross-react.",
                        allergy_class.source,
                        item.pk,
                    )
                    break
