"""A prescription's status in plain words, for support staff on a call and for the patient's
status link: "With the pharmacist since 10:02", "Shipped with Royal Mail, tracking SIM123".

The time is when the prescription entered its current status, read from its events (the
latest whose payload says `to` that status).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from django.conf import settings
from django.utils import timezone

from events.models import Event
from prescriptions.models import Prescription, Status

# {since} is filled in with the time the status began. Staff wording first, then the
# patient's where it differs (a patient is never shown a clinical reason or an internal fault).
_STAFF: dict[str, str] = {
    Status.RECEIVED: "Received from the clinic {since}; safety checks under way",
    Status.AWAITING_PHARMACIST: "With the pharmacist {since}",
    Status.APPROVED: "Approved {since}; payment or NHS charge next",
    Status.REJECTED: "Not approved by the safety checks {since}",
    Status.AWAITING_PAYMENT: "Waiting for payment {since}",
    Status.PAYMENT_FAILED: "Payment failed {since}; waiting for the card to be updated",
    Status.PAID: "Paid {since}; being sent to the pharmacy",
    Status.NHS_FUNDED: "NHS charge or exemption recorded {since}; being sent to the pharmacy",
    Status.DEAD_LETTERED: "Could not be sent to the pharmacy {since}; operators are on it",
    Status.ACKNOWLEDGED: "With the pharmacy {since}, being prepared",
    Status.DISPENSED: "Dispensed {at}; waiting for the courier",
    Status.SHIPPED: "Shipped with {carrier} {at}, tracking {tracking}",
    Status.DELIVERED: "Delivered {at}",
    Status.CANCELLED: "Cancelled {at}",
    Status.REJECTED_BY_PHARMACY: "Refused by the pharmacy {at}; any payment is refunded",
}
_PATIENT: dict[str, str] = {
    **_STAFF,
    Status.RECEIVED: "Received from your clinic {since}; our checks are under way",
    Status.AWAITING_PHARMACIST: "With our pharmacist {since}",
    Status.REJECTED: "We could not accept this prescription; your clinic has been told why",
    Status.DEAD_LETTERED: "Being sent to the pharmacy (delayed {since}); we are on it",
    Status.REJECTED_BY_PHARMACY: "The pharmacy could not supply this; any payment is refunded",
}


@dataclass(frozen=True)
class PlainStatus:
    text: str
    since: datetime | None
    tracking_number: str
    tracking_url: str
    carrier: str


def _when(word: str, moment: datetime | None) -> str:
    if moment is None:
        return ""
    local = timezone.localtime(moment)
    if local.date() == timezone.localdate():
        return f"{word} {local:%H:%M}"
    return f"{word} {local:%H:%M} on {local.day} {local:%b %Y}"


def entered_at(*, status: str, events: Iterable[Event]) -> datetime | None:
    """When the prescription last entered `status`, from its events (None if never recorded)."""
    moments = [event.created_at for event in events if event.payload.get("to") == status]
    return max(moments, default=None)


def plain_status(*, prescription: Prescription, events: Iterable[Event], for_patient: bool) -> PlainStatus:
    """The status sentence; events are the prescription's own (any order)."""
    since = entered_at(status=prescription.status, events=events)
    if since is None and prescription.status == Status.RECEIVED:
        since = prescription.created_at
    wording = (_PATIENT if for_patient else _STAFF).get(
        prescription.status, prescription.get_status_display()
    )
    tracking = (
        prescription.tracking_number if prescription.status in (Status.SHIPPED, Status.DELIVERED) else ""
    )
    carrier = settings.SHIPPING_CARRIER if tracking else ""
    text = wording.format(
        since=_when("since", since),
        at=_when("at", since),
        carrier=carrier or "the courier",
        tracking=tracking or "to follow",
    )
    text = " ".join(text.split()).replace(" ;", ";").replace(" ,", ",")
    url = settings.SHIPPING_TRACKING_URL.format(tracking_number=tracking) if tracking else ""
    return PlainStatus(text=text, since=since, tracking_number=tracking, tracking_url=url, carrier=carrier)
