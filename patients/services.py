from __future__ import annotations

from datetime import date
from typing import Any

from django.db import transaction
from django.utils import timezone
from oauth2_provider.models import AccessToken, RefreshToken

from events.services import event_record
from patients.models import Allergy, Clinic, ClinicClient, CurrentMedication, Diagnosis, Observation, Patient
from patients.phi import INDEX_FIELDS, PHI_FIELDS, blind_indexes


@transaction.atomic
def patient_create(
    *,
    clinic: Clinic,
    given_name: str,
    family_name: str,
    birth_date: date,
    allergies: list[dict[str, Any]] | None = None,
    current_medications: list[dict[str, Any]] | None = None,
    actor: str = "",
    **details: Any,
) -> Patient:
    patient = Patient.objects.create(
        clinic=clinic,
        given_name=given_name,
        family_name=family_name,
        birth_date=birth_date,
        **details,
        **blind_indexes(
            nhs_number=details.get("nhs_number", ""),
            email=details.get("email", ""),
            phone=details.get("phone", ""),
            family_name=family_name,
            birth_date=birth_date,
        ),
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
) -> None:
    """Add diagnoses and monitoring observations sent with a prescription.

    Runs inside the caller's transaction; a diagnosis already recorded (same code) is kept once.
    """
    known = set(patient.diagnoses.values_list("code_system", "code"))
    Diagnosis.objects.bulk_create(
        Diagnosis(patient=patient, **item)
        for item in diagnoses or []
        if (item["code_system"], item["code"]) not in known
    )
    measured = set(patient.observations.values_list("kind", "observed_on", "value", "diastolic"))
    Observation.objects.bulk_create(
        Observation(patient=patient, **item)
        for item in observations or []
        if (item["kind"], item["observed_on"], item["value"], item.get("diastolic")) not in measured
    )
