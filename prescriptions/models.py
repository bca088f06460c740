from django.conf import settings
from django.db import models

from patients.models import Clinic, Patient


class RegistrationBody(models.TextChoices):
    GMC = "GMC", "General Medical Council (GB)"
    NMC = "NMC", "Nursing and Midwifery Council (GB)"
    GPHC = "GPhC", "General Pharmaceutical Council (GB)"
    NPI = "NPI", "National Provider Identifier (US)"
    DEA = "DEA", "Drug Enforcement Administration (US)"


class Prescriber(models.Model):
    """A clinician of a clinic who may sign prescriptions."""

    clinic = models.ForeignKey(Clinic, on_delete=models.PROTECT, related_name="prescribers")
    given_name = models.CharField(max_length=100)
    family_name = models.CharField(max_length=100)
    registration_body = models.CharField(max_length=10, choices=RegistrationBody.choices)
    registration_number = models.CharField(max_length=30)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["family_name", "given_name"]
        constraints = [
            models.UniqueConstraint(
                fields=["clinic", "registration_body", "registration_number"],
                name="prescriber_registration_unique_per_clinic",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.given_name} {self.family_name} ({self.registration_body} {self.registration_number})"


class Medication(models.Model):
    """A formulary entry, loaded from prescriptions/data/formulary.json."""

    code_system = models.CharField(max_length=80)
    code = models.CharField(max_length=40)
    name = models.CharField(max_length=200)
    strength = models.CharField(max_length=60)
    form = models.CharField(max_length=60)
    controlled_schedule = models.CharField(
        max_length=10, blank=True, help_text="Controlled-drug schedule, blank if not controlled."
    )
    price_minor = models.PositiveIntegerField(help_text="Price per unit, in minor units.")
    is_active = models.BooleanField(default=True)

    class Meta:
        ordering = ["name"]
        constraints = [
            models.UniqueConstraint(fields=["code_system", "code"], name="medication_code_unique"),
        ]

    def __str__(self) -> str:
        return f"{self.name} {self.strength} {self.form}"

    @property
    def is_controlled(self) -> bool:
        return bool(self.controlled_schedule)


class Status(models.TextChoices):
    RECEIVED = "received", "Received"
    AWAITING_PHARMACIST = "awaiting_pharmacist", "Awaiting pharmacist"
    APPROVED = "approved", "Approved"
    REJECTED = "rejected", "Rejected"
    ACKNOWLEDGED = "acknowledged", "Acknowledged by pharmacy"
    DISPENSED = "dispensed", "Dispensed"
    SHIPPED = "shipped", "Shipped"
    DELIVERED = "delivered", "Delivered"
    CANCELLED = "cancelled", "Cancelled"
    DEAD_LETTERED = "dead_lettered", "Dispatch failed (dead letter)"
    # Billing (issue 4): an approved prescription is paid (private) or has its NHS charge or
    # exemption recorded (nhs_funded) before it may be dispatched.
    AWAITING_PAYMENT = "awaiting_payment", "Awaiting payment"
    PAYMENT_FAILED = "payment_failed", "Payment failed (held)"
    PAID = "paid", "Paid"
    NHS_FUNDED = "nhs_funded", "NHS charge or exemption recorded"


class Funding(models.TextChoices):
    PRIVATE = "private", "Private (paid by card)"
    NHS = "nhs", "NHS (charge or exemption; GB clinics)"


class Prescription(models.Model):
    """A prescription from a clinic. `status` changes only through prescriptions.services."""

    clinic = models.ForeignKey(Clinic, on_delete=models.PROTECT, related_name="prescriptions")
    patient = models.ForeignKey(Patient, on_delete=models.PROTECT, related_name="prescriptions")
    prescriber = models.ForeignKey(Prescriber, on_delete=models.PROTECT, related_name="prescriptions")
    status = models.CharField(max_length=24, choices=Status.choices, default=Status.RECEIVED)
    issued_on = models.DateField()
    note = models.CharField(max_length=500, blank=True)
    check_results = models.JSONField(default=list, blank=True)
    status_reason = models.CharField(max_length=500, blank=True)
    tracking_number = models.CharField(max_length=60, blank=True)
    # Billing (issue 4): who pays, and for NHS the exemption the clinic declared.
    funding = models.CharField(max_length=10, choices=Funding.choices, default=Funding.PRIVATE)
    nhs_exemption_category = models.CharField(max_length=40, blank=True)
    nhs_exemption_evidence = models.CharField(max_length=200, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-id"]
        indexes = [
            models.Index(fields=["clinic", "-id"]),
            models.Index(fields=["status", "id"]),
        ]

    def __str__(self) -> str:
        return f"Prescription #{self.pk}"


class PrescriptionItem(models.Model):
    """One medicine on a prescription."""

    prescription = models.ForeignKey(Prescription, on_delete=models.CASCADE, related_name="items")
    medication = models.ForeignKey(Medication, on_delete=models.PROTECT, related_name="+")
    dose_text = models.CharField(max_length=300)
    quantity = models.DecimalField(max_digits=9, decimal_places=2)
    unit = models.CharField(max_length=30)
    days_supply = models.PositiveIntegerField()

    class Meta:
        ordering = ["id"]
        constraints = [
            models.CheckConstraint(condition=models.Q(quantity__gt=0), name="item_quantity_positive"),
            models.CheckConstraint(condition=models.Q(days_supply__gte=1), name="item_days_supply_positive"),
        ]

    def __str__(self) -> str:
        return f"{self.medication} x {self.quantity}"


class PharmacistReview(models.Model):
    """A pharmacist's recorded decision on a prescription (never edited afterwards)."""

    class Decision(models.TextChoices):
        APPROVED = "approved", "Approved"
        REJECTED = "rejected", "Rejected"

    prescription = models.ForeignKey(Prescription, on_delete=models.PROTECT, related_name="reviews")
    pharmacist = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT)
    decision = models.CharField(max_length=10, choices=Decision.choices)
    reason = models.TextField()
    decided_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return f"{self.decision} by {self.pharmacist} on {self.prescription}"
