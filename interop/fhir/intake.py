"""FHIR message intake: an EPS prescription-order becomes a prescription through the same
service as the REST API (prescriptions.services.prescription_create); an order update
cancels one through the saga, like the REST cancel.

- The patient is the clinic's patient with that NHS number (blind index), or a new one made
  from the message's Patient. Another clinic's patients are never looked at.
- The prescriber is the clinic's prescriber with that GMC, NMC or GPhC number; the message
  cannot create one.
- Each item is matched by its dm+d code. A product outside the formulary is kept as sent and
  the prescription is held for a pharmacist (check `formulary.not_listed`), not refused.

Everything is checked before anything is written, and every problem is reported at once.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from django.db import transaction
from django.utils import timezone

from common.errors import NotFound
from interop.fhir import validation
from interop.fhir.outcome import Issue, MessageInvalid
from interop.models import ReceivedOrder
from patients.models import Clinic, Patient, Sex
from patients.phi import nhs_number_index
from patients.services import patient_create
from pharmacy.fhir.eps import model as eps
from pharmacy.fhir.eps.decode import EpsDecodeError, bundle_to_order
from prescriptions.models import Medication, OffFormularyItem, Prescriber, Prescription, PrescriptionItem
from prescriptions.services import prescription_create

Json = dict[str, Any]

MAX_QUANTITY = Decimal(100000)
MAX_DAYS_SUPPLY = 365
MAX_REPEATS = 12
GENDERS = {Sex.FEMALE, Sex.MALE, Sex.OTHER, Sex.UNKNOWN}


def order_receive(*, clinic: Clinic, bundle: Json, actor: str) -> Prescription:
    """Accept a checked prescription-order message (validation.check_bundle) for `clinic`."""
    if clinic.jurisdiction != "GB":
        raise MessageInvalid(
            [Issue("not-supported", "Bundle", "NHS EPS messages are accepted from clinics in Great Britain.")]
        )
    try:
        order = bundle_to_order(bundle)
    except EpsDecodeError as error:
        raise MessageInvalid([_decode_issue(error)]) from None
    request_entries = _request_entries(bundle)
    issues: list[Issue] = []
    prescriber = _prescriber(clinic, bundle, issues)
    _check_organisation(clinic, bundle, issues)
    patient_details = _patient_details(order.patient, bundle, issues)
    medications = _formulary_medications(order)
    items, unlisted = _items(order, request_entries, medications, issues)
    repeats = order.number_of_repeats_allowed or 0
    if repeats > MAX_REPEATS:
        issues.append(
            Issue(
                "value",
                f"Bundle.entry[{request_entries[0]}].resource.dispenseRequest.numberOfRepeatsAllowed",
                f"At most {MAX_REPEATS} repeats.",
            )
        )
    if ReceivedOrder.objects.filter(clinic=clinic, short_form_id=order.short_form_id).exists():
        issues.append(
            Issue(
                "duplicate",
                f"Bundle.entry[{request_entries[0]}].resource.groupIdentifier.value",
                "A prescription with this ID was already received in another message.",
            )
        )
    if issues or prescriber is None or patient_details is None:
        raise MessageInvalid(issues)
    with transaction.atomic():
        patient = _patient(clinic, patient_details, actor)
        prescription = prescription_create(
            clinic=clinic,
            patient=patient,
            prescriber=prescriber,
            items=items,
            off_formulary_items=unlisted,
            note=(order.items[0].note or "")[:500],
            repeats=repeats,
            actor=actor,
        )
        ReceivedOrder.objects.create(
            clinic=clinic,
            prescription=prescription,
            message_id=order.message_id,
            short_form_id=order.short_form_id,
            long_form_id=order.long_form_id,
            item_numbers=[item.item_number for item in order.items],
        )
    return prescription


def order_cancel_target(*, clinic: Clinic, bundle: Json) -> tuple[int, str]:
    """The prescription a checked prescription-order-update cancels, and the reason given.

    Scriptline cancels whole prescriptions: the update must name every item of it.
    """
    request_entries = _request_entries(bundle)
    requests = [bundle["entry"][index]["resource"] for index in request_entries]
    first = f"Bundle.entry[{request_entries[0]}].resource"
    short_form_ids = {request["groupIdentifier"]["value"] for request in requests}
    if len(short_form_ids) != 1:
        raise MessageInvalid(
            [Issue("invalid", f"{first}.groupIdentifier", "Every item must name the same prescription.")]
        )
    received = (
        ReceivedOrder.objects.filter(clinic=clinic, short_form_id=short_form_ids.pop())
        .values("prescription_id", "item_numbers")
        .first()
    )
    if received is None:
        # The same words for "absent" and "another clinic's".
        raise NotFound("No prescription with this ID was received from this clinic.", code="not-found")
    named = {_item_number(request) for request in requests}
    if named != set(received["item_numbers"]):
        raise MessageInvalid(
            [
                Issue(
                    "not-supported",
                    f"{first}.identifier",
                    f"Scriptline cancels whole prescriptions: name all {len(received['item_numbers'])} "
                    f"items of the prescription (this update names {len(named & set(received['item_numbers']))} "
                    "of them).",
                )
            ]
        )
    coding = requests[0]["statusReason"]["coding"][0]
    reason = f"Cancelled by the prescriber: {coding.get('display') or coding.get('code')}"
    return received["prescription_id"], reason[:500]


# --- Matching -------------------------------------------------------------------------------------


def _prescriber(clinic: Clinic, bundle: Json, issues: list[Issue]) -> Prescriber | None:
    index, practitioner = _first_of(bundle, "Practitioner")
    body, number = validation.registration(practitioner) or ("", "")
    prescriber = Prescriber.objects.filter(
        clinic=clinic, registration_body=body, registration_number=number
    ).first()
    if prescriber is None:
        issues.append(
            Issue(
                "not-found",
                f"Bundle.entry[{index}].resource.identifier",
                f"No prescriber with this {body} number is registered for this clinic.",
            )
        )
    return prescriber


def _check_organisation(clinic: Clinic, bundle: Json, issues: list[Issue]) -> None:
    index, organisation = _first_of(bundle, "Organization")
    if clinic.ods_code and validation.ods_code(organisation) != clinic.ods_code.strip().upper():
        issues.append(
            Issue(
                "business-rule",
                f"Bundle.entry[{index}].resource.identifier",
                "The prescribing organisation's ODS code is not this clinic's.",
            )
        )


def _patient_details(patient: eps.Patient, bundle: Json, issues: list[Issue]) -> dict[str, Any] | None:
    index, _resource = _first_of(bundle, "Patient")
    where = f"Bundle.entry[{index}].resource"
    phone = next((contact.value for contact in patient.telecom if contact.system == "phone"), "")
    details: dict[str, Any] = {
        "nhs_number": patient.nhs_number,
        "given_name": " ".join(patient.name.given),
        "family_name": patient.name.family,
        "birth_date": patient.birth_date,
        "sex": patient.gender if patient.gender in GENDERS else Sex.UNKNOWN,
        "address_line": ", ".join(patient.address.lines),
        "city": patient.address.city or "",
        "region": patient.address.district or "",
        "postal_code": patient.address.postal_code or "",
        "phone": phone,
    }
    found = len(issues)
    for name, element, limit in (
        ("given_name", "name.given", 100),
        ("family_name", "name.family", 100),
        ("address_line", "address.line", 200),
        ("city", "address.city", 100),
        ("region", "address.district", 50),
        ("postal_code", "address.postalCode", 20),
        ("phone", "telecom", 30),
    ):
        if len(details[name]) > limit:
            issues.append(Issue("value", f"{where}.{element}", f"At most {limit} characters."))
    if patient.birth_date > timezone.localdate():
        issues.append(Issue("value", f"{where}.birthDate", "Cannot be in the future."))
    return details if len(issues) == found else None


def _patient(clinic: Clinic, details: dict[str, Any], actor: str) -> Patient:
    existing = (
        Patient.objects.filter(clinic=clinic, nhs_number_index=nhs_number_index(details["nhs_number"]))
        .order_by("pk")
        .first()
    )
    if existing is not None:
        return existing
    return patient_create(clinic=clinic, actor=actor, **details)


def _formulary_medications(order: eps.PrescriptionOrder) -> dict[str, Medication]:
    codes = {item.medication.code for item in order.items}
    return {
        medication.code: medication
        for medication in Medication.objects.filter(code_system=eps.SNOMED, code__in=codes, is_active=True)
    }


def _items(
    order: eps.PrescriptionOrder,
    request_entries: list[int],
    medications: dict[str, Medication],
    issues: list[Issue],
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    listed: list[dict[str, Any]] = []
    unlisted: list[dict[str, Any]] = []
    for line, (item, index) in enumerate(zip(order.items, request_entries, strict=True), start=1):
        where = f"Bundle.entry[{index}].resource"
        dose_text = "; ".join(dosage.text for dosage in item.dosage)
        quantity = item.quantity.value
        days = item.expected_supply_days or 0
        details = {
            "dose_text": dose_text,
            "quantity": quantity,
            "unit": item.quantity.unit,
            "days_supply": days,
        }
        for problem in (
            len(dose_text) > 300 and Issue("value", f"{where}.dosageInstruction", "At most 300 characters."),
            len(item.quantity.unit) > 30
            and Issue("value", f"{where}.dispenseRequest.quantity.unit", "At most 30 characters."),
            not (quantity.is_finite() and Decimal("0.01") <= quantity <= MAX_QUANTITY)
            and Issue("value", f"{where}.dispenseRequest.quantity.value", f"Must be 0.01 to {MAX_QUANTITY}."),
            not 1 <= days <= MAX_DAYS_SUPPLY
            and Issue(
                "value",
                f"{where}.dispenseRequest.expectedSupplyDuration.value",
                f"Must be 1 to {MAX_DAYS_SUPPLY} days.",
            ),
            len(item.medication.code) > 40
            and Issue("value", f"{where}.medicationCodeableConcept.coding[0].code", "At most 40 characters."),
        ):
            if problem:
                issues.append(problem)
        if not issues:
            details["quantity"] = quantity.quantize(Decimal("0.01"))
        medication = medications.get(item.medication.code)
        if medication is not None:
            words = item.controlled_drug.quantity_words if item.controlled_drug else None
            listed.append({**details, "medication": medication, "quantity_words": (words or "")[:200]})
        else:
            unlisted.append(
                {
                    **details,
                    "line": line,
                    "code_system": item.medication.system,
                    "code": item.medication.code,
                    "display": (item.medication.display or "")[:200],
                }
            )
    return listed, unlisted


# --- Reading the Bundle ---------------------------------------------------------------------------


def _request_entries(bundle: Json) -> list[int]:
    return [
        index
        for index, entry in enumerate(bundle["entry"])
        if entry["resource"].get("resourceType") == "MedicationRequest"
    ]


def _first_of(bundle: Json, resource_type: str) -> tuple[int, Json]:
    return next(
        (index, entry["resource"])
        for index, entry in enumerate(bundle["entry"])
        if entry["resource"].get("resourceType") == resource_type
    )


def _item_number(request: Json) -> str:
    return next(
        str(identifier["value"])
        for identifier in request.get("identifier") or []
        if identifier.get("system") == eps.PRESCRIPTION_ORDER_ITEM_NUMBER_SYSTEM
    )


def _decode_issue(error: EpsDecodeError) -> Issue:
    element, _, message = str(error).partition(": ")
    resource, dot, rest = element.partition(".")
    expression = element if resource == "Bundle" else f"Bundle.entry.resource.ofType({resource}){dot}{rest}"
    return Issue("invalid", expression, message or str(error))


def item_lines(prescription: Prescription) -> list[PrescriptionItem | OffFormularyItem]:
    """The prescription's items in line order: off-formulary items keep the line they arrived
    on, listed items fill the others in the order they were created."""
    unlisted = {item.line: item for item in prescription.off_formulary_items.all()}
    listed = iter(prescription.items.all())
    total = len(unlisted) + len(prescription.items.all())
    return [unlisted[line] if line in unlisted else next(listed) for line in range(1, total + 1)]
