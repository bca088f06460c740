import uuid

from django.db import models
from django.utils import timezone

from patients.phi import PhiCharField
from prescriptions.models import Prescription


class Dispatch(models.Model):
    """Sending one prescription to the pharmacy gateway: at most one per prescription.

    `idempotency_key` is fixed when the row is created and sent with every attempt, so the
    gateway creates at most one order however often the send is retried or replayed.
    """

    class Status(models.TextChoices):
        PENDING = "pending", "Pending"
        ACKNOWLEDGED = "acknowledged", "Acknowledged"
        DEAD_LETTERED = "dead_lettered", "Dead-lettered"
        FAILED = "failed", "Failed (terminal)"

    prescription = models.OneToOneField(Prescription, on_delete=models.PROTECT, related_name="dispatch")
    idempotency_key = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING)
    attempts = models.PositiveIntegerField(default=0)
    last_error = models.TextField(blank=True)
    gateway_order_id = models.CharField(max_length=80, blank=True, db_index=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    acknowledged_at = models.DateTimeField(null=True, blank=True)
    # When we last asked the gateway where the order is (orders_poll_stale).
    status_checked_at = models.DateTimeField(null=True, blank=True)
    # Transient failures are retried until GATEWAY_RETRY_WINDOW_SECONDS after this (creation,
    # or an operator's replay).
    window_started_at = models.DateTimeField(default=timezone.now)

    class Meta:
        verbose_name_plural = "dispatches"
        indexes = [models.Index(fields=["status", "id"])]

    def __str__(self) -> str:
        return f"Dispatch of {self.prescription}"


class DeadLetter(models.Model):
    """A dispatch that ran out of attempts, for an operator to replay or cancel."""

    dispatch = models.ForeignKey(Dispatch, on_delete=models.PROTECT, related_name="dead_letters")
    error = models.TextField()
    attempts = models.PositiveIntegerField()
    payload = models.JSONField(default=dict, help_text="What was being sent, without PHI.")
    created_at = models.DateTimeField(auto_now_add=True)
    resolved_at = models.DateTimeField(null=True, blank=True)
    resolution = models.CharField(max_length=20, blank=True)

    class Meta:
        ordering = ["-id"]

    def __str__(self) -> str:
        return f"Dead letter #{self.pk} ({self.dispatch})"


class GatewayWebhookEvent(models.Model):
    """Each gateway webhook event, stored once by its id: a redelivery is a no-op."""

    event_id = models.CharField(max_length=80, unique=True)
    type = models.CharField(max_length=40)
    order_id = models.CharField(max_length=80, db_index=True)
    payload = models.JSONField()
    received_at = models.DateTimeField(auto_now_add=True)
    applied = models.BooleanField(default=False, help_text="False when it changed nothing.")

    class Meta:
        ordering = ["-id"]
        indexes = [models.Index(fields=["type"], name="gateway_webhook_event_type")]

    def __str__(self) -> str:
        return f"{self.type} {self.event_id}"


class GatewayCancellation(models.Model):
    """Compensation for a prescription cancelled after the gateway acknowledged its order.

    At most one per dispatch. The send is retried on transient errors with the same
    idempotency key; the gateway refuses (409) once the order is dispensed.
    """

    class Status(models.TextChoices):
        PENDING = "pending", "Pending"
        CANCELLED = "cancelled", "Cancelled at the gateway"
        REFUSED = "refused", "Refused: already dispensed"
        FAILED = "failed", "Failed (staff must act)"

    dispatch = models.OneToOneField(Dispatch, on_delete=models.PROTECT, related_name="cancellation")
    idempotency_key = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.PENDING)
    reason = PhiCharField(max_length=500)
    requested_by = models.CharField(max_length=120, blank=True)
    attempts = models.PositiveIntegerField(default=0)
    last_error = models.CharField(max_length=500, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    completed_at = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return f"cancellation of dispatch {self.dispatch_id}"


class OrderAlert(models.Model):
    """An order the gateway has gone quiet about, raised to the operators: no progress after we
    asked (or we could not ask) for longer than ORDER_ESCALATE_AFTER_SECONDS, or an answer we
    cannot apply. At most one open alert per dispatch; an operator resolves it."""

    dispatch = models.ForeignKey(Dispatch, on_delete=models.PROTECT, related_name="alerts")
    reason = models.CharField(max_length=300)
    gateway_status = models.CharField(max_length=20, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    resolved_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-id"]
        constraints = [
            models.UniqueConstraint(
                fields=["dispatch"],
                condition=models.Q(resolved_at__isnull=True),
                name="order_alert_one_open_per_dispatch",
            ),
        ]

    def __str__(self) -> str:
        return f"Order alert #{self.pk} ({self.dispatch})"


class PartnerCircuit(models.Model):
    """A circuit breaker per partner: after GATEWAY_CIRCUIT_FAILURES transient failures in a row
    the partner is left alone until `open_until` (a longer pause each time it opens again), so
    an outage delays work without spending its retry window or hammering the partner; the
    first success closes it."""

    partner = models.CharField(max_length=40, unique=True)
    failures = models.PositiveIntegerField(default=0)
    times_opened = models.PositiveIntegerField(default=0)
    open_until = models.DateTimeField(null=True, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return f"circuit of {self.partner}"
