"""The Scriptline prescription-order profile: how US prescriptions reach the pharmacy gateway.

This is our own FHIR R4 contract, not a national one: a message Bundle with a MessageHeader,
one MedicationRequest per item (RxNorm clinical drug codes), the Patient, and the prescriber
as Practitioner (NPI, DEA registration, state licences as qualifications) with their
PractitionerRole and Organization. The US e-prescribing network speaks NCPDP SCRIPT, not
FHIR; reaching US pharmacies over it is a later partner adapter. GB prescriptions use the NHS
EPS profile instead (pharmacy/fhir/eps).

The encoder is a pure function of the objects it is given: it reads attributes the caller has
already loaded and never queries the database.

fhir.resources' R4B models check the structure (see pharmacy/fhir/common.py); the value sets
we rely on are checked here. Error messages never carry patient data.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from fhir.resources.R4B.bundle import Bundle
from fhir.resources.R4B.medicationrequest import MedicationRequest
from fhir.resources.R4B.messageheader import MessageHeader
from fhir.resources.R4B.organization import Organization
from fhir.resources.R4B.patient import Patient as FhirPatient
from fhir.resources.R4B.practitioner import Practitioner
from fhir.resources.R4B.practitionerrole import PractitionerRole
from fhir.resources.R4B.resource import Resource

from pharmacy.fhir.common import FhirEncodingError, present, require
from pharmacy.fhir.common import build as _build

if TYPE_CHECKING:
    from patients.models import Clinic, Patient
    from prescriptions.models import Medication, Prescriber, Prescription, PrescriptionItem

MESSAGE_ID_SYSTEM = "https://scriptline.example/Id/message"
PRESCRIPTION_SYSTEM = "https://scriptline.example/Id/prescription"
PRESCRIPTION_ITEM_SYSTEM = "https://scriptline.example/Id/prescription-item"
# Our own systems, not NHS ones: this profile is not an NHS message and must not look like one.
MESSAGE_EVENT_SYSTEM = "https://scriptline.example/CodeSystem/message-event"
PHARMACY_SYSTEM = "https://scriptline.example/Id/pharmacy"
ORGANIZATION_SYSTEM = "https://scriptline.example/Id/organization"
UCUM_SYSTEM = "http://unitsofmeasure.org"

PRESCRIPTION_ORDER_EVENT = {
    "system": MESSAGE_EVENT_SYSTEM,
    "code": "prescription-order",
    "display": "Prescription Order",
}

RXNORM_SYSTEM = "http://www.nlm.nih.gov/research/umls/rxnorm"
NPI_SYSTEM = "http://hl7.org/fhir/sid/us-npi"
# HL7 Terminology NamingSystem USDEANumber; the identifier system as the HL7 US PDMP STU1
# examples write it (Organization-pdmp-pharmacy-1).
DEA_SYSTEM = "http://terminology.hl7.org/NamingSystem/usdeanumber"
# A state licence: Practitioner.qualification coded "SL" (HL7 v2 table 0203, State license),
# issued by the state named by its USPS code.
IDENTIFIER_TYPE_SYSTEM = "http://terminology.hl7.org/CodeSystem/v2-0203"
STATE_LICENSE = {"system": IDENTIFIER_TYPE_SYSTEM, "code": "SL", "display": "State license"}

REGISTRATION_SYSTEMS: dict[str, str] = {"NPI": NPI_SYSTEM, "DEA": DEA_SYSTEM}

# Fixed namespace so fullUrls depend only on (message_id, role): re-encoding is byte-identical.
_ENTRY_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "https://scriptline.example/fhir/bundle-entry")


@dataclass(frozen=True)
class ValueSet:
    name: str
    codes: frozenset[str]


def _value_set(name: str, *codes: str) -> ValueSet:
    return ValueSet(name, frozenset(codes))


# Required bindings of the elements we write (and that validate_bundle checks in any bundle).
BUNDLE_TYPES = _value_set(
    "bundle-type",
    "document",
    "message",
    "transaction",
    "transaction-response",
    "batch",
    "batch-response",
    "history",
    "searchset",
    "collection",
)
MEDICATION_REQUEST_STATUSES = _value_set(
    "medicationrequest-status",
    "active",
    "on-hold",
    "cancelled",
    "completed",
    "entered-in-error",
    "stopped",
    "draft",
    "unknown",
)
MEDICATION_REQUEST_INTENTS = _value_set(
    "medicationrequest-intent",
    "proposal",
    "plan",
    "order",
    "original-order",
    "reflex-order",
    "filler-order",
    "instance-order",
    "option",
)
ADMINISTRATIVE_GENDERS = _value_set("administrative-gender", "male", "female", "other", "unknown")
NAME_USES = _value_set("name-use", "usual", "official", "temp", "nickname", "anonymous", "old", "maiden")
CONTACT_POINT_SYSTEMS = _value_set(
    "contact-point-system", "phone", "fax", "email", "pager", "url", "sms", "other"
)
# Narrower than FHIR allows on purpose: only what we send and the gateway understands.
MESSAGE_EVENTS = _value_set("scriptline-message-events", "prescription-order", "prescription-order-update")
# US formulary entries (prescriptions/data/formulary.json) are RxNorm clinical drugs.
DRUG_CODE_SYSTEMS = _value_set("drug-code-systems", RXNORM_SYSTEM)
UCUM_SYSTEMS = _value_set("ucum-system", UCUM_SYSTEM)
SUPPLY_DURATION_UNITS = _value_set("ucum-supply-duration-units", "d")

# A violation in these resources would echo personal data (a patient's recorded sex), so the
# offending code is left out of the message.
_RESOURCES_WITH_PERSONAL_CODES = frozenset({"Patient"})


# --- Public API ------------------------------------------------------------------------------


def encode_prescription(
    prescription: Prescription,
    *,
    message_id: str,
    pharmacy_ods_code: str,
    timestamp: datetime,
    items: Sequence[PrescriptionItem] | None = None,
) -> dict[str, Any]:
    """Return `prescription` as a FHIR R4 message Bundle (a JSON-ready dict).

    `items` replaces `prescription.items.all()` when given. Raises FhirEncodingError.
    """
    items = list(prescription.items.all()) if items is None else list(items)
    if not items:
        raise FhirEncodingError("MedicationRequest: the prescription has no items")
    urls = _EntryUrls(message_id)
    clinic = prescription.clinic
    entries: list[tuple[str, Resource]] = [
        (urls.header, _header(clinic, pharmacy_ods_code, urls, items)),
        *((urls.item(item), _medication_request(prescription, item, urls)) for item in items),
        (urls.patient, _patient(prescription.patient, clinic, urls.patient)),
        (urls.practitioner, _practitioner(prescription.prescriber, urls.practitioner)),
        (urls.role, _practitioner_role(urls)),
        (urls.organization, _organization(clinic, urls.organization)),
    ]
    bundle = _build(
        Bundle,
        {
            "id": message_id,
            "identifier": {"system": MESSAGE_ID_SYSTEM, "value": message_id},
            "type": "message",
            "timestamp": timestamp,
            "entry": [{"fullUrl": url, "resource": resource} for url, resource in entries],
        },
    )
    _check_value_sets(bundle)
    return bundle.model_dump(mode="json", exclude_none=True)


def validate_bundle(data: dict[str, Any]) -> None:
    """Parse `data` as an R4 Bundle and check its value sets; raise FhirEncodingError if bad."""
    _check_value_sets(_build(Bundle, data))


# --- Entry URLs ------------------------------------------------------------------------------


class _EntryUrls:
    def __init__(self, message_id: str) -> None:
        self.message_id = message_id
        self.header = self._url("message-header")
        self.patient = self._url("patient")
        self.practitioner = self._url("practitioner")
        self.role = self._url("practitioner-role")
        self.organization = self._url("organization")

    def item(self, item: PrescriptionItem) -> str:
        return self._url(f"medication-request:{_saved_pk(item, 'MedicationRequest.identifier')}")

    def _url(self, role: str) -> str:
        return f"urn:uuid:{uuid.uuid5(_ENTRY_NAMESPACE, f'{self.message_id}:{role}')}"


def _reference(url: str) -> dict[str, str]:
    return {"reference": url}


def _resource_id(url: str) -> str:
    return url.removeprefix("urn:uuid:")


# --- Resources -------------------------------------------------------------------------------


def _header(
    clinic: Clinic, pharmacy_ods_code: str, urls: _EntryUrls, items: Sequence[PrescriptionItem]
) -> MessageHeader:
    clinic_pk = _saved_pk(clinic, "MessageHeader.source.endpoint")
    return _build(
        MessageHeader,
        {
            "id": _resource_id(urls.header),
            "eventCoding": PRESCRIPTION_ORDER_EVENT,
            "source": {"endpoint": f"urn:scriptline:clinic:{clinic_pk}", "name": clinic.name},
            "destination": [
                {
                    "endpoint": f"urn:scriptline:pharmacy:{pharmacy_ods_code}",
                    "receiver": {"identifier": {"system": PHARMACY_SYSTEM, "value": pharmacy_ods_code}},
                }
            ],
            "sender": _reference(urls.organization),
            "focus": [_reference(urls.item(item)) for item in items],
        },
    )


def _medication_request(
    prescription: Prescription, item: PrescriptionItem, urls: _EntryUrls
) -> MedicationRequest:
    prescription_pk = _saved_pk(prescription, "MedicationRequest.groupIdentifier")
    item_pk = _saved_pk(item, "MedicationRequest.identifier")
    data: dict[str, Any] = {
        "id": _resource_id(urls.item(item)),
        "identifier": [{"system": PRESCRIPTION_ITEM_SYSTEM, "value": f"{prescription_pk}-{item_pk}"}],
        "groupIdentifier": {"system": PRESCRIPTION_SYSTEM, "value": str(prescription_pk)},
        "status": "active",
        "intent": "order",
        "medicationCodeableConcept": {"coding": [_medication_coding(item.medication)]},
        "subject": _reference(urls.patient),
        "requester": _reference(urls.role),
        "authoredOn": _require(prescription.issued_on, "MedicationRequest.authoredOn"),
        "dosageInstruction": [{"text": _require(item.dose_text, "MedicationRequest.dosageInstruction.text")}],
        "dispenseRequest": _dispense_request(item),
    }
    if _present(prescription.note):
        data["note"] = [{"text": prescription.note}]
    return _build(MedicationRequest, data)


def _medication_coding(medication: Medication) -> dict[str, Any]:
    element = "MedicationRequest.medicationCodeableConcept.coding"
    return {
        "system": _require(medication.code_system, f"{element}.system"),
        "code": _require(medication.code, f"{element}.code"),
        "display": _join_present(medication.name, medication.strength, medication.form),
    }


def _dispense_request(item: PrescriptionItem) -> dict[str, Any]:
    quantity_element = "MedicationRequest.dispenseRequest.quantity"
    duration_element = "MedicationRequest.dispenseRequest.expectedSupplyDuration"
    quantity = Decimal(str(_require(item.quantity, f"{quantity_element}.value")))
    days_supply = _require(item.days_supply, f"{duration_element}.value")
    if quantity <= 0:
        raise FhirEncodingError(f"{quantity_element}.value: must be positive")
    if days_supply < 1:
        raise FhirEncodingError(f"{duration_element}.value: must be at least 1")
    return {
        "quantity": {"value": quantity, "unit": _require(item.unit, f"{quantity_element}.unit")},
        "expectedSupplyDuration": {
            "value": days_supply,
            "unit": "day",
            "system": UCUM_SYSTEM,
            "code": "d",
        },
    }


def _patient(patient: Patient, clinic: Clinic, url: str) -> FhirPatient:
    data: dict[str, Any] = {
        "id": _resource_id(url),
        "name": [_human_name(patient.given_name, patient.family_name, "Patient")],
        # Our sex choices are exactly the administrative-gender codes; anything else is
        # caught by the value-set check.
        "gender": patient.sex,
        "birthDate": _require(patient.birth_date, "Patient.birthDate"),
    }
    address = _patient_address(patient, clinic)
    if address:
        data["address"] = [address]
    telecom = [
        {"system": system, "value": value}
        for system, value in (("phone", patient.phone), ("email", patient.email))
        if _present(value)
    ]
    if telecom:
        data["telecom"] = telecom
    return _build(FhirPatient, data)


def _patient_address(patient: Patient, clinic: Clinic) -> dict[str, Any]:
    fields = {
        "line": [patient.address_line] if _present(patient.address_line) else None,
        "city": patient.city,
        "state": patient.region,
        "postalCode": patient.postal_code,
    }
    address = {key: value for key, value in fields.items() if _present(value)}
    # A country on its own says nothing about where the patient lives.
    if address and _present(clinic.jurisdiction):
        address["country"] = clinic.jurisdiction
    return address


def _practitioner(prescriber: Prescriber, url: str) -> Practitioner:
    """The prescriber: their NPI (or DEA number) as registered, their DEA registration when it
    is recorded separately, and one state-licence qualification per licensed state."""
    system = REGISTRATION_SYSTEMS.get(prescriber.registration_body)
    if system is None:
        raise FhirEncodingError(
            f"Practitioner.identifier.system: registration body {prescriber.registration_body!r} "
            "is not a US one (NPI or DEA)"
        )
    number = _require(prescriber.registration_number, "Practitioner.identifier.value")
    identifiers = [{"system": system, "value": number}]
    if _present(prescriber.dea_number) and system != DEA_SYSTEM:
        identifiers.append({"system": DEA_SYSTEM, "value": prescriber.dea_number})
    data: dict[str, Any] = {
        "id": _resource_id(url),
        "identifier": identifiers,
        "name": [_human_name(prescriber.given_name, prescriber.family_name, "Practitioner")],
    }
    states = sorted(state for state in prescriber.licensed_states or [] if _present(state))
    if states:
        data["qualification"] = [
            {
                "code": {"coding": [STATE_LICENSE], "text": f"{state} state license"},
                "issuer": {"display": state},
            }
            for state in states
        ]
    return _build(Practitioner, data)


def _practitioner_role(urls: _EntryUrls) -> PractitionerRole:
    return _build(
        PractitionerRole,
        {
            "id": _resource_id(urls.role),
            "practitioner": _reference(urls.practitioner),
            "organization": _reference(urls.organization),
        },
    )


def _organization(clinic: Clinic, url: str) -> Organization:
    data: dict[str, Any] = {
        "id": _resource_id(url),
        "name": _require(clinic.name, "Organization.name"),
    }
    if _present(clinic.ods_code):
        data["identifier"] = [{"system": ORGANIZATION_SYSTEM, "value": clinic.ods_code}]
    if _present(clinic.address):
        data["address"] = [{"text": clinic.address}]
    return _build(Organization, data)


def _human_name(given: str, family: str, resource_type: str) -> dict[str, Any]:
    name: dict[str, Any] = {
        "use": "official",
        "family": _require(family, f"{resource_type}.name.family"),
    }
    if _present(given):
        name["given"] = [given]
    return name


# --- Checking ----------------------------------------------------------------------------------

# (element path, code as written, the value set it must belong to)
_CodedValue = tuple[str, str | None, ValueSet]


def _check_value_sets(bundle: Bundle) -> None:
    problems = [
        _violation(element, code, value_set)
        for element, code, value_set in _coded_values(bundle)
        if code is not None and code not in value_set.codes
    ]
    if problems:
        raise FhirEncodingError("; ".join(problems))


def _violation(element: str, code: str, value_set: ValueSet) -> str:
    resource_type = element.split(".", 1)[0]
    shown = "code" if resource_type in _RESOURCES_WITH_PERSONAL_CODES else repr(code)
    return f"{element}: {shown} is not in the {value_set.name} value set"


def _coded_values(bundle: Bundle) -> Iterator[_CodedValue]:
    yield "Bundle.type", bundle.type, BUNDLE_TYPES
    for index, entry in enumerate(bundle.entry or []):
        resource = entry.resource
        if resource is None:
            continue
        resource_type = resource.get_resource_type()
        extract = _CODE_EXTRACTORS.get(resource_type)
        if extract is None:
            continue
        for element, code, value_set in extract(resource):
            yield f"{resource_type}.{element} (Bundle.entry[{index}])", code, value_set


def _message_header_codes(header: MessageHeader) -> Iterator[_CodedValue]:
    if header.eventCoding is not None:
        yield "eventCoding.code", header.eventCoding.code, MESSAGE_EVENTS


def _medication_request_codes(request: MedicationRequest) -> Iterator[_CodedValue]:
    yield "status", request.status, MEDICATION_REQUEST_STATUSES
    yield "intent", request.intent, MEDICATION_REQUEST_INTENTS
    concept = request.medicationCodeableConcept
    for index, coding in enumerate((concept.coding or []) if concept else []):
        yield f"medicationCodeableConcept.coding[{index}].system", coding.system, DRUG_CODE_SYSTEMS
    dispense = request.dispenseRequest
    duration = dispense.expectedSupplyDuration if dispense else None
    if duration is not None:
        yield "dispenseRequest.expectedSupplyDuration.system", duration.system, UCUM_SYSTEMS
        yield "dispenseRequest.expectedSupplyDuration.code", duration.code, SUPPLY_DURATION_UNITS


def _person_codes(person: FhirPatient | Practitioner) -> Iterator[_CodedValue]:
    if isinstance(person, FhirPatient):
        yield "gender", person.gender, ADMINISTRATIVE_GENDERS
    for index, name in enumerate(person.name or []):
        yield f"name[{index}].use", name.use, NAME_USES
    for index, contact in enumerate(person.telecom or []):
        yield f"telecom[{index}].system", contact.system, CONTACT_POINT_SYSTEMS


_CODE_EXTRACTORS: dict[str, Callable[[Any], Iterator[_CodedValue]]] = {
    "MessageHeader": _message_header_codes,
    "MedicationRequest": _medication_request_codes,
    "Patient": _person_codes,
    "Practitioner": _person_codes,
}


# --- Small helpers ---------------------------------------------------------------------------

_present = present
_require = require


def _join_present(*parts: str) -> str | None:
    return " ".join(part for part in parts if _present(part)) or None


def _saved_pk(instance: Any, element: str) -> Any:
    if instance.pk is None:
        raise FhirEncodingError(f"{element}: the {type(instance).__name__} is not saved")
    return instance.pk
