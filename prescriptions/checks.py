"""Clinical checks run on every prescription before it may be dispatched.

Each check looks at one prescription and returns results; a result has a code, a severity,
a message a clinician understands and the source of the rule. The outcome is decided by
the most severe result: any BLOCK rejects, any NEEDS_PHARMACIST (and every controlled drug)
waits for a pharmacist, otherwise the prescription is approved.

This is the first, simple set (formulary, quantity and days' supply sanity, controlled-drug
gate); the full per-jurisdiction engine extends CHECKS.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from decimal import Decimal

from prescriptions.models import Prescription, PrescriptionItem, Status


class Severity:
    BLOCK = "block"
    NEEDS_PHARMACIST = "needs_pharmacist"
    INFO = "info"


@dataclass(frozen=True)
class CheckResult:
    code: str
    severity: str
    message: str
    source: str
    item: int | None = None

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


MAX_DAYS_SUPPLY = 90
MAX_UNITS_PER_DAY = Decimal(12)
SCRIPTLINE_POLICY = "Scriptline dispensing policy"


def check_formulary(prescription: Prescription, item: PrescriptionItem) -> Iterable[CheckResult]:
    if not item.medication.is_active:
        yield CheckResult(
            "formulary.inactive",
            Severity.BLOCK,
            f"{item.medication} is no longer on the formulary.",
            SCRIPTLINE_POLICY,
            item.pk,
        )


def check_days_supply(prescription: Prescription, item: PrescriptionItem) -> Iterable[CheckResult]:
    if item.days_supply > MAX_DAYS_SUPPLY:
        yield CheckResult(
            "supply.days_too_long",
            Severity.NEEDS_PHARMACIST,
            f"{item.days_supply} days' supply is more than {MAX_DAYS_SUPPLY} days; a pharmacist "
            "must confirm it.",
            SCRIPTLINE_POLICY,
            item.pk,
        )


def check_quantity_per_day(prescription: Prescription, item: PrescriptionItem) -> Iterable[CheckResult]:
    per_day = item.quantity / item.days_supply
    if per_day > MAX_UNITS_PER_DAY:
        yield CheckResult(
            "supply.quantity_per_day_high",
            Severity.NEEDS_PHARMACIST,
            f"{item.quantity} {item.unit} over {item.days_supply} days is {per_day:.1f} a day, "
            f"more than {MAX_UNITS_PER_DAY}; check the quantity and days' supply.",
            SCRIPTLINE_POLICY,
            item.pk,
        )
    elif per_day < Decimal("0.1"):
        yield CheckResult(
            "supply.quantity_per_day_low",
            Severity.NEEDS_PHARMACIST,
            f"{item.quantity} {item.unit} over {item.days_supply} days is less than one unit "
            "every ten days; check the quantity and days' supply.",
            SCRIPTLINE_POLICY,
            item.pk,
        )


def check_controlled_drug(prescription: Prescription, item: PrescriptionItem) -> Iterable[CheckResult]:
    if item.medication.is_controlled:
        source = (
            "Misuse of Drugs Regulations 2001" if prescription.clinic.jurisdiction == "GB" else "21 CFR 1306"
        )
        yield CheckResult(
            "controlled_drug.pharmacist_approval",
            Severity.NEEDS_PHARMACIST,
            f"{item.medication.name} is a Schedule {item.medication.controlled_schedule} "
            "controlled drug: a pharmacist must approve it before it is dispatched.",
            source,
            item.pk,
        )


CHECKS: list[Callable[[Prescription, PrescriptionItem], Iterable[CheckResult]]] = [
    check_formulary,
    check_days_supply,
    check_quantity_per_day,
    check_controlled_drug,
]


def run_checks(prescription: Prescription) -> list[CheckResult]:
    return [
        result
        for item in prescription.items.all()
        for check in CHECKS
        for result in check(prescription, item)
    ]


def outcome(results: list[CheckResult]) -> str:
    severities = {result.severity for result in results}
    if Severity.BLOCK in severities:
        return Status.REJECTED
    if Severity.NEEDS_PHARMACIST in severities:
        return Status.AWAITING_PHARMACIST
    return Status.APPROVED
