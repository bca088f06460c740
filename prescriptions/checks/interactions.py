"""Drug-drug interactions: within the prescription, and against the patient's current
medicines and recent supplies in Scriptline."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import timedelta

from prescriptions.checks.base import (
    CheckResult,
    Context,
    ResolvedMedicine,
    Severity,
    check,
    concepts_of,
    start_of_supply,
)
from prescriptions.models import InteractionRule

SOURCE = "Formulary interaction table (BNF Appendix 1, SmPCs, MHRA)"
SEVERITY = {
    InteractionRule.Severity.CONTRAINDICATED: Severity.BLOCK,
    InteractionRule.Severity.MAJOR: Severity.NEEDS_PHARMACIST,
    InteractionRule.Severity.MODERATE: Severity.INFO,
    InteractionRule.Severity.MINOR: Severity.INFO,
}
# A supply still counts this many days after it should have run out (MAOI washout is 14 days).
RECENT_SUPPLY_GRACE_DAYS = 14


def recent_supplies(context: Context) -> list[ResolvedMedicine]:
    medicines = []
    for previous in context.history:
        for item in previous.items.all():
            ends = start_of_supply(previous) + timedelta(days=item.days_supply + RECENT_SUPPLY_GRACE_DAYS)
            if ends >= context.today:
                medicines.append(
                    ResolvedMedicine(
                        f"{item.medication.name} (supplied {start_of_supply(previous):%Y-%m-%d})",
                        concepts_of(item.medication),
                        frozenset(item.medication.ingredients),
                        item.medication.therapeutic_class,
                    )
                )
    return medicines


def current_medicines(context: Context) -> tuple[list[ResolvedMedicine], list[str]]:
    resolved, unknown = [], []
    for current in context.current_medications:
        medicine = context.formulary.resolve(current)
        if medicine is None:
            unknown.append(current.name)
        else:
            resolved.append(medicine)
    return resolved, unknown


def matching_rules(left: frozenset[str], right: frozenset[str], rules: list[InteractionRule]):  # type: ignore[no-untyped-def]
    for rule in rules:
        if (rule.left in left and rule.right in right) or (rule.left in right and rule.right in left):
            yield rule


@check("interaction", source=SOURCE)
def check_interactions(context: Context) -> Iterable[CheckResult]:
    rules = context.formulary.interactions
    current, unknown = current_medicines(context)
    for name in unknown:
        yield CheckResult(
            "interaction.unrecognised_medicine",
            Severity.NEEDS_PHARMACIST,
            f"The patient's current medicine '{name}' is not in the formulary, so its interactions "
            "cannot be checked automatically; a pharmacist must check them.",
            SOURCE,
        )
    others = current + recent_supplies(context)
    for index, item in enumerate(context.items):
        mine = concepts_of(item.medication)
        pairs = [
            (other.medication.name, concepts_of(other.medication), "on this prescription")
            for other in context.items[index + 1 :]
        ] + [(other.label, other.concepts, "which the patient takes") for other in others]
        reported = set()
        for label, concepts, where in pairs:
            for rule in matching_rules(mine, concepts, rules):
                if (rule.pk, label) in reported:
                    continue
                reported.add((rule.pk, label))
                yield CheckResult(
                    f"interaction.{rule.severity}",
                    SEVERITY[rule.severity],
                    f"{item.medication.name} with {label} ({where}): {rule.get_severity_display().lower()} "
                    f"interaction. {rule.message}",
                    rule.source,
                    item.pk,
                )
