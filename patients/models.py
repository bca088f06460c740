from django.conf import settings
from django.contrib.postgres.fields import ArrayField
from django.db import models

from patients.phi import PhiCharField, PhiDateField, PhiEmailField, PhiTextField


class Jurisdiction(models.TextChoices):
    GB = "GB", "Great Britain"
    US = "US", "United States"


class Clinic(models.Model):
    """A partner clinic: the tenant every patient and prescription belongs to."""

    name = models.CharField(max_length=200)
    jurisdiction = models.CharField(max_length=2, choices=Jurisdiction.choices)
    currency = models.CharField(max_length=3, default="GBP")
    ods_code = models.CharField("ODS / organisation code", max_length=20, blank=True)
    address = models.CharField(max_length=300, blank=True)
    # What an NHS EPS prescription-order message says about the prescribing organisation
    # (pharmacy/fhir/eps): a work telephone number, a structured address and, for primary
    # care, the managing organisation (the integrated care board) it is part of.
    phone = models.CharField("work telephone", max_length=30, blank=True)
    address_line = models.CharField("address (premises and street)", max_length=200, blank=True)
    city = models.CharField(max_length=100, blank=True)
    district = models.CharField("county / district", max_length=100, blank=True)
    postal_code = models.CharField(max_length=20, blank=True)
    managing_organisation_ods_code = models.CharField(
        "managing organisation ODS code",
        max_length=20,
        blank=True,
        help_text="GB: the integrated care board.",
    )
    managing_organisation_name = models.CharField(max_length=200, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


def api_scopes_all() -> list[str]:
    return list(settings.OAUTH2_PROVIDER["SCOPES"])


class ClinicClient(models.Model):
    """Ties an OAuth2 client-credentials application to exactly one clinic."""

    clinic = models.ForeignKey(Clinic, on_delete=models.PROTECT, related_name="clients")
    application = models.OneToOneField(
        "oauth2_provider.Application",
        on_delete=models.CASCADE,
        related_name="clinic_client",
    )
    created_at = models.DateTimeField(auto_now_add=True)
    # Revocation is immediate: the authentication class refuses a revoked client's tokens.
    revoked_at = models.DateTimeField(null=True, blank=True)
    last_used_at = models.DateTimeField(null=True, blank=True, help_text="Updated at most once a minute.")
    # The token endpoint mints only these (accounts.authentication.ClinicOAuth2Validator).
    allowed_scopes = ArrayField(
        models.CharField(
            max_length=40, choices=[(scope, scope) for scope in settings.OAUTH2_PROVIDER["SCOPES"]]
        ),
        default=api_scopes_all,
        help_text="Scopes this client may be issued, comma-separated; without the :write ones it is read-only.",
    )

    def __str__(self) -> str:
        return f"{self.application} for {self.clinic}"


class Sex(models.TextChoices):
    FEMALE = "female", "Female"
    MALE = "male", "Male"
    OTHER = "other", "Other"
    UNKNOWN = "unknown", "Unknown"


class Patient(models.Model):
    """A clinic's patient. Identifiers here are personal data: never log them.

    The identifiers are encrypted field by field (patients.phi); the *_index columns are
    keyed HMACs of the normalised values, the only way to search them.
    """

    class HepaticImpairment(models.TextChoices):
        NONE = "none", "None"
        MILD = "mild", "Mild (Child-Pugh A)"
        MODERATE = "moderate", "Moderate (Child-Pugh B)"
        SEVERE = "severe", "Severe (Child-Pugh C)"

    class CardiacHistory(models.TextChoices):
        # NICE NG87: the findings that call for a cardiology opinion before ADHD medication.
        CONGENITAL_HEART_DISEASE = "congenital_heart_disease", "Congenital heart disease"
        CARDIAC_SURGERY = "cardiac_surgery", "Previous cardiac surgery"
        FAMILY_SUDDEN_CARDIAC_DEATH = (
            "family_sudden_cardiac_death",
            "Sudden cardiac death of a first-degree relative under 40",
        )
        EXERTIONAL_BREATHLESSNESS = "exertional_breathlessness", "Shortness of breath on exertion"
        EXERTIONAL_SYNCOPE = "exertional_syncope", "Fainting on exertion or in response to fright or noise"
        PALPITATIONS = "palpitations", "Palpitations"
        CARDIAC_CHEST_PAIN = "cardiac_chest_pain", "Chest pain suggesting cardiac origin"
        HEART_FAILURE = "heart_failure", "Signs of heart failure"
        HEART_MURMUR = "heart_murmur", "Heart murmur"
        HYPERTENSION = "hypertension", "Hypertension"
        ARRHYTHMIA = "arrhythmia", "Arrhythmia"
        OTHER_HEART_DISEASE = "other_heart_disease", "Other structural or heart disease"

    clinic = models.ForeignKey(Clinic, on_delete=models.PROTECT, related_name="patients")
    given_name = PhiCharField(max_length=100)
    family_name = PhiCharField(max_length=100)
    birth_date = PhiDateField()
    sex = models.CharField(max_length=10, choices=Sex.choices, default=Sex.UNKNOWN)
    nhs_number = PhiCharField("NHS number", max_length=10, blank=True)
    address_line = PhiCharField(max_length=200, blank=True)
    city = PhiCharField(max_length=100, blank=True)
    region = PhiCharField("county / state", max_length=50, blank=True)
    postal_code = PhiCharField(max_length=20, blank=True)
    email = PhiEmailField(blank=True)
    phone = PhiCharField(max_length=30, blank=True)
    # Blind indexes (patients.phi): HMAC-SHA256 hex, "" when the identifier is blank.
    nhs_number_index = models.CharField(max_length=64, blank=True, db_index=True, editable=False)
    email_index = models.CharField(max_length=64, blank=True, db_index=True, editable=False)
    phone_index = models.CharField(max_length=64, blank=True, db_index=True, editable=False)
    family_name_birth_date_index = models.CharField(max_length=64, blank=True, db_index=True, editable=False)
    name_birth_date_index = models.CharField(max_length=64, blank=True, db_index=True, editable=False)
    # A duplicate record merged (in the admin) into the one kept; its prescriptions stay on it.
    merged_into = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.PROTECT, related_name="merged_records", editable=False
    )
    # Clinical context the checks read (prescriptions.checks.patient_context); null or blank:
    # not recorded. The latest values sent with a registration or prescription stand.
    pregnant = models.BooleanField(null=True, blank=True)
    breastfeeding = models.BooleanField(null=True, blank=True)
    hepatic_impairment = models.CharField(max_length=10, choices=HepaticImpairment.choices, blank=True)
    cardiac_history = ArrayField(
        models.CharField(max_length=40, choices=CardiacHistory.choices), default=list, blank=True
    )
    cardiology_review_on = models.DateField(
        "cardiology opinion (ECG) on", null=True, blank=True, help_text="NICE NG87: before ADHD medicines."
    )
    clinical_context_updated_on = models.DateField(null=True, blank=True, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-id"]
        indexes = [models.Index(fields=["clinic", "-id"])]

    def __str__(self) -> str:
        return f"Patient #{self.pk}"


class Allergy(models.Model):
    """A recorded allergy or intolerance (the shape of FHIR R4 AllergyIntolerance).

    `substance` is the name as recorded (free text); `code` is its SNOMED CT substance concept
    when the clinic knows it. `reactions` is a list of {manifestation, code, severity}.
    `reaction` is the older free-text description, still accepted and shown.
    """

    class Category(models.TextChoices):
        # FHIR AllergyIntolerance.type: an immune reaction, or a non-immune adverse reaction.
        ALLERGY = "allergy", "Allergy"
        INTOLERANCE = "intolerance", "Intolerance"

    class Criticality(models.TextChoices):
        LOW = "low", "Low risk"
        HIGH = "high", "High risk"
        UNABLE_TO_ASSESS = "unable-to-assess", "Unable to assess"

    class ReactionSeverity(models.TextChoices):
        MILD = "mild", "Mild"
        MODERATE = "moderate", "Moderate"
        SEVERE = "severe", "Severe"

    patient = models.ForeignKey(Patient, on_delete=models.CASCADE, related_name="allergies")
    substance = models.CharField(max_length=120)
    reaction = PhiCharField(max_length=200, blank=True)  # free text: encrypted
    code = models.CharField("SNOMED CT substance code", max_length=18, blank=True)
    category = models.CharField(max_length=12, choices=Category.choices, default=Category.ALLERGY)
    criticality = models.CharField(max_length=16, choices=Criticality.choices, blank=True)
    reactions = models.JSONField(default=list, blank=True)

    class Meta:
        verbose_name_plural = "allergies"

    def __str__(self) -> str:
        return self.substance


class CurrentMedication(models.Model):
    """A medicine the patient takes or took (from elsewhere), for interaction, washout,
    duplicate-therapy and cumulative-dose checks. No dates: taken now."""

    class DoseUnit(models.TextChoices):
        MG = "mg", "mg"
        MICROGRAM = "microgram", "microgram"
        G = "g", "g"

    patient = models.ForeignKey(Patient, on_delete=models.CASCADE, related_name="current_medications")
    name = models.CharField(max_length=200)
    code = models.CharField(max_length=40, blank=True)
    started_on = models.DateField(null=True, blank=True)
    stopped_on = models.DateField(null=True, blank=True, help_text="Blank: still taken.")
    dose_text = models.CharField(max_length=300, blank=True)
    daily_dose = models.DecimalField(max_digits=10, decimal_places=3, null=True, blank=True)
    daily_dose_unit = models.CharField(max_length=10, choices=DoseUnit.choices, blank=True)

    class Meta:
        constraints = [
            models.CheckConstraint(
                condition=models.Q(stopped_on__isnull=True)
                | models.Q(started_on__isnull=True)
                | models.Q(stopped_on__gte=models.F("started_on")),
                name="current_medication_stops_after_it_starts",
            ),
        ]

    def __str__(self) -> str:
        return self.name


# --- Clinical context for the safety checks -------------------------------------------------------
class Diagnosis(models.Model):
    """A recorded diagnosis (SNOMED CT or ICD-10 code), for eligibility checks."""

    patient = models.ForeignKey(Patient, on_delete=models.CASCADE, related_name="diagnoses")
    code_system = models.CharField(max_length=80)
    code = models.CharField(max_length=40)
    display = models.CharField(max_length=200, blank=True)
    recorded_on = models.DateField()

    class Meta:
        verbose_name_plural = "diagnoses"
        ordering = ["-recorded_on", "-id"]

    def __str__(self) -> str:
        return self.display or self.code


class Observation(models.Model):
    """A monitoring observation (blood pressure, pulse, weight) with the date it was measured."""

    class Kind(models.TextChoices):
        BLOOD_PRESSURE = "blood_pressure", "Blood pressure (mmHg)"
        PULSE = "pulse", "Pulse (beats/min)"
        WEIGHT = "weight", "Weight (kg)"
        EGFR = "egfr", "eGFR (mL/min/1.73m2)"
        HEIGHT = "height", "Height (cm)"

    patient = models.ForeignKey(Patient, on_delete=models.CASCADE, related_name="observations")
    kind = models.CharField(max_length=20, choices=Kind.choices)
    value = models.DecimalField(
        max_digits=6, decimal_places=1, help_text="Systolic mmHg, beats/min, kg, mL/min/1.73m2 or cm."
    )
    diastolic = models.DecimalField(max_digits=6, decimal_places=1, null=True, blank=True)
    observed_on = models.DateField()

    class Meta:
        ordering = ["-observed_on", "-id"]
        indexes = [models.Index(fields=["patient", "kind", "-observed_on"])]

    def __str__(self) -> str:
        if self.kind == self.Kind.BLOOD_PRESSURE:
            return f"BP {self.value}/{self.diastolic} on {self.observed_on}"
        return f"{self.get_kind_display()} {self.value} on {self.observed_on}"


class IdempotencyKey(models.Model):
    """The first response to a clinic's POST, replayed for the same Idempotency-Key.

    Written in the same transaction as the resource it created, so a key exists if and only
    if its effect does.
    """

    clinic = models.ForeignKey(Clinic, on_delete=models.CASCADE, related_name="+")
    key = models.CharField(max_length=255)
    method = models.CharField(max_length=10)
    path = models.CharField(max_length=200)
    request_hash = models.CharField(max_length=64)
    response_status = models.PositiveSmallIntegerField()
    # The response as JSON text, encrypted: it holds the patient's identifiers for the TTL.
    response_body = PhiTextField()
    created_at = models.DateTimeField(auto_now_add=True)
    expires_at = models.DateTimeField(db_index=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["clinic", "key"], name="idempotency_key_unique_per_clinic"),
        ]

    def __str__(self) -> str:
        return f"{self.method} {self.path} [{self.key}]"
