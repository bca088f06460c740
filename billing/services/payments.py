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
from django.db import IntegrityError, connection, transaction
from django.db.models import F, QuerySet
from django.utils import timezone

from billing.adapters import stripe as stripe_api
from billing.models import CancellationRequest, Payment, Refund, StripeEvent
from billing.payments import Intent, PaymentRejected, PaymentUnavailable, WebhookInvalid
from common import rows
from events.services import outbox_task_enqueue
from patients.models import Clinic
from prescriptions import services as prescriptions
from prescriptions.models import Medication, Prescription, PrescriptionItem, Status

logger = logging.getLogger(__name__)

OPEN = frozenset({Payment.Status.CREATING, Payment.Status.REQUIRES_PAYMENT, Payment.Status.FAILED})


def payment_idempotency_key(*, prescription_id: int) -> str:
    return f"scriptline-payment-{prescription_id}"


@dataclass(frozen=True)
class Billable:
    """What billing reads of an approved prescription, in one statement."""

    prescription_id: int
    funding: str
    clinic_id: int
    currency: str
    # Formulary price × quantity summed over the items, before the dispensing fee.
    medicines_minor: Decimal

    @property
    def amount_minor(self) -> int:
        """Formulary price × quantity for every item, plus the dispensing fee, in minor units."""
        total = self.medicines_minor + settings.BILLING_DISPENSING_FEE_MINOR
        return int(total.quantize(Decimal(1), rounding=ROUND_HALF_UP))


_BILLABLE_SQL = (
    "SELECT p.funding, p.clinic_id, c.currency,"
    " coalesce(sum(m.price_minor * i.quantity), 0)"
    f' FROM "{Prescription._meta.db_table}" AS p'
    f' JOIN "{Clinic._meta.db_table}" AS c ON c.id = p.clinic_id'
    f' LEFT JOIN "{PrescriptionItem._meta.db_table}" AS i ON i.prescription_id = p.id'
    f' LEFT JOIN "{Medication._meta.db_table}" AS m ON m.id = i.medication_id'
    " WHERE p.id = %s AND p.status = %s"
    " GROUP BY p.id, c.id"
)


def billable_read(*, prescription_id: int) -> Billable | None:
    """The funding, clinic, currency and medicines' price of an approved prescription (None
    when it is not approved)."""
    with rows.planned_cursor() as cursor:
        cursor.execute(_BILLABLE_SQL, [prescription_id, Status.APPROVED])
        row = cursor.fetchone()
    if row is None:
        return None
    funding, clinic_id, currency, medicines = row
    return Billable(prescription_id, funding, clinic_id, currency, Decimal(medicines))


_PAYMENT_COLUMNS = rows.columns_sql(Payment, "pay")
# The payment row of a prescription, created on the first attempt, and the attempt counted,
# in one statement; no row when an existing payment is past creating/requires_payment.
_PAYMENT_ATTEMPT_SQL = (
    f'INSERT INTO "{Payment._meta.db_table}" AS pay'
    " (prescription_id, clinic_id, amount_minor, currency, idempotency_key, stripe_payment_intent_id,"
    " client_secret, status, attempts, last_error, created_at, updated_at)"
    " VALUES (%(prescription)s, %(clinic)s, %(amount)s, %(currency)s, %(key)s, '', '', %(creating)s, 1, '',"
    " %(now)s, %(now)s)"
    " ON CONFLICT (prescription_id) DO UPDATE SET attempts = pay.attempts + 1"
    " WHERE pay.status IN (%(creating)s, %(requires_payment)s)"
    f" RETURNING {_PAYMENT_COLUMNS}"
)


def payment_start(*, prescription_id: int, billable: Billable | None = None) -> str:
    """Create the PaymentIntent of an approved private prescription; returns what happened.

    Safe to run any number of times: the Payment row and the Stripe idempotency key are fixed
    per prescription. Raises PaymentUnavailable when the caller should retry later. `billable`
    is the prescription as billable_read just read it, if the caller has it.
    """
    if billable is None:
        billable = billable_read(prescription_id=prescription_id)
    if billable is None:
        return "not-approved"
    # The row exists (and counts this attempt) before Stripe is called.
    with rows.planned_cursor() as cursor:
        cursor.execute(
            _PAYMENT_ATTEMPT_SQL,
            {
                "prescription": prescription_id,
                "clinic": billable.clinic_id,
                "amount": billable.amount_minor,
                "currency": billable.currency.lower(),
                "key": payment_idempotency_key(prescription_id=prescription_id),
                "creating": Payment.Status.CREATING,
                "requires_payment": Payment.Status.REQUIRES_PAYMENT,
                "now": timezone.now(),
            },
        )
        row = cursor.fetchone()
    if row is None:
        return "already-settled"
    payment = rows.instance_from_columns(Payment, row)
    assert payment is not None  # RETURNING names the row's primary key
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
        attempts = payment.attempts  # counted above, before the call
        if attempts >= settings.STRIPE_MAX_ATTEMPTS:
            _payment_record_error(payment_id=payment.pk, error=f"gave up after {attempts} attempts: {error}")
            return "error"
        raise
    payment_record_intent(payment_id=payment.pk, intent=intent)
    return "awaiting-payment"


# The intent recorded once (the first one stays) and a creating payment moved to
# requires_payment, in one statement that hands back the row; no row (and no write) when both
# were done already.
_RECORD_INTENT_SQL = (
    f'UPDATE "{Payment._meta.db_table}" AS pay SET'
    " stripe_payment_intent_id = CASE WHEN pay.stripe_payment_intent_id = '' THEN %(intent)s"
    " ELSE pay.stripe_payment_intent_id END,"
    " client_secret = CASE WHEN pay.stripe_payment_intent_id = '' THEN %(secret)s ELSE pay.client_secret END,"
    " status = CASE WHEN pay.status = %(creating)s THEN %(requires_payment)s ELSE pay.status END,"
    " last_error = CASE WHEN pay.status = %(creating)s THEN '' ELSE pay.last_error END"
    " WHERE pay.id = %(payment)s AND (pay.stripe_payment_intent_id = '' OR pay.status = %(creating)s)"
    f" RETURNING {_PAYMENT_COLUMNS}"
)


def payment_record_intent(*, payment_id: int, intent: Intent) -> None:
    with transaction.atomic():
        with rows.planned_cursor() as cursor:
            cursor.execute(
                _RECORD_INTENT_SQL,
                {
                    "intent": intent.id,
                    "secret": intent.client_secret,
                    "creating": Payment.Status.CREATING,
                    "requires_payment": Payment.Status.REQUIRES_PAYMENT,
                    "payment": payment_id,
                },
            )
            row = cursor.fetchone()
        recorded = rows.instance_from_columns(Payment, row) if row is not None else None
        payment = recorded if recorded is not None else Payment.objects.get(pk=payment_id)
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


# A captured payment: succeeded from any open state (or cancelled: refunded below), the intent
# recorded if it was not yet; the row handed back.
_RECORD_SUCCEEDED_SQL = (
    f'UPDATE "{Payment._meta.db_table}" AS pay SET'
    " stripe_payment_intent_id = CASE WHEN pay.stripe_payment_intent_id = '' THEN %(intent)s"
    " ELSE pay.stripe_payment_intent_id END,"
    " status = %(succeeded)s, last_error = ''"
    " WHERE pay.id = %(payment)s AND pay.status = ANY(%(from)s)"
    " AND (NOT %(intent_must_match)s OR pay.stripe_payment_intent_id IN ('', %(intent)s))"
    f" RETURNING {_PAYMENT_COLUMNS}"
)


# No savepoint of its own inside a caller's transaction (the webhook's): nobody goes on after
# it failed, its writes go or stay with the caller's.
@transaction.atomic(savepoint=False)
def payment_record_succeeded(*, payment_id: int, intent_id: str, intent_must_match: bool = False) -> bool:
    """Stripe captured the money: mark it and move the prescription on to dispatch.

    A prescription cancelled meanwhile cannot take the money: it is refunded at once. With
    `intent_must_match`, only a payment with no intent yet or this one is changed, and nothing
    is written when it does not change (the webhook's lookup, see stripe_webhook_receive).
    """
    with rows.planned_cursor() as cursor:
        cursor.execute(
            _RECORD_SUCCEEDED_SQL,
            {
                "intent": intent_id,
                "succeeded": Payment.Status.SUCCEEDED,
                "payment": payment_id,
                "from": sorted(OPEN | {Payment.Status.CANCELLED}),
                "intent_must_match": intent_must_match,
            },
        )
        row = cursor.fetchone()
    if row is None:
        if not intent_must_match:
            # Already settled: only the intent is recorded, if it was not yet.
            Payment.objects.filter(pk=payment_id, stripe_payment_intent_id="").update(
                stripe_payment_intent_id=intent_id
            )
        return False
    payment = rows.instance_from_columns(Payment, row)
    assert payment is not None  # RETURNING names the row's primary key
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


def _intent_shaped(intent: dict[str, Any]) -> bool:
    """The parts of a PaymentIntent the handlers read have a PaymentIntent's types: a string id,
    and metadata and last_payment_error objects where present."""
    return isinstance(intent.get("id"), str) and all(
        isinstance(intent.get(name) or {}, dict) for name in ("metadata", "last_payment_error")
    )


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
    if intent.get("object") != "payment_intent" or not intent.get("id") or not _intent_shaped(intent):
        raise WebhookInvalid("event data is not a PaymentIntent")
    try:
        with transaction.atomic():
            # A success for the payment its metadata names (the usual case) is applied by the
            # guarded update alone; anything else looks the payment up first.
            applied = known = _succeeded_by_metadata(event.type, intent)
            if not applied:
                payment = _payment_for(intent)
                known = payment is not None
                applied = payment is not None and handler(payment, intent)
            # The effect, then the event stored with whether it applied: a second delivery of
            # the same event finds its effect's guards already closed, and its insert collides
            # with the first's, rolling back anything it wrote.
            rows.insert(
                StripeEvent(
                    event_id=event.id,
                    type=event.type,
                    payment_intent_id=str(intent["id"])[:80],
                    applied=applied,
                )
            )
    except IntegrityError:
        return "duplicate"
    if not known:
        logger.warning("stripe event %s is for an unknown PaymentIntent; stored, not applied", event.id)
        return "unknown-payment"
    return "applied" if applied else "ignored"


def _succeeded_by_metadata(event_type: str, intent: dict[str, Any]) -> bool:
    """Apply a payment_intent.succeeded to the payment its metadata names, if that payment has
    this intent or none yet and is open; False (nothing written) otherwise."""
    if event_type != "payment_intent.succeeded":
        return False
    payment_id = str((intent.get("metadata") or {}).get("payment_id", ""))
    low, high = connection.ops.integer_field_range("BigAutoField")
    if not payment_id.isdigit() or not low <= int(payment_id) <= high:
        return False
    return payment_record_succeeded(
        payment_id=int(payment_id), intent_id=str(intent["id"]), intent_must_match=True
    )


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
