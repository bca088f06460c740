"""Patient identity: the NHS number's Modulus 11 check digit (GB)."""

from __future__ import annotations

from collections.abc import Iterable

from patients.serializers import nhs_number_is_valid
from prescriptions.checks.base import GB, CheckResult, Context, Severity, check

SOURCE = "NHS Data Dictionary: NHS number (Modulus 11 check digit)"


@check("identity", source=SOURCE, jurisdictions=GB)
def check_nhs_number(context: Context) -> Iterable[CheckResult]:
    number = context.patient.nhs_number.replace(" ", "")
    if not number:
        yield CheckResult(
            "identity.no_nhs_number",
            Severity.INFO,
            "The patient has no NHS number; identity rests on name, date of birth and address.",
            SOURCE,
        )
    elif not nhs_number_is_valid(number):
        # The number itself is not repeated: results travel to the clinic and the event log.
        yield CheckResult(
            "identity.nhs_number_invalid",
            Severity.BLOCK,
            "The patient's NHS number fails its Modulus 11 check digit; correct the patient record.",
            SOURCE,
        )
