"""Controlled-substance law in the US: 21 CFR 1306 (prescriptions) and 1311 (electronic
prescriptions for controlled substances)."""

from __future__ import annotations

import re
from collections.abc import Iterable

from prescriptions.checks.base import US, CheckResult, Context, Severity, check
from prescriptions.models import PrescriptionItem

CFR_1306_05 = "21 CFR 1306.05(a) (manner of issuance: patient's name and address, prescriber's DEA number)"
CFR_1306_12 = "21 CFR 1306.12 (Schedule II: no refills; multiple prescriptions up to 90 days)"
CFR_1306_22 = "21 CFR 1306.22(a) (Schedules III-V: at most 5 refills within 6 months)"
CFR_1311 = "21 CFR 1311.120 and 1311.140 (EPCS: two-factor signing)"
APPROVAL = "21 CFR 1306.04 (corresponding responsibility of the pharmacist); Scriptline policy"

SCHEDULE_II = frozenset({"II"})
SCHEDULES_III_V = frozenset({"III", "IV", "V"})
MAX_REFILLS = 5
REFILL_WINDOW_DAYS = 183
SERIES_MAX_DAYS = 90
DEA_NUMBER = re.compile(r"^[A-Z][A-Z9]\d{7}$")


def dea_number_is_valid(number: str) -> bool:
    """Two letters and seven digits; the last digit checks the first six."""
    number = number.strip().upper()
    if not DEA_NUMBER.match(number):
        return False
    digits = [int(character) for character in number[2:]]
    total = digits[0] + digits[2] + digits[4] + 2 * (digits[1] + digits[3] + digits[5])
    return total % 10 == digits[6]


def series_total_days(days: list[int]) -> int:
    return sum(days)


def _controlled(context: Context) -> list[PrescriptionItem]:
    return [item for item in context.items if context.schedule(item.medication)]


@check("cd_us", source=CFR_1306_05, jurisdictions=US)
def check_issuance(context: Context) -> Iterable[CheckResult]:
    if not _controlled(context):
        return
    prescriber, patient = context.prescriber, context.patient
    if not prescriber.dea_number.strip():
        yield CheckResult(
            "cd_us.dea_missing",
            Severity.BLOCK,
            "A controlled-substance prescription needs the prescriber's DEA registration number; none "
            "is recorded.",
            CFR_1306_05,
        )
    elif not dea_number_is_valid(prescriber.dea_number):
        yield CheckResult(
            "cd_us.dea_invalid",
            Severity.BLOCK,
            "The prescriber's DEA registration number is not well-formed (check digit).",
            CFR_1306_05,
        )
    if not (patient.given_name and patient.family_name and patient.address_line):
        yield CheckResult(
            "cd_us.patient_name_address",
            Severity.BLOCK,
            "A controlled-substance prescription must give the patient's full name and address.",
            CFR_1306_05,
        )
    if context.prescription.two_factor_signed_at is None:
        yield CheckResult(
            "cd_us.two_factor_signature_missing",
            Severity.BLOCK,
            "An electronic controlled-substance prescription must be signed with two-factor "
            "authentication; no two-factor signing is recorded.",
            CFR_1311,
        )


@check("cd_us", source=CFR_1306_12, jurisdictions=US)
def check_schedule_ii(context: Context) -> Iterable[CheckResult]:
    prescription = context.prescription
    for item in _controlled(context):
        if context.schedule(item.medication) not in SCHEDULE_II:
            continue
        if prescription.repeats:
            yield CheckResult(
                "cd_us.schedule_ii_refills",
                Severity.BLOCK,
                f"{item.medication.name} is Schedule II: it cannot be refilled ({prescription.repeats} "
                "refills given).",
                CFR_1306_12,
                item.pk,
            )
        yield from _series(context, item)


def _series(context: Context, item: PrescriptionItem) -> Iterable[CheckResult]:
    """Multiple Schedule II prescriptions issued together: at most 90 days, dated fills."""
    prescription = context.prescription
    ingredients = set(item.medication.ingredients)
    siblings = [
        (previous, previous_item)
        for previous in context.history
        if previous.issued_on == prescription.issued_on
        and previous.prescriber_id == prescription.prescriber_id
        for previous_item in previous.items.all()
        if ingredients & set(previous_item.medication.ingredients)
    ]
    if not siblings:
        return
    total = series_total_days([item.days_supply, *(other.days_supply for _, other in siblings)])
    if total > SERIES_MAX_DAYS:
        yield CheckResult(
            "cd_us.series_over_90_days",
            Severity.BLOCK,
            f"{len(siblings) + 1} Schedule II prescriptions for {item.medication.name} issued on "
            f"{prescription.issued_on:%Y-%m-%d} add up to {total} days' supply, more than {SERIES_MAX_DAYS}.",
            CFR_1306_12,
            item.pk,
        )
    undated = [previous for previous, _ in siblings if previous.earliest_fill_date is None]
    if prescription.earliest_fill_date is None and undated:
        yield CheckResult(
            "cd_us.series_earliest_fill_date_missing",
            Severity.BLOCK,
            f"Another Schedule II prescription for {item.medication.name} was issued the same day: each "
            "one after the first must carry the earliest date it may be filled.",
            CFR_1306_12,
            item.pk,
        )


@check("cd_us", source=CFR_1306_22, jurisdictions=US)
def check_refills(context: Context) -> Iterable[CheckResult]:
    refills = context.prescription.repeats
    for item in _controlled(context):
        if context.schedule(item.medication) not in SCHEDULES_III_V or not refills:
            continue
        if refills > MAX_REFILLS:
            yield CheckResult(
                "cd_us.too_many_refills",
                Severity.BLOCK,
                f"{item.medication.name} is Schedule {context.schedule(item.medication)}: at most "
                f"{MAX_REFILLS} refills are allowed ({refills} given).",
                CFR_1306_22,
                item.pk,
            )
        elif (refills + 1) * item.days_supply > REFILL_WINDOW_DAYS:
            yield CheckResult(
                "cd_us.refills_beyond_six_months",
                Severity.INFO,
                f"{refills} refills of {item.days_supply} days run past 6 months from the date of issue; "
                "refills after that cannot be dispensed.",
                CFR_1306_22,
                item.pk,
            )


# An earliest fill date in the future is the dates family's "supply held" finding.


@check("controlled_drug", source=APPROVAL, jurisdictions=US)
def check_pharmacist_approval(context: Context) -> Iterable[CheckResult]:
    for item in _controlled(context):
        yield CheckResult(
            "controlled_drug.pharmacist_approval",
            Severity.NEEDS_PHARMACIST,
            f"{item.medication.name} is a Schedule {context.schedule(item.medication)} controlled "
            "substance: a pharmacist must approve it before it is dispatched.",
            APPROVAL,
            item.pk,
        )
