"""Billing services: `payments` (Stripe, refunds, cancellation) and `nhs` (charges, claims)."""

from __future__ import annotations

from billing.services import nhs, payments
from prescriptions.models import Funding


def prescription_bill(*, prescription_id: int) -> str:
    """Consumer side of an approval: a private prescription is charged by card, an NHS one
    has its charge or exemption recorded. Either way it then moves on to dispatch."""
    billable = payments.billable_read(prescription_id=prescription_id)
    if billable is None:
        return "not-approved"
    if billable.funding == Funding.NHS:
        return nhs.nhs_charge_record(prescription_id=prescription_id)
    return payments.payment_start(prescription_id=prescription_id, billable=billable)
