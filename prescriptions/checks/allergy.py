"""Allergies: against each ingredient, its allergy class, and the classes it cross-reacts with.

An allergy is recognised by its SNOMED CT code when the formulary knows the code, else by its
text. What a cross-sensitivity means depends on the recorded reaction (the formulary's
cross_sensitivities give the outcome for a severe, a mild and an unknown reaction, with their
source). An intolerance (a non-immune reaction) is not an allergy: it is shown, never blocks.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from patients.models import Allergy
from prescriptions.checks.base import CheckResult, Context, Severity, check
from prescriptions.models import AllergyClass, PrescriptionItem

SOURCE = "BNF hypersensitivity and cross-sensitivity (formulary allergy classes)"
SOURCE_INTOLERANCE = (
    "NICE CG183 Drug allergy: diagnosis and management, recommendation 1.1 (a non-allergic adverse "
    "reaction is recorded as an intolerance, not an allergy)"
)
# SNOMED CT findings of an immediate or severe reaction: anaphylaxis, angioedema, urticaria,
# Stevens-Johnson syndrome.
SEVERE_MANIFESTATION_CODES = frozenset({"39579001", "41291007", "126485001", "73442001"})
SEVERE_WORDS = (
    "anaphyla",
    "angioedema",
    "angio-oedema",
    "angio-edema",
    "urticaria",
    "hives",
    "stevens-johnson",
    "necrolysis",
    "dress",
    "severe",
)
OUTCOME_WORDS = {
    Severity.BLOCK: "so the source says not to supply it",
    Severity.NEEDS_PHARMACIST: "so a pharmacist must check the reaction history before it is supplied",
    Severity.INFO: "so the source treats it as information only",
}


@dataclass(frozen=True)
class RecordedAllergy:
    """An allergy as the checks read it: its recognised name and how bad the reaction was."""

    name: str
    label: str
    reaction: str  # "severe", "mild" or "unknown"
    is_intolerance: bool
    described: str


def reaction_bucket(allergy: Allergy) -> str:
    """'severe' for high criticality or an immediate/severe reaction, 'mild' for any other
    recorded reaction, 'unknown' when nothing about the reaction is recorded."""
    reactions = allergy.reactions or []
    texts = [allergy.reaction.lower()] + [
        str(reaction.get("manifestation", "")).lower() for reaction in reactions
    ]
    if (
        allergy.criticality == Allergy.Criticality.HIGH
        or any(reaction.get("severity") == Allergy.ReactionSeverity.SEVERE for reaction in reactions)
        or any(reaction.get("code") in SEVERE_MANIFESTATION_CODES for reaction in reactions)
        or any(word in text for text in texts for word in SEVERE_WORDS)
    ):
        return "severe"
    if reactions or allergy.reaction.strip() or allergy.criticality == Allergy.Criticality.LOW:
        return "mild"
    return "unknown"


def describe_reaction(allergy: Allergy) -> str:
    parts = [
        " ".join(filter(None, [reaction.get("severity", ""), str(reaction.get("manifestation", ""))]))
        for reaction in allergy.reactions or []
    ]
    if allergy.reaction.strip():
        parts.append(allergy.reaction.strip())
    if allergy.criticality:
        parts.append(f"criticality {allergy.criticality}")
    return "; ".join(parts) if parts else "reaction not recorded"


def recorded_allergies(context: Context) -> list[RecordedAllergy]:
    codes: dict[str, str] = {}
    for allergy_class in context.formulary.allergy_classes:
        codes.update(allergy_class.codes or {})
    return [
        RecordedAllergy(
            name=codes.get(allergy.code, allergy.substance.strip().lower()),
            label=allergy.substance.strip() or allergy.code,
            reaction=reaction_bucket(allergy),
            is_intolerance=allergy.category == Allergy.Category.INTOLERANCE,
            described=describe_reaction(allergy),
        )
        for allergy in context.allergy_records
    ]


def _names(allergy_class: AllergyClass) -> set[str]:
    return {allergy_class.name, *allergy_class.aliases, *allergy_class.ingredients}


@check("allergy", source=SOURCE)
def check_allergies(context: Context) -> Iterable[CheckResult]:
    allergies = recorded_allergies(context)
    if not allergies:
        return
    classes = context.formulary.allergy_classes
    known = set(context.formulary.class_of_ingredient)
    for allergy_class in classes:
        known |= _names(allergy_class)
    for allergy in allergies:
        if allergy.name not in known:
            yield CheckResult(
                "allergy.unrecognised",
                Severity.NEEDS_PHARMACIST,
                f"The recorded allergy '{allergy.label}' is not a substance the formulary knows, so it "
                "cannot be checked automatically; a pharmacist must confirm it is unrelated to "
                + ", ".join(item.medication.name for item in context.items)
                + ".",
                SOURCE,
            )
    by_name = {allergy_class.name: allergy_class for allergy_class in classes}
    for item in context.items:
        for allergy in allergies:
            yield from _item_against(item, allergy, classes, by_name)


def _item_against(
    item: PrescriptionItem,
    allergy: RecordedAllergy,
    classes: list[AllergyClass],
    by_name: dict[str, AllergyClass],
) -> Iterable[CheckResult]:
    medication = item.medication
    ingredients = set(medication.ingredients)
    kind = "intolerant of" if allergy.is_intolerance else "allergic to"
    recorded = f"The patient is {kind} {allergy.label} ({allergy.described})"
    if allergy.name in ingredients:
        yield CheckResult(
            "allergy.intolerance" if allergy.is_intolerance else "allergy.ingredient",
            Severity.NEEDS_PHARMACIST if allergy.is_intolerance else Severity.BLOCK,
            f"{recorded}, an ingredient of {medication.name}."
            + (
                " Confirm with the prescriber that the intolerance is acceptable."
                if allergy.is_intolerance
                else ""
            ),
            SOURCE_INTOLERANCE if allergy.is_intolerance else SOURCE,
            item.pk,
        )
        return
    named = [allergy_class for allergy_class in classes if allergy.name in _names(allergy_class)]
    for allergy_class in named:
        if ingredients & set(allergy_class.ingredients):
            yield CheckResult(
                "allergy.intolerance_class" if allergy.is_intolerance else "allergy.class",
                Severity.INFO if allergy.is_intolerance else Severity.BLOCK,
                f"{recorded}; {medication.name} belongs to the same allergy class ({allergy_class.name}) "
                "and may cross-react.",
                SOURCE_INTOLERANCE if allergy.is_intolerance else allergy_class.source,
                item.pk,
            )
            return
    for allergy_class in named:
        for cross in allergy_class.cross_sensitivities or []:
            target = by_name.get(cross["to"])
            if target is None or not ingredients & set(target.ingredients):
                continue
            severity = Severity.INFO if allergy.is_intolerance else cross[allergy.reaction]
            yield CheckResult(
                "allergy.cross_sensitivity",
                severity,
                f"{recorded}; {medication.name} is one of the {target.name}, which can cross-react with "
                f"{allergy_class.name}. {cross['message']} The recorded reaction is {allergy.reaction}, "
                f"{OUTCOME_WORDS[severity]}.",
                cross["source"],
                item.pk,
            )
            return
