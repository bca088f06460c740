from django.db import models


class Event(models.Model):
    """One domain event: the append-only, ordered history of an aggregate.

    Written in the same transaction as the state change it records. `sequence` orders the
    events of one aggregate (1, 2, 3, ...) and the unique constraint makes two concurrent
    writers for the same aggregate collide instead of interleaving. A database trigger
    (see the migration) refuses UPDATE and DELETE on this table.
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
        indexes = [models.Index(fields=["type", "created_at"])]

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

    class Meta:
        indexes = [
            models.Index(
                fields=["id"],
                name="outbox_unpublished",
                condition=models.Q(published_at__isnull=True),
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
