"""Holding a prescription until its start date: nothing is sent to the pharmacy before the
day it may be supplied (its start date, or for a US Schedule II series its earliest fill date).

The dispatch consumer holds a paid or NHS-funded prescription whose day has not come, and says
so on its timeline; a beat task releases the held ones each day they fall due. The day lives
in the database, so a restart delays nothing.
"""

from __future__ import annotations

from datetime import date

from django.utils import timezone

from pharmacy import services as pharmacy
from prescriptions import selectors as prescription_selectors
from prescriptions import services as prescriptions


def dispatch_unless_held(*, prescription_id: int) -> None:
    # dispatch_create sends nothing before the prescription's day; only then (or when it is
    # not ready for dispatch at all) is the hold worth reading the prescription again for.
    # One day for both, so a prescription is either sent or held even across midnight.
    today = timezone.localdate()
    if pharmacy.dispatch_create(prescription_id=prescription_id, today=today) is None:
        prescriptions.prescription_hold_if_not_due(prescription_id=prescription_id, today=today)


def held_prescriptions_release(*, today: date | None = None) -> list[int]:
    """Create the dispatch of every held prescription that is now due; returns their ids."""
    today = today or timezone.localdate()
    released = []
    for prescription_id in prescription_selectors.prescriptions_held_and_due(today=today):
        if pharmacy.dispatch_create(prescription_id=prescription_id, today=today) is None:
            continue
        prescriptions.prescription_record_event(
            prescription_id=prescription_id,
            event_type="prescription.hold_released",
            payload={"on": today.isoformat(), "reason": "Its start date has come: sent to the pharmacy."},
            actor="saga",
        )
        released.append(prescription_id)
    return released
