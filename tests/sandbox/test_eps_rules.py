"""The gateway simulator's EPS rules (sandbox/eps_rules.py): what they refuse, and why.

Each test breaks one rule in a message that conforms (EPS's own published eRD example) and
checks the issue the simulator answers with.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from sandbox import eps_rules

EXAMPLES = Path(__file__).resolve().parents[1] / "fixtures" / "fhir-examples"
ERD_EXAMPLE = json.loads((EXAMPLES / "eps-api__spec_prepare_eRD-primary-example-req.json").read_text())
NHS_NUMBER = "9449304130"


def resource(bundle: dict[str, Any], resource_type: str, index: int = 0) -> dict[str, Any]:
    return [e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == resource_type][index]


def requests_of(bundle: dict[str, Any]) -> list[dict[str, Any]]:
    return [e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == "MedicationRequest"]


def broken(change: Callable[[dict[str, Any]], None]) -> list[dict[str, Any]]:
    bundle = copy.deepcopy(ERD_EXAMPLE)
    change(bundle)
    return eps_rules.check_message(bundle)


def summary(issues: list[dict[str, Any]]) -> list[tuple[str, str, str]]:
    return [
        (issue["details"]["coding"][0]["code"], issue["expression"][0], issue["diagnostics"])
        for issue in issues
    ]


def test_the_published_example_conforms() -> None:
    assert eps_rules.check_message(copy.deepcopy(ERD_EXAMPLE)) == []


def set_check_character(bundle: dict[str, Any], character: str) -> None:
    for request in requests_of(bundle):
        request["groupIdentifier"]["value"] = request["groupIdentifier"]["value"][:-1] + character


def test_a_wrong_check_character_is_refused_as_spine_does_with_invalid_checksum() -> None:
    issues = broken(lambda bundle: set_check_character(bundle, "Y"))

    assert summary(issues) == [
        (
            "INVALID_CHECKSUM",
            f"MedicationRequest[{index}].groupIdentifier.value",
            "The short-form prescription ID's check character is wrong.",
        )
        for index in range(4)
    ]
    assert issues[0]["severity"] == "error"
    assert issues[0]["code"] == "value"


def test_a_medicine_coded_under_dmd_nhs_uk_is_refused() -> None:
    def recode(bundle: dict[str, Any]) -> None:
        requests_of(bundle)[1]["medicationCodeableConcept"]["coding"][0]["system"] = "https://dmd.nhs.uk"

    assert summary(broken(recode)) == [
        (
            "INVALID_VALUE",
            "MedicationRequest[1].medicationCodeableConcept.coding",
            "The medication must be a dm+d concept coded under http://snomed.info/sct.",
        ),
        (
            "INVALID_VALUE",
            "MedicationRequest[1].medicationCodeableConcept.coding[0].system",
            "Only http://snomed.info/sct is accepted for dm+d medicines.",
        ),
    ]


def test_a_quantity_without_its_dmd_unit_code_is_refused() -> None:
    def uncode(bundle: dict[str, Any]) -> None:
        del requests_of(bundle)[0]["dispenseRequest"]["quantity"]["code"]

    assert summary(broken(uncode)) == [
        (
            "MISSING_VALUE",
            "MedicationRequest[0].dispenseRequest.quantity.code",
            "Required field MedicationRequest[0].dispenseRequest.quantity.code is missing. "
            "The dm+d unit of measure, under http://snomed.info/sct.",
        )
    ]


def controlled(words: str | None) -> Callable[[dict[str, Any]], None]:
    def change(bundle: dict[str, Any]) -> None:
        parts: list[dict[str, Any]] = [
            {
                "url": "schedule",
                "valueCoding": {
                    "system": "https://fhir.nhs.uk/CodeSystem/medicationrequest-controlled-drug",
                    "code": "CD2",
                },
            }
        ]
        if words is not None:
            parts.insert(0, {"url": "quantityWords", "valueString": words})
        requests_of(bundle)[0]["extension"].append(
            {"url": "https://fhir.nhs.uk/StructureDefinition/Extension-DM-ControlledDrug", "extension": parts}
        )

    return change


def test_a_schedule_2_drug_needs_its_quantity_in_words() -> None:
    assert broken(controlled("twenty")) == []
    assert summary(broken(controlled(None))) == [
        (
            "MISSING_VALUE",
            "MedicationRequest[0].extension(Extension-DM-ControlledDrug).quantityWords",
            "Required field MedicationRequest[0].extension(Extension-DM-ControlledDrug).quantityWords is missing. "
            "Schedule 2 and 3 need it.",
        )
    ]


def test_a_patient_email_is_refused_because_eps_would_send_it_as_a_telephone_number() -> None:
    def add_email(bundle: dict[str, Any]) -> None:
        resource(bundle, "Patient")["telecom"] = [
            {"system": "email", "value": "stacey@example.org", "use": "home"}
        ]

    issues = broken(add_email)

    assert summary(issues) == [
        (
            "INVALID_VALUE",
            "Patient.telecom[0]",
            "A patient telecom is a phone number with its use (EPS sends it as tel:).",
        )
    ]
    assert "stacey" not in json.dumps(issues)


def test_an_invalid_nhs_number_is_refused_without_quoting_it() -> None:
    def corrupt(bundle: dict[str, Any]) -> None:
        resource(bundle, "Patient")["identifier"][0]["value"] = "9449304131"

    issues = broken(corrupt)

    assert summary(issues) == [
        ("INVALID_VALUE", "Patient.identifier", "The NHS number fails its Modulus 11 check.")
    ]
    assert "9449304131" not in json.dumps(issues)


def test_medication_requests_that_disagree_on_the_nominated_pharmacy_are_refused() -> None:
    def renominate(bundle: dict[str, Any]) -> None:
        requests_of(bundle)[2]["dispenseRequest"]["performer"]["identifier"]["value"] = "FA565"

    assert summary(broken(renominate)) == [
        (
            "INVALID_VALUE",
            "Bundle.entry.resource.ofType(MedicationRequest).dispenseRequest.performer",
            "Expected all MedicationRequests to have the same value for dispenseRequest.performer.",
        )
    ]


def test_a_missing_dispensing_site_preference_is_refused() -> None:
    def drop(bundle: dict[str, Any]) -> None:
        for request in requests_of(bundle):
            request["dispenseRequest"]["extension"] = []

    assert [expression for _, expression, _ in summary(broken(drop))] == [
        f"MedicationRequest[{index}].dispenseRequest.extension(Extension-DM-PerformerSiteType)"
        for index in range(4)
    ]


def test_a_primary_care_organisation_without_its_managing_organisation_is_refused() -> None:
    assert summary(broken(lambda bundle: resource(bundle, "Organization").pop("partOf"))) == [
        ("MISSING_VALUE", "organization.partOf", "Required field organization.partOf is missing.")
    ]


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (
            lambda bundle: resource(bundle, "Organization").pop("telecom"),
            [("INVALID_VALUE", "Organization.telecom", "Expected exactly one Organization.telecom.")],
        ),
        (
            lambda bundle: resource(bundle, "PractitionerRole")["telecom"][0].pop("use"),
            [
                (
                    "MISSING_VALUE",
                    "PractitionerRole.telecom[0].use",
                    "Required field PractitionerRole.telecom[0].use is missing.",
                )
            ],
        ),
        (
            lambda bundle: resource(bundle, "PractitionerRole").pop("identifier"),
            [
                (
                    "MISSING_VALUE",
                    "PractitionerRole.identifier",
                    "Required field PractitionerRole.identifier is missing. The SDS role profile ID.",
                )
            ],
        ),
        (
            lambda bundle: resource(bundle, "PractitionerRole").pop("code"),
            [
                (
                    "MISSING_VALUE",
                    "PractitionerRole.code",
                    "Required field PractitionerRole.code is missing. The SDS job role code.",
                )
            ],
        ),
        (
            lambda bundle: resource(bundle, "Practitioner")["identifier"].append(
                {"system": "https://fhir.hl7.org.uk/Id/nmc-number", "value": "12A3456B"}
            ),
            [
                (
                    "INVALID_VALUE",
                    "Practitioner.identifier",
                    "Expected exactly one professional code. One of GMC|GMP|NMC|GPhC|HCPC|unknown.",
                )
            ],
        ),
    ],
    ids=["organisation-telecom", "telecom-use", "role-profile-id", "job-role-code", "two-professional-codes"],
)
def test_a_prescriber_or_organisation_detail_eps_needs_is_refused(
    change: Callable[[dict[str, Any]], None], expected: list[tuple[str, str, str]]
) -> None:
    assert summary(broken(change)) == expected


def test_an_acute_intent_on_a_repeat_dispensing_prescription_is_refused() -> None:
    def reorder(bundle: dict[str, Any]) -> None:
        for request in requests_of(bundle):
            request["intent"] = "order"

    assert [diagnostics for _, _, diagnostics in summary(broken(reorder))] == [
        "A continuous-repeat-dispensing prescription's intent must be one of ['instance-order', 'original-order']."
    ] * 4


def test_a_repeat_prescription_without_its_review_date_is_refused() -> None:
    def to_repeat_prescribing(bundle: dict[str, Any]) -> None:
        for request in requests_of(bundle):
            request["courseOfTherapyType"]["coding"][0] = {
                "system": "http://terminology.hl7.org/CodeSystem/medicationrequest-course-of-therapy",
                "code": "continuous",
            }
            request["extension"] = [e for e in request["extension"] if "RepeatInformation" not in e["url"]]

    assert [expression for _, expression, _ in summary(broken(to_repeat_prescribing))] == [
        f"MedicationRequest[{index}].extension(Extension-UKCore-MedicationRepeatInformation).authorisationExpiryDate"
        for index in range(4)
    ]


def test_a_message_identifier_that_is_not_a_uuid_is_refused() -> None:
    def rename(bundle: dict[str, Any]) -> None:
        bundle["identifier"] = {"system": "https://scriptline.example/Id/message", "value": "2-2"}

    assert summary(broken(rename)) == [
        ("INVALID_VALUE", "Bundle.identifier", "Bundle.identifier must be an RFC 4122 UUID (system rfc4122).")
    ]


def test_more_than_four_items_are_refused() -> None:
    def add_item(bundle: dict[str, Any]) -> None:
        extra = copy.deepcopy(bundle["entry"][1])
        extra["fullUrl"] = "urn:uuid:0c0c0c0c-0c0c-4c0c-8c0c-0c0c0c0c0c0c"
        extra["resource"]["identifier"][0]["value"] = "0c0c0c0c-0c0c-4c0c-8c0c-0c0c0c0c0c0c"
        bundle["entry"].insert(2, extra)

    assert summary(broken(add_item)) == [
        (
            "INVALID_VALUE",
            "Bundle.entry.resource.ofType(MedicationRequest)",
            "A prescription has 1 to 4 MedicationRequests.",
        )
    ]


def test_a_scriptline_profile_message_is_not_an_nhs_one() -> None:
    scriptline = {
        "resourceType": "Bundle",
        "type": "message",
        "entry": [
            {
                "fullUrl": "urn:uuid:1",
                "resource": {
                    "resourceType": "MessageHeader",
                    "eventCoding": {"system": "https://scriptline.example/CodeSystem/message-event"},
                },
            }
        ],
    }

    assert eps_rules.is_scriptline_message(scriptline) is True
    assert eps_rules.is_scriptline_message(copy.deepcopy(ERD_EXAMPLE)) is False
    assert eps_rules.is_scriptline_message({"resourceType": "Bundle"}) is False


def test_the_outcome_has_the_shape_of_an_eps_error_response() -> None:
    issues = broken(lambda bundle: set_check_character(bundle, "Y"))

    outcome = eps_rules.operation_outcome(issues)

    assert outcome["resourceType"] == "OperationOutcome"
    assert outcome["issue"][0]["details"]["coding"][0] == {
        "system": "https://fhir.nhs.uk/R4/CodeSystem/Spine-ErrorOrWarningCode",
        "code": "INVALID_CHECKSUM",
    }
