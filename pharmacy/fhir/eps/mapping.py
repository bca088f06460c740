"""Our GB prescription as an EPS `PrescriptionOrder`.

A pure function of the objects it is given (it reads attributes already loaded and never
queries the database). Everything EPS needs and we do not hold is refused here, with the
element named and no patient data, so the dispatch dead-letters it for staff to fix the
record and replay:

* the patient's NHS number (EPS identifies patients by it) and address;
* the clinic's ODS code, work telephone, structured address and, for a primary-care
  prescription, its managing organisation (EPS bundle-validator.ts,
  checkPrimaryCarePrescriptionResources: ``organization.partOf``);
* the prescriber's SDS user ID, SDS role profile ID and SDS job role code, a GB professional
  registration, and a telephone (theirs or the clinic's);
* each product's dm+d unit of measure, and a Schedule 2 or 3 drug's quantity in words.

Course of therapy: an acute prescription is ``acute`` / intent ``order``; one with repeats is
repeat prescribing, ``continuous``, its first issue ``original-order`` and each repeat we
issue ``instance-order`` (EPS MedicationRequest.yaml, intent), with the UK Core repeat
information extension (issues so far and the review date). We issue repeats ourselves, so we
never send electronic repeat dispensing (``continuous-repeat-dispensing``), which the order
model and the decoder still read.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import TYPE_CHECKING

from pharmacy.fhir.common import FhirEncodingError, present, require
from pharmacy.fhir.eps import model
from pharmacy.fhir.eps.dosage import dosage_from_text
from pharmacy.fhir.eps.encode import EntryUrls
from pharmacy.fhir.eps.model import (
    Address,
    Coding,
    ContactPoint,
    ControlledDrug,
    CourseOfTherapy,
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
)

if TYPE_CHECKING:
    from patients.models import Clinic
    from patients.models import Patient as PatientRecord
    from prescriptions.models import Medication, Prescriber, Prescription, PrescriptionItem

# NHSBSA prescription types for primary care, by the prescriber's profession (EPS clinical
# prescription tracker, packages/clinicalView/src/schema/extensions.ts, prescriptionTypeExtension).
PRESCRIPTION_TYPES = {
    "GMC": Coding(model.PRESCRIPTION_TYPE_SYSTEM, "0101", "Primary Care Prescriber - Medical Prescriber"),
    "NMC": Coding(
        model.PRESCRIPTION_TYPE_SYSTEM,
        "0104",
        "Primary Care Prescriber - Nurse Independent/Supplementary prescriber",
    ),
    "GPhC": Coding(
        model.PRESCRIPTION_TYPE_SYSTEM,
        "0108",
        "Primary Care Prescriber - Pharmacist Independent/Supplementary prescriber",
    ),
}
# SDS job role names of the codes our prescribers hold (EPS examples: R8000).
SDS_JOB_ROLE_NAMES = {
    "R8000": "Clinical Practitioner Access Role",
    "R8003": "Health Professional Access Role",
}
COMMUNITY_PHARMACY = Coding(model.DISPENSING_SITE_PREFERENCE_SYSTEM, "P1", "Other (e.g. Community Pharmacy)")
# Item numbers are UUIDs fixed by the prescription's long-form ID and the item's key, so a
# replay names every line item the same way.
_ITEM_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "https://scriptline.example/eps/prescription-order-item")
_ENTRY_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "https://scriptline.example/fhir/bundle-entry")


@dataclass(frozen=True)
class RepeatContext:
    """Where a prescription stands in its repeat course (issue 1 is the original)."""

    issue_number: int
    authorisation_expires_on: date

    @classmethod
    def for_course(
        cls, *, origin: Prescription, origin_items: Sequence[PrescriptionItem], issue_number: int
    ) -> RepeatContext:
        """The review date is when the authorised course ends: every issue's supply used up."""
        interval = origin.repeat_interval_days or max(item.days_supply for item in origin_items)
        expires = origin.issued_on + timedelta(days=interval * (origin.repeats + 1))
        return cls(issue_number=issue_number, authorisation_expires_on=expires)


def entry_urls(message_id: str) -> EntryUrls:
    def url(role: str) -> str:
        return str(uuid.uuid5(_ENTRY_NAMESPACE, f"{message_id}:{role}"))

    return EntryUrls(
        header=url("message-header"),
        patient=url("patient"),
        role=url("practitioner-role"),
        practitioner=url("practitioner"),
        organisation=url("organization"),
    )


def order_from_prescription(
    prescription: Prescription,
    *,
    items: Sequence[PrescriptionItem],
    message_id: str,
    pharmacy_ods_code: str,
    timestamp: datetime,
    repeat: RepeatContext | None = None,
) -> PrescriptionOrder:
    if not items:
        raise FhirEncodingError("MedicationRequest: the prescription has no items")
    clinic = prescription.clinic
    long_form_id = str(
        require(prescription.eps_prescription_uuid, "MedicationRequest.groupIdentifier.extension")
    )
    supply_days = {item.days_supply for item in items}
    if repeat is None:
        course, intent, repeat_information = CourseOfTherapy.ACUTE, Intent.ORDER, None
    else:
        course = CourseOfTherapy.CONTINUOUS
        intent = Intent.ORIGINAL_ORDER if repeat.issue_number == 1 else Intent.INSTANCE_ORDER
        repeat_information = RepeatInformation(repeat.issue_number, repeat.authorisation_expires_on)
    return PrescriptionOrder(
        message_id=message_id,
        timestamp=timestamp,
        short_form_id=require(prescription.eps_prescription_id, "MedicationRequest.groupIdentifier.value"),
        long_form_id=long_form_id,
        prescription_type=_prescription_type(prescription.prescriber),
        course_of_therapy=course,
        intent=intent,
        repeat_information=repeat_information,
        category=model.COMMUNITY,
        dispensing_site_preference=COMMUNITY_PHARMACY,
        nominated_pharmacy=OrganisationReference(require(pharmacy_ods_code, "dispenseRequest.performer")),
        destination_endpoint=_directory_url(pharmacy_ods_code),
        # EPS: the validity period starts on the date the issue may first be dispensed.
        validity_start=prescription.earliest_fill_date
        or require(prescription.issued_on, "validityPeriod.start"),
        patient=_patient(prescription.patient),
        organisation=_organisation(clinic),
        practitioner=_practitioner(prescription.prescriber),
        role=_role(prescription.prescriber, clinic),
        items=tuple(
            # EPS wants one expected supply duration for the whole prescription: sent when the
            # items agree, left out (it is optional outside eRD) when they do not.
            _line_item(
                prescription,
                item,
                long_form_id,
                supply_days=item.days_supply if len(supply_days) == 1 else None,
            )
            for item in items
        ),
    )


# --- Line items ------------------------------------------------------------------------------


def _line_item(
    prescription: Prescription, item: PrescriptionItem, long_form_id: str, *, supply_days: int | None
) -> LineItem:
    if item.pk is None:
        raise FhirEncodingError("MedicationRequest.identifier: the item is not saved")
    medication = item.medication
    unit, unit_code = _unit_of_measure(item, medication)
    return LineItem(
        item_number=str(uuid.uuid5(_ITEM_NAMESPACE, f"{long_form_id}:{item.pk}")),
        medication=Coding(
            medication.code_system,
            medication.code,
            _join(medication.name, medication.strength, medication.form),
        ),
        quantity=Quantity(value=Decimal(str(item.quantity)), unit=unit, code=unit_code),
        dosage=(
            dosage_from_text(
                require(item.dose_text, "MedicationRequest.dosageInstruction.text"),
                unit=unit,
                unit_code=unit_code,
            ),
        ),
        expected_supply_days=supply_days,
        controlled_drug=_controlled_drug(item, medication),
        note=prescription.note if present(prescription.note) else None,
    )


def _unit_of_measure(item: PrescriptionItem, medication: Medication) -> tuple[str, str]:
    element = "MedicationRequest.dispenseRequest.quantity"
    code = require(medication.unit_of_measure_code, f"{element}.code (the product's dm+d unit of measure)")
    if _singular(item.unit) != _singular(medication.unit):
        raise FhirEncodingError(
            f"{element}.unit: {item.unit!r} is not the product's dm+d unit {medication.unit!r}"
        )
    return medication.unit, code


def _singular(unit: str) -> str:
    return unit.strip().lower().removesuffix("s")


def _controlled_drug(item: PrescriptionItem, medication: Medication) -> ControlledDrug | None:
    schedule = medication.schedule_in("GB")
    if not schedule:
        return None
    words = item.quantity_words.strip() if present(item.quantity_words) else None
    # Misuse of Drugs Regulations 2001, reg. 15: a Schedule 2 or 3 prescription states the
    # total quantity in words; the pharmacy may not supply without it.
    if schedule[0] in "23" and words is None:
        raise FhirEncodingError(
            f"MedicationRequest.extension(ControlledDrug).quantityWords: missing for a Schedule {schedule} drug"
        )
    coding = Coding(model.CONTROLLED_DRUG_SYSTEM, f"CD{schedule[0]}", f"Schedule {schedule[0]}")
    return ControlledDrug(schedule=coding, quantity_words=words)


# --- Participants ----------------------------------------------------------------------------


def _patient(patient: PatientRecord) -> Patient:
    nhs_number = "".join(patient.nhs_number.split()) if present(patient.nhs_number) else ""
    if not nhs_number:
        raise FhirEncodingError(
            "Patient.identifier: an NHS number is required (EPS identifies patients by it)"
        )
    lines = tuple(line for line in (patient.address_line, patient.city, patient.region) if present(line))
    if not lines or not present(patient.postal_code):
        raise FhirEncodingError("Patient.address: an address line and a postcode are required")
    telecom: tuple[ContactPoint, ...] = ()
    if present(patient.phone):
        # EPS takes telephone numbers only: an email address would be sent as tel:<email>.
        telecom = (ContactPoint(value=patient.phone, use=_phone_use(patient.phone)),)
    given = (patient.given_name,) if present(patient.given_name) else ()
    return Patient(
        nhs_number=nhs_number,
        name=HumanName(family=require(patient.family_name, "Patient.name.family"), given=given, use="usual"),
        gender=patient.sex,
        birth_date=require(patient.birth_date, "Patient.birthDate"),
        address=Address(lines=lines, postal_code=patient.postal_code, use="home"),
        telecom=telecom,
    )


def _phone_use(phone: str) -> str:
    digits = "".join(character for character in phone if character.isdigit())
    return "mobile" if digits.startswith(("07", "447")) else "home"


def _prescription_type(prescriber: Prescriber) -> Coding:
    coding = PRESCRIPTION_TYPES.get(prescriber.registration_body)
    if coding is None:
        raise FhirEncodingError(
            f"MedicationRequest.extension(PrescriptionType): registration body "
            f"{prescriber.registration_body!r} is not a GB prescribing profession"
        )
    return coding


def _practitioner(prescriber: Prescriber) -> Practitioner:
    system = model.PROFESSIONAL_CODE_SYSTEMS.get(prescriber.registration_body)
    if system is None:
        raise FhirEncodingError("Practitioner.identifier: no GB professional code (GMC, NMC or GPhC)")
    return Practitioner(
        identifiers=(
            Identifier(
                model.SDS_USER_ID_SYSTEM,
                require(prescriber.sds_user_id, "Practitioner.identifier (SDS user ID)"),
            ),
            Identifier(
                system, require(prescriber.registration_number, "Practitioner.identifier (professional code)")
            ),
        ),
        name=HumanName(
            family=require(prescriber.family_name, "Practitioner.name.family"),
            given=(prescriber.given_name,) if present(prescriber.given_name) else (),
        ),
    )


def _role(prescriber: Prescriber, clinic: Clinic) -> PractitionerRole:
    job_role = require(prescriber.sds_job_role_code, "PractitionerRole.code (SDS job role code)")
    phone = prescriber.phone if present(prescriber.phone) else clinic.phone
    return PractitionerRole(
        identifiers=(
            Identifier(
                model.SDS_ROLE_PROFILE_ID_SYSTEM,
                require(prescriber.sds_role_profile_id, "PractitionerRole.identifier (SDS role profile ID)"),
            ),
        ),
        job_role=(
            Coding(model.SDS_JOB_ROLE_CODE_SYSTEM, job_role, SDS_JOB_ROLE_NAMES.get(job_role.split(":")[-1])),
        ),
        telecom=(ContactPoint(value=require(phone, "PractitionerRole.telecom"), use="work"),),
    )


def _organisation(clinic: Clinic) -> Organisation:
    if not present(clinic.address_line) or not present(clinic.postal_code):
        raise FhirEncodingError("Organization.address: an address line and a postcode are required")
    if not present(clinic.managing_organisation_ods_code):
        raise FhirEncodingError(
            "Organization.partOf: a primary-care prescriber's managing organisation is required"
        )
    part_of = OrganisationReference(
        clinic.managing_organisation_ods_code,
        require(clinic.managing_organisation_name, "Organization.partOf.display"),
    )
    return Organisation(
        ods_code=require(clinic.ods_code, "Organization.identifier (ODS code)"),
        name=require(clinic.name, "Organization.name"),
        telecom=(ContactPoint(value=require(clinic.phone, "Organization.telecom"), use="work"),),
        address=Address(
            lines=(clinic.address_line,),
            city=clinic.city or None,
            district=clinic.district or None,
            postal_code=clinic.postal_code,
            use="work",
            type="both",
        ),
        part_of=part_of,
    )


def _directory_url(ods_code: str) -> str:
    return f"https://directory.spineservices.nhs.uk/STU3/Organization/{ods_code}"


def _join(*parts: str) -> str | None:
    return " ".join(part for part in parts if present(part)) or None
