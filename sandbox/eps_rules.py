"""The NHS side of the gateway simulator: the rules EPS applies to a prescription-order message.

Written from the sources, separately from the product's encoder (pharmacy/fhir/eps), so that a
mistake in the encoder is not repeated here and waved through: nothing is imported from the
product. Each rule names where it comes from, all in NHSDigital/electronic-prescription-
service-api (MIT):

* [validator] packages/coordinator/src/services/validation/bundle-validator.ts, the checks
  the EPS API runs before anything else;
* [translation] packages/coordinator/src/services/translation/request/*.ts, the conversion
  to the HL7v3 message Spine takes, which fails when something it needs is missing;
* [spec] packages/specification/schemas/components/**.yaml, the API specification;
* [spine] Spine's own checks as the specification describes them (INVALID_CHECKSUM).

`check_message(bundle)` returns the problems as OperationOutcome issues (an empty list when
the message conforms); `operation_outcome(issues)` wraps them as EPS does
(examples/spec/errors/*/Response-FhirError.json). Diagnostics name elements, never values:
they are logged and kept with dead letters.

Standard library only.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import date, datetime
from typing import Any

Json = dict[str, Any]
Issue = dict[str, Any]

ERROR_CODE_SYSTEM = "https://fhir.nhs.uk/R4/CodeSystem/Spine-ErrorOrWarningCode"
NHS_MESSAGE_EVENTS = "https://fhir.nhs.uk/CodeSystem/message-event"
RFC4122 = "https://tools.ietf.org/html/rfc4122"
ITEM_NUMBER = "https://fhir.nhs.uk/Id/prescription-order-item-number"
ORDER_NUMBER = "https://fhir.nhs.uk/Id/prescription-order-number"
LONG_FORM_ID = "https://fhir.nhs.uk/Id/prescription"
NHS_NUMBER = "https://fhir.nhs.uk/Id/nhs-number"
ODS = "https://fhir.nhs.uk/Id/ods-organization-code"
SDS_USER = "https://fhir.nhs.uk/Id/sds-user-id"
SDS_ROLE_PROFILE = "https://fhir.nhs.uk/Id/sds-role-profile-id"
JOB_ROLE_SYSTEMS = (
    "https://fhir.nhs.uk/CodeSystem/NHSDigital-SDS-JobRoleCode",
    "https://fhir.hl7.org.uk/CodeSystem/UKCore-SDSJobRoleName",
)
SNOMED = "http://snomed.info/sct"
UCUM = "http://unitsofmeasure.org"
EXT_PRESCRIPTION_TYPE = "https://fhir.nhs.uk/StructureDefinition/Extension-DM-PrescriptionType"
EXT_PRESCRIPTION_ID = "https://fhir.nhs.uk/StructureDefinition/Extension-DM-PrescriptionId"
EXT_SITE_TYPE = "https://fhir.nhs.uk/StructureDefinition/Extension-DM-PerformerSiteType"
EXT_CONTROLLED_DRUG = "https://fhir.nhs.uk/StructureDefinition/Extension-DM-ControlledDrug"
EXT_REPEAT_INFORMATION = (
    "https://fhir.hl7.org.uk/StructureDefinition/Extension-UKCore-MedicationRepeatInformation"
)
PROFESSIONAL_CODES = {
    "https://fhir.hl7.org.uk/Id/gmc-number",
    "https://fhir.hl7.org.uk/Id/gmp-number",
    "https://fhir.hl7.org.uk/Id/nmc-number",
    "https://fhir.hl7.org.uk/Id/gphc-number",
    "https://fhir.hl7.org.uk/Id/hcpc-number",
    "https://fhir.hl7.org.uk/Id/professional-code",
}
GMP = "https://fhir.hl7.org.uk/Id/gmp-number"
COURSES = {
    ("http://terminology.hl7.org/CodeSystem/medicationrequest-course-of-therapy", "acute"),
    ("http://terminology.hl7.org/CodeSystem/medicationrequest-course-of-therapy", "continuous"),
    ("https://fhir.nhs.uk/CodeSystem/medicationrequest-course-of-therapy", "continuous-repeat-dispensing"),
}
INTENTS_BY_COURSE = {
    "acute": {"order"},
    "continuous": {"original-order", "instance-order"},
    "continuous-repeat-dispensing": {"original-order", "instance-order"},
}
CATEGORIES = {"inpatient", "outpatient", "community", "discharge"}
SITE_PREFERENCES = {"P1", "P2", "P3", "0004"}
CONTROLLED_DRUG_SCHEDULES = {"CD1", "CD2", "CD3", "CD4", "CD5"}
GENDERS = {"male", "female", "other", "unknown"}
TELECOM_USES = {"home", "work", "temp", "mobile"}
MAXIMUM_ITEMS = 4

_UUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
# [spec] groupIdentifier.yaml; its middle group holds the ODS code, letters and digits.
_SHORT_FORM = re.compile(r"^[0-9A-F]{6}-[0-9A-Z]{6}-[0-9A-F]{5}[0-9A-Z+]$")
_CHECK_ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ+"


# --- Entry points ----------------------------------------------------------------------------


def is_scriptline_message(bundle: Json) -> bool:
    """A message of Scriptline's own (US) profile, which NHS rules do not govern: it says so by
    its event code system. Anything else arriving at the gateway is held to EPS's rules."""
    header = _first_resource(bundle)
    system = _dig(header, "eventCoding", "system")
    return isinstance(system, str) and system.startswith("https://scriptline.example/")


def check_message(bundle: Json) -> list[Issue]:
    """Every EPS rule `bundle` breaks, as OperationOutcome issues (empty: it conforms)."""
    return list(_check(bundle))


def operation_outcome(issues: list[Issue]) -> Json:
    return {"resourceType": "OperationOutcome", "issue": issues}


# --- Rules -----------------------------------------------------------------------------------


def _issue(code: str, spine_code: str, diagnostics: str, expression: str) -> Issue:
    return {
        "severity": "error",
        "code": code,
        "details": {"coding": [{"system": ERROR_CODE_SYSTEM, "code": spine_code}]},
        "diagnostics": diagnostics,
        "expression": [expression],
    }


def _missing(expression: str, what: str = "") -> Issue:
    return _issue("required", "MISSING_VALUE", f"Required field {expression} is missing.{what}", expression)


def _invalid(expression: str, diagnostics: str) -> Issue:
    return _issue("value", "INVALID_VALUE", diagnostics, expression)


def _check(bundle: Json) -> Iterator[Issue]:
    if not isinstance(bundle, dict) or bundle.get("resourceType") != "Bundle":
        yield _invalid("Bundle", "Incorrect FHIR resource type. Expected Bundle.")
        return
    if bundle.get("type") != "message":
        yield _invalid("Bundle.type", "Bundle.type must be message.")
    # [translation] parent-prescription.ts: the message ID is Bundle.identifier in RFC 4122.
    identifier = bundle.get("identifier")
    if _dig(identifier, "system") != RFC4122 or not _is_uuid(_dig(identifier, "value")):
        yield _invalid("Bundle.identifier", "Bundle.identifier must be an RFC 4122 UUID (system rfc4122).")
    entries = bundle.get("entry")
    if not isinstance(entries, list) or not entries or not all(_is_entry(e) for e in entries):
        yield _missing("Bundle.entry", " Every entry needs a fullUrl and a resource.")
        return
    by_url = {entry["fullUrl"]: entry["resource"] for entry in entries}
    if len(by_url) != len(entries):
        yield _invalid("Bundle.entry.fullUrl", "Every entry must have its own fullUrl.")
    header = entries[0]["resource"]
    yield from _check_header(header, by_url)
    requests = [
        entry["resource"] for entry in entries if entry["resource"].get("resourceType") == "MedicationRequest"
    ]
    # [spec] MedicationRequest.yaml: "at least one and up to four MedicationRequest objects".
    if not 1 <= len(requests) <= MAXIMUM_ITEMS:
        yield _invalid(
            "Bundle.entry.resource.ofType(MedicationRequest)", "A prescription has 1 to 4 MedicationRequests."
        )
        if not requests:
            return
    for index, request in enumerate(requests):
        yield from _check_request(request, index, by_url)
    yield from _check_consistency(requests)
    yield from _check_participants(requests[0], by_url)


def _check_header(header: Json, by_url: dict[str, Json]) -> Iterator[Issue]:
    if header.get("resourceType") != "MessageHeader":
        yield _invalid("Bundle.entry[0]", "The first entry must be the MessageHeader.")
        return
    event = header.get("eventCoding") or {}
    if event.get("system") != NHS_MESSAGE_EVENTS or event.get("code") != "prescription-order":
        yield _invalid(
            "Bundle.entry.resource.ofType(MessageHeader).eventCoding.code",
            "MessageHeader.eventCoding must be prescription-order (https://fhir.nhs.uk/CodeSystem/message-event).",
        )
    # [spec] MessageHeader.yaml: source is required; sender requires a display.
    if not _dig(header, "source", "endpoint"):
        yield _missing("MessageHeader.source.endpoint")
    if not _dig(header, "sender", "display"):
        yield _missing("MessageHeader.sender.display")
    for index, focus in enumerate(header.get("focus") or []):
        if _dig(focus, "reference") not in by_url:
            yield _invalid(
                f"MessageHeader.focus[{index}]", "MessageHeader.focus must reference entries of the Bundle."
            )


def _check_request(request: Json, index: int, by_url: dict[str, Json]) -> Iterator[Issue]:
    where = f"MedicationRequest[{index}]"
    # [translation] line-item.ts: the line item ID is the prescription-order-item-number.
    item_number = _identifier(request.get("identifier"), ITEM_NUMBER)
    if not _is_uuid(item_number):
        yield _invalid(
            f"{where}.identifier",
            "MedicationRequest.identifier must hold a prescription-order-item-number UUID.",
        )
    # [validator] verifyPrescriptionBundle: status active; intent neither plan nor reflex-order.
    if request.get("status") != "active":
        yield _invalid(f"{where}.status", "MedicationRequest.status must be active.")
    intent = request.get("intent")
    if intent not in {"order", "original-order", "instance-order"}:
        yield _invalid(
            f"{where}.intent", "MedicationRequest.intent must be order, original-order or instance-order."
        )
    category = _first_coding(request.get("category"))
    if (
        _dig(category, "system") != "http://terminology.hl7.org/CodeSystem/medicationrequest-category"
        or _dig(category, "code") not in CATEGORIES
    ):
        yield _invalid(
            f"{where}.category", "MedicationRequest.category must be a medicationrequest-category code."
        )
    yield from _check_medication(request, where)
    for element, resource_type in (("subject", "Patient"), ("requester", "PractitionerRole")):
        target = by_url.get(_dig(request, element, "reference"))
        if _dig(target, "resourceType") != resource_type:
            yield _invalid(
                f"{where}.{element}",
                f"MedicationRequest.{element} must reference a {resource_type} in the Bundle.",
            )
    yield from _check_group_identifier(request.get("groupIdentifier"), where)
    yield from _check_course(request, where)
    prescription_type = _extension(request, EXT_PRESCRIPTION_TYPE)
    coding = _dig(prescription_type, "valueCoding")
    if _dig(coding, "system") != "https://fhir.nhs.uk/CodeSystem/prescription-type" or not re.fullmatch(
        r"\d{4}", str(_dig(coding, "code") or "")
    ):
        yield _missing(f"{where}.extension(Extension-DM-PrescriptionType)")
    yield from _check_dosage(request.get("dosageInstruction"), where)
    yield from _check_dispense_request(request.get("dispenseRequest"), where)
    # [spec] MedicationRequest.yaml: substitution.allowedBoolean is always false.
    if _dig(request, "substitution", "allowedBoolean") is not False:
        yield _invalid(
            f"{where}.substitution.allowedBoolean", "EPS does not support substitution: it must be false."
        )
    yield from _check_controlled_drug(_extension(request, EXT_CONTROLLED_DRUG), where)
    yield from _check_repeat_information(_extension(request, EXT_REPEAT_INFORMATION), where)


def _check_medication(request: Json, where: str) -> Iterator[Issue]:
    # [validator] a MedicationRequest cannot carry both; [spec] a VMP or AMP from dm+d, whose
    # codes are SNOMED CT codes (system http://snomed.info/sct).
    if "medicationReference" in request:
        yield _issue(
            "structure",
            "CONFLICTING_VALUES",
            "Use medicationCodeableConcept, not medicationReference.",
            where,
        )
    codings = _dig(request, "medicationCodeableConcept", "coding") or []
    if not any(_dig(c, "system") == SNOMED and str(_dig(c, "code") or "").isdigit() for c in codings):
        yield _invalid(
            f"{where}.medicationCodeableConcept.coding",
            "The medication must be a dm+d concept coded under http://snomed.info/sct.",
        )
    for position, coding in enumerate(codings):
        if _dig(coding, "system") != SNOMED:
            yield _invalid(
                f"{where}.medicationCodeableConcept.coding[{position}].system",
                "Only http://snomed.info/sct is accepted for dm+d medicines.",
            )


def _check_group_identifier(group: Any, where: str) -> Iterator[Issue]:
    if _dig(group, "system") != ORDER_NUMBER:
        yield _missing(f"{where}.groupIdentifier", " It must hold the prescription-order-number.")
        return
    value = _dig(group, "value")
    if not isinstance(value, str) or not _SHORT_FORM.match(value):
        yield _invalid(
            f"{where}.groupIdentifier.value", "The short-form prescription ID must read XXXXXX-XXXXXX-XXXXXC."
        )
    elif not _check_character_matches(value):
        yield _issue(
            "value",
            "INVALID_CHECKSUM",
            "The short-form prescription ID's check character is wrong.",
            f"{where}.groupIdentifier.value",
        )
    long_form = _extension(group, EXT_PRESCRIPTION_ID)
    if _dig(long_form, "valueIdentifier", "system") != LONG_FORM_ID or not _is_uuid(
        _dig(long_form, "valueIdentifier", "value")
    ):
        yield _missing(
            f"{where}.groupIdentifier.extension(Extension-DM-PrescriptionId)", " It holds the long-form UUID."
        )


def _check_course(request: Json, where: str) -> Iterator[Issue]:
    coding = _first_coding(request.get("courseOfTherapyType"))
    course = (_dig(coding, "system"), _dig(coding, "code"))
    if course not in COURSES:
        yield _invalid(
            f"{where}.courseOfTherapyType",
            "courseOfTherapyType must be acute, continuous or continuous-repeat-dispensing.",
        )
        return
    # [spec] MedicationRequest.yaml, intent: acute 'order'; repeats and eRD 'original-order',
    # then 'instance-order'.
    if request.get("intent") not in INTENTS_BY_COURSE[course[1]]:
        yield _invalid(
            f"{where}.intent",
            f"A {course[1]} prescription's intent must be one of {sorted(INTENTS_BY_COURSE[course[1]])}.",
        )
    dispense = request.get("dispenseRequest") or {}
    if course[1] == "continuous-repeat-dispensing":
        # [validator] verifyRepeatDispensingPrescription; [translation] extractRepeatNumberHighValue.
        for element in ("validityPeriod", "expectedSupplyDuration"):
            if not dispense.get(element):
                yield _missing(f"{where}.dispenseRequest.{element}")
        if (
            not isinstance(dispense.get("numberOfRepeatsAllowed"), int)
            or dispense["numberOfRepeatsAllowed"] < 1
        ):
            yield _missing(f"{where}.dispenseRequest.numberOfRepeatsAllowed")
    if course[1] == "continuous":
        # [spec] MedicationRepeatInformation.yaml: the review date "is a required field for
        # repeat prescribing prescriptions".
        repeat = _extension(request, EXT_REPEAT_INFORMATION)
        if _sub_extension(repeat, "authorisationExpiryDate") is None:
            yield _missing(
                f"{where}.extension(Extension-UKCore-MedicationRepeatInformation).authorisationExpiryDate"
            )


def _check_dosage(dosages: Any, where: str) -> Iterator[Issue]:
    # [validator] at least one dosage instruction; several need a sequence each. Dispensers
    # read Dosage.text, so every instruction carries one.
    if not isinstance(dosages, list) or not dosages:
        yield _missing(f"{where}.dosageInstruction")
        return
    for index, dosage in enumerate(dosages):
        if not _text(_dig(dosage, "text")):
            yield _missing(f"{where}.dosageInstruction[{index}].text")
        if len(dosages) > 1 and _dig(dosage, "sequence") is None:
            yield _missing(f"{where}.dosageInstruction[{index}].sequence")


def _check_dispense_request(dispense: Any, where: str) -> Iterator[Issue]:
    if not isinstance(dispense, dict):
        yield _missing(f"{where}.dispenseRequest")
        return
    # [translation] prescription.ts convertDispensingSitePreference; [spec] DMPerformerSiteType.yaml.
    site = _dig(_extension(dispense, EXT_SITE_TYPE), "valueCoding")
    if (
        _dig(site, "system") != "https://fhir.nhs.uk/CodeSystem/dispensing-site-preference"
        or _dig(site, "code") not in SITE_PREFERENCES
    ):
        yield _missing(f"{where}.dispenseRequest.extension(Extension-DM-PerformerSiteType)")
    # [translation] line-item.ts convertLineItemComponent: value, unit and the dm+d unit code.
    quantity = dispense.get("quantity")
    value = _dig(quantity, "value")
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
        yield _invalid(f"{where}.dispenseRequest.quantity.value", "The quantity must be a positive number.")
    if not _text(_dig(quantity, "unit")):
        yield _missing(f"{where}.dispenseRequest.quantity.unit")
    if _dig(quantity, "system") != SNOMED or not str(_dig(quantity, "code") or "").isdigit():
        yield _missing(
            f"{where}.dispenseRequest.quantity.code",
            " The dm+d unit of measure, under http://snomed.info/sct.",
        )
    duration = dispense.get("expectedSupplyDuration")
    if duration is not None and (
        _dig(duration, "system") != UCUM
        or _dig(duration, "code") != "d"
        or not _positive_int(_dig(duration, "value"))
    ):
        yield _invalid(
            f"{where}.dispenseRequest.expectedSupplyDuration",
            "Expected supply duration must be whole days (UCUM d).",
        )
    performer = dispense.get("performer")
    if performer is not None and (
        _dig(performer, "identifier", "system") != ODS or not _dig(performer, "identifier", "value")
    ):
        yield _invalid(
            f"{where}.dispenseRequest.performer", "The nominated pharmacy is named by its ODS code."
        )
    period = dispense.get("validityPeriod")
    if period is not None:
        if "start" in period and not _is_date(period["start"]):
            yield _invalid(
                f"{where}.dispenseRequest.validityPeriod.start", "validityPeriod.start must be a date."
            )
        if "end" in period and not _is_datetime(period["end"]):
            yield _invalid(
                f"{where}.dispenseRequest.validityPeriod.end", "validityPeriod.end must be a date-time."
            )


def _check_controlled_drug(extension: Json | None, where: str) -> Iterator[Issue]:
    if extension is None:
        return
    schedule = _dig(_sub_extension(extension, "schedule"), "valueCoding")
    code = _dig(schedule, "code")
    if (
        _dig(schedule, "system") != "https://fhir.nhs.uk/CodeSystem/medicationrequest-controlled-drug"
        or code not in CONTROLLED_DRUG_SCHEDULES
    ):
        yield _invalid(
            f"{where}.extension(Extension-DM-ControlledDrug).schedule", "The schedule must be CD1 to CD5."
        )
    words = _dig(_sub_extension(extension, "quantityWords"), "valueString")
    # Misuse of Drugs Regulations 2001, reg. 15: Schedule 2 and 3 need the quantity in words.
    if code in {"CD2", "CD3"} and not _text(words):
        yield _missing(
            f"{where}.extension(Extension-DM-ControlledDrug).quantityWords", " Schedule 2 and 3 need it."
        )


def _check_repeat_information(extension: Json | None, where: str) -> Iterator[Issue]:
    if extension is None:
        return
    issued = _sub_extension(extension, "numberOfPrescriptionsIssued")
    if issued is not None and not _positive_int(issued.get("valueUnsignedInt")):
        yield _invalid(
            f"{where}.extension(MedicationRepeatInformation).numberOfPrescriptionsIssued",
            "Must be a positive integer.",
        )
    expiry = _sub_extension(extension, "authorisationExpiryDate")
    if expiry is not None and not _is_date(str(expiry.get("valueDateTime", ""))[:10]):
        yield _invalid(
            f"{where}.extension(MedicationRepeatInformation).authorisationExpiryDate", "Must be a date."
        )


def _check_consistency(requests: list[Json]) -> Iterator[Issue]:
    # [validator] verifyPrescriptionBundle / verifyRepeatDispensingPrescription: the same value
    # on every MedicationRequest.
    shared = {
        "groupIdentifier": lambda r: r.get("groupIdentifier"),
        "category": lambda r: r.get("category"),
        "subject": lambda r: r.get("subject"),
        "requester": lambda r: r.get("requester"),
        "dispenseRequest.performer": lambda r: _dig(r, "dispenseRequest", "performer"),
        "dispenseRequest.validityPeriod": lambda r: _dig(r, "dispenseRequest", "validityPeriod"),
        "dispenseRequest.expectedSupplyDuration": lambda r: _dig(
            r, "dispenseRequest", "expectedSupplyDuration"
        ),
        "dispenseRequest.numberOfRepeatsAllowed": lambda r: _dig(
            r, "dispenseRequest", "numberOfRepeatsAllowed"
        ),
        "dispenseRequest.extension(Extension-DM-PerformerSiteType)": lambda r: _extension(
            r.get("dispenseRequest") or {}, EXT_SITE_TYPE
        ),
        "extension(Extension-DM-PrescriptionType)": lambda r: _extension(r, EXT_PRESCRIPTION_TYPE),
        "extension(Extension-UKCore-MedicationRepeatInformation)": lambda r: _extension(
            r, EXT_REPEAT_INFORMATION
        ),
    }
    for element, read in shared.items():
        values = [read(request) for request in requests]
        if any(value != values[0] for value in values):
            yield _invalid(
                f"Bundle.entry.resource.ofType(MedicationRequest).{element}",
                f"Expected all MedicationRequests to have the same value for {element}.",
            )
    # [validator] allMedicationRequestsHaveUniqueIdentifier.
    numbers = [_identifier(request.get("identifier"), ITEM_NUMBER) for request in requests]
    if len(set(numbers)) != len(numbers):
        yield _invalid(
            "Bundle.entry.resource.ofType(MedicationRequest).identifier",
            "Expected all MedicationRequests to have a different value for identifier.",
        )
    # [translation] course-of-therapy-type.ts: one course, or a mixture of acute and continuous.
    courses = {_dig(_first_coding(request.get("courseOfTherapyType")), "code") for request in requests}
    if len(courses) > 1 and courses != {"acute", "continuous"}:
        yield _invalid(
            "Bundle.entry.resource.ofType(MedicationRequest).courseOfTherapyType",
            "Course of therapy must match on all MedicationRequests or mix only acute and continuous.",
        )


def _check_participants(request: Json, by_url: dict[str, Json]) -> Iterator[Issue]:
    patient = by_url.get(_dig(request, "subject", "reference"))
    if _dig(patient, "resourceType") == "Patient":
        yield from _check_patient(patient)
    role = by_url.get(_dig(request, "requester", "reference"))
    if _dig(role, "resourceType") != "PractitionerRole":
        return
    practitioner = by_url.get(_dig(role, "practitioner", "reference"))
    organisation = by_url.get(_dig(role, "organization", "reference"))
    # [validator] validatePractitionerRole: practitioner and organization are references to
    # resources in the Bundle.
    if _dig(practitioner, "resourceType") != "Practitioner":
        yield _invalid(
            "PractitionerRole.practitioner",
            "practitionerRole.practitioner must reference a Practitioner in the Bundle.",
        )
        practitioner = None
    if _dig(organisation, "resourceType") != "Organization":
        yield _invalid(
            "PractitionerRole.organization",
            "practitionerRole.organization must reference an Organization in the Bundle.",
        )
        organisation = None
    # [translation] practitioner.ts createAgentPerson: the SDS role profile ID and job role code.
    if not _identifier(role.get("identifier"), SDS_ROLE_PROFILE):
        yield _missing("PractitionerRole.identifier", " The SDS role profile ID.")
    codings = [c for concept in role.get("code") or [] for c in _dig(concept, "coding") or []]
    if not any(_dig(c, "system") in JOB_ROLE_SYSTEMS and _dig(c, "code") for c in codings):
        yield _missing("PractitionerRole.code", " The SDS job role code.")
    if role.get("healthcareService") and _is_primary_care(request):
        yield _invalid(
            "PractitionerRole.healthcareService", "Unexpected field of practitionerRole.healthcareService."
        )
    # [translation] sourceAgentPersonTelecom: a telephone on the role or the practitioner.
    if not role.get("telecom") and not _dig(practitioner, "telecom"):
        yield _missing("PractitionerRole.telecom", " The prescriber must have at least one telecom.")
    for resource in (role, practitioner, organisation):
        if resource is not None:
            yield from _check_telecoms(resource)
    if practitioner is not None:
        yield from _check_practitioner(practitioner)
    if organisation is not None:
        yield from _check_organisation(organisation, primary_care=_is_primary_care(request))


def _check_patient(patient: Json) -> Iterator[Issue]:
    # [translation] patient.ts convertPatient: the NHS number identifies the patient;
    # [spec] Patient.yaml: name, gender, birthDate and address are required.
    number = _identifier(patient.get("identifier"), NHS_NUMBER)
    if not number:
        yield _missing("Patient.identifier", " The NHS number.")
    elif not _nhs_number_is_valid(number):
        yield _issue(
            "value", "INVALID_VALUE", "The NHS number fails its Modulus 11 check.", "Patient.identifier"
        )
    names = patient.get("name")
    if not isinstance(names, list) or not names or not _text(_dig(names[0], "family")):
        yield _missing("Patient.name.family")
    if patient.get("gender") not in GENDERS:
        yield _invalid("Patient.gender", "Patient.gender must be an administrative-gender code.")
    if not _is_date(patient.get("birthDate")):
        yield _missing("Patient.birthDate")
    addresses = patient.get("address")
    if (
        not isinstance(addresses, list)
        or not addresses
        or not (_dig(addresses[0], "line") or _dig(addresses[0], "postalCode"))
    ):
        yield _missing("Patient.address")
    # [spec] Patient.yaml telecom: telephone numbers only, each with its use.
    for index, telecom in enumerate(patient.get("telecom") or []):
        if (
            _dig(telecom, "system") != "phone"
            or _dig(telecom, "use") not in TELECOM_USES
            or not _text(_dig(telecom, "value"))
        ):
            yield _invalid(
                f"Patient.telecom[{index}]",
                "A patient telecom is a phone number with its use (EPS sends it as tel:).",
            )


def _check_telecoms(resource: Json) -> Iterator[Issue]:
    # [validator] validateTelecoms: value and use on every Organization, Practitioner and
    # PractitionerRole telecom; [spec] telecom.yaml: system phone.
    resource_type = resource.get("resourceType")
    for index, telecom in enumerate(resource.get("telecom") or []):
        path = f"{resource_type}.telecom[{index}]"
        if not _text(_dig(telecom, "value")):
            yield _missing(f"{path}.value")
        if not _dig(telecom, "use"):
            yield _missing(f"{path}.use")
        if _dig(telecom, "system") != "phone":
            yield _invalid(f"{path}.system", "Telecom system must be phone.")


def _check_practitioner(practitioner: Json) -> Iterator[Issue]:
    identifiers = practitioner.get("identifier") or []
    systems = [_dig(identifier, "system") for identifier in identifiers]
    # [translation] getAgentPersonPersonIdForAuthor: exactly one professional code;
    # [validator] verifyPrescriptionBundle: a GMP number is refused.
    if GMP in systems:
        yield _invalid(
            "Practitioner.identifier",
            "Bundle resource Practitioner.identifier expected exactly one professional code from GMC|NMC|GPhC|HCPC|professional-code.",
        )
    elif sum(system in PROFESSIONAL_CODES for system in systems) != 1:
        yield _invalid(
            "Practitioner.identifier",
            "Expected exactly one professional code. One of GMC|GMP|NMC|GPhC|HCPC|unknown.",
        )
    # [spec] CreatePractitioner.yaml: the prescriber's SDS user ID identifies them on Spine.
    if SDS_USER not in systems:
        yield _missing("Practitioner.identifier", " The SDS user ID.")
    names = practitioner.get("name")
    if not isinstance(names, list) or not names or not _text(_dig(names[0], "family")):
        yield _missing("Practitioner.name.family")


def _check_organisation(organisation: Json, *, primary_care: bool) -> Iterator[Issue]:
    # [translation] organization.ts convertRepresentedOrganizationDetails: the ODS code, a
    # name, exactly one telecom and exactly one address; [validator]
    # checkPrimaryCarePrescriptionResources: a primary-care organisation names its partOf.
    if not _identifier(organisation.get("identifier"), ODS):
        yield _missing("Organization.identifier", " The ODS code.")
    if not _text(organisation.get("name")):
        yield _missing("Organization.name")
    if len(organisation.get("telecom") or []) != 1:
        yield _invalid("Organization.telecom", "Expected exactly one Organization.telecom.")
    addresses = organisation.get("address") or []
    if len(addresses) != 1:
        yield _invalid("Organization.address", "Expected exactly one Organization.address.")
    elif not (_dig(addresses[0], "line") and _dig(addresses[0], "postalCode")):
        yield _missing("Organization.address", " Address lines and a postcode.")
    if primary_care:
        part_of = organisation.get("partOf")
        if not part_of:
            yield _missing("organization.partOf")
        elif not _dig(part_of, "display"):
            yield _missing("Organization.partOf.display")


# --- Helpers ---------------------------------------------------------------------------------


def _is_primary_care(request: Json) -> bool:
    code = _dig(_extension(request, EXT_PRESCRIPTION_TYPE), "valueCoding", "code")
    return isinstance(code, str) and code.startswith("01")


def _check_character_matches(value: str) -> bool:
    """ISO/IEC 7064 MOD 37-2 as EPS's own generator script computes it
    (scripts/generate_prescription_ids.py): weights 2^n ... 2^1, check (38 - sum mod 37) mod 37."""
    body = value.replace("-", "")[:-1]
    total = sum(int(character, 36) * 2 ** (len(body) - position) for position, character in enumerate(body))
    return _CHECK_ALPHABET[(38 - total % 37) % 37] == value[-1]


def _nhs_number_is_valid(number: str) -> bool:
    """NHS Data Dictionary, NHS number: Modulus 11 over the first nine digits."""
    if not re.fullmatch(r"\d{10}", number):
        return False
    remainder = (
        sum(int(digit) * weight for digit, weight in zip(number[:9], range(10, 1, -1), strict=True)) % 11
    )
    check = (11 - remainder) % 11
    return check != 10 and check == int(number[9])


def _is_entry(entry: Any) -> bool:
    return (
        isinstance(entry, dict)
        and isinstance(entry.get("fullUrl"), str)
        and isinstance(entry.get("resource"), dict)
    )


def _first_resource(bundle: Any) -> Json | None:
    entries = _dig(bundle, "entry")
    if isinstance(entries, list) and entries and isinstance(entries[0], dict):
        resource = entries[0].get("resource")
        return resource if isinstance(resource, dict) else None
    return None


def _dig(value: Any, *keys: str) -> Any:
    for key in keys:
        if not isinstance(value, dict):
            return None
        value = value.get(key)
    return value


def _first_coding(concept: Any) -> Json | None:
    if isinstance(concept, list):
        concept = concept[0] if concept else None
    codings = _dig(concept, "coding")
    return codings[0] if isinstance(codings, list) and codings and isinstance(codings[0], dict) else None


def _extension(element: Any, url: str) -> Json | None:
    extensions = _dig(element, "extension")
    if not isinstance(extensions, list):
        return None
    return next((e for e in extensions if isinstance(e, dict) and e.get("url") == url), None)


def _sub_extension(extension: Json | None, url: str) -> Json | None:
    return _extension(extension, url) if extension is not None else None


def _identifier(identifiers: Any, system: str) -> str | None:
    if not isinstance(identifiers, list):
        return None
    value = next((_dig(i, "value") for i in identifiers if _dig(i, "system") == system), None)
    return value if isinstance(value, str) and value else None


def _text(value: Any) -> bool:
    return isinstance(value, str) and bool(value.strip())


def _positive_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


def _is_uuid(value: Any) -> bool:
    return isinstance(value, str) and bool(_UUID.match(value))


def _is_date(value: Any) -> bool:
    if not isinstance(value, str):
        return False
    try:
        date.fromisoformat(value)
    except ValueError:
        return False
    return True


def _is_datetime(value: Any) -> bool:
    if not isinstance(value, str) or "T" not in value:
        return False
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return False
    return parsed.tzinfo is not None
