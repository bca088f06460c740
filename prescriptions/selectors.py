from datetime import date

from django.db import connection
from django.db.models import Q, QuerySet

from common import rows
from patients.models import Clinic, Patient
from patients.phi import INDEX_FIELDS, encrypted_field_names
from patients.selectors import person_patient_ids
from prescriptions.models import LinkKind, Medication, Prescriber, Prescription, PrescriptionItem, Status


def prescription_list(*, clinic: Clinic) -> QuerySet[Prescription]:
    return (
        Prescription.objects.filter(clinic=clinic)
        .select_related("payment")  # the payment summary
        .prefetch_related("items__medication")
    )


def prescriptions_held_and_due(*, today: date, limit: int = 500) -> list[int]:
    """Paid or NHS-funded prescriptions with no dispatch yet whose start or earliest fill date
    has come: the ones the saga held and now releases."""
    candidates = (
        Prescription.objects.filter(status__in=(Status.PAID, Status.NHS_FUNDED), dispatch__isnull=True)
        .filter(Q(start_date__isnull=False) | Q(earliest_fill_date__isnull=False))
        .filter(Q(start_date__isnull=True) | Q(start_date__lte=today))
        .filter(Q(earliest_fill_date__isnull=True) | Q(earliest_fill_date__lte=today))
        .order_by("id")
        .values_list("pk", flat=True)
    )
    return list(candidates[:limit])


def controlled_supplies(*, patient_id: int, exclude_id: int | None = None) -> list[PrescriptionItem]:
    """The patient's previous controlled-drug prescriptions that were not rejected or cancelled,
    through any clinic (every record of the same person: the pharmacist's view)."""
    patient = Patient.objects.get(pk=patient_id)
    items = (
        PrescriptionItem.objects.filter(prescription__patient_id__in=person_patient_ids(patient=patient))
        .exclude(prescription__status__in=[Status.REJECTED, Status.CANCELLED])
        .filter(
            Q(medication__controlled_schedule__gt="")
            | Q(medication__schedule_gb__gt="")
            | Q(medication__schedule_us__gt="")
        )
        .select_related("medication", "prescription")
        .order_by("-prescription__issued_on", "-prescription_id")
    )
    if exclude_id is not None:
        items = items.exclude(prescription_id=exclude_id)
    return list(items[:50])


def prescriber_list(*, clinic: Clinic) -> QuerySet[Prescriber]:
    return Prescriber.objects.filter(clinic=clinic)


def medication_search(*, search: str = "") -> QuerySet[Medication]:
    medications = Medication.objects.filter(is_active=True)
    if search:
        medications = (
            medications.filter(name__icontains=search)
            | medications.filter(code=search)
            | medications.filter(ingredients__contains=[search.strip().lower()])
        )
    return medications.order_by("name", "strength")


def prescription_repeat_course(*, prescription: Prescription) -> tuple[Prescription, int] | None:
    """The original of the repeat course `prescription` belongs to, and its issue number there
    (1 for the original itself); None when it is not part of a repeat course."""
    current, issue_number = prescription, 1
    while current.link_kind == LinkKind.REPEAT and current.previous_id is not None:
        current = Prescription.objects.prefetch_related("items").get(pk=current.previous_id)
        issue_number += 1
    if current.repeats == 0:
        return None
    return current, issue_number


# An intake needs the patient's clinic, merge and birth date (an NHS exemption by age), not
# their identity: the other encrypted columns and the blind indexes are left unread and
# undecrypted, deferred on the instance.
_PATIENT_UNREAD = tuple(
    name for name in (*encrypted_field_names(Patient), *INDEX_FIELDS) if name != "birth_date"
)
_PARTIES_SQL = (
    f"SELECT {rows.columns_sql(Patient, 'patient', leaving_out=_PATIENT_UNREAD)}, {rows.columns_sql(Prescriber, 'prescriber')}"
    f' FROM "{Clinic._meta.db_table}" AS clinic'
    f' LEFT JOIN "{Patient._meta.db_table}" AS patient'
    "  ON patient.clinic_id = clinic.id AND patient.id = %(patient)s"
    f' LEFT JOIN "{Prescriber._meta.db_table}" AS prescriber'
    "  ON prescriber.clinic_id = clinic.id AND prescriber.id = %(prescriber)s"
    " WHERE clinic.id = %(clinic)s"
)


def prescription_parties(
    *, clinic: Clinic, patient_id: int | None, prescriber_id: int | None
) -> tuple[Patient | None, Prescriber | None]:
    """The patient and the prescriber a new prescription names, each only if it is `clinic`'s
    (None otherwise), read together: two LEFT JOINs from the clinic's row, one query. Written in
    SQL: it runs on every intake, where building the same query through the ORM cost more than
    the rest of the request's reads."""
    low, high = connection.ops.integer_field_range("BigAutoField")
    patient_id, prescriber_id = (
        value if value is not None and low <= value <= high else None for value in (patient_id, prescriber_id)
    )
    with rows.planned_cursor() as cursor:
        cursor.execute(
            _PARTIES_SQL, {"clinic": clinic.pk, "patient": patient_id, "prescriber": prescriber_id}
        )
        row = cursor.fetchone()
    if row is None:
        return None, None
    split = rows.column_count(Patient, leaving_out=_PATIENT_UNREAD)
    return rows.instance_from_columns(
        Patient, row[:split], leaving_out=_PATIENT_UNREAD
    ), rows.instance_from_columns(Prescriber, row[split:])


_FORMULARY_MEDICATIONS_SQL = (
    f"SELECT {rows.columns_sql(Medication, 'medication')} FROM prescriptions_medication AS medication"
    " WHERE medication.code = ANY(%s) AND medication.is_active"
)


def formulary_medications(*, codes: list[str]) -> list[Medication]:
    """The active formulary medications with one of `codes` (in any code system): the intake's
    read of the items it names, written in SQL for the same reason as prescription_parties."""
    with rows.planned_cursor() as cursor:
        cursor.execute(_FORMULARY_MEDICATIONS_SQL, [sorted(set(codes))])
        found = cursor.fetchall()
    return [medication for row in found if (medication := rows.instance_from_columns(Medication, row))]
