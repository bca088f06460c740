"""Outbound clinic webhooks: every prescription status change, signed and retried for a day.

Header: `Scriptline-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>`.
While a rotated-out secret is within its grace period a second `v1=` made with the previous
secret follows the first, so a receiver checks its secret against any `v1` value.
"""

from __future__ import annotations

import json
import logging
import random
import secrets
import time
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import F
from django.utils import timezone

from common import signing
from events.adapters.http import webhook_post, webhook_target_vet
from events.models import ClinicWebhookEndpoint, Event, WebhookAttempt, WebhookDelivery
from events.services import outbox_task_enqueue
from prescriptions.models import PharmacistReview, Prescription
from prescriptions.status_link import status_link_url

logger = logging.getLogger(__name__)

SIGNATURE_HEADER = "Scriptline-Signature"
DELIVER_TASK = "events.tasks.webhook_deliver"


class WebhookRetry(Exception):
    """The delivery failed transiently and is still inside its retry window."""


def signature_header(*, endpoint: ClinicWebhookEndpoint, timestamp: int, body: bytes) -> str:
    secrets_now = [endpoint.secret]
    expires = endpoint.previous_secret_expires_at
    if endpoint.previous_secret and expires is not None and expires > timezone.now():
        secrets_now.append(endpoint.previous_secret)
    return signing.signature_header(secrets=secrets_now, body=body, timestamp=timestamp)


def _deliver_owed(delivery_id: int) -> None:
    # Named, not imported: events.tasks imports this module, so this one does not import it.
    outbox_task_enqueue(task=DELIVER_TASK, args=[delivery_id])


def webhook_endpoint_rotate_secret(*, endpoint_id: int, grace: timedelta | None = None) -> str:
    """Issue a new secret; the old one stays valid (signed alongside) for the grace period."""
    grace = grace if grace is not None else timedelta(seconds=settings.CLINIC_WEBHOOK_SECRET_GRACE_SECONDS)
    new_secret = secrets.token_urlsafe(32)
    with transaction.atomic():
        endpoint = ClinicWebhookEndpoint.objects.select_for_update().get(pk=endpoint_id)
        now = timezone.now()
        endpoint.previous_secret = endpoint.secret
        endpoint.previous_secret_expires_at = now + grace
        endpoint.secret = new_secret
        endpoint.rotated_at = now
        endpoint.save(update_fields=["previous_secret", "previous_secret_expires_at", "secret", "rotated_at"])
    return new_secret


REVIEW_EVENTS = frozenset({"prescription.pharmacist_approved", "prescription.pharmacist_rejected"})
STATUS_REASON_EVENTS = frozenset({"prescription.cancelled", "prescription.rejected_by_pharmacy"})


def webhook_reason(event: Event) -> str:
    """The reason a clinic is told, read from where it is kept encrypted (the pharmacist's
    review, the prescription's status reason): events and stored payloads never hold it."""
    if event.type in REVIEW_EVENTS:
        reviews = PharmacistReview.objects.filter(pk=event.payload.get("review_id"))
        return reviews.values_list("reason", flat=True).first() or ""
    if event.type in STATUS_REASON_EVENTS:
        prescriptions = Prescription.objects.filter(pk=event.aggregate_id)
        return prescriptions.values_list("status_reason", flat=True).first() or ""
    return ""


def webhook_body(delivery: WebhookDelivery) -> bytes:
    """The bytes sent: the stored payload, with the reason added only now, on its way to the
    clinic whose data it is."""
    payload = delivery.payload
    if not payload["prescription"].get("reason"):
        reason = webhook_reason(delivery.event)
        payload = {**payload, "prescription": {**payload["prescription"], "reason": reason}}
    return json.dumps(payload, separators=(",", ":"), sort_keys=True).encode()


def webhook_payload(event: Event, *, status_url: str = "") -> dict[str, Any]:
    """What the clinic sees: ids, status, tracking and the patient's status link; never a
    patient identifier. Stored as it is; a reason is added when it is sent (webhook_body)."""
    data = event.payload
    checks = data.get("checks") or []
    blocking = "; ".join(
        str(check.get("message", "")) for check in checks if check.get("severity") == "block"
    )
    return {
        "id": f"evt_{event.pk}",
        "type": event.type,
        "created_at": event.created_at.isoformat(),
        "prescription": {
            "id": event.aggregate_id,
            "sequence": event.sequence,
            "status": data.get("to", ""),
            "reason": str(data.get("reason") or data.get("error") or blocking),
            "check_results": checks,
            "tracking_number": data.get("tracking_number", ""),
            "status_url": status_url,
        },
    }


def webhook_deliveries_create(*, event_id: int) -> WebhookDelivery | None:
    """Consumer of prescription status events: queue one delivery to the clinic's endpoint."""
    event = Event.objects.filter(pk=event_id, aggregate_type="prescription").first()
    if event is None or event.clinic_id is None:
        return None
    endpoint = ClinicWebhookEndpoint.objects.filter(clinic_id=event.clinic_id, is_active=True).first()
    if endpoint is None:
        return None
    prescription = Prescription.objects.filter(pk=event.aggregate_id).only("pk", "created_at").first()
    status_url = status_link_url(prescription=prescription) if prescription is not None else ""
    with transaction.atomic():
        delivery, created = WebhookDelivery.objects.get_or_create(
            endpoint=endpoint,
            event=event,
            defaults={
                "aggregate_id": event.aggregate_id,
                "sequence": event.sequence,
                "payload": webhook_payload(event, status_url=status_url),
            },
        )
        if created:
            _deliver_owed(delivery.pk)
    return delivery


def webhook_deliver(*, delivery_id: int) -> str:
    """POST one pending delivery once; raises WebhookRetry while a retry is still worthwhile."""
    delivery = (
        WebhookDelivery.objects.select_related("endpoint", "event")
        .filter(pk=delivery_id, status=WebhookDelivery.Status.PENDING)
        .first()
    )
    if delivery is None:
        return "not-pending"
    body = webhook_body(delivery)
    timestamp = int(time.time())
    headers = {
        "Content-Type": "application/json",
        "User-Agent": "Scriptline-Webhooks/1",
        SIGNATURE_HEADER: signature_header(endpoint=delivery.endpoint, timestamp=timestamp, body=body),
        "Scriptline-Event-Id": delivery.payload["id"],
    }
    target = webhook_target_vet(delivery.endpoint.url)
    if target.refusal:
        return _delivery_refuse(delivery_id=delivery_id, reason=target.refusal)
    result = webhook_post(
        url=delivery.endpoint.url,
        body=body,
        headers=headers,
        timeout=settings.CLINIC_WEBHOOK_TIMEOUT_SECONDS,
        address=target.address,
    )
    error = result.error or ("" if result.is_success else f"HTTP {result.status_code}")
    with transaction.atomic():
        WebhookAttempt.objects.create(
            delivery_id=delivery_id,
            status_code=result.status_code,
            duration_ms=result.duration_ms,
            error=error,
        )
        WebhookDelivery.objects.filter(pk=delivery_id).update(attempts=F("attempts") + 1, last_error=error)
        if result.is_success:
            WebhookDelivery.objects.filter(pk=delivery_id, status=WebhookDelivery.Status.PENDING).update(
                status=WebhookDelivery.Status.DELIVERED, delivered_at=timezone.now()
            )
            return "delivered"
        window = timedelta(seconds=settings.CLINIC_WEBHOOK_RETRY_WINDOW_SECONDS)
        if timezone.now() - delivery.window_started_at >= window:
            WebhookDelivery.objects.filter(pk=delivery_id, status=WebhookDelivery.Status.PENDING).update(
                status=WebhookDelivery.Status.FAILED
            )
            logger.warning("webhook delivery %s failed for good after its retry window", delivery_id)
            return "failed"
    raise WebhookRetry(error)


def _delivery_refuse(*, delivery_id: int, reason: str) -> str:
    """A target that must not be called: recorded and failed for good, nothing sent."""
    error = f"refused: {reason}"[:500]
    with transaction.atomic():
        WebhookAttempt.objects.create(delivery_id=delivery_id, status_code=None, duration_ms=0, error=error)
        WebhookDelivery.objects.filter(pk=delivery_id, status=WebhookDelivery.Status.PENDING).update(
            status=WebhookDelivery.Status.FAILED, attempts=F("attempts") + 1, last_error=error
        )
    logger.warning("webhook delivery %s refused: %s", delivery_id, reason)
    return "refused"


def webhook_delivery_resend(*, delivery_id: int, actor: str = "") -> bool:
    """Staff resend: reopen a delivery (delivered or failed) with a fresh retry window."""
    with transaction.atomic():
        reopened = (
            WebhookDelivery.objects.filter(pk=delivery_id)
            .exclude(status=WebhookDelivery.Status.PENDING)
            .update(
                status=WebhookDelivery.Status.PENDING, window_started_at=timezone.now(), delivered_at=None
            )
        )
        if reopened:
            _deliver_owed(delivery_id)
    logger.info("webhook delivery %s resent by %s", delivery_id, actor or "unknown")
    return bool(reopened)


def backoff_seconds(retries: int) -> float:
    """Exponential backoff with jitter, capped below the broker's visibility timeout (a
    waiting retry is then never redelivered as a duplicate)."""
    ceiling = min(
        settings.CLINIC_WEBHOOK_BACKOFF_MAX_SECONDS, settings.CLINIC_WEBHOOK_BACKOFF_SECONDS * (2**retries)
    )
    return random.uniform(ceiling / 2, ceiling)
