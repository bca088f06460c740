from django.db import models

from patients.models import Clinic
from patients.phi import PhiCharField
from prescriptions.models import Prescription, PrescriptionItem


class Payment(models.Model):
    """The one card payment of a private prescription, collected through a Stripe PaymentIntent.

    `idempotency_key` is derived from the prescription and fixed when the row is created, so a
    retried or redelivered billing task never creates a second PaymentIntent. `status` mirrors
    what Stripe told us last (by API answer or webhook); changes are guarded updates.
    """

    class Status(models.TextChoices):
        CREATING = "creating", "Creating the PaymentIntent"
        REQUIRES_PAYMENT = "requires_payment", "Waiting for the customer"
        FAILED = "failed", "Declined (customer may retry)"
        SUCCEEDED = "succeeded", "Succeeded"
        CANCELLED = "cancelled", "Cancelled"
        REFUNDED = "refunded", "Refunded"
        ERROR = "error", "Could not be created (terminal)"

    prescription = models.OneToOneField(Prescription, on_delete=models.PROTECT, related_name="payment")
    clinic = models.ForeignKey(Clinic, on_delete=models.PROTECT, related_name="+")
    amount_minor = models.PositiveIntegerField()
    currency = models.CharField(max_length=3)
    idempotency_key = models.CharField(max_length=80, unique=True, editable=False)
    stripe_payment_intent_id = models.CharField(max_length=80, blank=True, db_index=True)
    client_secret = models.CharField(max_length=200, blank=True)
    status = models.CharField(max_length=20, choices=Status.choices, default=Status.CREATING)
    attempts = models.PositiveIntegerField(default=0)
    last_error = models.CharField(max_length=300, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-id"]
        # The admin's filters (status, clinic, currency, date) and its newest-first order.
        indexes = [
            models.Index(fields=["status", "id"]),
            models.Index(fields=["clinic", "-id"], name="payment_clinic_newest"),
            models.Index(fields=["currency"], name="payment_currency"),
            models.Index(fields=["created_at"], name="payment_created_at"),
        ]
        constraints = [
            models.UniqueConstraint(
                fields=["stripe_payment_intent_id"],
                condition=~models.Q(stripe_payment_intent_id=""),
                name="payment_intent_unique",
            ),
            models.CheckConstraint(condition=models.Q(amount_minor__gt=0), name="payment_amount_positive"),
        ]

    def __str__(self) -> str:
        return f"Payment #{self.pk} ({self.amount_minor} {self.currency}, {self.status})"


class Refund(models.Model):
    """The refund of a payment: at most one per payment, sent with its own idempotency key."""

    class Status(models.TextChoices):
        PENDING = "pending", "Pending"
        SUCCEEDED = "succeeded", "Succeeded"
        FAILED = "failed", "Failed (staff must act)"

    payment = models.OneToOneField(Payment, on_delete=models.PROTECT, related_name="refund")
    amount_minor = models.PositiveIntegerField()
    idempotency_key = models.CharField(max_length=80, unique=True, editable=False)
    reason = models.CharField(max_length=300, blank=True)
    stripe_refund_id = models.CharField(max_length=80, blank=True)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING)
    attempts = models.PositiveIntegerField(default=0)
    last_error = models.CharField(max_length=300, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    completed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-id"]

    def __str__(self) -> str:
        return f"Refund #{self.pk} of payment #{self.payment_id} ({self.status})"


class StripeEvent(models.Model):
    """Each Stripe webhook event, stored once by its id: a redelivery is a no-op."""

    event_id = models.CharField(max_length=80, unique=True)
    type = models.CharField(max_length=60)
    payment_intent_id = models.CharField(max_length=80, db_index=True, blank=True)
    received_at = models.DateTimeField(auto_now_add=True)
    applied = models.BooleanField(default=False, help_text="False when it changed nothing.")

    class Meta:
        verbose_name = "Stripe event"
        ordering = ["-id"]
        indexes = [models.Index(fields=["type"], name="stripe_event_type")]

    def __str__(self) -> str:
        return f"{self.type} {self.event_id}"


class CancellationRequest(models.Model):
    """The staff queue: a cancellation that cannot be done automatically (already with the
    pharmacy or dispensed), with the refund it may need. Staff resolve it by hand."""

    prescription = models.ForeignKey(Prescription, on_delete=models.PROTECT, related_name="+")
    clinic = models.ForeignKey(Clinic, on_delete=models.PROTECT, related_name="+")
    payment = models.ForeignKey(Payment, on_delete=models.PROTECT, null=True, blank=True, related_name="+")
    status_when_requested = models.CharField(max_length=24)
    reason = PhiCharField(max_length=500)
    requested_by = models.CharField(max_length=120, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    resolved_at = models.DateTimeField(null=True, blank=True)
    resolution = models.CharField(max_length=300, blank=True)

    class Meta:
        ordering = ["-id"]
        indexes = [models.Index(fields=["status_when_requested"], name="cancellation_request_status")]
        constraints = [
            models.UniqueConstraint(
                fields=["prescription"],
                condition=models.Q(resolved_at__isnull=True),
                name="one_open_cancellation_request_per_prescription",
            ),
        ]

    def __str__(self) -> str:
        return f"Cancellation request #{self.pk} for {self.prescription}"

    @property
    def needs_refund(self) -> bool:
        return self.payment_id is not None


# --- NHS ----------------------------------------------------------------------------------------


class NhsChargeRate(models.Model):
    """The NHS prescription charge per item in England, from the date it applies (it changes
    each April). Data, not code: finance adds next year's row in the admin."""

    effective_from = models.DateField(unique=True)
    amount_minor = models.PositiveIntegerField(help_text="Charge per item, in pence.")
    source = models.CharField(max_length=300, help_text="Where the figure comes from.")

    class Meta:
        verbose_name = "NHS charge rate"
        ordering = ["-effective_from"]

    def __str__(self) -> str:
        return f"£{self.amount_minor / 100:.2f} per item from {self.effective_from}"


class NhsCharge(models.Model):
    """What an NHS prescription costs the patient: the per-item charge, or an exemption with
    the evidence supplied. Recorded once, when the prescription is approved."""

    prescription = models.OneToOneField(Prescription, on_delete=models.PROTECT, related_name="nhs_charge")
    clinic = models.ForeignKey(Clinic, on_delete=models.PROTECT, related_name="+")
    exemption_category = models.CharField(max_length=40, blank=True)
    exemption_evidence = models.CharField(max_length=200, blank=True)
    exemption_verified = models.BooleanField(
        default=False, help_text="True when we could check it ourselves (age from date of birth)."
    )
    rate = models.ForeignKey(NhsChargeRate, on_delete=models.PROTECT, null=True, blank=True)
    items = models.PositiveIntegerField()
    charge_per_item_minor = models.PositiveIntegerField()
    total_minor = models.PositiveIntegerField()
    recorded_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        verbose_name = "NHS charge"
        ordering = ["-id"]
        indexes = [
            models.Index(fields=["exemption_category"], name="nhs_charge_exemption"),
            models.Index(fields=["recorded_at"], name="nhs_charge_recorded_at"),
        ]

    def __str__(self) -> str:
        return f"NHS charge for {self.prescription}"

    @property
    def is_exempt(self) -> bool:
        return bool(self.exemption_category)


class ClaimBatch(models.Model):
    """One month's NHS claim: every dispensed NHS item not claimed before."""

    class Status(models.TextChoices):
        OPEN = "open", "Open (may still gain items)"
        SUBMITTED = "submitted", "Submitted (frozen)"

    month = models.DateField(unique=True, help_text="The first day of the claimed month.")
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.OPEN)
    created_at = models.DateTimeField(auto_now_add=True)
    built_at = models.DateTimeField(null=True, blank=True)
    submitted_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-month"]
        verbose_name_plural = "claim batches"
        constraints = [
            models.CheckConstraint(condition=models.Q(month__day=1), name="claim_month_is_first_day"),
        ]

    def __str__(self) -> str:
        return f"NHS claim {self.month:%Y-%m}"


class ClaimItem(models.Model):
    """One dispensed NHS item in a claim. Unique per prescription item: never claimed twice."""

    batch = models.ForeignKey(ClaimBatch, on_delete=models.PROTECT, related_name="items")
    prescription_item = models.OneToOneField(PrescriptionItem, on_delete=models.PROTECT, related_name="+")
    prescription = models.ForeignKey(Prescription, on_delete=models.PROTECT, related_name="+")
    clinic = models.ForeignKey(Clinic, on_delete=models.PROTECT, related_name="+")
    dispensed_at = models.DateTimeField()
    exemption_category = models.CharField(max_length=40, blank=True)
    charge_collected_minor = models.PositiveIntegerField()

    class Meta:
        ordering = ["batch", "id"]

    def __str__(self) -> str:
        return f"Item {self.prescription_item_id} in {self.batch}"
