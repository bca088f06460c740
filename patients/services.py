from __future__ import annotations

from datetime import date
from typing import Any

from django.db import transaction

from events.services import event_record
from patients.models import Allergy, Clinic, CurrentMedication, Patient


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
