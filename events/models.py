from django.db import models
from django.utils import timezone


class Event(models.Model):
    """One domain event: the append-only, ordered history of an aggregate.

    Written in the same transaction as the state change it records. `sequence` orders the
    events of one aggregate (1, 2, 3, ...) and the unique constraint makes two concurrent
    writers for the same aggregate collide instead of interleaving. A database trigger
    (migrations 0002 and 0009) refuses UPDATE, and DELETE of any row whose identical copy is not
    already in the archive (`events.archive`, where finished journeys move after retention).
    """

    aggregate_type = models.CharField(max_length=40)
    aggregate_id = models.BigIntegerField()
    sequence = models.PositiveIntegerField()
    clinic_id = models.BigIntegerField(null=True, db_index=True)
    type = models.CharField(max_length=80)
    payload = models.JSONField(default=dict)
    actor = models.CharField(max_length=120, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["aggregate_type", "aggregate_id", "sequence"]
        constraints = [
            models.UniqueConstraint(
                fields=["aggregate_type", "aggregate_id", "sequence"],
                name="event_sequence_unique_per_aggregate",
            ),
        ]
        indexes = [
            models.Index(fields=["type", "created_at"]),
            # The admin's search by prescription id (the unique index leads with the type).
            models.Index(fields=["aggregate_id"], name="event_aggregate_id"),
        ]

    def __str__(self) -> str:
        return f"{self.aggregate_type}#{self.aggregate_id}.{self.sequence} {self.type}"


class OutboxMessage(models.Model):
    """A pending publication of one event to the consumers subscribed to its type.

    Kept apart from Event so the event log stays append-only while the relay marks what it
    has published.
    """

    event = models.OneToOneField(Event, on_delete=models.PROTECT, related_name="outbox")
    published_at = models.DateTimeField(null=True, blank=True)
    attempts = models.PositiveIntegerField(default=0)
    created_at = models.DateTimeField(auto_now_add=True)
    # Set by the reconciler once every consumer has processed the event; until then a
    # published message whose task the broker lost is sent again (saga.reconciler).
    settled_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        indexes = [
            models.Index(
                fields=["id"],
                name="outbox_unpublished",
                condition=models.Q(published_at__isnull=True),
            ),
            models.Index(
                fields=["published_at"],
                name="outbox_unsettled",
                condition=models.Q(settled_at__isnull=True, published_at__isnull=False),
            ),
        ]

    def __str__(self) -> str:
        return f"outbox for event {self.event_id}"


class ProcessedEvent(models.Model):
    """Marks that a consumer has handled an event, so redelivery is a no-op."""

    consumer = models.CharField(max_length=120)
    event = models.ForeignKey(Event, on_delete=models.PROTECT)
    processed_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["consumer", "event"], name="processed_event_once"),
        ]

    def __str__(self) -> str:
        return f"{self.consumer} handled {self.event_id}"


class ClinicWebhookEndpoint(models.Model):
    """Where a clinic wants its prescriptions' status changes POSTed, and how they are signed.

    Rotating the secret keeps the previous one valid until `previous_secret_expires_at`:
    during that grace period each delivery carries a second `v1=` signature made with the
    previous secret, so a receiver can switch secrets without dropping a delivery.
    """

    clinic = models.OneToOneField(
        "patients.Clinic", on_delete=models.PROTECT, related_name="webhook_endpoint"
    )
    url = models.URLField(max_length=500)
    secret = models.CharField(max_length=128)
    previous_secret = models.CharField(max_length=128, blank=True)
    previous_secret_expires_at = models.DateTimeField(null=True, blank=True)
    is_active = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)
    rotated_at = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return f"webhook endpoint of clinic {self.clinic_id}"


class WebhookDelivery(models.Model):
    """One event to be POSTed to one clinic endpoint; retried until delivered or the window ends."""

    class Status(models.TextChoices):
        PENDING = "pending", "Pending"
        DELIVERED = "delivered", "Delivered"
        FAILED = "failed", "Failed"

    endpoint = models.ForeignKey(ClinicWebhookEndpoint, on_delete=models.PROTECT, related_name="deliveries")
    event = models.ForeignKey(Event, on_delete=models.PROTECT, related_name="webhook_deliveries")
    # Denormalised from the event so the admin can filter one prescription's deliveries in order.
    aggregate_id = models.BigIntegerField()
    sequence = models.PositiveIntegerField()
    payload = models.JSONField()
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.PENDING)
    attempts = models.PositiveIntegerField(default=0)
    last_error = models.CharField(max_length=500, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    # Retries stop this long after the window opened (creation, or a staff resend).
    window_started_at = models.DateTimeField(default=timezone.now)
    delivered_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        verbose_name_plural = "webhook deliveries"
        ordering = ["aggregate_id", "sequence"]
        constraints = [
            models.UniqueConstraint(fields=["endpoint", "event"], name="webhook_delivery_once_per_event"),
        ]
        indexes = [
            models.Index(fields=["status", "created_at"]),
            models.Index(fields=["aggregate_id", "sequence"], name="webhook_delivery_order"),
        ]

    def __str__(self) -> str:
        return f"delivery of event {self.event_id} to endpoint {self.endpoint_id}"


class WebhookAttempt(models.Model):
    """One POST of a delivery: what came back (or what went wrong) and how long it took."""

    delivery = models.ForeignKey(WebhookDelivery, on_delete=models.CASCADE, related_name="attempt_log")
    attempted_at = models.DateTimeField(auto_now_add=True)
    status_code = models.PositiveIntegerField(null=True, blank=True)
    duration_ms = models.PositiveIntegerField()
    error = models.CharField(max_length=500, blank=True)

    class Meta:
        ordering = ["attempted_at"]

    def __str__(self) -> str:
        return f"attempt on delivery {self.delivery_id}: {self.status_code or self.error[:40]}"


class OutboxTask(models.Model):
    """Work owed to a task (a send to a partner, a delivery, a refund), published when due.

    The outbox for everything that is not an event: written in the same transaction as the row
    it works on, one row per (task, arguments) while the work is owed. The relay publishes due
    rows and moves their due time one lease ahead, so a message the broker lost, or a task
    killed with its worker, is published again when the lease runs out. The task deletes the
    row when the work is done, or sets its due time to the next retry: a retry waits here, in
    the database, never as a countdown message held by a worker.
    """

    task = models.CharField(max_length=120)
    args = models.JSONField(default=list)
    key = models.CharField(max_length=255, unique=True, help_text="The task and its arguments.")
    due_at = models.DateTimeField()
    publications = models.PositiveIntegerField(default=0)
    retries = models.PositiveIntegerField(default=0)
    last_error = models.CharField(max_length=500, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        indexes = [models.Index(fields=["due_at"], name="outbox_task_due")]

    def __str__(self) -> str:
        return f"{self.task}{self.args} due {self.due_at:%H:%M:%S}"
