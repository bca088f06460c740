from django.db.models import Q, QuerySet

from patients.models import Clinic, Patient


def patient_list(*, clinic: Clinic) -> QuerySet[Patient]:
    return Patient.objects.filter(clinic=clinic).prefetch_related("allergies", "current_medications")


def _same_person(*, nhs_number_index: str, name_birth_date_index: str) -> Q | None:
    """The same NHS number; or the same name and date of birth unless both records carry an NHS
    number and they differ (two NHS numbers are two people)."""
    match = Q()
    if nhs_number_index:
        match |= Q(nhs_number_index=nhs_number_index)
    if name_birth_date_index:
        by_name = Q(name_birth_date_index=name_birth_date_index)
        match |= (by_name & Q(nhs_number_index="")) if nhs_number_index else by_name
    return match or None


def patient_registered_already(
    *, clinic: Clinic, nhs_number_index: str, name_birth_date_index: str
) -> Patient | None:
    """The clinic's record of the same person (same NHS number, or same name and date of birth),
    matched on the blind indexes only; merged duplicates are not offered."""
    match = _same_person(nhs_number_index=nhs_number_index, name_birth_date_index=name_birth_date_index)
    if match is None:
        return None
    return Patient.objects.filter(match, clinic=clinic, merged_into__isnull=True).order_by("pk").first()


def person_patient_ids(*, patient: Patient) -> list[int]:
    """Every record of this person in every clinic: the same NHS number or the same name and
    date of birth (keyed blind indexes, never plaintext), and records merged into or from it.

    Only for pharmacy-side checks running in the system scope: no clinic's API reads this."""
    match = _same_person(
        nhs_number_index=patient.nhs_number_index, name_birth_date_index=patient.name_birth_date_index
    )
    merged = Q(pk=patient.pk) | Q(merged_into_id=patient.pk)
    if patient.merged_into_id is not None:
        merged |= Q(pk=patient.merged_into_id) | Q(merged_into_id=patient.merged_into_id)
    return list(
        Patient.objects.filter(merged if match is None else merged | match).values_list("pk", flat=True)
    )
