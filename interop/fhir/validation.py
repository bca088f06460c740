"""Checking a FHIR message before anything is stored: JSON, FHIR R4 structure, then the EPS
prescription-order rules and the value sets intake relies on.

Each stage lists every problem it finds as an `Issue` (one per problem, with its FHIRPath),
and a later stage runs only when the earlier ones found none, so a structural error is never
reported twice. The structure is checked with fhir.resources' R4B models (the same elements
as R4 for every resource these messages use; see tests/fixtures/fhir-examples/README.md).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

from fhir.resources.R4B.bundle import Bundle
from pydantic import ValidationError

from interop.fhir.outcome import Issue, MessageInvalid, fhir_path
from patients.serializers import nhs_number_is_valid
from pharmacy.fhir.eps import model as eps
from pharmacy.fhir.eps.prescription_id import short_form_id_is_valid

Json = dict[str, Any]

# Deeper than any real message (EPS bundles reach about 10 levels); a deeper body is refused
# before any model sees it, so no recursion can run away.
MAX_DEPTH = 24
ORDER = "prescription-order"
ORDER_UPDATE = "prescription-order-update"
EVENTS = (ORDER, ORDER_UPDATE)
# The resources an EPS prescription-order or -update may carry. Anything else is refused by
# name rather than passed to a model.
RESOURCE_TYPES = frozenset(
    {
        "MessageHeader",
        "MedicationRequest",
        "Patient",
        "Practitioner",
        "PractitionerRole",
        "Organization",
        "HealthcareService",
        "Location",
        "Provenance",
        "Communication",
        "CommunicationRequest",
        "List",
        "Endpoint",
    }
)
# Which professional registers we can match a prescriber by (Prescriber.registration_body).
REGISTRATION_SYSTEMS = {
    eps.PROFESSIONAL_CODE_SYSTEMS["GMC"]: "GMC",
    eps.PROFESSIONAL_CODE_SYSTEMS["NMC"]: "NMC",
    eps.PROFESSIONAL_CODE_SYSTEMS["GPhC"]: "GPhC",
}
STATUS_FOR_EVENT = {ORDER: "active", ORDER_UPDATE: "cancelled"}


def parse(raw: bytes) -> Json:
    """The body as a JSON object, or MessageInvalid (never anything else)."""
    try:
        data = json.loads(raw.decode("utf-8"), parse_constant=_refuse_constant)
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise MessageInvalid([Issue("structure", "", "The body is not valid JSON (UTF-8).")]) from None
    problems = list(_shape_problems(data))
    if problems:
        raise MessageInvalid(problems)
    return data


def _refuse_constant(name: str) -> None:
    raise ValueError(f"{name} is not JSON")


def _shape_problems(data: Any) -> Iterator[Issue]:
    """Depth and NUL characters, walked without recursion."""
    stack: list[tuple[Any, int, str]] = [(data, 1, "")]
    while stack:
        value, depth, where = stack.pop()
        if depth > MAX_DEPTH:
            yield Issue("too-costly", where, f"Nested deeper than {MAX_DEPTH} levels.")
            return
        if isinstance(value, dict):
            for key, child in value.items():
                if "\x00" in key:
                    yield Issue("invalid", where, "A property name contains a NUL character.")
                    return
                stack.append((child, depth + 1, f"{where}.{key}" if where else key))
        elif isinstance(value, list):
            stack.extend((child, depth + 1, f"{where}[{index}]") for index, child in enumerate(value))
        elif isinstance(value, str) and "\x00" in value:
            yield Issue("invalid", where, "A string contains a NUL character.")
            return


def check_bundle(data: Json) -> str:
    """Check a parsed message; returns its event code or raises MessageInvalid."""
    envelope = list(_envelope_problems(data))
    if envelope:
        raise MessageInvalid(envelope)
    structure = list(_structure_problems(data))
    if structure:
        raise MessageInvalid(structure)
    event = data["entry"][0]["resource"]["eventCoding"]["code"]
    profile = list(_profile_problems(data, event))
    if profile:
        raise MessageInvalid(profile)
    return str(event)


def _envelope_problems(data: Any) -> Iterator[Issue]:
    if not isinstance(data, dict):
        yield Issue("structure", "", "The body must be a JSON object: a FHIR Bundle.")
        return
    if data.get("resourceType") != "Bundle":
        yield Issue("not-supported", "resourceType", "$process-message takes a Bundle of type message.")
        return
    if data.get("type") != "message":
        yield Issue("value", "Bundle.type", "Must be message.")
        return
    entries = data.get("entry")
    if not isinstance(entries, list) or not entries:
        yield Issue("required", "Bundle.entry", "A message needs a MessageHeader and its resources.")
        return
    header = entries[0].get("resource") if isinstance(entries[0], dict) else None
    coding = header.get("eventCoding") if isinstance(header, dict) else None
    code = coding.get("code") if isinstance(coding, dict) else None
    if isinstance(coding, dict) and (not isinstance(code, str) or code not in EVENTS):
        # Another kind of message altogether: its resources are not worth listing.
        yield _unsupported_event()
        return
    for index, entry in enumerate(entries):
        resource = entry.get("resource") if isinstance(entry, dict) else None
        kind = resource.get("resourceType") if isinstance(resource, dict) else None
        if kind is None:
            yield Issue("required", f"Bundle.entry[{index}].resource", "Each entry needs a resource.")
        elif not isinstance(kind, str) or kind not in RESOURCE_TYPES:
            yield Issue(
                "not-supported",
                f"Bundle.entry[{index}].resource.resourceType",
                "Not a resource a prescription-order message carries.",
            )


def _unsupported_event() -> Issue:
    return Issue(
        "not-supported",
        "Bundle.entry[0].resource.eventCoding",
        f"Scriptline accepts {ORDER} and {ORDER_UPDATE} events ({eps.MESSAGE_EVENT_SYSTEM}).",
    )


def _structure_problems(data: Json) -> Iterator[Issue]:
    try:
        Bundle.model_validate(data)
    except ValidationError as error:
        for problem in error.errors():
            code = "required" if problem["type"].endswith("missing") else "structure"
            # The message type and text only: pydantic's `input` would echo patient data.
            yield Issue(code, fhir_path("Bundle", problem["loc"]), problem["msg"])
    except (KeyError, TypeError, ValueError, AttributeError, RecursionError) as error:
        # fhir.resources raises some of these itself on input of the wrong type (a boolean where
        # a URL belongs reaches `.startswith`), instead of a ValidationError.
        yield Issue("structure", "Bundle", f"Not a valid FHIR R4 Bundle ({type(error).__name__}).")


# --- The EPS profile and our value sets --------------------------------------------------------


def _profile_problems(data: Json, event: Any) -> Iterator[Issue]:
    entries = data["entry"]
    header = entries[0]["resource"]
    if header.get("resourceType") != "MessageHeader":
        yield Issue(
            "invalid", "Bundle.entry[0].resource", "The first entry of a message is its MessageHeader."
        )
        return
    if header["eventCoding"].get("system") != eps.MESSAGE_EVENT_SYSTEM or event not in EVENTS:
        yield _unsupported_event()
        return
    identifier = data.get("identifier") or {}
    if identifier.get("system") != eps.MESSAGE_ID_SYSTEM or not identifier.get("value"):
        yield Issue(
            "required",
            "Bundle.identifier",
            f"The message needs an identifier ({eps.MESSAGE_ID_SYSTEM}): a re-sent message is "
            "recognised by it.",
        )
    elif len(identifier["value"]) > 100:
        yield Issue("value", "Bundle.identifier.value", "At most 100 characters.")
    by_url: dict[str, tuple[int, Json]] = {}
    for index, entry in enumerate(entries):
        url = entry.get("fullUrl")
        if not url:
            yield Issue("required", f"Bundle.entry[{index}].fullUrl", "Every entry needs a fullUrl.")
        elif url in by_url:
            yield Issue("duplicate", f"Bundle.entry[{index}].fullUrl", "Two entries have this fullUrl.")
        else:
            by_url[url] = (index, entry["resource"])
    for position, focus in enumerate(header.get("focus") or []):
        if focus.get("reference") not in by_url:
            yield Issue(
                "invalid",
                f"Bundle.entry[0].resource.focus[{position}]",
                "Must reference an entry of the Bundle (by its fullUrl).",
            )
    requests = [
        (index, entry["resource"])
        for index, entry in enumerate(entries)
        if entry["resource"].get("resourceType") == "MedicationRequest"
    ]
    if not requests:
        yield Issue("required", "Bundle.entry", "The message has no MedicationRequest.")
        return
    # Every item names the same patient and prescriber: each entry is checked once.
    checked: set[int] = set()
    for index, request in requests:
        yield from _request_problems(index, request, by_url, STATUS_FOR_EVENT[event], event, checked)


def _request_problems(
    index: int,
    request: Json,
    by_url: dict[str, tuple[int, Json]],
    status: str,
    event: str,
    checked: set[int],
) -> Iterator[Issue]:
    where = f"Bundle.entry[{index}].resource"
    if request.get("status") != status:
        yield Issue("value", f"{where}.status", f"Must be {status} in a {event} message.")
    group = request.get("groupIdentifier") or {}
    if group.get("system") != eps.PRESCRIPTION_ORDER_NUMBER_SYSTEM or not group.get("value"):
        yield Issue(
            "required",
            f"{where}.groupIdentifier",
            f"The prescription ID ({eps.PRESCRIPTION_ORDER_NUMBER_SYSTEM}) is required.",
        )
    elif not short_form_id_is_valid(str(group["value"])):
        yield Issue(
            "value",
            f"{where}.groupIdentifier.value",
            "Not a short-form prescription ID with a valid MOD 37-2 check character.",
        )
    if not any(
        isinstance(i, dict)
        and i.get("system") == eps.PRESCRIPTION_ORDER_ITEM_NUMBER_SYSTEM
        and i.get("value")
        for i in request.get("identifier") or []
    ):
        yield Issue(
            "required",
            f"{where}.identifier",
            f"Each item needs its item number ({eps.PRESCRIPTION_ORDER_ITEM_NUMBER_SYSTEM}).",
        )
    subject = _resolve(by_url, request.get("subject"))
    if subject is None or subject[1].get("resourceType") != "Patient":
        yield Issue("invalid", f"{where}.subject", "Must reference a Patient entry of the Bundle.")
    elif subject[0] not in checked:
        checked.add(subject[0])
        yield from _patient_problems(*subject)
    requester = _resolve(by_url, request.get("requester"))
    if requester is None or requester[1].get("resourceType") != "PractitionerRole":
        yield Issue("invalid", f"{where}.requester", "Must reference a PractitionerRole entry of the Bundle.")
    elif requester[0] not in checked:
        checked.add(requester[0])
        yield from _requester_problems(*requester, by_url)
    if event == ORDER:
        yield from _item_problems(where, request)
    elif not (request.get("statusReason") or {}).get("coding"):
        yield Issue("required", f"{where}.statusReason", "A cancellation needs its reason.")


def _item_problems(where: str, request: Json) -> Iterator[Issue]:
    codings = (request.get("medicationCodeableConcept") or {}).get("coding") or []
    if "medicationReference" in request or not codings:
        yield Issue(
            "required",
            f"{where}.medicationCodeableConcept",
            "The product is required as a dm+d code in medicationCodeableConcept.",
        )
    elif codings[0].get("system") != eps.SNOMED or not codings[0].get("code"):
        yield Issue(
            "value",
            f"{where}.medicationCodeableConcept.coding[0].system",
            f"The product must be coded in dm+d ({eps.SNOMED}).",
        )
    dispense = request.get("dispenseRequest") or {}
    quantity = dispense.get("quantity") or {}
    if quantity.get("value") is None or not quantity.get("unit"):
        yield Issue("required", f"{where}.dispenseRequest.quantity", "The quantity needs a value and a unit.")
    duration = dispense.get("expectedSupplyDuration") or {}
    if duration.get("value") is None or duration.get("code") != "d":
        yield Issue(
            "required",
            f"{where}.dispenseRequest.expectedSupplyDuration",
            "Scriptline needs the days' supply (UCUM code d) to check the quantity and dose.",
        )
    dosages = request.get("dosageInstruction") or []
    if not dosages or not all(dosage.get("text") for dosage in dosages):
        yield Issue("required", f"{where}.dosageInstruction", "Every dosage instruction needs its text.")


def _patient_problems(index: int, patient: Json) -> Iterator[Issue]:
    where = f"Bundle.entry[{index}].resource"
    numbers = [
        i.get("value")
        for i in patient.get("identifier") or []
        if isinstance(i, dict) and i.get("system") == eps.NHS_NUMBER_SYSTEM
    ]
    if not numbers:
        yield Issue("required", f"{where}.identifier", "The patient's NHS number is required.")
    elif not nhs_number_is_valid(str(numbers[0])):
        yield Issue("value", f"{where}.identifier", "The NHS number fails its Modulus 11 check digit.")
    names = patient.get("name") or []
    if not names or not names[0].get("family"):
        yield Issue("required", f"{where}.name", "The patient's family name is required.")
    if not patient.get("birthDate"):
        yield Issue("required", f"{where}.birthDate", "The patient's date of birth is required.")


def _requester_problems(index: int, role: Json, by_url: dict[str, tuple[int, Json]]) -> Iterator[Issue]:
    where = f"Bundle.entry[{index}].resource"
    practitioner = _resolve(by_url, role.get("practitioner"))
    if practitioner is None or practitioner[1].get("resourceType") != "Practitioner":
        yield Issue("invalid", f"{where}.practitioner", "Must reference a Practitioner entry of the Bundle.")
    elif registration(practitioner[1]) is None:
        yield Issue(
            "required",
            f"Bundle.entry[{practitioner[0]}].resource.identifier",
            "The prescriber's GMC, NMC or GPhC number is required.",
        )
    organisation = _resolve(by_url, role.get("organization"))
    if organisation is None or organisation[1].get("resourceType") != "Organization":
        yield Issue("invalid", f"{where}.organization", "Must reference an Organization entry of the Bundle.")
    elif ods_code(organisation[1]) is None:
        yield Issue(
            "required",
            f"Bundle.entry[{organisation[0]}].resource.identifier",
            f"The prescribing organisation's ODS code ({eps.ODS_SYSTEM}) is required.",
        )


def _resolve(by_url: dict[str, tuple[int, Json]], reference: Any) -> tuple[int, Json] | None:
    if not isinstance(reference, dict):
        return None
    return by_url.get(str(reference.get("reference")))


def registration(practitioner: Json) -> tuple[str, str] | None:
    """The prescriber's (register, number): GMC, NMC or GPhC, in that order of preference."""
    for identifier in practitioner.get("identifier") or []:
        body = REGISTRATION_SYSTEMS.get(identifier.get("system"))
        if body and identifier.get("value"):
            return body, str(identifier["value"]).strip()
    return None


def ods_code(organisation: Json) -> str | None:
    for identifier in organisation.get("identifier") or []:
        if identifier.get("system") == eps.ODS_SYSTEM and identifier.get("value"):
            return str(identifier["value"]).strip().upper()
    return None
