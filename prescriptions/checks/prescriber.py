"""The prescriber: registration present and well-formed, licensed where the patient is, and
allowed to prescribe controlled drugs."""

from __future__ import annotations

import re
from collections.abc import Iterable

from prescriptions.checks.base import US, CheckResult, Context, Severity, check

SOURCE_GB = "GMC / NMC / GPhC registers (number formats); Human Medicines Regulations 2012, reg 214"
SOURCE_US = "CMS NPI standard (10 digits, Luhn check with prefix 80840); state licensure"
SOURCE_CD = "Scriptline prescriber record: controlled-drug authorisation"

FORMATS = {
    "GMC": re.compile(r"^\d{7}$"),
    "GPhC": re.compile(r"^\d{7}$"),
    "NMC": re.compile(r"^\d{2}[A-Z]\d{4}[A-Z]$"),
    "NPI": re.compile(r"^\d{10}$"),
}
BODIES = {"GB": {"GMC", "NMC", "GPhC"}, "US": {"NPI"}}


def luhn_is_valid(digits: str) -> bool:
    total = 0
    for position, character in enumerate(reversed(digits)):
        value = int(character)
        if position % 2 == 1:
            value *= 2
            value -= 9 if value > 9 else 0
        total += value
    return total % 10 == 0


def npi_is_valid(number: str) -> bool:
    return bool(FORMATS["NPI"].match(number)) and luhn_is_valid("80840" + number)


def registration_is_valid(body: str, number: str) -> bool:
    pattern = FORMATS.get(body)
    if pattern is None or not pattern.match(number):
        return False
    return body != "NPI" or npi_is_valid(number)


@check("prescriber", source=f"{SOURCE_GB}; {SOURCE_US}")
def check_registration(context: Context) -> Iterable[CheckResult]:
    prescriber = context.prescriber
    source = SOURCE_GB if context.jurisdiction == "GB" else SOURCE_US
    if prescriber.registration_body not in BODIES[context.jurisdiction]:
        yield CheckResult(
            "prescriber.wrong_jurisdiction",
            Severity.BLOCK,
            f"A {prescriber.registration_body} registration does not allow prescribing in "
            f"{context.jurisdiction}.",
            source,
        )
    elif not registration_is_valid(prescriber.registration_body, prescriber.registration_number.strip()):
        yield CheckResult(
            "prescriber.registration_invalid",
            Severity.BLOCK,
            f"The prescriber's {prescriber.registration_body} number is missing or not well-formed.",
            source,
        )


@check("prescriber", source=SOURCE_US, jurisdictions=US)
def check_state_licence(context: Context) -> Iterable[CheckResult]:
    state = context.patient.region.strip().upper()
    licensed = {value.upper() for value in context.prescriber.licensed_states}
    if not state:
        yield CheckResult(
            "prescriber.patient_state_unknown",
            Severity.NEEDS_PHARMACIST,
            "The patient's state is not recorded, so the prescriber's state licence cannot be "
            "checked; a pharmacist must confirm it.",
            SOURCE_US,
        )
    elif state not in licensed:
        yield CheckResult(
            "prescriber.not_licensed_in_state",
            Severity.BLOCK,
            f"The prescriber is not licensed in {state}, where the patient is "
            f"(licensed in: {', '.join(sorted(licensed)) or 'none recorded'}).",
            SOURCE_US,
        )


@check("prescriber", source=SOURCE_CD)
def check_controlled_drug_authorisation(context: Context) -> Iterable[CheckResult]:
    if context.prescriber.controlled_drugs_authorised:
        return
    for item in context.items:
        schedule = context.schedule(item.medication)
        if schedule:
            yield CheckResult(
                "prescriber.not_authorised_for_controlled_drugs",
                Severity.BLOCK,
                f"{item.medication.name} is a Schedule {schedule} controlled drug and the prescriber "
                "is not recorded as authorised to prescribe controlled drugs.",
                SOURCE_CD,
                item.pk,
            )
