"""Card payments for private prescriptions: PaymentIntents, Stripe webhooks, refunds, the money
side of a cancellation, and the cancellation staff queue. The only code that changes Payment,
Refund, StripeEvent and CancellationRequest rows.

Exactly-once rules: a Payment is unique per prescription and its Stripe idempotency key is
derived from the prescription; a Refund is unique per payment with its own key; a Stripe event
is stored once by id in the same transaction as its effect. Network calls happen outside
transactions; their results are recorded afterwards with guarded updates.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import F, QuerySet
from django.utils import timezone

from billing.adapters import stripe as stripe_api
from billing.models import CancellationRequest, Payment, Refund, StripeEvent
from billing.payments import Intent, PaymentRejected, PaymentUnavailable, WebhookInvalid
from events.services import outbox_task_enqueue
from prescriptions import services as prescriptions
from prescriptions.models import Prescription, Status

logger = logging.getLogger(__name__)

OPEN = frozenset({Payment.Status.CREATING, Payment.Status.REQUIRES_PAYMENT, Payment.Status.FAILED})


def payment_idempotency_key(*, prescription_id: int) -> str:
    return f"scriptline-payment-{prescription_id}"


def payment_amount_minor(*, prescription: Prescription) -> int:
    """Formulary price × quantity for every item, plus the dispensing fee, in minor units."""
    medicines = sum(
        (Decimal(item.medication.price_minor) * item.quantity for item in prescription.items.all()),
        Decimal(0),
    )
    total = medicines + settings.BILLING_DISPENSING_FEE_MINOR
    return int(total.quantize(Decimal(1), rounding=ROUND_HALF_UP))


def payment_start(*, prescription_id: int) -> str:
    """Create the PaymentIntent of an approved private prescription; returns what happened.

    Safe to run any number of times: the Payment row and the Stripe idempotency key are fixed
    per prescription. Raises PaymentUnavailable when the caller should retry later.
    """
    prescription = (
        Prescription.objects.select_related("clinic")
        .prefetch_related("items__medication")
        .filter(pk=prescription_id, status=Status.APPROVED)
        .first()
    )
    if prescription is None:
        return "not-approved"
    with transaction.atomic():
        payment, _ = Payment.objects.get_or_create(
            prescription_id=prescription_id,
            defaults={
                "clinic_id": prescription.clinic_id,
                "amount_minor": payment_amount_minor(prescription=prescription),
                "currency": prescription.clinic.currency.lower(),
                "idempotency_key": payment_idempotency_key(prescription_id=prescription_id),
            },
        )
    if payment.status not in (Payment.Status.CREATING, Payment.Status.REQUIRES_PAYMENT):
        return "already-settled"
    Payment.objects.filter(pk=payment.pk).update(attempts=F("attempts") + 1)
    try:
        intent = stripe_api.payment_intent_create(
            amount_minor=payment.amount_minor,
            currency=payment.currency,
            metadata={"payment_id": str(payment.pk), "prescription_id": str(prescription_id)},
            idempotency_key=payment.idempotency_key,
        )
    except PaymentRejected as error:
        _payment_record_error(payment_id=payment.pk, error=str(error))
        return "error"
    except PaymentUnavailable as error:
        attempts = Payment.objects.values_list("attempts", flat=True).get(pk=payment.pk)
        if attempts >= settings.STRIPE_MAX_ATTEMPTS:
            _payment_record_error(payment_id=payment.pk, error=f"gave up after {attempts} attempts: {error}")
            return "error"
        raise
    payment_record_intent(payment_id=payment.pk, intent=intent)
    return "awaiting-payment"


def payment_record_intent(*, payment_id: int, intent: Intent) -> None:
    with transaction.atomic():
        Payment.objects.filter(pk=payment_id, stripe_payment_intent_id="").update(
            stripe_payment_intent_id=intent.id, client_secret=intent.client_secret
        )
        Payment.objects.filter(pk=payment_id, status=Payment.Status.CREATING).update(
            status=Payment.Status.REQUIRES_PAYMENT, last_error=""
        )
        payment = Payment.objects.get(pk=payment_id)
        if payment.status in (Payment.Status.REQUIRES_PAYMENT, Payment.Status.FAILED):
            prescriptions.prescription_transition(
                prescription_id=payment.prescription_id,
                to=Status.AWAITING_PAYMENT,
                from_statuses=frozenset({Status.APPROVED}),
                event_type="prescription.awaiting_payment",
                payload=_money(payment),
                actor="billing",
            )
    if payment.status == Payment.Status.CANCELLED:
        # Cancelled while the intent was being created: close it so it can never be paid.
        _intent_cancel_quietly(payment)


def _payment_record_error(*, payment_id: int, error: str) -> None:
    with transaction.atomic():
        updated = Payment.objects.filter(pk=payment_id, status=Payment.Status.CREATING).update(
            status=Payment.Status.ERROR, last_error=error[:300]
        )
        if updated:
            prescription_id = Payment.objects.values_list("prescription_id", flat=True).get(pk=payment_id)
            prescriptions.prescription_record_event(
                prescription_id=prescription_id,
                event_type="prescription.payment_error",
                payload={"payment_id": payment_id},
                actor="billing",
            )
    logger.error("payment %s could not be created: %s", payment_id, error[:300])


def _money(payment: Payment) -> dict[str, object]:
    return {"payment_id": payment.pk, "amount_minor": payment.amount_minor, "currency": payment.currency}


# --- What Stripe tells us (webhooks, and reconciliation) ---------------------------------------


def payment_record_succeeded(*, payment_id: int, intent_id: str) -> bool:
    """Stripe captured the money: mark it and move the prescription on to dispatch.

    A prescription cancelled meanwhile cannot take the money: it is refunded at once.
    """
    with transaction.atomic():
        Payment.objects.filter(pk=payment_id, stripe_payment_intent_id="").update(
            stripe_payment_intent_id=intent_id
        )
        updated = Payment.objects.filter(pk=payment_id, status__in=OPEN | {Payment.Status.CANCELLED}).update(
            status=Payment.Status.SUCCEEDED, last_error=""
        )
        if not updated:
            return False
        payment = Payment.objects.get(pk=payment_id)
        moved = prescriptions.prescription_transition(
            prescription_id=payment.prescription_id,
            to=Status.PAID,
            from_statuses=frozenset({Status.APPROVED, Status.AWAITING_PAYMENT, Status.PAYMENT_FAILED}),
            event_type="prescription.paid",
            payload=_money(payment),
            actor="stripe",
        )
        if not moved:
            refund_request(payment_id=payment_id, reason="paid after the prescription was cancelled")
    return True


def payment_record_failed(*, payment_id: int, decline_code: str) -> bool:
    """The card was declined: hold the prescription (payment_failed) until the customer retries."""
    with transaction.atomic():
        updated = Payment.objects.filter(
            pk=payment_id, status__in=[Payment.Status.CREATING, Payment.Status.REQUIRES_PAYMENT]
        ).update(status=Payment.Status.FAILED, last_error=f"declined: {decline_code}"[:300])
        if not updated:
            return False
        payment = Payment.objects.get(pk=payment_id)
        prescriptions.prescription_transition(
            prescription_id=payment.prescription_id,
            to=Status.PAYMENT_FAILED,
            from_statuses=frozenset({Status.AWAITING_PAYMENT}),
            event_type="prescription.payment_failed",
            payload={**_money(payment), "decline_code": decline_code[:40]},
            actor="stripe",
        )
    return True


def payment_record_cancelled(*, payment_id: int) -> bool:
    with transaction.atomic():
        updated = Payment.objects.filter(pk=payment_id, status__in=OPEN).update(
            status=Payment.Status.CANCELLED
        )
        if not updated:
            return False
        payment = Payment.objects.get(pk=payment_id)
        prescriptions.prescription_record_event(
            prescription_id=payment.prescription_id,
            event_type="prescription.payment_cancelled",
            payload=_money(payment),
            actor="billing",
        )
    return True


def _on_succeeded(payment: Payment, intent: dict[str, Any]) -> bool:
    return payment_record_succeeded(payment_id=payment.pk, intent_id=str(intent["id"]))


def _on_payment_failed(payment: Payment, intent: dict[str, Any]) -> bool:
    error = intent.get("last_payment_error") or {}
    return payment_record_failed(
        payment_id=payment.pk, decline_code=str(error.get("decline_code") or error.get("code") or "declined")
    )


def _on_canceled(payment: Payment, intent: dict[str, Any]) -> bool:
    return payment_record_cancelled(payment_id=payment.pk)


WEBHOOK_HANDLERS = {
    "payment_intent.succeeded": _on_succeeded,
    "payment_intent.payment_failed": _on_payment_failed,
    "payment_intent.canceled": _on_canceled,
}


def _payment_for(intent: dict[str, Any]) -> Payment | None:
    payment_id = str((intent.get("metadata") or {}).get("payment_id", ""))
    if payment_id.isdigit():
        payment = Payment.objects.filter(pk=int(payment_id)).first()
        if payment is not None and payment.stripe_payment_intent_id in ("", intent.get("id")):
            return payment
    return (
        Payment.objects.filter(stripe_payment_intent_id=str(intent.get("id", "")))
        .exclude(stripe_payment_intent_id="")
        .first()
    )


def stripe_webhook_receive(*, body: bytes, signature_header: str) -> str:
    """Verify, de-duplicate and apply one Stripe webhook; returns what happened.

    Raises WebhookInvalid (answer 400) for a bad signature, a body that is not an event, or an
    event type we do not handle. The event is stored in the same transaction as its effect.
    """
    event = stripe_api.webhook_event_construct(payload=body, signature_header=signature_header)
    handler = WEBHOOK_HANDLERS.get(event.type)
    if handler is None:
        raise WebhookInvalid(f"unhandled event type {event.type[:60]!r}")
    intent = event.data_object
    if intent.get("object") != "payment_intent" or not intent.get("id"):
        raise WebhookInvalid("event data is not a PaymentIntent")
    payment = _payment_for(intent)
    try:
        with transaction.atomic():
            stored = StripeEvent.objects.create(
                event_id=event.id, type=event.type, payment_intent_id=str(intent["id"])[:80]
            )
            applied = payment is not None and handler(payment, intent)
            if applied:
                StripeEvent.objects.filter(pk=stored.pk).update(applied=True)
    except IntegrityError:
        return "duplicate"
    if payment is None:
        logger.warning("stripe event %s is for an unknown PaymentIntent; stored, not applied", event.id)
        return "unknown-payment"
    return "applied" if applied else "ignored"


# --- Refunds and cancellation ------------------------------------------------------------------


# The task that sends a refund to Stripe (billing.tasks), owed through the outbox by name.
REFUND_SEND_TASK = "billing.tasks.refund_send"


def refund_request(*, payment_id: int, reason: str) -> Refund:
    """The one refund of a payment (created once; a second request returns the first), its
    send owed in the same transaction: a refund once requested is sent, whatever the broker
    loses (the owed task is published, and retried, by the outbox relay)."""
    with transaction.atomic():
        payment = Payment.objects.get(pk=payment_id)
        refund, created = Refund.objects.get_or_create(
            payment_id=payment_id,
            defaults={
                "amount_minor": payment.amount_minor,
                "idempotency_key": f"scriptline-refund-{payment_id}",
                "reason": reason[:300],
            },
        )
        if created:
            outbox_task_enqueue(task=REFUND_SEND_TASK, args=[refund.pk])
    return refund


def refund_send(*, refund_id: int) -> str:
    """Send a pending refund to Stripe (its idempotency key makes a repeat harmless)."""
    refund = (
        Refund.objects.select_related("payment").filter(pk=refund_id, status=Refund.Status.PENDING).first()
    )
    if refund is None:
        return "not-pending"
    Refund.objects.filter(pk=refund_id).update(attempts=F("attempts") + 1)
    try:
        result = stripe_api.refund_create(
            intent_id=refund.payment.stripe_payment_intent_id,
            amount_minor=refund.amount_minor,
            metadata={"refund_id": str(refund.pk), "payment_id": str(refund.payment_id)},
            idempotency_key=refund.idempotency_key,
        )
    except PaymentRejected as error:
        refund_record_failed(refund_id=refund_id, error=str(error))
        return "failed"
    except PaymentUnavailable as error:
        attempts = Refund.objects.values_list("attempts", flat=True).get(pk=refund_id)
        if attempts >= settings.STRIPE_MAX_ATTEMPTS:
            refund_record_failed(refund_id=refund_id, error=f"gave up after {attempts} attempts: {error}")
            return "failed"
        raise
    refund_record_succeeded(refund_id=refund_id, stripe_refund_id=result.id)
    return "refunded"


def refund_record_succeeded(*, refund_id: int, stripe_refund_id: str) -> bool:
    with transaction.atomic():
        updated = Refund.objects.filter(pk=refund_id, status=Refund.Status.PENDING).update(
            status=Refund.Status.SUCCEEDED, stripe_refund_id=stripe_refund_id, completed_at=timezone.now()
        )
        if not updated:
            return False
        refund = Refund.objects.select_related("payment").get(pk=refund_id)
        Payment.objects.filter(pk=refund.payment_id, status=Payment.Status.SUCCEEDED).update(
            status=Payment.Status.REFUNDED
        )
        prescriptions.prescription_record_event(
            prescription_id=refund.payment.prescription_id,
            event_type="prescription.refunded",
            payload={"refund_id": refund.pk, **_money(refund.payment)},
            actor="billing",
        )
    return True


def refund_record_failed(*, refund_id: int, error: str) -> bool:
    with transaction.atomic():
        updated = Refund.objects.filter(pk=refund_id, status=Refund.Status.PENDING).update(
            status=Refund.Status.FAILED, last_error=error[:300]
        )
        if not updated:
            return False
        refund = Refund.objects.select_related("payment").get(pk=refund_id)
        prescriptions.prescription_record_event(
            prescription_id=refund.payment.prescription_id,
            event_type="prescription.refund_failed",
            payload={"refund_id": refund.pk, "payment_id": refund.payment_id},
            actor="billing",
        )
    logger.error("refund %s failed; staff must act: %s", refund_id, error[:300])
    return True


def payment_compensate(*, prescription_id: int) -> str:
    """Undo the money side of a cancelled prescription: refund a captured payment, or cancel
    an open PaymentIntent. Consumer of prescription.cancelled; safe to repeat."""
    payment = Payment.objects.filter(prescription_id=prescription_id).first()
    if payment is None:
        return "nothing-to-compensate"
    if payment.status == Payment.Status.SUCCEEDED or hasattr(payment, "refund"):
        refund = refund_request(payment_id=payment.pk, reason="prescription cancelled")
        try:
            return refund_send(refund_id=refund.pk)
        except PaymentUnavailable:
            # Stripe is unavailable: the owed refund task retries it by its due time.
            return "refund-owed"
    if payment.status not in OPEN:
        return "nothing-to-compensate"
    if not payment.stripe_payment_intent_id:
        if Payment.objects.filter(pk=payment.pk, status=Payment.Status.CREATING).update(
            status=Payment.Status.CANCELLED
        ):
            return "cancelled"
        return payment_compensate(prescription_id=prescription_id)  # it changed meanwhile: look again
    return _intent_cancel_quietly(payment)


def _intent_cancel_quietly(payment: Payment) -> str:
    try:
        stripe_api.payment_intent_cancel(
            intent_id=payment.stripe_payment_intent_id, idempotency_key=f"{payment.idempotency_key}-cancel"
        )
    except PaymentRejected:
        # Usually "already succeeded": take Stripe's word for it, which refunds.
        intent = stripe_api.payment_intent_retrieve(intent_id=payment.stripe_payment_intent_id)
        return payment_sync(payment_id=payment.pk, intent=intent)
    payment_record_cancelled(payment_id=payment.pk)
    return "cancelled"


def cancellation_request_open(*, prescription_id: int, reason: str, actor: str) -> CancellationRequest:
    """Put a cancellation the pharmacy can no longer undo on the staff queue (once per
    prescription while unresolved), with the captured payment it may need to refund."""
    prescription = Prescription.objects.get(pk=prescription_id)
    payment = Payment.objects.filter(prescription_id=prescription.pk, status=Payment.Status.SUCCEEDED).first()
    try:
        with transaction.atomic():
            request, _ = CancellationRequest.objects.get_or_create(
                prescription_id=prescription.pk,
                resolved_at__isnull=True,
                defaults={
                    "clinic_id": prescription.clinic_id,
                    "payment": payment,
                    "status_when_requested": prescription.status,
                    "reason": reason[:500],
                    "requested_by": actor[:120],
                },
            )
    except IntegrityError:
        # A racing request opened it first.
        request = CancellationRequest.objects.get(prescription_id=prescription.pk, resolved_at__isnull=True)
    return request


def cancellation_request_on_refused(*, prescription_id: int, reason: str, actor: str) -> CancellationRequest:
    """The gateway would not cancel (already dispensed): the staff queue takes it from here."""
    return cancellation_request_open(prescription_id=prescription_id, reason=reason, actor=actor)


def cancellation_request_resolve(*, request_id: int, resolution: str, actor: str) -> bool:
    return bool(
        CancellationRequest.objects.filter(pk=request_id, resolved_at__isnull=True).update(
            resolved_at=timezone.now(), resolution=f"{resolution} ({actor})"[:300]
        )
    )


# --- Reconciliation ----------------------------------------------------------------------------

# Which of our payment states agree with each Stripe PaymentIntent status.
AGREES_WITH = {
    "requires_payment_method": {Payment.Status.REQUIRES_PAYMENT, Payment.Status.FAILED},
    "requires_confirmation": {Payment.Status.REQUIRES_PAYMENT},
    "requires_action": {Payment.Status.REQUIRES_PAYMENT},
    "processing": {Payment.Status.REQUIRES_PAYMENT},
    "succeeded": {Payment.Status.SUCCEEDED, Payment.Status.REFUNDED},
    "canceled": {Payment.Status.CANCELLED},
}


@dataclass(frozen=True)
class Mismatch:
    payment_id: int
    prescription_id: int
    intent_id: str
    ours: str
    stripes: str


def payment_reconcile(*, limit: int = 100, payment_ids: QuerySet[Any] | None = None) -> list[Mismatch]:
    """Ask Stripe about every unsettled payment (of `payment_ids`, when given); list those whose
    state disagrees with ours."""
    unsettled = Payment.objects.filter(status__in=OPEN).exclude(stripe_payment_intent_id="")
    if payment_ids is not None:
        unsettled = unsettled.filter(pk__in=payment_ids)
    payments = unsettled.order_by("id")[:limit]
    mismatches = []
    for payment in payments:
        intent = stripe_api.payment_intent_retrieve(intent_id=payment.stripe_payment_intent_id)
        if payment.status not in AGREES_WITH.get(intent.status, set()):
            mismatches.append(
                Mismatch(payment.pk, payment.prescription_id, intent.id, payment.status, intent.status)
            )
    return mismatches


def payment_sync(*, payment_id: int, intent: Intent | None = None) -> str:
    """Apply Stripe's state of a payment as its webhook would have (e.g. one that was lost)."""
    payment = Payment.objects.get(pk=payment_id)
    intent = intent or stripe_api.payment_intent_retrieve(intent_id=payment.stripe_payment_intent_id)
    if intent.status == "succeeded":
        return (
            "succeeded"
            if payment_record_succeeded(payment_id=payment_id, intent_id=intent.id)
            else "unchanged"
        )
    if intent.status == "canceled":
        return "cancelled" if payment_record_cancelled(payment_id=payment_id) else "unchanged"
    if intent.status == "requires_payment_method" and intent.decline_code:
        declined = payment_record_failed(payment_id=payment_id, decline_code=intent.decline_code)
        return "failed" if declined else "unchanged"
    return "unchanged"
