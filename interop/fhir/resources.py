"""Our prescriptions as FHIR R4: one MedicationRequest per item, the response message to a
$process-message, and a searchset for pollers.

A MedicationRequest's id is `<prescription id>-<line>`; its status is the prescription's,
mapped onto MedicationRequest.status, with our own status in an extension. No patient
identifier is written: the subject is our patient id.
"""

from __future__ import annotations

import uuid
from typing import Any

from django.conf import settings
from django.utils import timezone

from interop.fhir.intake import item_lines
from pharmacy.fhir.eps import model as eps
from prescriptions.models import OffFormularyItem, Prescription, Status

Json = dict[str, Any]

BASE = "https://scriptline.example/fhir"
STATUS_EXTENSION_URL = f"{BASE}/StructureDefinition/prescription-status"
PATIENT_SYSTEM = f"{BASE}/Id/patient"
PRESCRIPTION_SYSTEM = f"{BASE}/Id/prescription"
RESPONSE_EVENT = "prescription-order-response"
REGISTRATION_SYSTEMS = {
    "GMC": eps.PROFESSIONAL_CODE_SYSTEMS["GMC"],
    "NMC": eps.PROFESSIONAL_CODE_SYSTEMS["NMC"],
    "GPhC": eps.PROFESSIONAL_CODE_SYSTEMS["GPhC"],
    "NPI": "http://hl7.org/fhir/sid/us-npi",
    "DEA": "http://terminology.hl7.org/NamingSystem/usdeanumber",
}

FHIR_STATUS: dict[str, str] = {
    Status.PAYMENT_FAILED: "on-hold",
    Status.DEAD_LETTERED: "on-hold",
    Status.DELIVERED: "completed",
    Status.CANCELLED: "cancelled",
    Status.REJECTED: "stopped",
    Status.REJECTED_BY_PHARMACY: "stopped",
}


def fhir_base() -> str:
    return f"{settings.PUBLIC_BASE_URL.rstrip('/')}/fhir/R4"


def medication_request_id(prescription: Prescription, line: int) -> str:
    return f"{prescription.pk}-{line}"


def medication_requests(prescription: Prescription, lines: set[int] | None = None) -> list[Json]:
    """The prescription's items as MedicationRequests (only `lines`, when given)."""
    received = getattr(prescription, "received_order", None)
    item_numbers = received.item_numbers if received is not None else []
    resources = []
    for line, item in enumerate(item_lines(prescription), start=1):
        if lines is None or line in lines:
            number = item_numbers[line - 1] if line <= len(item_numbers) else None
            resources.append(_medication_request(prescription, line, item, number, received))
    return resources


def _medication_request(
    prescription: Prescription, line: int, item: Any, item_number: str | None, received: Any
) -> Json:
    if isinstance(item, OffFormularyItem):
        coding = {"system": item.code_system, "code": item.code, "display": item.display or None}
    else:
        medication = item.medication
        coding = {"system": medication.code_system, "code": medication.code, "display": str(medication)}
    identifiers = [{"system": PRESCRIPTION_SYSTEM, "value": medication_request_id(prescription, line)}]
    if item_number:
        identifiers.insert(0, {"system": eps.PRESCRIPTION_ORDER_ITEM_NUMBER_SYSTEM, "value": item_number})
    group = (
        {"system": eps.PRESCRIPTION_ORDER_NUMBER_SYSTEM, "value": received.short_form_id}
        if received is not None
        else {"system": PRESCRIPTION_SYSTEM, "value": str(prescription.pk)}
    )
    prescriber = prescription.prescriber
    resource: Json = {
        "resourceType": "MedicationRequest",
        "id": medication_request_id(prescription, line),
        "extension": [{"url": STATUS_EXTENSION_URL, "valueCode": prescription.status}],
        "identifier": identifiers,
        "status": FHIR_STATUS.get(prescription.status, "active"),
        "intent": "order",
        "medicationCodeableConcept": {"coding": [{k: v for k, v in coding.items() if v}]},
        "subject": {"identifier": {"system": PATIENT_SYSTEM, "value": str(prescription.patient_id)}},
        "authoredOn": prescription.created_at.isoformat(),
        "requester": {
            "identifier": {
                "system": REGISTRATION_SYSTEMS.get(prescriber.registration_body, f"{BASE}/Id/registration"),
                "value": prescriber.registration_number,
            }
        },
        "groupIdentifier": group,
        "dosageInstruction": [{"text": item.dose_text}],
        "dispenseRequest": {
            "quantity": {"value": float(item.quantity), "unit": item.unit},
            "expectedSupplyDuration": {
                "value": item.days_supply,
                "unit": "day",
                "system": eps.UCUM,
                "code": "d",
            },
        },
    }
    if prescription.status_reason or prescription.status != Status.RECEIVED:
        resource["statusReason"] = {"text": prescription.status_reason or Status(prescription.status).label}
    return resource


def response_message(*, request_message_id: str, prescription: Prescription) -> Json:
    """The $process-message answer: a message whose MessageHeader.response names the request
    (its Bundle.identifier) with code ok, and whose focus is the prescription's items."""
    requests = medication_requests(prescription)
    base = fhir_base()
    header_id = str(uuid.uuid4())
    header = {
        "resourceType": "MessageHeader",
        "id": header_id,
        "eventCoding": {"system": eps.MESSAGE_EVENT_SYSTEM, "code": RESPONSE_EVENT},
        "source": {"name": "Scriptline", "endpoint": f"{base}/$process-message"},
        "response": {"identifier": request_message_id, "code": "ok"},
        "focus": [{"reference": f"MedicationRequest/{request['id']}"} for request in requests],
    }
    return {
        "resourceType": "Bundle",
        "id": str(uuid.uuid4()),
        "identifier": {"system": eps.MESSAGE_ID_SYSTEM, "value": str(uuid.uuid4())},
        "type": "message",
        "timestamp": timezone.now().isoformat(),
        "entry": [
            {"fullUrl": f"urn:uuid:{header_id}", "resource": header},
            *(
                {"fullUrl": f"{base}/MedicationRequest/{request['id']}", "resource": request}
                for request in requests
            ),
        ],
    }


def searchset(resources: list[Json]) -> Json:
    base = fhir_base()
    return {
        "resourceType": "Bundle",
        "type": "searchset",
        "total": len(resources),
        "entry": [
            {
                "fullUrl": f"{base}/MedicationRequest/{resource['id']}",
                "resource": resource,
                "search": {"mode": "match"},
            }
            for resource in resources
        ],
    }
