from django.db.models import QuerySet

from patients.models import Clinic, Patient


def patient_list(*, clinic: Clinic) -> QuerySet[Patient]:
    return Patient.objects.filter(clinic=clinic).prefetch_related("allergies", "current_medications")
