from __future__ import annotations

from datetime import date
from typing import Any

from django.db import connection, transaction
from django.utils import timezone
from oauth2_provider.models import AccessToken, RefreshToken

from common.errors import Conflict, InvalidInput
from events.services import event_record
from patients.models import Allergy, Clinic, ClinicClient, CurrentMedication, Diagnosis, Observation, Patient
from patients.phi import INDEX_FIELDS, PHI_FIELDS, blind_indexes
from patients.selectors import patient_registered_already


@transaction.atomic
def patient_create(
    *,
    clinic: Clinic,
    given_name: str,
    family_name: str,
    birth_date: date,
    allergies: list[dict[str, Any]] | None = None,
    current_medications: list[dict[str, Any]] | None = None,
    clinical_context: dict[str, Any] | None = None,
    actor: str = "",
    **details: Any,
) -> Patient:
    if clinical_context:
        details = {**details, **clinical_context, "clinical_context_updated_on": timezone.localdate()}
    indexes = blind_indexes(
        nhs_number=details.get("nhs_number", ""),
        email=details.get("email", ""),
        phone=details.get("phone", ""),
        family_name=family_name,
        birth_date=birth_date,
        given_name=given_name,
    )
    _refuse_a_second_record(clinic=clinic, indexes=indexes)
    patient = Patient.objects.create(
        clinic=clinic,
        given_name=given_name,
        family_name=family_name,
        birth_date=birth_date,
        **details,
        **indexes,
    )
    Allergy.objects.bulk_create(Allergy(patient=patient, **item) for item in allergies or [])
    CurrentMedication.objects.bulk_create(
        CurrentMedication(patient=patient, **item) for item in current_medications or []
    )
    # The payload names no identifier: events are read by operators and relayed to workers.
    event_record(
        aggregate_type="patient",
        aggregate_id=patient.pk,
        clinic_id=clinic.pk,
        type="patient.registered",
        payload={},
        actor=actor,
    )
    return patient


class PatientAlreadyRegistered(Conflict):
    """The clinic already has a record of this person."""

    def __init__(self, *, existing_id: int) -> None:
        super().__init__(
            f"This clinic already has a record of this patient (patient {existing_id}, the same NHS number "
            "or the same name and date of birth); use that record, or ask us to merge the two.",
            code="patient-already-registered",
            extensions={"existing_patient_id": existing_id},
        )
        self.existing_id = existing_id


def _refuse_a_second_record(*, clinic: Clinic, indexes: dict[str, str]) -> None:
    keys = [indexes["nhs_number_index"], indexes["name_birth_date_index"]]
    # Two registrations of one person at once: the second waits for the first to commit, then
    # finds it. A transaction-scoped lock per identifier digest, so unrelated patients never wait.
    with connection.cursor() as cursor:
        for key in sorted(filter(None, keys)):
            cursor.execute("SELECT pg_advisory_xact_lock(%s)", [int(key[:15], 16)])
    existing = patient_registered_already(
        clinic=clinic, nhs_number_index=keys[0], name_birth_date_index=keys[1]
    )
    if existing is not None:
        raise PatientAlreadyRegistered(existing_id=existing.pk)


@transaction.atomic
def patient_merge(*, keep: Patient, duplicates: list[Patient], actor: str) -> int:
    """Merge duplicate records of one person in one clinic into `keep`: their allergies, current
    medicines, diagnoses and observations move to it; each duplicate stays (its prescriptions
    were issued to it) marked as merged, and takes no new prescriptions. Returns how many merged."""
    others = [patient for patient in duplicates if patient.pk != keep.pk]
    if any(patient.clinic_id != keep.clinic_id for patient in others):
        raise InvalidInput("Only records of the same clinic can be merged.", code="merge-across-clinics")
    if keep.merged_into_id is not None:
        raise InvalidInput(
            "The record to keep was itself merged; keep the record it was merged into.",
            code="merge-into-merged",
        )
    ids = [patient.pk for patient in others]
    for model in (Allergy, CurrentMedication, Diagnosis, Observation):
        model.objects.filter(patient_id__in=ids).update(patient=keep)
    merged = Patient.objects.filter(pk__in=ids, merged_into__isnull=True).update(merged_into=keep)
    Patient.objects.filter(merged_into_id__in=ids).update(merged_into=keep)
    for patient in others:
        event_record(
            aggregate_type="patient",
            aggregate_id=patient.pk,
            clinic_id=keep.clinic_id,
            type="patient.merged",
            payload={"into": keep.pk},
            actor=actor,
        )
    return merged


def patient_keys_rotate(*, batch_size: int = 500) -> int:
    """Re-encrypt every patient under the first SALT_KEY and recompute the blind indexes.

    Run after putting a new key first in SALT_KEY (or a new BLIND_INDEX_KEY); old keys can
    be dropped once it has finished. Each batch is its own transaction, so a stopped run
    resumes safely: re-encrypting an already rotated row is harmless.
    """
    rotated = 0
    last_id = 0
    while True:
        with transaction.atomic():
            patients = list(
                Patient.objects.select_for_update().filter(pk__gt=last_id).order_by("pk")[:batch_size]
            )
            for patient in patients:
                for name, value in _indexes_of(patient).items():
                    setattr(patient, name, value)
            Patient.objects.bulk_update(patients, [*PHI_FIELDS, *INDEX_FIELDS])
        if not patients:
            return rotated
        rotated += len(patients)
        last_id = patients[-1].pk


def _indexes_of(patient: Patient) -> dict[str, str]:
    return blind_indexes(
        nhs_number=patient.nhs_number,
        email=patient.email,
        phone=patient.phone,
        family_name=patient.family_name,
        birth_date=patient.birth_date,
        given_name=patient.given_name,
    )


@transaction.atomic
def clinic_client_revoke(*, clinic_client: ClinicClient, actor: str) -> bool:
    """Revoke a machine client at once: its tokens stop working and no new ones are issued."""
    revoked = ClinicClient.objects.filter(pk=clinic_client.pk, revoked_at__isnull=True).update(
        revoked_at=timezone.now()
    )
    RefreshToken.objects.filter(application_id=clinic_client.application_id).delete()
    AccessToken.objects.filter(application_id=clinic_client.application_id).delete()
    if revoked:
        event_record(
            aggregate_type="clinic_client",
            aggregate_id=clinic_client.pk,
            clinic_id=clinic_client.clinic_id,
            type="clinic_client.revoked",
            actor=actor,
        )
    return revoked == 1


def patient_record_clinical_context(
    *,
    patient: Patient,
    diagnoses: list[dict[str, Any]] | None = None,
    observations: list[dict[str, Any]] | None = None,
    clinical_context: dict[str, Any] | None = None,
) -> None:
    """Add diagnoses and monitoring observations sent with a prescription, and update the
    clinical context with the fields it names (the latest stands).

    Runs inside the caller's transaction; a diagnosis already recorded (same code) is kept once.
    """
    if clinical_context:
        updates = {**clinical_context, "clinical_context_updated_on": timezone.localdate()}
        Patient.objects.filter(pk=patient.pk).update(**updates)
        for name, value in updates.items():
            setattr(patient, name, value)
    # Most prescriptions send neither: then there is nothing to compare against.
    if diagnoses:
        known = set(patient.diagnoses.values_list("code_system", "code"))
        Diagnosis.objects.bulk_create(
            Diagnosis(patient=patient, **item)
            for item in diagnoses
            if (item["code_system"], item["code"]) not in known
        )
    if observations:
        measured = set(patient.observations.values_list("kind", "observed_on", "value", "diastolic"))
        Observation.objects.bulk_create(
            Observation(patient=patient, **item)
            for item in observations
            if (item["kind"], item["observed_on"], item["value"], item.get("diastolic")) not in measured
        )
