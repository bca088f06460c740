"""Dates that mean what the law means: every prescription has a validity window, and a start
date ("do not supply before") holds it.

The signing date (`issued_on`) and the start date are kept apart; the later of the two is the
"appropriate date" from which a GB prescription's validity runs. Controlled drugs in Schedules
2-4 have their own 28-day window (cd_law_gb). In the US, Schedules III-V lapse six months
after issue; Schedule II has no federal limit but states may set one, and the formulary lists
the state limits it documents.
"""

from __future__ import annotations

import calendar
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, timedelta

from prescriptions.checks.base import GB, US, CheckResult, Context, Severity, check
from prescriptions.models import Prescription, StateValidityLimit

HMR_217 = (
    "Human Medicines Regulations 2012, regulation 217(5) and (7): a prescription-only medicine is "
    "not dispensed after the end of six months beginning with the appropriate date (the later of "
    "the signing date and the start date)"
)
CFR_1306_22 = (
    "21 CFR 1306.22(a): a Schedule III-V prescription is not filled or refilled more than six "
    "months after the date it was issued"
)
US_POLICY = (
    "Scriptline dispensing policy (not law): a US prescription for a non-controlled medicine is "
    "filled within 12 months of issue unless the formulary documents a shorter state limit"
)
HOLD_SOURCE = {
    "GB": "Human Medicines Regulations 2012, regulation 217(7) (appropriate date); Misuse of Drugs "
    "Regulations 2001, regulation 16 (no supply before the appropriate date)",
    "US": "21 CFR 1306.12(b) (the earliest date a Schedule II prescription may be filled); the "
    "prescriber's start date",
}
SCHEDULES_III_V = frozenset({"III", "IV", "V"})


def appropriate_date(prescription: Prescription) -> date:
    """The later of the signing date and the start date."""
    start = prescription.start_date
    return max(prescription.issued_on, start) if start else prescription.issued_on


def supply_from(prescription: Prescription) -> date:
    """The first day anything on the prescription may be supplied."""
    first = appropriate_date(prescription)
    earliest = prescription.earliest_fill_date
    return max(first, earliest) if earliest else first


def _shifted(day: date, months: int) -> tuple[int, int, int]:
    index = day.year * 12 + day.month - 1 + months
    year, month = divmod(index, 12)
    return year, month + 1, calendar.monthrange(year, month + 1)[1]


def months_after(day: date, months: int) -> date:
    """The corresponding date `months` later, or the month's last day when it has none
    (31 August + 6 months = 28 or 29 February)."""
    year, month, last = _shifted(day, months)
    return date(year, month, min(day.day, last))


def last_day_of_months_beginning_with(day: date, months: int) -> date:
    """The last day of a period of `months` months beginning with `day`: the day before the
    corresponding date, or the month's last day when there is no corresponding date."""
    year, month, last = _shifted(day, months)
    if day.day > last:
        return date(year, month, last)
    return date(year, month, day.day) - timedelta(days=1)


@dataclass(frozen=True)
class Window:
    last_day: date
    rule: str
    source: str


def window_gb(prescription: Prescription) -> Window:
    return Window(
        last_day_of_months_beginning_with(appropriate_date(prescription), 6),
        "six months beginning with the appropriate date",
        HMR_217,
    )


def window_us(
    prescription: Prescription,
    schedule: str,
    state_limits: dict[tuple[str, str], StateValidityLimit],
    state: str,
) -> Window | None:
    """The window for one item's schedule ('' when not controlled), shortest rule first."""
    candidates: list[Window] = []
    limit = state_limits.get((state, schedule or "rx"))
    start = max(prescription.issued_on, prescription.earliest_fill_date or prescription.issued_on)
    if limit is not None:
        candidates.append(
            Window(start + timedelta(days=limit.days), f"{limit.days} days ({limit.state} law)", limit.source)
        )
    if schedule in SCHEDULES_III_V:
        candidates.append(
            Window(months_after(prescription.issued_on, 6), "six months after issue", CFR_1306_22)
        )
    elif not schedule:
        candidates.append(
            Window(months_after(prescription.issued_on, 12), "12 months after issue", US_POLICY)
        )
    return min(candidates, key=lambda window: window.last_day, default=None)


def validity_window(context: Context) -> Window | None:
    """The window that ends first for this prescription (None: no limit applies)."""
    prescription = context.prescription
    if context.jurisdiction == "GB":
        return window_gb(prescription)
    state = (context.patient.region or "").strip().upper()
    windows = [
        window_us(prescription, context.schedule(item.medication), context.formulary.state_limits, state)
        for item in context.items
    ]
    return min((window for window in windows if window), key=lambda window: window.last_day, default=None)


def date_facts(prescription: Prescription, window: Window | None, today: date) -> dict[str, object]:
    facts: dict[str, object] = {"signed on": f"{prescription.issued_on:%Y-%m-%d}"}
    if prescription.start_date:
        facts["start date"] = f"{prescription.start_date:%Y-%m-%d}"
    if prescription.earliest_fill_date:
        facts["earliest fill date"] = f"{prescription.earliest_fill_date:%Y-%m-%d}"
    facts["appropriate date"] = f"{appropriate_date(prescription):%Y-%m-%d}"
    if window is not None:
        facts["valid until"] = f"{window.last_day:%Y-%m-%d} ({window.rule})"
    facts["today"] = f"{today:%Y-%m-%d}"
    return facts


def _long(day: date) -> str:
    return f"{day.day} {day:%B %Y}"


@check("dates", source=HMR_217, jurisdictions=GB | US)
def check_validity_window(context: Context) -> Iterable[CheckResult]:
    window = validity_window(context)
    prescription = context.prescription
    if window is not None and context.today > window.last_day:
        late = (context.today - window.last_day).days
        yield CheckResult(
            "dates.expired",
            Severity.BLOCK,
            f"The prescription could be supplied until {_long(window.last_day)} ({window.rule}); today is "
            f"{late} day{'s' if late != 1 else ''} later, so it has expired and cannot be supplied. Ask "
            "the prescriber for a new prescription.",
            window.source,
            facts=date_facts(prescription, window, context.today),
        )


@check("dates", source=HOLD_SOURCE["GB"], jurisdictions=GB | US)
def check_supply_held(context: Context) -> Iterable[CheckResult]:
    prescription = context.prescription
    first = supply_from(prescription)
    # A signing date in the future is refused at intake; only a start date holds.
    if first <= context.today or first == prescription.issued_on:
        return
    which = (
        "the earliest fill date"
        if prescription.earliest_fill_date and first == prescription.earliest_fill_date
        else "the prescriber's start date"
    )
    days = (first - context.today).days
    yield CheckResult(
        "dates.supply_held",
        Severity.NEEDS_PHARMACIST,
        f"Not to be supplied before {_long(first)} ({which}), {days} day{'s' if days != 1 else ''} from "
        "today. It is held and goes to the pharmacy on that day, even if approved sooner; check "
        "that the start date is intended and that the prescription will still be valid then.",
        HOLD_SOURCE[context.jurisdiction],
        facts=date_facts(prescription, validity_window(context), context.today),
    )
