"""Read an NHS EPS prescription-order message Bundle into a `PrescriptionOrder`.

The inverse of encode.py: what we send, we could also accept. The decoder needs what EPS
needs (its translation to HL7v3 fails without it: NHS number, short- and long-form
prescription IDs, prescription type, course of therapy, dm+d medication codes, quantities
with units) and refuses a message whose MedicationRequests disagree on a value EPS requires
to be the same on all of them (bundle-validator.ts, verifyIdenticalForAllMedicationRequests)
or that the order holds once (intent, course of therapy: a mixture of acute and continuous
items, which EPS accepts as acute, is refused here).
Elements the order does not model (a Provenance signature, a responsible-practitioner
extension, endorsements) are ignored.

Errors name the element, never its value: a message carries patient data.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import date, datetime
from decimal import Decimal, InvalidOperation
from typing import Any, TypeVar

from pharmacy.fhir.eps import model
from pharmacy.fhir.eps.model import (
    Address,
    BasedOn,
    Coding,
    ContactPoint,
    ControlledDrug,
    CourseOfTherapy,
    Dosage,
    HumanName,
    Identifier,
    Intent,
    LineItem,
    Organisation,
    OrganisationReference,
    Patient,
    Practitioner,
    PractitionerRole,
    PrescriptionOrder,
    Quantity,
    RepeatInformation,
    Timing,
)

Json = dict[str, Any]
_T = TypeVar("_T")
_E = TypeVar("_E", CourseOfTherapy, Intent)

# What every MedicationRequest of one message must agree on (EPS bundle-validator.ts).
SHARED_ELEMENTS: tuple[tuple[str, Callable[[Json], Any]], ...] = (
    ("intent", lambda request: request.get("intent")),
    ("category", lambda request: request.get("category")),
    ("requester", lambda request: request.get("requester")),
    ("subject", lambda request: request.get("subject")),
    ("groupIdentifier", lambda request: request.get("groupIdentifier")),
    ("courseOfTherapyType", lambda request: request.get("courseOfTherapyType")),
    ("dispenseRequest.performer", lambda request: _dispense(request).get("performer")),
    ("dispenseRequest.validityPeriod", lambda request: _dispense(request).get("validityPeriod")),
    (
        "dispenseRequest.numberOfRepeatsAllowed",
        lambda request: _dispense(request).get("numberOfRepeatsAllowed"),
    ),
    (
        f'dispenseRequest.extension("{model.PERFORMER_SITE_TYPE_URL}")',
        lambda request: _extension(_dispense(request), model.PERFORMER_SITE_TYPE_URL),
    ),
    (
        f'extension("{model.PRESCRIPTION_TYPE_URL}")',
        lambda request: _extension(request, model.PRESCRIPTION_TYPE_URL),
    ),
    (
        f'extension("{model.REPEAT_INFORMATION_URL}")',
        lambda request: _extension(request, model.REPEAT_INFORMATION_URL),
    ),
)


class EpsDecodeError(ValueError):
    """The message is not a prescription-order this profile can read."""


def bundle_to_order(bundle: Json) -> PrescriptionOrder:
    if (
        not isinstance(bundle, dict)
        or bundle.get("resourceType") != "Bundle"
        or bundle.get("type") != "message"
    ):
        raise EpsDecodeError("Bundle: not a FHIR message Bundle")
    entries = _entries(bundle)
    header = _resource_at(entries, 0, "MessageHeader")
    if _get(header, "eventCoding", "code") != "prescription-order":
        raise EpsDecodeError("MessageHeader.eventCoding.code: not prescription-order")
    by_url = {entry.get("fullUrl"): entry.get("resource") for entry in entries}
    requests = [
        entry["resource"] for entry in entries if entry["resource"].get("resourceType") == "MedicationRequest"
    ]
    if not requests:
        raise EpsDecodeError("MedicationRequest: none in the message")
    _check_shared(requests)
    first = requests[0]
    role_resource = _resolve(
        by_url, first.get("requester"), "PractitionerRole", "MedicationRequest.requester"
    )
    practitioner_resource = _resolve(
        by_url, role_resource.get("practitioner"), "Practitioner", "PractitionerRole.practitioner"
    )
    organisation_resource = _resolve(
        by_url, role_resource.get("organization"), "Organization", "PractitionerRole.organization"
    )
    patient_resource = _resolve(by_url, first.get("subject"), "Patient", "MedicationRequest.subject")
    short_form_id, long_form_id = _prescription_ids(first)
    dispense = _dispense(first)
    validity = dispense.get("validityPeriod") or {}
    destination = (header.get("destination") or [{}])[0]
    return PrescriptionOrder(
        message_id=_identifier_value(
            [bundle.get("identifier")], model.MESSAGE_ID_SYSTEM, "Bundle.identifier"
        ),
        bundle_id=bundle.get("id"),
        timestamp=_optional(bundle.get("timestamp"), _datetime, "Bundle.timestamp"),
        short_form_id=short_form_id,
        long_form_id=long_form_id,
        prescription_type=_coding(
            _require(
                _extension(first, model.PRESCRIPTION_TYPE_URL),
                "MedicationRequest.extension(PrescriptionType)",
            ).get("valueCoding"),
            "MedicationRequest.extension(PrescriptionType).valueCoding",
        ),
        course_of_therapy=_course_of_therapy(first),
        intent=_enum(Intent, first.get("intent"), "MedicationRequest.intent"),
        category=_coding(
            _first_coding(first.get("category"), "MedicationRequest.category"), "MedicationRequest.category"
        ),
        dispensing_site_preference=_coding(
            _require(
                _extension(dispense, model.PERFORMER_SITE_TYPE_URL),
                "MedicationRequest.dispenseRequest.extension(PerformerSiteType)",
            ).get("valueCoding"),
            "MedicationRequest.dispenseRequest.extension(PerformerSiteType).valueCoding",
        ),
        nominated_pharmacy=_nominated_pharmacy(dispense, destination),
        validity_start=_optional(
            validity.get("start"), _date, "MedicationRequest.dispenseRequest.validityPeriod.start"
        ),
        validity_end=_optional(
            validity.get("end"), _datetime, "MedicationRequest.dispenseRequest.validityPeriod.end"
        ),
        number_of_repeats_allowed=_optional(
            dispense.get("numberOfRepeatsAllowed"),
            _integer,
            "MedicationRequest.dispenseRequest.numberOfRepeatsAllowed",
        ),
        repeat_information=_repeat_information(first),
        patient=_patient(patient_resource),
        practitioner=_practitioner(practitioner_resource),
        role=_role(role_resource),
        organisation=_organisation(organisation_resource),
        items=tuple(_line_item(request, index) for index, request in enumerate(requests)),
        sender=_optional_reference(header.get("sender"), "MessageHeader.sender"),
        source_endpoint=_get(header, "source", "endpoint"),
        destination_endpoint=destination.get("endpoint"),
    )


# --- Message level ---------------------------------------------------------------------------


def _entries(bundle: Json) -> list[Json]:
    entries = bundle.get("entry")
    if not isinstance(entries, list) or not entries:
        raise EpsDecodeError("Bundle.entry: missing")
    for index, entry in enumerate(entries):
        if not isinstance(entry, dict) or not isinstance(entry.get("resource"), dict):
            raise EpsDecodeError(f"Bundle.entry[{index}].resource: missing")
    return entries


def _resource_at(entries: list[Json], index: int, resource_type: str) -> Json:
    resource = entries[index]["resource"]
    if resource.get("resourceType") != resource_type:
        raise EpsDecodeError(f"Bundle.entry[{index}]: expected a {resource_type}")
    return resource


def _resolve(by_url: dict[Any, Any], reference: Any, resource_type: str, element: str) -> Json:
    target = by_url.get(reference.get("reference")) if isinstance(reference, dict) else None
    if not isinstance(target, dict) or target.get("resourceType") != resource_type:
        raise EpsDecodeError(f"{element}: must reference a {resource_type} in the Bundle")
    return target


def _check_shared(requests: list[Json]) -> None:
    for element, read in SHARED_ELEMENTS:
        values = [read(request) for request in requests]
        if any(value != values[0] for value in values[1:]):
            raise EpsDecodeError(f"MedicationRequest.{element}: differs between MedicationRequests")


def _prescription_ids(request: Json) -> tuple[str, str]:
    group = _require(request.get("groupIdentifier"), "MedicationRequest.groupIdentifier")
    if group.get("system") != model.PRESCRIPTION_ORDER_NUMBER_SYSTEM:
        raise EpsDecodeError(
            "MedicationRequest.groupIdentifier.system: not the prescription-order-number system"
        )
    short_form_id = _require(group.get("value"), "MedicationRequest.groupIdentifier.value")
    long_form = _require(
        _extension(group, model.PRESCRIPTION_ID_URL),
        "MedicationRequest.groupIdentifier.extension(PrescriptionId)",
    )
    long_form_id = _identifier_value(
        [long_form.get("valueIdentifier")],
        model.PRESCRIPTION_LONG_FORM_ID_SYSTEM,
        "MedicationRequest.groupIdentifier.extension(PrescriptionId).valueIdentifier",
    )
    return short_form_id, long_form_id


def _course_of_therapy(request: Json) -> CourseOfTherapy:
    coding = _first_coding(request.get("courseOfTherapyType"), "MedicationRequest.courseOfTherapyType")
    return _enum(CourseOfTherapy, coding.get("code"), "MedicationRequest.courseOfTherapyType.coding.code")


def _nominated_pharmacy(dispense: Json, destination: Json) -> OrganisationReference | None:
    performer = dispense.get("performer")
    if performer is None:
        return None
    ods = _identifier_value(
        [performer.get("identifier")], model.ODS_SYSTEM, "MedicationRequest.dispenseRequest.performer"
    )
    receiver = destination.get("receiver") or {}
    display = receiver.get("display") if _get(receiver, "identifier", "value") == ods else None
    return OrganisationReference(ods, display)


def _repeat_information(request: Json) -> RepeatInformation | None:
    extension = _extension(request, model.REPEAT_INFORMATION_URL)
    if extension is None:
        return None
    element = "MedicationRequest.extension(MedicationRepeatInformation)"
    return RepeatInformation(
        number_of_prescriptions_issued=_optional(
            _sub_value(extension, "numberOfPrescriptionsIssued", "valueUnsignedInt"), _integer, element
        ),
        authorisation_expiry_date=_optional(
            _sub_value(extension, "authorisationExpiryDate", "valueDateTime"), _date, element
        ),
    )


# --- Line items ------------------------------------------------------------------------------


def _line_item(request: Json, index: int) -> LineItem:
    where = f"MedicationRequest[{index}]"
    if "medicationReference" in request:
        raise EpsDecodeError(f"{where}.medicationReference: not supported (use medicationCodeableConcept)")
    medication = _coding(
        _first_coding(request.get("medicationCodeableConcept"), f"{where}.medication"), where
    )
    if medication.system != model.SNOMED:
        raise EpsDecodeError(f"{where}.medicationCodeableConcept.coding.system: not {model.SNOMED}")
    dispense = _dispense(request)
    quantity = _quantity(_require(dispense.get("quantity"), f"{where}.dispenseRequest.quantity"), where)
    dosages = request.get("dosageInstruction") or []
    if not dosages:
        raise EpsDecodeError(f"{where}.dosageInstruction: missing")
    notes = request.get("note") or []
    return LineItem(
        item_number=_identifier_value(
            request.get("identifier") or [],
            model.PRESCRIPTION_ORDER_ITEM_NUMBER_SYSTEM,
            f"{where}.identifier",
        ),
        medication=medication,
        quantity=quantity,
        dosage=tuple(_dosage(dosage, f"{where}.dosageInstruction[{i}]") for i, dosage in enumerate(dosages)),
        expected_supply_days=_supply_days(dispense.get("expectedSupplyDuration"), where),
        controlled_drug=_controlled_drug(request),
        note=notes[0].get("text") if notes else None,
        based_on=_based_on(request.get("basedOn"), where),
    )


def _quantity(quantity: Json, where: str) -> Quantity:
    return Quantity(
        value=_decimal(quantity.get("value"), f"{where}.dispenseRequest.quantity.value"),
        unit=_require(quantity.get("unit"), f"{where}.dispenseRequest.quantity.unit"),
        system=quantity.get("system"),
        code=quantity.get("code"),
    )


def _supply_days(duration: Json | None, where: str) -> int | None:
    if duration is None:
        return None
    if duration.get("code") != "d":
        raise EpsDecodeError(f"{where}.dispenseRequest.expectedSupplyDuration.code: must be d (days)")
    return _integer(duration.get("value"), f"{where}.dispenseRequest.expectedSupplyDuration.value")


def _dosage(dosage: Json, where: str) -> Dosage:
    repeat = _get(dosage, "timing", "repeat")
    timing = None
    if repeat and {"frequency", "period", "periodUnit"} <= set(repeat):
        timing = Timing(
            frequency=_integer(repeat["frequency"], f"{where}.timing.repeat.frequency"),
            period=_decimal(repeat["period"], f"{where}.timing.repeat.period"),
            period_unit=repeat["periodUnit"],
        )
    dose = None
    dose_quantity = _get((dosage.get("doseAndRate") or [{}])[0], "doseQuantity")
    if dose_quantity:
        dose = Quantity(
            value=_decimal(dose_quantity.get("value"), f"{where}.doseAndRate.doseQuantity.value"),
            unit=_require(dose_quantity.get("unit"), f"{where}.doseAndRate.doseQuantity.unit"),
            system=dose_quantity.get("system"),
            code=dose_quantity.get("code"),
        )
    route = dosage.get("route")
    return Dosage(
        text=_require(dosage.get("text"), f"{where}.text"),
        sequence=_optional(dosage.get("sequence"), _integer, f"{where}.sequence"),
        timing=timing,
        dose=dose,
        route=_coding(_first_coding(route, f"{where}.route"), f"{where}.route") if route else None,
    )


def _controlled_drug(request: Json) -> ControlledDrug | None:
    extension = _extension(request, model.CONTROLLED_DRUG_URL)
    if extension is None:
        return None
    schedule = _sub_value(extension, "schedule", "valueCoding")
    return ControlledDrug(
        schedule=_coding(schedule, "MedicationRequest.extension(ControlledDrug).schedule")
        if schedule
        else None,
        quantity_words=_sub_value(extension, "quantityWords", "valueString"),
    )


def _based_on(based_on: list[Json] | None, where: str) -> BasedOn | None:
    if not based_on:
        return None
    reference = based_on[0]
    repeat = _extension(reference, model.EPS_REPEAT_INFORMATION_URL) or {}
    allowed = _sub_value(repeat, "numberOfRepeatsAllowed", "valueUnsignedInt", "valueInteger")
    issued = _sub_value(repeat, "numberOfRepeatsIssued", "valueUnsignedInt", "valueInteger")
    return BasedOn(
        item_number=_identifier_value(
            [reference.get("identifier")], model.PRESCRIPTION_ORDER_ITEM_NUMBER_SYSTEM, f"{where}.basedOn"
        ),
        number_of_repeats_allowed=_optional(allowed, _integer, f"{where}.basedOn"),
        number_of_repeats_issued=_optional(issued, _integer, f"{where}.basedOn"),
    )


# --- Participants ----------------------------------------------------------------------------


def _patient(patient: Json) -> Patient:
    addresses = patient.get("address") or []
    if not addresses:
        raise EpsDecodeError("Patient.address: missing")
    return Patient(
        nhs_number=_identifier_value(
            patient.get("identifier") or [], model.NHS_NUMBER_SYSTEM, "Patient.identifier"
        ),
        name=_name(_first(patient.get("name"), "Patient.name"), "Patient.name"),
        gender=_require(patient.get("gender"), "Patient.gender"),
        birth_date=_date(patient.get("birthDate"), "Patient.birthDate"),
        address=_address(addresses[0]),
        telecom=_telecom(patient.get("telecom"), "Patient.telecom"),
        general_practitioner_ods=_get((patient.get("generalPractitioner") or [{}])[0], "identifier", "value"),
    )


def _practitioner(practitioner: Json) -> Practitioner:
    return Practitioner(
        identifiers=_identifiers(practitioner.get("identifier"), "Practitioner.identifier"),
        name=_name(_first(practitioner.get("name"), "Practitioner.name"), "Practitioner.name"),
        telecom=_telecom(practitioner.get("telecom"), "Practitioner.telecom"),
    )


def _role(role: Json) -> PractitionerRole:
    codes = role.get("code") or [{}]
    return PractitionerRole(
        identifiers=_identifiers(role.get("identifier"), "PractitionerRole.identifier"),
        job_role=tuple(_coding(coding, "PractitionerRole.code") for coding in codes[0].get("coding") or []),
        telecom=_telecom(role.get("telecom"), "PractitionerRole.telecom"),
    )


def _organisation(organisation: Json) -> Organisation:
    addresses = organisation.get("address") or []
    if not addresses:
        raise EpsDecodeError("Organization.address: missing")
    types = organisation.get("type") or [{}]
    return Organisation(
        ods_code=_identifier_value(
            organisation.get("identifier") or [], model.ODS_SYSTEM, "Organization.identifier"
        ),
        name=_require(organisation.get("name"), "Organization.name"),
        telecom=_telecom(organisation.get("telecom"), "Organization.telecom"),
        address=_address(addresses[0]),
        part_of=_optional_reference(organisation.get("partOf"), "Organization.partOf"),
        types=tuple(_coding(coding, "Organization.type") for coding in types[0].get("coding") or []),
    )


# --- Datatypes -------------------------------------------------------------------------------


def _dispense(request: Json) -> Json:
    return request.get("dispenseRequest") or {}


def _extension(element: Json, url: str) -> Json | None:
    return next(
        (e for e in element.get("extension") or [] if isinstance(e, dict) and e.get("url") == url), None
    )


def _sub_value(extension: Json, url: str, *value_keys: str) -> Any:
    part = _extension(extension, url)
    if part is None:
        return None
    return next((part[key] for key in value_keys if key in part), None)


def _get(element: Any, *keys: str) -> Any:
    for key in keys:
        if not isinstance(element, dict):
            return None
        element = element.get(key)
    return element


def _first(values: Any, element: str) -> Json:
    if not isinstance(values, list) or not values or not isinstance(values[0], dict):
        raise EpsDecodeError(f"{element}: missing")
    return values[0]


def _first_coding(concept: Any, element: str) -> Json:
    if isinstance(concept, list):
        concept = concept[0] if concept else None
    return _first(_get(concept, "coding"), f"{element}.coding")


def _coding(coding: Any, element: str) -> Coding:
    if not isinstance(coding, dict) or not coding.get("system") or not coding.get("code"):
        raise EpsDecodeError(f"{element}: needs a system and a code")
    return Coding(coding["system"], str(coding["code"]), coding.get("display"))


def _identifiers(identifiers: Any, element: str) -> tuple[Identifier, ...]:
    result = []
    for identifier in identifiers or []:
        if not isinstance(identifier, dict) or not identifier.get("system") or not identifier.get("value"):
            raise EpsDecodeError(f"{element}: needs a system and a value")
        result.append(Identifier(identifier["system"], str(identifier["value"])))
    return tuple(result)


def _identifier_value(identifiers: list[Any], system: str, element: str) -> str:
    value = next(
        (i.get("value") for i in identifiers if isinstance(i, dict) and i.get("system") == system), None
    )
    if not value:
        raise EpsDecodeError(f"{element}: no identifier with system {system}")
    return str(value)


def _optional_reference(reference: Any, element: str) -> OrganisationReference | None:
    if not isinstance(reference, dict) or "identifier" not in reference:
        return None
    return OrganisationReference(
        _identifier_value([reference["identifier"]], model.ODS_SYSTEM, element), reference.get("display")
    )


def _name(name: Json, element: str) -> HumanName:
    return HumanName(
        family=_require(name.get("family"), f"{element}.family"),
        given=tuple(name.get("given") or ()),
        prefix=tuple(name.get("prefix") or ()),
        use=name.get("use"),
    )


def _address(address: Json) -> Address:
    return Address(
        lines=tuple(address.get("line") or ()),
        city=address.get("city"),
        district=address.get("district"),
        postal_code=address.get("postalCode"),
        use=address.get("use"),
        type=address.get("type"),
    )


def _telecom(contacts: Any, element: str) -> tuple[ContactPoint, ...]:
    result = []
    for index, contact in enumerate(contacts or []):
        where = f"{element}[{index}]"
        result.append(
            ContactPoint(
                value=_require(_get(contact, "value"), f"{where}.value"),
                use=_require(_get(contact, "use"), f"{where}.use"),
                system=_require(_get(contact, "system"), f"{where}.system"),
            )
        )
    return tuple(result)


def _require(value: _T | None, element: str) -> _T:
    if value is None or (isinstance(value, str) and not value.strip()):
        raise EpsDecodeError(f"{element}: missing")
    return value


def _optional(value: Any, parse: Callable[[Any, str], _T], element: str) -> _T | None:
    return None if value is None else parse(value, element)


def _enum(kind: type[_E], value: Any, element: str) -> _E:
    try:
        return kind(value)
    except ValueError:
        raise EpsDecodeError(f"{element}: not one of {', '.join(member.value for member in kind)}") from None


def _integer(value: Any, element: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise EpsDecodeError(f"{element}: not an integer")
    try:
        return int(value)
    except ValueError:
        raise EpsDecodeError(f"{element}: not an integer") from None


def _decimal(value: Any, element: str) -> Decimal:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise EpsDecodeError(f"{element}: not a number")
    try:
        return Decimal(str(value))
    except InvalidOperation:
        raise EpsDecodeError(f"{element}: not a number") from None


def _date(value: Any, element: str) -> date:
    try:
        return date.fromisoformat(str(value)[:10])
    except ValueError:
        raise EpsDecodeError(f"{element}: not a date") from None


def _datetime(value: Any, element: str) -> datetime:
    try:
        parsed = datetime.fromisoformat(str(value))
    except ValueError:
        raise EpsDecodeError(f"{element}: not a date-time") from None
    if parsed.tzinfo is None:
        raise EpsDecodeError(f"{element}: needs a time zone")
    return parsed
