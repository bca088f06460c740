"""Cancelling a prescription with compensation, wherever it is in the journey.

Before the pharmacy has it: cancelled at once (prescriptions), and the prescription.cancelled
consumer cancels the PaymentIntent or refunds (billing). Acknowledged by the gateway: the
cancellation is sent to the gateway first (pharmacy) and the prescription stays acknowledged
until the gateway confirms. Dispensed or beyond: refused with 409, and the staff queue gets a
CancellationRequest (billing) with the refund it may need.
"""

from __future__ import annotations

from django.db import transaction

from api.problems import Problem
from billing.services import payments
from patients.models import Clinic
from pharmacy import services as pharmacy
from prescriptions import services as prescriptions
from prescriptions.models import Prescription, Status

# Where a prescription already is with the pharmacy or beyond: no automatic cancel or refund.
BEYOND_AUTOMATIC_CANCEL = frozenset({Status.ACKNOWLEDGED, Status.DISPENSED, Status.SHIPPED, Status.DELIVERED})

DEAD_LETTER_CANCEL_REASON = (
    "The pharmacy could not be reached; cancelled by staff from the dead-letter queue."
)


def prescription_cancel_request(
    *, clinic: Clinic | None, prescription_id: int, reason: str, actor: str
) -> Prescription:
    """Cancel for a clinic (`clinic`) or staff (`clinic=None`); see the module docstring."""
    try:
        return prescriptions.prescription_cancel(
            clinic=clinic, prescription_id=prescription_id, reason=reason, actor=actor
        )
    except Problem as problem:
        if problem.slug != "not-cancellable":
            raise
        prescription = Prescription.objects.get(pk=prescription_id)
        if prescription.status == Status.CANCELLED:
            # The gateway confirmed an earlier cancel between our two reads: same answer as a
            # repeat after it (200, cancelled), never a 409.
            return prescription
        if prescription.status not in BEYOND_AUTOMATIC_CANCEL:
            raise
        if pharmacy.gateway_cancellation_request(prescription_id=prescription_id, reason=reason, actor=actor):
            return Prescription.objects.get(pk=prescription_id)
        request = payments.cancellation_request_open(
            prescription_id=prescription_id, reason=reason, actor=actor
        )
        refund = " and the refund" if request.needs_refund else ""
        raise Problem(
            status_code=409,
            slug="not-cancellable",
            detail=f"{problem.detail} Our staff will review the cancellation{refund} "
            f"(request #{request.pk}).",
            keeps_changes=True,
        ) from problem


def dead_letter_cancel(*, dead_letter_id: int, actor: str) -> bool:
    """Give up on a dead-lettered dispatch: cancel its prescription with compensation (the
    refund follows from the prescription.cancelled consumer) and resolve the letter."""
    with transaction.atomic():
        prescription_id = pharmacy.dead_letter_lock(dead_letter_id=dead_letter_id)
        if prescription_id is None:
            return False
        prescription_cancel_request(
            clinic=None, prescription_id=prescription_id, reason=DEAD_LETTER_CANCEL_REASON, actor=actor
        )
        pharmacy.dead_letter_resolve(dead_letter_id=dead_letter_id, resolution="cancelled")
    return True
