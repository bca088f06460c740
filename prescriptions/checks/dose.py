"""Maximum daily dose, from the stated dose (or the quantity over the days' supply) and strength."""

from __future__ import annotations

from collections.abc import Iterable
from decimal import Decimal

from prescriptions.checks.base import (
    CheckResult,
    Context,
    Severity,
    check,
    daily_amount,
    daily_units,
    describe_amount,
)

SOURCE = "BNF, maximum adult daily dose (formulary max_daily_dose)"
# Beyond twice the licensed maximum is treated as an error in the prescription, not a choice.
BLOCK_FACTOR = Decimal(2)


def dose_verdict(daily: Decimal, maximum: Decimal) -> str | None:
    """The severity for a daily dose against a maximum, or None if within it."""
    if daily > maximum * BLOCK_FACTOR:
        return Severity.BLOCK
    if daily > maximum:
        return Severity.NEEDS_PHARMACIST
    return None


def _count(amount: Decimal, unit: str) -> str:
    """ "12 tablets", "1 tablet", "7.5 ml"."""
    text = f"{Decimal(amount).quantize(Decimal('0.01')).normalize():f}"
    plural = text != "1" and unit in ("tablet", "capsule", "patch", "sachet")
    return f"{text} {unit}{'s' if plural else ''}"


@check("dose", source=SOURCE)
def check_maximum_daily_dose(context: Context) -> Iterable[CheckResult]:
    for item in context.items:
        medication = item.medication
        daily = daily_amount(item)
        if daily is None or medication.max_daily_dose is None:
            yield CheckResult(
                "dose.cannot_check",
                Severity.NEEDS_PHARMACIST,
                f"The formulary has no strength or maximum daily dose for {medication}, so the dose "
                "cannot be checked; a pharmacist must check it.",
                SOURCE,
                item.pk,
            )
            continue
        verdict = dose_verdict(daily, medication.max_daily_dose)
        if verdict is None:
            continue
        unit = medication.strength_unit
        over = daily - medication.max_daily_dose
        yield CheckResult(
            "dose.above_maximum" if verdict == Severity.NEEDS_PHARMACIST else "dose.far_above_maximum",
            verdict,
            f"{describe_amount(daily, unit)} of {medication.name} a day is more than the maximum of "
            f"{describe_amount(medication.max_daily_dose, unit)} a day, by {describe_amount(over, unit)}"
            + (
                " (more than twice it: check for a decimal or unit error)."
                if verdict == Severity.BLOCK
                else ". Check the dose with the prescriber."
            ),
            SOURCE,
            item.pk,
            {
                "daily dose": describe_amount(daily, unit),
                "from": f"{_count(daily_units(item), item.unit)} a day"
                + (
                    ""
                    if item.units_per_day
                    else f" ({_count(item.quantity, item.unit)} over {item.days_supply} days)"
                ),
                "maximum": f"{describe_amount(medication.max_daily_dose, unit)} a day (adult)",
            },
        )
