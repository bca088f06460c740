"""The patient's history in Scriptline: early re-supply, and titration steps of ADHD medicines."""

from __future__ import annotations

from collections.abc import Iterable
from decimal import Decimal

from prescriptions.checks.base import (
    SCRIPTLINE_POLICY,
    CheckResult,
    Context,
    Severity,
    check,
    daily_amount,
    describe_amount,
    start_of_supply,
)
from prescriptions.checks.eligibility import ADHD_MEDICINES
from prescriptions.models import Prescription, PrescriptionItem

EARLY_FRACTION = Decimal("0.75")
SOURCE_EARLY = f"{SCRIPTLINE_POLICY} (guidance, not law): no new supply before 75% of the last one's days"
SOURCE_TITRATION = "NICE NG87 section 1.7 (dose titration); Scriptline titration record"


def days_before_resupply(days_supply: int) -> Decimal:
    """The earliest day (counted from the previous supply) a new supply is not early."""
    return EARLY_FRACTION * days_supply


def previous_supply(context: Context, item: PrescriptionItem) -> tuple[Prescription, PrescriptionItem] | None:
    """The most recent earlier supply sharing an ingredient with `item`: (prescription, item)."""
    ingredients = set(item.medication.ingredients)
    candidates = [
        (previous, previous_item)
        for previous in context.history
        for previous_item in previous.items.all()
        if ingredients & set(previous_item.medication.ingredients)
        and start_of_supply(previous) <= start_of_supply(context.prescription)
    ]
    if not candidates:
        return None
    return max(candidates, key=lambda pair: (start_of_supply(pair[0]), pair[0].pk))


@check("history", source=SOURCE_EARLY)
def check_early_resupply(context: Context) -> Iterable[CheckResult]:
    for item in context.items:
        found = previous_supply(context, item)
        if found is None:
            continue
        previous, previous_item = found
        elapsed = (start_of_supply(context.prescription) - start_of_supply(previous)).days
        if elapsed < days_before_resupply(previous_item.days_supply):
            controlled = " of a controlled drug" if context.schedule(item.medication) else ""
            if previous.clinic_id != context.prescription.clinic_id:
                # Another clinic's supply to the same person: the clinic learns that there is one,
                # never its details; the pharmacist sees them on the review screen.
                yield CheckResult(
                    "history.early_resupply_elsewhere",
                    Severity.NEEDS_PHARMACIST,
                    f"Early re-supply{controlled}: {previous_item.medication.name} was supplied to this "
                    "patient through another clinic and has not yet run out; a pharmacist will review the "
                    "supply history before this is supplied.",
                    SOURCE_EARLY,
                    item.pk,
                )
                continue
            yield CheckResult(
                "history.early_resupply",
                Severity.NEEDS_PHARMACIST,
                f"Early re-supply{controlled}: {previous_item.quantity.normalize():f} {previous_item.unit} of "
                f"{previous_item.medication} ({previous_item.days_supply} days' supply) were prescribed "
                f"on {start_of_supply(previous):%Y-%m-%d}, only {elapsed} days ago.",
                SOURCE_EARLY,
                item.pk,
            )


@check("titration", source=SOURCE_TITRATION)
def check_titration(context: Context) -> Iterable[CheckResult]:
    for item in context.items:
        if not ADHD_MEDICINES & set(item.medication.ingredients):
            continue
        found = previous_supply(context, item)
        if found is None:
            continue
        previous, previous_item = found
        if previous.clinic_id != context.prescription.clinic_id:
            continue  # a titration is a step of the same clinic's treatment
        now, before = daily_amount(item), daily_amount(previous_item)
        if now is None or before is None or now == before:
            continue
        unit = item.medication.strength_unit
        direction = "up" if now > before else "down"
        yield CheckResult(
            "titration.step",
            Severity.INFO,
            f"Titration step {direction}: {item.medication.name} {describe_amount(now, unit)} a day "
            f"({item.medication.strength} {item.medication.form}); previous dose "
            f"{describe_amount(before, unit)} a day ({previous_item.medication.strength} "
            f"{previous_item.medication.form}) prescribed on {start_of_supply(previous):%Y-%m-%d}.",
            SOURCE_TITRATION,
            item.pk,
        )
