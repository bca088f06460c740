"""Controlled-drug law in Great Britain: the Misuse of Drugs Regulations 2001, regulations 15
and 16, and DHSC guidance. Each rule names its source; guidance says that it is guidance."""

from __future__ import annotations

import re
from collections.abc import Iterable
from datetime import date, timedelta
from decimal import Decimal

from prescriptions.checks.base import GB, CheckResult, Context, Severity, check
from prescriptions.checks.validity import appropriate_date
from prescriptions.checks.words import words_to_number
from prescriptions.models import PrescriptionItem

REG15 = "Misuse of Drugs Regulations 2001, regulation 15 (form of prescriptions)"
REG16 = "Misuse of Drugs Regulations 2001, regulation 16 (supply on prescription)"
GUIDANCE_30_DAYS = (
    "DHSC / Home Office guidance (not law): Schedule 2, 3 and 4 prescriptions should not exceed "
    "30 days' supply"
)
APPROVAL = "Misuse of Drugs Regulations 2001; Scriptline policy: a pharmacist approves every controlled drug"

FORM_RULES = frozenset({"2", "3"})  # regulation 15 and no repeats
VALIDITY_RULES = frozenset({"2", "3", "4"})  # 28-day validity and the 30-day guidance
VALIDITY_DAYS = 28
GUIDANCE_MAX_DAYS = 30
NUMBER_WORDS = re.compile(
    r"\b(\d+(\.\d+)?|one|two|three|four|five|six|seven|eight|nine|ten|half|single|once|twice)\b", re.I
)
UK_POSTCODE = re.compile(r"\b[A-Z]{1,2}\d[A-Z\d]?\s*\d[A-Z]{2}\b", re.I)


def dose_is_specific(text: str) -> bool:
    """'As directed' alone is not a dose; 'one tablet each morning' is."""
    return bool(NUMBER_WORDS.search(text))


def quantity_words_match(words: str, quantity: Decimal) -> bool:
    number = words_to_number(words)
    return number is not None and Decimal(number) == quantity


def supply_window(issued_on: date) -> tuple[date, date]:
    """The first and last day a Schedule 2-4 prescription dated `issued_on` may be supplied."""
    return issued_on, issued_on + timedelta(days=VALIDITY_DAYS)


def _controlled(context: Context, schedules: frozenset[str]) -> list[PrescriptionItem]:
    return [item for item in context.items if context.schedule(item.medication) in schedules]


@check("cd_gb", source=REG15, jurisdictions=GB)
def check_prescription_form(context: Context) -> Iterable[CheckResult]:
    items = _controlled(context, FORM_RULES)
    if not items:
        return
    patient, prescriber = context.patient, context.prescriber
    if not (patient.given_name and patient.family_name and patient.address_line and patient.postal_code):
        yield CheckResult(
            "cd_gb.patient_name_address",
            Severity.BLOCK,
            "A Schedule 2/3 prescription must give the patient's name and address; the patient "
            "record has no full name or address.",
            REG15,
        )
    if not prescriber.address or not UK_POSTCODE.search(prescriber.address):
        yield CheckResult(
            "cd_gb.prescriber_address",
            Severity.BLOCK,
            "A Schedule 2/3 prescription must give the prescriber's address in the UK; none with a "
            "UK postcode is recorded.",
            REG15,
        )
    if not prescriber.registration_number.strip():
        yield CheckResult(
            "cd_gb.prescriber_identification",
            Severity.BLOCK,
            "A Schedule 2/3 prescription must carry the prescriber's identification number.",
            REG15,
        )
    for item in items:
        yield from _item_form(item)


def _item_form(item: PrescriptionItem) -> Iterable[CheckResult]:
    medication = item.medication
    if not medication.form or not medication.strength:
        yield CheckResult(
            "cd_gb.form_strength",
            Severity.BLOCK,
            f"The form and strength of {medication.name} must be given.",
            REG15,
            item.pk,
        )
    if not dose_is_specific(item.dose_text):
        yield CheckResult(
            "cd_gb.dose_not_specific",
            Severity.BLOCK,
            f"The dose of {medication.name} must be specified: '{item.dose_text}' gives no amount "
            "('as directed' alone is not a dose).",
            REG15,
            item.pk,
        )
    quantity = Decimal(item.quantity)
    if not item.quantity_words.strip():
        yield CheckResult(
            "cd_gb.quantity_words_missing",
            Severity.BLOCK,
            f"The total quantity of {medication.name} must be in words as well as figures "
            f"({quantity.normalize():f}).",
            REG15,
            item.pk,
        )
    elif not quantity_words_match(item.quantity_words, quantity):
        yield CheckResult(
            "cd_gb.quantity_words_mismatch",
            Severity.BLOCK,
            f"The quantity in words ('{item.quantity_words}') does not match the figures "
            f"({quantity.normalize():f}) for {medication.name}.",
            REG15,
            item.pk,
        )


@check("cd_gb", source=REG16, jurisdictions=GB)
def check_supply_rules(context: Context) -> Iterable[CheckResult]:
    prescription = context.prescription
    if _controlled(context, FORM_RULES) and prescription.repeats:
        yield CheckResult(
            "cd_gb.repeats_not_allowed",
            Severity.BLOCK,
            f"Schedule 2 and 3 prescriptions cannot be repeatable ({prescription.repeats} repeats given); "
            "issue a new prescription for each supply.",
            REG16,
        )
    items = _controlled(context, VALIDITY_RULES)
    if not items:
        return
    first, last = supply_window(appropriate_date(prescription))
    if context.today > last:
        late = (context.today - last).days
        yield CheckResult(
            "cd_gb.expired",
            Severity.BLOCK,
            f"The appropriate date is {first:%Y-%m-%d} (the later of the signing and start dates): a "
            f"Schedule 2-4 controlled drug cannot be supplied more than {VALIDITY_DAYS} days after it. "
            f"The last day was {last:%Y-%m-%d}, {late} day{'s' if late != 1 else ''} ago; ask the "
            "prescriber for a new prescription.",
            REG16,
            facts={"appropriate date": f"{first:%Y-%m-%d}", "last day": f"{last:%Y-%m-%d}"},
        )
    # A start date in the future is the dates family's "supply held" finding.
    for item in items:
        if item.days_supply > GUIDANCE_MAX_DAYS:
            justified = bool(prescription.clinical_justification.strip())
            yield CheckResult(
                "cd_gb.over_30_days",
                Severity.NEEDS_PHARMACIST if justified else Severity.BLOCK,
                f"{item.days_supply} days' supply of {item.medication.name} is over {GUIDANCE_MAX_DAYS} "
                "days (guidance, not law): "
                + (
                    "the recorded clinical justification must be confirmed by a pharmacist."
                    if justified
                    else "it needs a recorded clinical justification."
                ),
                GUIDANCE_30_DAYS,
                item.pk,
            )


@check("controlled_drug", source=APPROVAL, jurisdictions=GB)
def check_pharmacist_approval(context: Context) -> Iterable[CheckResult]:
    for item in context.items:
        schedule = context.schedule(item.medication)
        if schedule:
            yield CheckResult(
                "controlled_drug.pharmacist_approval",
                Severity.NEEDS_PHARMACIST,
                f"{item.medication.name} is a Schedule {schedule} controlled drug: a pharmacist must "
                "approve it before it is dispatched.",
                APPROVAL,
                item.pk,
            )
