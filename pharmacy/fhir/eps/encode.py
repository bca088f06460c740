"""Write a `PrescriptionOrder` as an NHS EPS prescription-order message Bundle (FHIR R4 JSON).

The layout follows the EPS API's published prescription-order examples
(NHSDigital/electronic-prescription-service-api ``examples/spec/prescribing/`` and
``examples/spec/prepare/``): MessageHeader first, then one MedicationRequest per line item,
Patient, PractitionerRole, Practitioner and Organization. The output is a JSON-ready dict;
numbers are ints or exact decimals written as floats with at most two places, as EPS asks
("a rational number ... to a maximum of 2 decimal places with trailing zeroes removed").

The prescriber's signature (a Provenance resource made with an NHS smartcard) is not written:
signing is out of scope, so these messages are the unsigned form EPS's ``$prepare`` takes.
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from fhir.resources.R4B.bundle import Bundle

from pharmacy.fhir.common import FhirEncodingError, build
from pharmacy.fhir.eps import model
from pharmacy.fhir.eps.model import (
    Address,
    Coding,
    ContactPoint,
    Dosage,
    HumanName,
    Identifier,
    LineItem,
    PrescriptionOrder,
    Quantity,
)
from pharmacy.fhir.eps.prescription_id import short_form_id_is_valid

PRESCRIPTION_ORDER_EVENT = {
    "system": model.MESSAGE_EVENT_SYSTEM,
    "code": "prescription-order",
    "display": "Prescription Order",
}


def order_to_bundle(order: PrescriptionOrder, *, urls: EntryUrls) -> dict[str, Any]:
    """The message Bundle for `order`; `urls` names each entry (the same urls, the same bytes)."""
    if not short_form_id_is_valid(order.short_form_id):
        raise FhirEncodingError("MedicationRequest.groupIdentifier.value: not a valid short-form ID")
    if not order.items:
        raise FhirEncodingError("MedicationRequest: the prescription has no items")
    requests = [(urls.item(item), _medication_request(order, item, urls)) for item in order.items]
    entries = [
        (urls.header, _message_header(order, urls, [url for url, _ in requests])),
        *requests,
        (urls.patient, _patient(order.patient)),
        (urls.role, _practitioner_role(order, urls)),
        (urls.practitioner, _practitioner(order)),
        (urls.organisation, _organisation(order)),
    ]
    bundle: dict[str, Any] = {
        "resourceType": "Bundle",
        "id": order.bundle_id or order.message_id,
        "identifier": {"system": model.MESSAGE_ID_SYSTEM, "value": order.message_id},
        "type": "message",
    }
    if order.timestamp is not None:
        bundle["timestamp"] = _instant(order.timestamp, "Bundle.timestamp")
    bundle["entry"] = [
        {"fullUrl": url, "resource": {"id": url.removeprefix("urn:uuid:"), **resource}}
        for url, resource in entries
    ]
    # The R4B models check the structure (cardinality, datatypes, unknown elements).
    build(Bundle, bundle)
    return bundle


class EntryUrls:
    """The fullUrl of each entry: the line items' own UUIDs, and given UUIDs for the rest."""

    def __init__(self, *, header: str, patient: str, role: str, practitioner: str, organisation: str) -> None:
        self.header = f"urn:uuid:{header}"
        self.patient = f"urn:uuid:{patient}"
        self.role = f"urn:uuid:{role}"
        self.practitioner = f"urn:uuid:{practitioner}"
        self.organisation = f"urn:uuid:{organisation}"

    def item(self, item: LineItem) -> str:
        return f"urn:uuid:{item.item_number}"


# --- Resources -------------------------------------------------------------------------------


def _message_header(order: PrescriptionOrder, urls: EntryUrls, request_urls: list[str]) -> dict[str, Any]:
    header: dict[str, Any] = {"resourceType": "MessageHeader", "eventCoding": PRESCRIPTION_ORDER_EVENT}
    if order.nominated_pharmacy is not None:
        destination: dict[str, Any] = {"receiver": _organisation_reference(order.nominated_pharmacy)}
        if order.destination_endpoint:
            destination = {"endpoint": order.destination_endpoint, **destination}
        header["destination"] = [destination]
    sender = order.sender or model.OrganisationReference(order.organisation.ods_code, order.organisation.name)
    header["sender"] = _organisation_reference(sender)
    header["source"] = {"endpoint": order.source_endpoint or _directory_url(order.organisation.ods_code)}
    header["focus"] = [_reference(url) for url in (*request_urls, urls.patient, urls.role)]
    return header


def _medication_request(order: PrescriptionOrder, item: LineItem, urls: EntryUrls) -> dict[str, Any]:
    request: dict[str, Any] = {
        "resourceType": "MedicationRequest",
        "extension": _request_extensions(order, item),
        "identifier": [
            _identifier(Identifier(model.PRESCRIPTION_ORDER_ITEM_NUMBER_SYSTEM, item.item_number))
        ],
        "status": "active",
        "intent": order.intent.value,
        "category": [{"coding": [_coding(order.category)]}],
        "medicationCodeableConcept": {"coding": [_coding(_dmd_medication(item.medication))]},
        "subject": _reference(urls.patient),
        "requester": _reference(urls.role),
    }
    if item.based_on is not None:
        request["basedOn"] = [_based_on(item.based_on)]
    request["groupIdentifier"] = {
        "system": model.PRESCRIPTION_ORDER_NUMBER_SYSTEM,
        "value": order.short_form_id,
        "extension": [
            {
                "url": model.PRESCRIPTION_ID_URL,
                "valueIdentifier": _identifier(
                    Identifier(model.PRESCRIPTION_LONG_FORM_ID_SYSTEM, order.long_form_id)
                ),
            }
        ],
    }
    request["courseOfTherapyType"] = {"coding": [_coding(order.course_of_therapy.coding)]}
    if not item.dosage:
        raise FhirEncodingError("MedicationRequest.dosageInstruction: missing")
    request["dosageInstruction"] = [_dosage(dosage) for dosage in item.dosage]
    request["dispenseRequest"] = _dispense_request(order, item)
    request["substitution"] = {"allowedBoolean": False}
    if item.note:
        request["note"] = [{"text": item.note}]
    return request


def _request_extensions(order: PrescriptionOrder, item: LineItem) -> list[dict[str, Any]]:
    extensions: list[dict[str, Any]] = [
        {"url": model.PRESCRIPTION_TYPE_URL, "valueCoding": _coding(order.prescription_type)}
    ]
    controlled = item.controlled_drug
    if controlled is not None:
        parts: list[dict[str, Any]] = []
        if controlled.quantity_words:
            parts.append({"url": "quantityWords", "valueString": controlled.quantity_words})
        if controlled.schedule is not None:
            parts.append({"url": "schedule", "valueCoding": _coding(controlled.schedule)})
        extensions.append({"url": model.CONTROLLED_DRUG_URL, "extension": parts})
    repeat = order.repeat_information
    if repeat is not None:
        parts = []
        if repeat.number_of_prescriptions_issued is not None:
            parts.append(
                {
                    "url": "numberOfPrescriptionsIssued",
                    "valueUnsignedInt": repeat.number_of_prescriptions_issued,
                }
            )
        if repeat.authorisation_expiry_date is not None:
            parts.append(
                {
                    "url": "authorisationExpiryDate",
                    "valueDateTime": repeat.authorisation_expiry_date.isoformat(),
                }
            )
        extensions.append({"url": model.REPEAT_INFORMATION_URL, "extension": parts})
    return extensions


def _based_on(based_on: model.BasedOn) -> dict[str, Any]:
    parts = []
    if based_on.number_of_repeats_allowed is not None:
        parts.append(
            {"url": "numberOfRepeatsAllowed", "valueUnsignedInt": based_on.number_of_repeats_allowed}
        )
    if based_on.number_of_repeats_issued is not None:
        parts.append({"url": "numberOfRepeatsIssued", "valueUnsignedInt": based_on.number_of_repeats_issued})
    reference: dict[str, Any] = {
        "identifier": _identifier(
            Identifier(model.PRESCRIPTION_ORDER_ITEM_NUMBER_SYSTEM, based_on.item_number)
        )
    }
    if parts:
        reference = {
            "extension": [{"url": model.EPS_REPEAT_INFORMATION_URL, "extension": parts}],
            **reference,
        }
    return reference


def _dmd_medication(medication: Coding) -> Coding:
    # EPS: "a VMP or AMP concept from the dm+d" (MedicationRequest.yaml); dm+d concepts are
    # SNOMED CT concepts, so they are only ever written under http://snomed.info/sct.
    if medication.system != model.SNOMED:
        raise FhirEncodingError(
            f"MedicationRequest.medicationCodeableConcept.coding.system: {medication.system!r} is not "
            f"{model.SNOMED} (dm+d codes are SNOMED CT codes)"
        )
    return medication


def _dosage(dosage: Dosage) -> dict[str, Any]:
    written: dict[str, Any] = {}
    if dosage.sequence is not None:
        written["sequence"] = dosage.sequence
    if not dosage.text.strip():
        raise FhirEncodingError("MedicationRequest.dosageInstruction.text: missing")
    written["text"] = dosage.text
    if dosage.timing is not None:
        written["timing"] = {
            "repeat": {
                "frequency": dosage.timing.frequency,
                "period": _number(dosage.timing.period),
                "periodUnit": dosage.timing.period_unit,
            }
        }
    if dosage.route is not None:
        written["route"] = {"coding": [_coding(dosage.route)]}
    if dosage.dose is not None:
        written["doseAndRate"] = [{"doseQuantity": _quantity(dosage.dose, "dosageInstruction.doseAndRate")}]
    return written


def _dispense_request(order: PrescriptionOrder, item: LineItem) -> dict[str, Any]:
    dispense: dict[str, Any] = {
        "extension": [
            {"url": model.PERFORMER_SITE_TYPE_URL, "valueCoding": _coding(order.dispensing_site_preference)}
        ]
    }
    if order.validity_start is not None or order.validity_end is not None:
        period: dict[str, str] = {}
        if order.validity_start is not None:
            period["start"] = order.validity_start.isoformat()
        if order.validity_end is not None:
            period["end"] = _instant(
                order.validity_end, "MedicationRequest.dispenseRequest.validityPeriod.end"
            )
        dispense["validityPeriod"] = period
    if order.number_of_repeats_allowed is not None:
        dispense["numberOfRepeatsAllowed"] = order.number_of_repeats_allowed
    if item.quantity.code is None or item.quantity.system != model.SNOMED:
        raise FhirEncodingError(
            "MedicationRequest.dispenseRequest.quantity.code: missing (the dm+d unit of measure SNOMED code)"
        )
    dispense["quantity"] = _quantity(item.quantity, "MedicationRequest.dispenseRequest.quantity")
    if item.expected_supply_days is not None:
        if item.expected_supply_days < 1:
            raise FhirEncodingError(
                "MedicationRequest.dispenseRequest.expectedSupplyDuration.value: must be at least 1"
            )
        dispense["expectedSupplyDuration"] = {
            "value": item.expected_supply_days,
            "unit": "day",
            "system": model.UCUM,
            "code": "d",
        }
    if order.nominated_pharmacy is not None:
        dispense["performer"] = {"identifier": _ods(order.nominated_pharmacy.ods_code)}
    return dispense


def _patient(patient: model.Patient) -> dict[str, Any]:
    resource: dict[str, Any] = {
        "resourceType": "Patient",
        "identifier": [_identifier(Identifier(model.NHS_NUMBER_SYSTEM, patient.nhs_number))],
        "name": [_name(patient.name)],
        "gender": patient.gender,
        "birthDate": patient.birth_date.isoformat(),
        "address": [_address(patient.address)],
    }
    if patient.telecom:
        resource["telecom"] = [_telecom(contact) for contact in patient.telecom]
    if patient.general_practitioner_ods:
        resource["generalPractitioner"] = [{"identifier": _ods(patient.general_practitioner_ods)}]
    return resource


def _practitioner_role(order: PrescriptionOrder, urls: EntryUrls) -> dict[str, Any]:
    role = order.role
    resource: dict[str, Any] = {
        "resourceType": "PractitionerRole",
        "identifier": [_identifier(identifier) for identifier in role.identifiers],
        "practitioner": _reference(urls.practitioner),
        "organization": _reference(urls.organisation),
        "code": [{"coding": [_coding(coding) for coding in role.job_role]}],
        "telecom": [_telecom(contact) for contact in role.telecom],
    }
    return resource


def _practitioner(order: PrescriptionOrder) -> dict[str, Any]:
    practitioner = order.practitioner
    resource: dict[str, Any] = {
        "resourceType": "Practitioner",
        "identifier": [_identifier(identifier) for identifier in practitioner.identifiers],
        "name": [_name(practitioner.name)],
    }
    if practitioner.telecom:
        resource["telecom"] = [_telecom(contact) for contact in practitioner.telecom]
    return resource


def _organisation(order: PrescriptionOrder) -> dict[str, Any]:
    organisation = order.organisation
    resource: dict[str, Any] = {
        "resourceType": "Organization",
        "identifier": [_ods(organisation.ods_code)],
    }
    if organisation.types:
        resource["type"] = [{"coding": [_coding(coding) for coding in organisation.types]}]
    resource["name"] = organisation.name
    resource["telecom"] = [_telecom(contact) for contact in organisation.telecom]
    resource["address"] = [_address(organisation.address)]
    if organisation.part_of is not None:
        resource["partOf"] = _organisation_reference(organisation.part_of)
    return resource


# --- Datatypes -------------------------------------------------------------------------------


def _coding(coding: Coding) -> dict[str, str]:
    written = {"system": coding.system, "code": coding.code}
    if coding.display:
        written["display"] = coding.display
    return written


def _identifier(identifier: Identifier) -> dict[str, str]:
    return {"system": identifier.system, "value": identifier.value}


def _ods(ods_code: str) -> dict[str, str]:
    return _identifier(Identifier(model.ODS_SYSTEM, ods_code))


def _organisation_reference(reference: model.OrganisationReference) -> dict[str, Any]:
    written: dict[str, Any] = {"identifier": _ods(reference.ods_code)}
    if reference.display:
        written["display"] = reference.display
    return written


def _reference(url: str) -> dict[str, str]:
    return {"reference": url}


def _directory_url(ods_code: str) -> str:
    # The form EPS's examples give MessageHeader.source.endpoint.
    return f"https://directory.spineservices.nhs.uk/STU3/Organization/{ods_code}"


def _name(name: HumanName) -> dict[str, Any]:
    written: dict[str, Any] = {}
    if name.use:
        written["use"] = name.use
    written["family"] = name.family
    if name.given:
        written["given"] = list(name.given)
    if name.prefix:
        written["prefix"] = list(name.prefix)
    return written


def _address(address: Address) -> dict[str, Any]:
    written: dict[str, Any] = {}
    if address.use:
        written["use"] = address.use
    if address.type:
        written["type"] = address.type
    if address.lines:
        written["line"] = list(address.lines)
    for key, value in (
        ("city", address.city),
        ("district", address.district),
        ("postalCode", address.postal_code),
    ):
        if value:
            written[key] = value
    return written


def _telecom(contact: ContactPoint) -> dict[str, str]:
    return {"system": contact.system, "use": contact.use, "value": contact.value}


def _quantity(quantity: Quantity, element: str) -> dict[str, Any]:
    if quantity.value <= 0:
        raise FhirEncodingError(f"{element}.value: must be positive")
    written: dict[str, Any] = {"value": _number(quantity.value), "unit": quantity.unit}
    if quantity.system:
        written["system"] = quantity.system
    if quantity.code:
        written["code"] = quantity.code
    return written


def _number(value: Decimal) -> int | float:
    """An exact decimal as a JSON number: an int when whole, else its shortest float."""
    normalised = value.normalize()
    if normalised == normalised.to_integral_value():
        return int(normalised)
    return float(normalised)


def _instant(value: datetime, element: str) -> str:
    if value.tzinfo is None or value.utcoffset() is None:
        raise FhirEncodingError(f"{element}: needs a time zone")
    text = value.astimezone(UTC).isoformat()
    return text.removesuffix("+00:00") + "Z"
