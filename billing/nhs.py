"""NHS prescription-charge exemptions (England), as a table.

Each category says what evidence the clinic must send and, where we can check it ourselves,
the age range it covers (checked against the patient's date of birth on the date of issue).
Source: NHS England / NHSBSA "Who can get free prescriptions" and the FP10 exemption
declaration; verify the list when the regulations change.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date


@dataclass(frozen=True)
class Exemption:
    code: str
    label: str
    evidence_required: bool
    min_age: int | None = None
    max_age: int | None = None

    @property
    def age_checked(self) -> bool:
        return self.min_age is not None or self.max_age is not None

    def covers_age(self, age: int) -> bool:
        return (self.min_age is None or age >= self.min_age) and (self.max_age is None or age <= self.max_age)


EXEMPTIONS: dict[str, Exemption] = {
    exemption.code: exemption
    for exemption in [
        Exemption("age_under_16", "Under 16", evidence_required=False, max_age=15),
        Exemption(
            "age_16_to_18_in_education",
            "16, 17 or 18 and in full-time education",
            evidence_required=True,
            min_age=16,
            max_age=18,
        ),
        Exemption("age_60_or_over", "60 or over", evidence_required=False, min_age=60),
        Exemption("maternity_certificate", "Valid maternity exemption certificate", evidence_required=True),
        Exemption("medical_certificate", "Valid medical exemption certificate", evidence_required=True),
        Exemption(
            "prepayment_certificate", "Valid prescription prepayment certificate", evidence_required=True
        ),
        Exemption(
            "war_pension_certificate", "Valid war pension exemption certificate", evidence_required=True
        ),
        Exemption("hc2_certificate", "Named on a valid HC2 certificate", evidence_required=True),
        Exemption("income_support", "Income Support or income-related ESA", evidence_required=True),
        Exemption("jobseekers_allowance", "Income-based Jobseeker's Allowance", evidence_required=True),
        Exemption("universal_credit", "Universal Credit meeting the criteria", evidence_required=True),
        Exemption("pension_credit", "Pension Credit Guarantee Credit", evidence_required=True),
        Exemption(
            "nhs_tax_credit_certificate", "Valid NHS tax credit exemption certificate", evidence_required=True
        ),
    ]
}


def age_on(*, birth_date: date, on: date) -> int:
    return on.year - birth_date.year - ((on.month, on.day) < (birth_date.month, birth_date.day))


def exemption_problems(*, category: str, evidence: str, birth_date: date, on: date) -> list[str]:
    """What is wrong with a declared exemption (empty when it is acceptable)."""
    exemption = EXEMPTIONS.get(category)
    if exemption is None:
        return [f"Unknown exemption category; use one of: {', '.join(EXEMPTIONS)}."]
    problems = []
    if exemption.evidence_required and not evidence.strip():
        problems.append(f"'{exemption.label}' needs evidence (e.g. the certificate number).")
    if exemption.age_checked and not exemption.covers_age(age_on(birth_date=birth_date, on=on)):
        problems.append(f"The patient's date of birth does not match '{exemption.label}'.")
    return problems
