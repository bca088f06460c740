"""The prescription read model rebuilt from the event log (invariant 3).

`Prescription.status` and `tracking_number` are projections of the prescription's events:
the status is the `to` of the latest event that moved it, the tracking number the latest one
the gateway sent. `projections_rebuild` recomputes them and reports every difference;
`projection_repair` applies one, guarded and recorded, never silently.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import chain

from django.db import transaction
from django.utils import timezone

from events.archive import archived_prescription_payloads
from events.models import Event
from events.services import event_record
from prescriptions.models import Prescription

REPAIRED = "prescription.projection_repaired"


@dataclass(frozen=True)
class Difference:
    prescription_id: int
    field: str
    stored: str
    rebuilt: str


def projections_derive() -> dict[int, dict[str, str]]:
    """Fold the whole prescription event log (and its archive) into {id: {"status", "tracking_number"}}."""
    derived: dict[int, dict[str, str]] = {}
    events = (
        Event.objects.filter(aggregate_type="prescription")
        .exclude(type=REPAIRED)
        .order_by("aggregate_id", "sequence")
        .values_list("aggregate_id", "payload")
    )
    # A journey moved by events_archive starts in the archive; any later events follow in the log.
    for aggregate_id, payload in chain(archived_prescription_payloads(), events.iterator(chunk_size=2000)):
        state = derived.setdefault(aggregate_id, {"status": "", "tracking_number": ""})
        if payload.get("to"):
            state["status"] = payload["to"]
        if payload.get("tracking_number"):
            state["tracking_number"] = payload["tracking_number"]
    return derived


def projections_rebuild() -> list[Difference]:
    """Every difference between the stored read model and the one the events give."""
    derived = projections_derive()
    differences = []
    stored = Prescription.objects.order_by("pk").values_list("pk", "status", "tracking_number")
    for prescription_id, status, tracking_number in stored.iterator(chunk_size=2000):
        rebuilt = derived.get(prescription_id, {"status": "", "tracking_number": ""})
        for field, value in (("status", status), ("tracking_number", tracking_number)):
            if rebuilt[field] != value:
                differences.append(Difference(prescription_id, field, value, rebuilt[field]))
    return differences


def projection_repair(*, difference: Difference, actor: str) -> bool:
    """Set one field to its rebuilt value if it still holds the stored one; records an event."""
    if not difference.rebuilt and difference.field == "status":
        return False  # no event ever set a status: nothing trustworthy to write
    with transaction.atomic():
        updated = Prescription.objects.filter(
            pk=difference.prescription_id, **{difference.field: difference.stored}
        ).update(**{difference.field: difference.rebuilt, "updated_at": timezone.now()})
        if updated != 1:
            return False
        clinic_id = Prescription.objects.values_list("clinic_id", flat=True).get(
            pk=difference.prescription_id
        )
        event_record(
            aggregate_type="prescription",
            aggregate_id=difference.prescription_id,
            clinic_id=clinic_id,
            type=REPAIRED,
            actor=actor,
            payload={"field": difference.field, "stored": difference.stored, "rebuilt": difference.rebuilt},
        )
    return True
