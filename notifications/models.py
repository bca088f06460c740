from django.db import models


class Notification(models.Model):
    """One message to a patient about one event on one channel: at most one, ever.

    The unique (event, channel) row is claimed before sending, and a claimed row is never sent
    again, so a redelivered event cannot message a patient twice (at most once per channel).
    """

    class Channel(models.TextChoices):
        EMAIL = "email", "Email"
        SMS = "sms", "SMS"

    class Status(models.TextChoices):
        QUEUED = "queued", "Queued (a staff resend)"
        SENDING = "sending", "Sending"
        SENT = "sent", "Sent"
        FAILED = "failed", "Failed"

    event = models.ForeignKey("events.Event", on_delete=models.PROTECT, related_name="notifications")
    patient = models.ForeignKey("patients.Patient", on_delete=models.PROTECT, related_name="notifications")
    prescription_id = models.BigIntegerField(db_index=True)
    channel = models.CharField(max_length=5, choices=Channel.choices)
    kind = models.CharField(max_length=40)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.SENDING)
    error = models.CharField(max_length=300, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    sent_at = models.DateTimeField(null=True, blank=True)
    resend_of = models.ForeignKey(
        "self", on_delete=models.PROTECT, null=True, blank=True, related_name="resends"
    )
    requested_by = models.CharField(max_length=120, blank=True, help_text="Who asked for a resend.")
    # When a resend's task claimed it (queued → sending): a claim older than the owed task's
    # lease belongs to a run that died, and the next run takes it over.
    claimed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        indexes = [models.Index(fields=["kind"], name="notification_kind")]
        constraints = [
            models.UniqueConstraint(
                fields=["event", "channel"],
                condition=models.Q(resend_of__isnull=True),
                name="notification_once_per_event_and_channel",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.kind} by {self.channel} to patient #{self.patient_id}"
