from django.db.models import QuerySet

from patients.models import Clinic
from prescriptions.models import Medication, Prescriber, Prescription


def prescription_list(*, clinic: Clinic) -> QuerySet[Prescription]:
    return (
        Prescription.objects.filter(clinic=clinic)
        .select_related("payment")  # billing (issue 4): the payment summary
        .prefetch_related("items__medication")
    )


def prescriber_list(*, clinic: Clinic) -> QuerySet[Prescriber]:
    return Prescriber.objects.filter(clinic=clinic)


def medication_search(*, search: str = "") -> QuerySet[Medication]:
    medications = Medication.objects.filter(is_active=True)
    if search:
        medications = medications.filter(name__icontains=search) | medications.filter(code=search)
    return medications.order_by("name", "strength")
