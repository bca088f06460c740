"""FHIR R4 OperationOutcome: how every refusal on /fhir/R4 is answered.

One `issue` per problem, each with a severity, an IssueType code
(http://hl7.org/fhir/ValueSet/issue-type) and the FHIRPath `expression` of the element
concerned. Diagnostics name elements and rules, never the values a message carried.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from common.errors import InvalidInput

FHIR_CONTENT_TYPE = "application/fhir+json"
# A message with more problems than this gets the first ones and a note that more exist.
MAX_ISSUES = 50


@dataclass(frozen=True)
class Issue:
    code: str
    expression: str
    diagnostics: str
    severity: str = "error"

    def as_fhir(self) -> dict[str, Any]:
        issue: dict[str, Any] = {
            "severity": self.severity,
            "code": self.code,
            "diagnostics": self.diagnostics,
        }
        if self.expression:
            issue["expression"] = [self.expression]
        return issue


class MessageInvalid(InvalidInput):
    """A FHIR message that cannot be accepted, with every problem found as an Issue."""

    def __init__(self, issues: list[Issue]) -> None:
        super().__init__(f"{len(issues)} problem(s) in the message", code="fhir-message-invalid")
        self.issues = issues


def operation_outcome(issues: list[Issue]) -> dict[str, Any]:
    shown = [issue.as_fhir() for issue in issues[:MAX_ISSUES]]
    if len(issues) > MAX_ISSUES:
        shown.append(
            Issue(
                "too-costly",
                "",
                f"{len(issues) - MAX_ISSUES} more problem(s) not listed; fix these and send it again.",
                severity="information",
            ).as_fhir()
        )
    return {"resourceType": "OperationOutcome", "issue": shown}


def fhir_path(root: str, location: tuple[int | str, ...]) -> str:
    """`("entry", 2, "resource", "intent")` under "Bundle" → "Bundle.entry[2].resource.intent"."""
    text = root
    for part in location:
        text += f"[{part}]" if isinstance(part, int) else f".{part}"
    return text
