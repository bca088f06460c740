from django.conf import settings
from django.contrib.postgres.fields import ArrayField
from django.db import models

from patients.models import Clinic, Patient
from patients.phi import PhiCharField, PhiTextField


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
    # Controlled-drug law: GB needs the prescriber's UK address on a Schedule 2/3
    # prescription; US needs a DEA registration and a licence in the patient's state.
    address = models.CharField("practice address", max_length=300, blank=True)
    controlled_drugs_authorised = models.BooleanField(
        default=False, help_text="May prescribe controlled drugs (checked before any controlled drug)."
    )
    licensed_states = ArrayField(
        models.CharField(max_length=2), default=list, blank=True, help_text="US states licensed in (e.g. NY)."
    )
    dea_number = models.CharField("DEA registration number", max_length=9, blank=True)
    # NHS EPS (GB): the prescriber's Spine directory (SDS) identities and a work telephone.
    phone = models.CharField("work telephone", max_length=30, blank=True, help_text="Blank: the clinic's.")
    sds_user_id = models.CharField("SDS user ID", max_length=20, blank=True)
    sds_role_profile_id = models.CharField("SDS role profile ID", max_length=20, blank=True)
    sds_job_role_code = models.CharField(
        "SDS job role code",
        max_length=30,
        blank=True,
        help_text="e.g. R8000 (Clinical Practitioner Access Role).",
    )
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="prescriber_records",
        help_text="The staff login of this prescriber, if any: nobody may review their own prescription.",
    )
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
    # Clinical data for the checks, all loaded from the formulary file.
    ingredients = ArrayField(models.CharField(max_length=80), default=list, blank=True)
    therapeutic_class = models.CharField(max_length=60, blank=True)
    unit = models.CharField(max_length=30, blank=True, help_text="The dose unit, e.g. tablet.")
    unit_of_measure_code = models.CharField(
        "dm+d unit of measure",
        max_length=20,
        blank=True,
        help_text="SNOMED CT code of the unit in dm+d (GB), e.g. 428673006 for tablet.",
    )
    strength_value = models.DecimalField(max_digits=10, decimal_places=3, null=True, blank=True)
    strength_unit = models.CharField(max_length=20, blank=True, help_text="e.g. mg, per unit.")
    schedule_gb = models.CharField("GB schedule", max_length=5, blank=True)
    schedule_us = models.CharField("US schedule", max_length=5, blank=True)
    cold_chain = models.BooleanField(default=False, help_text="Stored and shipped refrigerated.")
    max_daily_dose = models.DecimalField(
        max_digits=10, decimal_places=3, null=True, blank=True, help_text="Adult maximum, in strength_unit."
    )

    class Meta:
        ordering = ["name"]
        constraints = [
            models.UniqueConstraint(fields=["code_system", "code"], name="medication_code_unique"),
        ]

    def __str__(self) -> str:
        return f"{self.name} {self.strength} {self.form}"

    @property
    def is_controlled(self) -> bool:
        return bool(self.controlled_schedule or self.schedule_gb or self.schedule_us)

    def schedule_in(self, jurisdiction: str) -> str:
        """The controlled-drug schedule in a jurisdiction ('' if not controlled there)."""
        schedule = {"GB": self.schedule_gb, "US": self.schedule_us}.get(jurisdiction, "")
        return schedule or self.controlled_schedule


class InteractionRule(models.Model):
    """A drug-drug interaction between two ingredients or classes ("class:ssri")."""

    class Severity(models.TextChoices):
        CONTRAINDICATED = "contraindicated", "Contraindicated"
        MAJOR = "major", "Major"
        MODERATE = "moderate", "Moderate"
        MINOR = "minor", "Minor"

    left = models.CharField(max_length=80)
    right = models.CharField(max_length=80)
    severity = models.CharField(max_length=20, choices=Severity.choices)
    message = models.CharField(max_length=500)
    source = models.CharField(max_length=300)

    class Meta:
        ordering = ["left", "right"]
        constraints = [models.UniqueConstraint(fields=["left", "right"], name="interaction_pair_unique")]

    def __str__(self) -> str:
        return f"{self.left} + {self.right} ({self.severity})"


class AllergyClass(models.Model):
    """Ingredients that cross-react: an allergy to one (or to the class) flags them all.

    `codes` maps SNOMED CT substance codes to the class or ingredient they name, so a coded
    allergy is recognised whatever its text. `cross_sensitivities` lists the other classes an
    allergy to this one may cross-react with, each with the outcome by the recorded reaction:
    {"to": class name, "severe": severity, "mild": severity, "unknown": severity,
    "message": what to check, "source": the guidance}.
    """

    name = models.CharField(max_length=80, unique=True)
    aliases = ArrayField(models.CharField(max_length=80), default=list, blank=True)
    ingredients = ArrayField(models.CharField(max_length=80), default=list)
    source = models.CharField(max_length=300)
    codes = models.JSONField(default=dict, blank=True)
    cross_sensitivities = models.JSONField(default=list, blank=True)

    class Meta:
        ordering = ["name"]
        verbose_name_plural = "allergy classes"

    def __str__(self) -> str:
        return self.name


class PaediatricDoseRule(models.Model):
    """A children's dose limit for one ingredient, age band and (optionally) weight band and
    indication, BNF for Children style; loaded from the formulary file with its source.

    Every limit given applies and the lowest governs: a fixed maximum per dose or per day (in
    the medication's strength unit), a maximum per kilogram of body weight per dose or per day,
    and an absolute cap. `weight_required` says the medicine is dosed by weight, so a child
    with no recent weight goes to a pharmacist.
    """

    name = models.CharField(max_length=80, unique=True)
    ingredient = models.CharField(max_length=80)
    forms = ArrayField(
        models.CharField(max_length=60), default=list, blank=True, help_text="Product forms; empty: all."
    )
    jurisdictions = ArrayField(models.CharField(max_length=2), default=list)
    indication = models.CharField(max_length=120, blank=True)
    indication_codes = ArrayField(
        models.CharField(max_length=40),
        default=list,
        blank=True,
        help_text="ICD-10 prefixes or SNOMED CT codes; empty: any indication.",
    )
    min_age_months = models.PositiveSmallIntegerField()
    max_age_months = models.PositiveSmallIntegerField(help_text="Exclusive: 216 is under 18.")
    min_weight_kg = models.DecimalField(max_digits=5, decimal_places=1, null=True, blank=True)
    max_weight_kg = models.DecimalField(
        max_digits=5, decimal_places=1, null=True, blank=True, help_text="Exclusive."
    )
    dose_unit = models.CharField(max_length=20, help_text="The unit of the limits, e.g. mg.")
    max_dose = models.DecimalField(max_digits=10, decimal_places=3, null=True, blank=True)
    max_daily = models.DecimalField(max_digits=10, decimal_places=3, null=True, blank=True)
    max_dose_per_kg = models.DecimalField(max_digits=10, decimal_places=3, null=True, blank=True)
    max_daily_per_kg = models.DecimalField(max_digits=10, decimal_places=3, null=True, blank=True)
    weight_required = models.BooleanField(default=False)
    contraindicated = models.BooleanField(
        default=False, help_text="Must not be given in this age band: the prescription is refused."
    )
    note = models.CharField(max_length=500, blank=True)
    source = models.CharField(max_length=300)

    class Meta:
        ordering = ["ingredient", "min_age_months", "name"]

    def __str__(self) -> str:
        return self.name


class StateValidityLimit(models.Model):
    """A US state's limit on how long after issue a prescription may be filled, by schedule
    ("II".."V", or "rx" for a non-controlled medicine), loaded from the formulary file."""

    state = models.CharField(max_length=2)
    schedule = models.CharField(max_length=5)
    days = models.PositiveSmallIntegerField()
    source = models.CharField(max_length=300)

    class Meta:
        ordering = ["state", "schedule"]
        constraints = [models.UniqueConstraint(fields=["state", "schedule"], name="state_validity_unique")]

    def __str__(self) -> str:
        return f"{self.state} {self.schedule}: {self.days} days"


class FormularyRelease(models.Model):
    """One load of the formulary file: which version, when, and what changed."""

    version = models.CharField(max_length=40)
    loaded_at = models.DateTimeField(auto_now_add=True)
    summary = models.JSONField(default=dict)

    class Meta:
        ordering = ["-loaded_at"]

    def __str__(self) -> str:
        return f"formulary {self.version}"


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
    # An approved prescription is paid (private) or has its NHS charge or
    # exemption recorded (nhs_funded) before it may be dispatched.
    AWAITING_PAYMENT = "awaiting_payment", "Awaiting payment"
    PAYMENT_FAILED = "payment_failed", "Payment failed (held)"
    PAID = "paid", "Paid"
    NHS_FUNDED = "nhs_funded", "NHS charge or exemption recorded"
    # The pharmacy refused an order it had acknowledged.
    REJECTED_BY_PHARMACY = "rejected_by_pharmacy", "Rejected by the pharmacy"


class Funding(models.TextChoices):
    PRIVATE = "private", "Private (paid by card)"
    NHS = "nhs", "NHS (charge or exemption; GB clinics)"


class LinkKind(models.TextChoices):
    """How a prescription follows its `previous` one."""

    REPEAT = "repeat", "Repeat issue"
    TITRATION = "titration", "Titration step"


class Prescription(models.Model):
    """A prescription from a clinic. `status` changes only through prescriptions.services."""

    clinic = models.ForeignKey(Clinic, on_delete=models.PROTECT, related_name="prescriptions")
    patient = models.ForeignKey(Patient, on_delete=models.PROTECT, related_name="prescriptions")
    prescriber = models.ForeignKey(Prescriber, on_delete=models.PROTECT, related_name="prescriptions")
    status = models.CharField(max_length=24, choices=Status.choices, default=Status.RECEIVED)
    issued_on = models.DateField()
    # Free text a clinic or pharmacist writes may name the patient or their health: encrypted.
    note = PhiCharField(max_length=500, blank=True)
    check_results = models.JSONField(default=list, blank=True)
    # Prescribing details the controlled-drug rules read.
    repeats = models.PositiveSmallIntegerField(default=0, help_text="Repeats (GB) or refills (US).")
    earliest_fill_date = models.DateField(null=True, blank=True)
    # issued_on is the date the prescriber signed it; a later start date makes the
    # "appropriate date" (Human Medicines Regulations 2012, regulation 217(7)) from which the
    # validity runs and before which nothing is supplied.
    start_date = models.DateField(
        null=True, blank=True, help_text="Not to be supplied before this date (the prescriber's start date)."
    )
    clinical_justification = PhiTextField(blank=True)
    two_factor_signed_at = models.DateTimeField(
        null=True, blank=True, help_text="When the prescriber signed with two factors (21 CFR 1311)."
    )
    status_reason = PhiCharField(max_length=500, blank=True)
    tracking_number = models.CharField(max_length=60, blank=True)
    # Who pays, and for NHS the exemption the clinic declared.
    funding = models.CharField(max_length=10, choices=Funding.choices, default=Funding.PRIVATE)
    nhs_exemption_category = models.CharField(max_length=40, blank=True)
    nhs_exemption_evidence = PhiCharField(max_length=200, blank=True)
    # A repeat issue or a titration step links to the one it follows;
    # repeats are issued every repeat_interval_days (default: the longest item's days' supply).
    previous = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.PROTECT, related_name="followers"
    )
    link_kind = models.CharField(max_length=10, choices=LinkKind.choices, blank=True)
    repeat_interval_days = models.PositiveSmallIntegerField(null=True, blank=True)
    # NHS EPS (GB): the prescription's short-form ID (with its check character) and long-form
    # UUID, fixed the first time it is dispatched, so every send and replay names it the same.
    eps_prescription_id = models.CharField("EPS prescription ID", max_length=20, blank=True, editable=False)
    eps_prescription_uuid = models.UUIDField(
        "EPS long-form prescription ID", null=True, blank=True, unique=True, editable=False
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-id"]
        indexes = [
            models.Index(fields=["clinic", "-id"]),
            models.Index(fields=["status", "id"]),
            # Support's search by tracking number.
            models.Index(fields=["tracking_number"], name="prescription_tracking_number"),
        ]
        constraints = [
            models.UniqueConstraint(
                fields=["eps_prescription_id"],
                condition=~models.Q(eps_prescription_id=""),
                name="eps_prescription_id_unique",
            ),
            # However often the beat runs, one repeat issue follows each.
            models.UniqueConstraint(
                fields=["previous"],
                condition=models.Q(link_kind="repeat"),
                name="one_repeat_issue_per_prescription",
            ),
        ]
        # A staff cancellation with compensation (gateway cancellation, refund) is a clinical
        # decision: the back office offers it to pharmacists only (support/roles.py).
        permissions = [("cancel_prescription", "Can cancel a prescription, with compensation")]

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
    quantity_words = models.CharField(max_length=200, blank=True, help_text="e.g. twenty eight")
    units_per_day = models.DecimalField(max_digits=7, decimal_places=2, null=True, blank=True)
    units_per_dose = models.DecimalField(
        max_digits=7, decimal_places=2, null=True, blank=True, help_text="Dose units each time it is taken."
    )

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
    reason = PhiTextField()
    decided_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return f"{self.decision} by {self.pharmacist} on {self.prescription}"


class PharmacistProfile(models.Model):
    """A staff user's professional registration: only registered pharmacists may decide."""

    class Body(models.TextChoices):
        GPHC = "GPhC", "General Pharmaceutical Council (GB)"
        PSNI = "PSNI", "Pharmaceutical Society of Northern Ireland"
        US_STATE_BOARD = "US-board", "US state board of pharmacy"

    user = models.OneToOneField(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="pharmacist_profile"
    )
    registration_body = models.CharField(max_length=10, choices=Body.choices)
    registration_number = models.CharField(max_length=30, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return f"{self.user} ({self.registration_body} {self.registration_number})"


class PharmacistQueue(Prescription):
    """The pharmacist's work queue: prescriptions awaiting a pharmacist, oldest first."""

    class Meta:
        proxy = True
        verbose_name = "pharmacist queue entry"
        verbose_name_plural = "pharmacist queue"


class RepeatSeries(models.Model):
    """The repeat issues of an approved prescription.

    `next_due_on` lives in the database (no in-memory ETA), so a restart delays nothing; the
    beat task claims due rows with SKIP LOCKED and moves `next_due_on` in the same
    transaction, so two racing schedulers issue each repeat once.
    """

    class Status(models.TextChoices):
        ACTIVE = "active", "Active"
        PAUSED = "paused", "Paused"
        STOPPED = "stopped", "Stopped"
        COMPLETED = "completed", "Completed"

    origin = models.OneToOneField(Prescription, on_delete=models.PROTECT, related_name="repeat_series")
    latest = models.ForeignKey(Prescription, on_delete=models.PROTECT, related_name="+")
    interval_days = models.PositiveSmallIntegerField()
    repeats_total = models.PositiveSmallIntegerField()
    issued_count = models.PositiveSmallIntegerField(default=0)
    next_due_on = models.DateField(null=True, blank=True)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.ACTIVE)
    status_reason = models.CharField(max_length=300, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name_plural = "repeat series"
        indexes = [models.Index(fields=["status", "next_due_on"])]
        constraints = [
            models.CheckConstraint(
                condition=models.Q(issued_count__lte=models.F("repeats_total")),
                name="repeat_series_within_total",
            ),
            models.CheckConstraint(
                condition=models.Q(interval_days__gte=1), name="repeat_series_interval_positive"
            ),
        ]

    def __str__(self) -> str:
        return f"repeats of prescription #{self.origin_id}"


class OffFormularyItem(models.Model):
    """A product a clinic prescribed that is not on our formulary, kept as it was sent.

    A FHIR message may name any dm+d product; rather than refuse it, the prescription is
    accepted and held for a pharmacist (the `formulary.not_listed` check names the code and
    the sender's display text). It cannot be priced or sent to the pharmacy, so a prescription
    with one can only be rejected, or cancelled by the clinic and prescribed again.
    """

    prescription = models.ForeignKey(
        Prescription, on_delete=models.CASCADE, related_name="off_formulary_items"
    )
    line = models.PositiveSmallIntegerField(help_text="Its position among the prescription's items (from 1).")
    code_system = models.CharField(max_length=80)
    code = models.CharField(max_length=40)
    display = models.CharField(
        max_length=200, blank=True, help_text="The product's name, as the clinic sent it."
    )
    dose_text = models.CharField(max_length=300)
    quantity = models.DecimalField(max_digits=9, decimal_places=2)
    unit = models.CharField(max_length=30)
    days_supply = models.PositiveIntegerField()

    class Meta:
        ordering = ["line"]
        constraints = [
            models.UniqueConstraint(fields=["prescription", "line"], name="off_formulary_item_line_unique"),
            models.CheckConstraint(
                condition=models.Q(quantity__gt=0), name="off_formulary_quantity_positive"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.display or self.code} (not on the formulary)"
