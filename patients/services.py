from __future__ import annotations

from datetime import date
from typing import Any

from django.db import transaction

from events.services import event_record
from patients.models import Allergy, Clinic, CurrentMedication, Diagnosis, Observation, Patient


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


def patient_record_clinical_context(
    *,
    patient: Patient,
    diagnoses: list[dict[str, Any]] | None = None,
    observations: list[dict[str, Any]] | None = None,
) -> None:
    """Add diagnoses and monitoring observations sent with a prescription (issue 3).

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
