"""The MCP tools' reads, for one clinic, inside its tenant transaction (agents.server).

Each runs a fixed number of queries whatever the page size. An id that is not this clinic's
answers exactly as one that does not exist: the queries filter by clinic (and row-level
security filters again underneath), so the two cases cannot be told apart here either.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

from accounts.authentication import ClinicPrincipal
from agents import schemas
from audit.models import PatientAccess
from audit.services import patient_access_record
from common.errors import InvalidInput, NotFound
from events.models import Event
from events.services import events_for, events_of
from patients.models import Patient
from prescriptions import selectors
from prescriptions.models import Medication, Prescription, Status
from prescriptions.plain_status import plain_status

TIMELINE_PRESCRIPTIONS = 50

FINDING_MEANINGS = {
    "block": "Stops the prescription: it cannot be dispensed as written.",
    "needs_pharmacist": "Held for a pharmacist to review before it goes ahead.",
    "info": "For information; it does not stop the prescription.",
}


@dataclass(frozen=True)
class Caller:
    """Who asks: the clinic's machine client, and where from, for the access log."""

    principal: ClinicPrincipal
    remote_addr: str | None = None
    request_id: str = ""


def formulary_search(*, caller: Caller, search: str, page: int, page_size: int) -> schemas.FormularyPage:
    medicines = selectors.medication_search(search=search)
    total = medicines.count()
    start = (page - 1) * page_size
    return schemas.FormularyPage(
        medicines=[_medicine(medication) for medication in medicines[start : start + page_size]],
        total=total,
        page=page,
        next_page=page + 1 if start + page_size < total else None,
    )


def prescription_get(*, caller: Caller, prescription_id: int) -> schemas.PrescriptionDetail:
    prescription = (
        selectors.prescription_list(clinic=caller.principal.clinic)
        .select_related("prescriber")
        .filter(pk=prescription_id)
        .first()
    )
    if prescription is None:
        raise NotFound(f"No prescription with id {prescription_id}.", code="not_found")
    events = events_for(aggregate_type="prescription", aggregate_id=prescription.pk)
    _record_access(caller=caller, patient_ids=[prescription.patient_id], action=PatientAccess.Action.DETAIL)
    status = plain_status(prescription=prescription, events=events, for_patient=False)
    items = list(prescription.items.all())
    names = {item.pk: str(item.medication) for item in items}
    off_formulary = list(prescription.off_formulary_items.all())
    return schemas.PrescriptionDetail(
        id=prescription.pk,
        status=Status(prescription.status),
        status_text=status.text,
        status_reason=prescription.status_reason,
        patient_id=prescription.patient_id,
        prescriber=f"{prescription.prescriber.given_name} {prescription.prescriber.family_name}",
        issued_on=prescription.issued_on,
        funding=prescription.get_funding_display(),
        items=[
            schemas.Item(
                medicine=str(item.medication),
                code=item.medication.code,
                on_formulary=True,
                dose=item.dose_text,
                quantity=f"{item.quantity.normalize():f}",
                unit=item.unit,
                days_supply=item.days_supply,
            )
            for item in items
        ]
        + [
            schemas.Item(
                medicine=item.display or item.code,
                code=item.code,
                on_formulary=False,
                dose=item.dose_text,
                quantity=f"{item.quantity.normalize():f}",
                unit=item.unit,
                days_supply=item.days_supply,
            )
            for item in off_formulary
        ],
        findings=[
            schemas.Finding(
                severity=finding.get("severity", ""),
                meaning=FINDING_MEANINGS.get(finding.get("severity", ""), ""),
                message=finding.get("message", ""),
                medicine=names.get(finding.get("item")) if finding.get("item") is not None else None,
                source=finding.get("source", ""),
            )
            for finding in prescription.check_results
        ],
        tracking=(
            schemas.Tracking(carrier=status.carrier, number=status.tracking_number, url=status.tracking_url)
            if status.tracking_number
            else None
        ),
        created_at=prescription.created_at,
        updated_at=prescription.updated_at,
    )


def prescriptions_list(
    *,
    caller: Caller,
    status: Status | None,
    patient_id: int | None,
    issued_from: date | None,
    issued_to: date | None,
    page: int,
    page_size: int,
) -> schemas.PrescriptionPage:
    if issued_from and issued_to and issued_from > issued_to:
        raise InvalidInput("issued_from must not be after issued_to.", code="invalid", fields=["issued_from"])
    clinic = caller.principal.clinic
    prescriptions = (
        selectors.prescription_list(clinic=clinic).prefetch_related("off_formulary_items").order_by("-id")
    )
    if patient_id is not None:
        _patient_of_clinic(caller=caller, patient_id=patient_id)
        prescriptions = prescriptions.filter(patient_id=patient_id)
    if status is not None:
        prescriptions = prescriptions.filter(status=status)
    if issued_from is not None:
        prescriptions = prescriptions.filter(issued_on__gte=issued_from)
    if issued_to is not None:
        prescriptions = prescriptions.filter(issued_on__lte=issued_to)
    total = prescriptions.count()
    start = (page - 1) * page_size
    shown = list(prescriptions[start : start + page_size])
    _record_access(
        caller=caller,
        patient_ids=sorted({prescription.patient_id for prescription in shown}),
        action=PatientAccess.Action.LIST,
    )
    return schemas.PrescriptionPage(
        prescriptions=_summaries(shown),
        total=total,
        page=page,
        next_page=page + 1 if start + page_size < total else None,
    )


def patient_timeline(*, caller: Caller, patient_id: int) -> schemas.PatientTimeline:
    patient = _patient_of_clinic(caller=caller, patient_id=patient_id)
    prescriptions = list(
        selectors.prescription_list(clinic=caller.principal.clinic)
        .prefetch_related("off_formulary_items")
        .filter(patient_id=patient.pk)
        .order_by("-id")[: TIMELINE_PRESCRIPTIONS + 1]
    )
    shown = prescriptions[:TIMELINE_PRESCRIPTIONS]
    events = _events_by_prescription(shown)
    _record_access(caller=caller, patient_ids=[patient.pk], action=PatientAccess.Action.DETAIL)
    entries = sorted(
        (event for prescription in shown for event in events[prescription.pk]),
        key=lambda event: (event.created_at, event.aggregate_id, event.sequence),
    )
    return schemas.PatientTimeline(
        patient_id=patient.pk,
        prescriptions=_summaries(shown, events=events),
        entries=[
            schemas.TimelineEntry(
                at=event.created_at,
                prescription_id=event.aggregate_id,
                event=event.type,
                text=event_text(event),
            )
            for event in entries
        ],
        truncated=len(prescriptions) > TIMELINE_PRESCRIPTIONS,
    )


def event_text(event: Event) -> str:
    """An event in plain words, from the payload keys that carry no patient data."""
    payload = event.payload if isinstance(event.payload, dict) else {}
    if "to" in payload:
        text = f"{_status_label(payload.get('from'))} → {_status_label(payload['to'])}"
    else:
        text = event.type.removeprefix("prescription.").replace("_", " ").capitalize()
    details = [
        f"{key.replace('_', ' ')}: {payload[key]}"
        for key in ("decision", "reason", "tracking_number")
        if isinstance(payload.get(key), str) and payload[key]
    ]
    return "; ".join([text, *details])


def _status_label(value: object) -> str:
    return Status(value).label if isinstance(value, str) and value in Status.values else "—"


def _patient_of_clinic(*, caller: Caller, patient_id: int) -> Patient:
    patient = (
        Patient.objects.filter(clinic=caller.principal.clinic, pk=patient_id).only("id", "clinic_id").first()
    )
    if patient is None:
        raise NotFound(f"No patient with id {patient_id}.", code="not_found")
    return patient


def _record_access(*, caller: Caller, patient_ids: list[int], action: str) -> None:
    if not patient_ids:
        return
    patient_access_record(
        patients=Patient.objects.filter(pk__in=patient_ids).only("id", "clinic_id").order_by("id"),
        channel=PatientAccess.Channel.MCP,
        action=action,
        request=None,
        client_id=caller.principal.client_id,
        remote_addr=caller.remote_addr,
        request_id=caller.request_id,
    )


def _events_by_prescription(prescriptions: list[Prescription]) -> dict[int, list[Event]]:
    return events_of(
        aggregate_type="prescription", aggregate_ids=[prescription.pk for prescription in prescriptions]
    )


def _summaries(
    prescriptions: list[Prescription], *, events: dict[int, list[Event]] | None = None
) -> list[schemas.PrescriptionSummary]:
    if events is None:
        events = _events_by_prescription(prescriptions)
    return [
        schemas.PrescriptionSummary(
            id=prescription.pk,
            status=Status(prescription.status),
            status_text=plain_status(
                prescription=prescription, events=events[prescription.pk], for_patient=False
            ).text,
            patient_id=prescription.patient_id,
            issued_on=prescription.issued_on,
            medicines=[
                *(str(item.medication) for item in prescription.items.all()),
                *(str(item) for item in prescription.off_formulary_items.all()),
            ],
            created_at=prescription.created_at,
        )
        for prescription in prescriptions
    ]


def _medicine(medication: Medication) -> schemas.Medicine:
    return schemas.Medicine(
        id=medication.pk,
        system=medication.code_system,
        code=medication.code,
        name=medication.name,
        strength=medication.strength,
        form=medication.form,
        controlled=medication.is_controlled,
        schedule_gb=medication.schedule_in("GB"),
        schedule_us=medication.schedule_in("US"),
        price_minor=medication.price_minor,
    )
