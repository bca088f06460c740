# Staff registration numbers live on prescriptions.PharmacistProfile (one place for the rule
# "a registered pharmacist decides"); the support app keeps roles, scoping and 2FA tooling,
# the support console's enquiries and actions, and the operator's task statistics.
from django.conf import settings
from django.contrib.postgres.fields import ArrayField
from django.db import models
from django.utils import timezone

from patients.phi import PhiTextField


class Enquiry(models.Model):
    """A patient's (or their clinic's) question, worked by support until it is resolved.

    `due_at` is fixed when the enquiry is opened, from the category's SLA
    (settings.SUPPORT_ENQUIRY_SLA_HOURS). Notes and the resolution may name the patient or
    their health, so they are encrypted like patient identifiers.
    """

    class Channel(models.TextChoices):
        PHONE = "phone", "Phone"
        EMAIL = "email", "Email"
        CHAT = "chat", "Chat"
        CLINIC = "clinic", "Clinic"

    class Category(models.TextChoices):
        WHERE_IS_MY_ORDER = "where_is_my_order", "Where is my order"
        PAYMENT = "payment", "Payment"
        SIDE_EFFECTS = "side_effects", "Side effects (goes to a pharmacist)"
        COMPLAINT = "complaint", "Complaint"
        OTHER = "other", "Other"

    class Status(models.TextChoices):
        OPEN = "open", "Open"
        ESCALATED = "escalated", "With a pharmacist"
        RESOLVED = "resolved", "Resolved"

    clinic = models.ForeignKey("patients.Clinic", on_delete=models.PROTECT, related_name="+")
    patient = models.ForeignKey("patients.Patient", on_delete=models.PROTECT, related_name="enquiries")
    prescription = models.ForeignKey(
        "prescriptions.Prescription",
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="enquiries",
    )
    channel = models.CharField(max_length=10, choices=Channel.choices)
    category = models.CharField(max_length=20, choices=Category.choices)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.OPEN)
    due_at = models.DateTimeField("due", help_text="Opened time plus the category's SLA.")
    assignee = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="+",
        limit_choices_to={"is_staff": True, "is_active": True},
    )
    resolution = PhiTextField(blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    escalated_at = models.DateTimeField(null=True, blank=True)
    resolved_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        verbose_name_plural = "enquiries"
        ordering = ["due_at", "id"]
        indexes = [models.Index(fields=["status", "due_at"])]
        constraints = [
            models.CheckConstraint(
                condition=models.Q(status="resolved", resolved_at__isnull=False)
                | (~models.Q(status="resolved") & models.Q(resolved_at__isnull=True)),
                name="enquiry_resolved_exactly_when_resolved_at",
            ),
        ]

    def __str__(self) -> str:
        return f"Enquiry #{self.pk}"

    @property
    def is_overdue(self) -> bool:
        return self.status != self.Status.RESOLVED and self.due_at < timezone.now()


class EnquiryNote(models.Model):
    """A note on an enquiry: who wrote it and when; the text is encrypted."""

    enquiry = models.ForeignKey(Enquiry, on_delete=models.PROTECT, related_name="notes")
    author = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    body = PhiTextField()
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["created_at", "id"]

    def __str__(self) -> str:
        return f"note #{self.pk} on enquiry #{self.enquiry_id}"


class SupportAction(models.Model):
    """One thing support did for a patient, with the reason they gave. Append-only (a trigger).

    The permissions below are the support console's actions (support/roles.py grants them).
    """

    class Kind(models.TextChoices):
        IDENTITY_CHECK = "identity_check", "Identity check"
        RESEND_NOTIFICATION = "resend_notification", "Resent a patient notification"
        RESEND_WEBHOOK = "resend_webhook", "Resent a clinic webhook"
        REQUEST_CANCELLATION = "request_cancellation", "Requested a cancellation"
        ESCALATE = "escalate", "Escalated to a pharmacist"
        ADD_NOTE = "add_note", "Added a note"
        RESOLVE = "resolve", "Resolved an enquiry"

    clinic = models.ForeignKey("patients.Clinic", on_delete=models.PROTECT, related_name="+")
    patient = models.ForeignKey("patients.Patient", on_delete=models.PROTECT, related_name="+")
    prescription = models.ForeignKey(
        "prescriptions.Prescription", on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )
    enquiry = models.ForeignKey(
        Enquiry, on_delete=models.PROTECT, null=True, blank=True, related_name="actions"
    )
    staff_user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    kind = models.CharField(max_length=24, choices=Kind.choices)
    reason = PhiTextField(blank=True)
    # What happened, in words with no patient data ("passed", "resent 2", "not cancellable: ...").
    outcome = models.CharField(max_length=300, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-id"]
        indexes = [models.Index(fields=["patient", "-id"])]
        permissions = [
            ("use_patient_page", "Can open the support patient page (after an identity check)"),
            ("resend_notification", "Can resend a patient notification"),
            ("resend_webhook", "Can resend a clinic webhook"),
            ("request_cancellation", "Can request a prescription's cancellation"),
            ("escalate_enquiry", "Can escalate an enquiry to a pharmacist"),
        ]

    def __str__(self) -> str:
        return f"{self.get_kind_display()} by {self.staff_user_id} for patient #{self.patient_id}"


class TaskStatistic(models.Model):
    """Cumulative outcomes and run times of one Celery task on one queue (for /metrics).

    One row per (queue, task, outcome), updated in place by the workers (support.metrics):
    counters only ever grow, as Prometheus counters must. `bucket_counts[i]` counts runs that
    took at most support.metrics.LATENCY_BUCKETS[i] seconds (cumulative, like Prometheus).
    """

    queue = models.CharField(max_length=40)
    task = models.CharField(max_length=120)
    outcome = models.CharField(max_length=10)
    count = models.BigIntegerField(default=0)
    seconds_total = models.FloatField(default=0)
    bucket_counts = ArrayField(models.BigIntegerField(), default=list)
    updated_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["queue", "task", "outcome"], name="task_statistic_once"),
        ]
        permissions = [("view_dashboard", "Can view the operator dashboard")]

    def __str__(self) -> str:
        return f"{self.task} on {self.queue}: {self.outcome} x{self.count}"
