"""Drug-drug interactions: within the prescription, and against the patient's current
medicines and recent supplies in Scriptline."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import replace
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
SEVERITY: dict[str, str] = {
    InteractionRule.Severity.CONTRAINDICATED: Severity.BLOCK,
    InteractionRule.Severity.MAJOR: Severity.NEEDS_PHARMACIST,
    InteractionRule.Severity.MODERATE: Severity.INFO,
    InteractionRule.Severity.MINOR: Severity.INFO,
}
# A supply still counts this many days after it should have run out (MAOI washout is 14 days).
RECENT_SUPPLY_GRACE_DAYS = 14
# After a reported medicine stops, it still interacts for its washout period (days).
WASHOUT_DAYS = {
    "class:maoi": 14,
    "class:ssri": 7,
    "sertraline": 14,
    "fluoxetine": 35,
    "venlafaxine": 7,
    "duloxetine": 5,
}
LONGEST_WASHOUT_DAYS = max(WASHOUT_DAYS.values())
SOURCE_WASHOUT = (
    "Washout after stopping: MAOIs 14 days (methylphenidate, lisdexamfetamine, atomoxetine and SSRI "
    "SmPCs section 4.3); before an MAOI, at least 1 week after an SSRI, 2 weeks after sertraline and "
    "5 weeks after fluoxetine (BNF Antidepressant drugs, changing antidepressants); venlafaxine 7 days "
    "and duloxetine 5 days (SmPCs section 4.3)"
)


def recent_supplies(context: Context) -> list[ResolvedMedicine]:
    medicines = []
    for previous in context.history:
        for item in previous.items.all():
            ends = start_of_supply(previous) + timedelta(days=item.days_supply + RECENT_SUPPLY_GRACE_DAYS)
            if ends >= context.today:
                supplied = (
                    f"supplied {start_of_supply(previous):%Y-%m-%d}"
                    if previous.clinic_id == context.prescription.clinic_id
                    else "supplied recently through another clinic"
                )
                medicines.append(
                    ResolvedMedicine(
                        f"{item.medication.name} ({supplied})",
                        concepts_of(item.medication),
                        frozenset(item.medication.ingredients),
                        item.medication.therapeutic_class,
                    )
                )
    return medicines


def washout_days(medicine: ResolvedMedicine) -> int:
    """Days after stopping during which a medicine still interacts (0: none recorded)."""
    return max((WASHOUT_DAYS.get(concept, 0) for concept in medicine.concepts), default=0)


def current_medicines(
    context: Context, *, include_washout: bool = True
) -> tuple[list[ResolvedMedicine], list[str]]:
    """The patient's reported medicines still taken (and, for interactions, those stopped within
    their washout), resolved onto the formulary; and the names that could not be resolved."""
    resolved, unknown = [], []
    for current in context.current_medications:
        medicine = context.formulary.resolve(current)
        stopped = current.stopped_on
        still_taken = stopped is None or stopped >= context.today
        if medicine is None:
            # Unknown and stopped long ago cannot matter, whatever it was.
            if stopped is None or still_taken or (context.today - stopped).days < LONGEST_WASHOUT_DAYS:
                unknown.append(current.name)
            continue
        if stopped is None or still_taken:
            resolved.append(medicine)
            continue
        days = (context.today - stopped).days
        washout = washout_days(medicine)
        if include_washout and days < washout:
            label = f"{medicine.label} (stopped on {stopped:%Y-%m-%d}, {days} days ago, within its {washout}-day washout)"
            resolved.append(replace(medicine, label=label))
    return resolved, unknown


def matching_rules(
    left: frozenset[str], right: frozenset[str], rules: list[InteractionRule]
) -> Iterator[InteractionRule]:
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
        ] + [(other.label, other.concepts, _where(other, context)) for other in others]
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
                    rule.source + (f"; {SOURCE_WASHOUT}" if where == STOPPED else ""),
                    item.pk,
                )


STOPPED = "which the patient stopped recently"


def _where(medicine: ResolvedMedicine, context: Context) -> str:
    if medicine.stopped_on is not None and medicine.stopped_on < context.today:
        return STOPPED
    return "which the patient takes"
