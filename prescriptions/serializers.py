from datetime import date, datetime, timedelta
from decimal import Decimal

from django.utils import timezone
from django.utils.functional import cached_property
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from api.fields import IsoDateField, IsoDateTimeField
from api.representation import FieldsKeptPerThread
from billing.nhs import EXEMPTIONS, exemption_problems
from events.models import Event
from patients.models import Clinic, Jurisdiction, Observation, Patient
from patients.serializers import ClinicalContextSerializer
from prescriptions.checks.validity import appropriate_date
from prescriptions.models import Funding, Medication, Prescriber, Prescription, PrescriptionItem
from prescriptions.selectors import formulary_medications, prescription_parties
from prescriptions.status_link import status_link_url

MAX_ITEMS = 20


class CodingSerializer(serializers.Serializer):
    system = serializers.CharField(max_length=80)
    code = serializers.CharField(max_length=40)


class ItemInputSerializer(serializers.Serializer):
    medication = CodingSerializer(help_text="The formulary code, e.g. a dm+d or RxNorm code.")
    dose_text = serializers.CharField(max_length=300)
    quantity = serializers.DecimalField(
        max_digits=9, decimal_places=2, min_value=Decimal("0.01"), max_value=Decimal(100000)
    )
    unit = serializers.CharField(max_length=30)
    days_supply = serializers.IntegerField(min_value=1, max_value=365)
    quantity_words = serializers.CharField(
        max_length=200,
        required=False,
        allow_blank=True,
        default="",
        help_text="The total quantity in words (e.g. 'twenty eight'); required for GB Schedule 2/3.",
    )
    units_per_day = serializers.DecimalField(
        max_digits=7,
        decimal_places=2,
        min_value=Decimal("0.01"),
        max_value=Decimal(1000),
        required=False,
        allow_null=True,
        default=None,
        help_text="The dose as dose units a day (e.g. 2 for one tablet twice a day), for the dose checks.",
    )
    units_per_dose = serializers.DecimalField(
        max_digits=7,
        decimal_places=2,
        min_value=Decimal("0.01"),
        max_value=Decimal(1000),
        required=False,
        allow_null=True,
        default=None,
        help_text="Dose units taken each time, in the item's unit (e.g. 1 for one tablet, 7.5 for 7.5 ml of "
        "a liquid), for the children's per-dose limits; if absent, the leading number of dose_text is used.",
    )


DIAGNOSIS_SYSTEMS = ["http://snomed.info/sct", "http://hl7.org/fhir/sid/icd-10"]


class DiagnosisInputSerializer(serializers.Serializer):
    code_system = serializers.ChoiceField(choices=DIAGNOSIS_SYSTEMS)
    code = serializers.RegexField(r"^[A-Za-z0-9.]{1,40}$", max_length=40)
    display = serializers.CharField(max_length=200, required=False, allow_blank=True, default="")
    recorded_on = IsoDateField()

    def validate_recorded_on(self, value: date) -> date:
        if value > timezone.localdate():
            raise serializers.ValidationError("Cannot be in the future.")
        return value


# Plausible human ranges; anything outside is a typing error, not a reading.
OBSERVATION_RANGES = {
    Observation.Kind.BLOOD_PRESSURE: (Decimal(50), Decimal(300)),
    Observation.Kind.PULSE: (Decimal(20), Decimal(250)),
    Observation.Kind.WEIGHT: (Decimal(1), Decimal(400)),
    Observation.Kind.EGFR: (Decimal(1), Decimal(200)),
    Observation.Kind.HEIGHT: (Decimal(30), Decimal(250)),
}


class ObservationInputSerializer(serializers.Serializer):
    kind = serializers.ChoiceField(choices=Observation.Kind.choices)
    value = serializers.DecimalField(
        max_digits=5,
        decimal_places=1,
        help_text="Systolic mmHg (blood_pressure), beats a minute (pulse), kg (weight, one decimal, e.g. 24.5; "
        "a child's latest weight sets the mg/kg dose limits), mL/min/1.73m2 (egfr, e.g. 58) or cm "
        "(height, e.g. 132.5).",
    )
    diastolic = serializers.DecimalField(
        max_digits=5, decimal_places=1, required=False, allow_null=True, default=None
    )
    observed_on = IsoDateField()

    def validate_observed_on(self, value: date) -> date:
        if value > timezone.localdate():
            raise serializers.ValidationError("Cannot be in the future.")
        return value

    def validate(self, data: dict) -> dict:
        low, high = OBSERVATION_RANGES[data["kind"]]
        errors = {}
        if not low <= data["value"] <= high:
            errors["value"] = [f"Must be between {low} and {high} for {data['kind']}."]
        is_pressure = data["kind"] == Observation.Kind.BLOOD_PRESSURE
        if is_pressure and data["diastolic"] is None:
            errors["diastolic"] = ["Blood pressure needs the diastolic value."]
        elif is_pressure and not Decimal(20) <= data["diastolic"] < data["value"]:
            errors["diastolic"] = ["Must be at least 20 and below the systolic value."]
        elif not is_pressure and data["diastolic"] is not None:
            errors["diastolic"] = ["Only blood pressure has a diastolic value."]
        if errors:
            raise serializers.ValidationError(errors)
        return data


class NhsExemptionInputSerializer(serializers.Serializer):
    category = serializers.ChoiceField(choices=sorted(EXEMPTIONS))
    evidence = serializers.CharField(
        max_length=200,
        required=False,
        allow_blank=True,
        default="",
        help_text="What the patient showed, e.g. the certificate number.",
    )


class PrescriptionInputSerializer(FieldsKeptPerThread, serializers.Serializer):
    patient = serializers.IntegerField(min_value=1)
    prescriber = serializers.IntegerField(min_value=1)
    issued_on = IsoDateField(
        required=False,
        help_text="The date the prescriber signed it (default today), e.g. 2026-11-30. It cannot be in "
        "the future: to start later, give start_date.",
    )
    note = serializers.CharField(max_length=500, required=False, allow_blank=True, default="")
    items = ItemInputSerializer(many=True, allow_empty=False, max_length=MAX_ITEMS)  # type: ignore[call-arg]  # many=True: a ListSerializer's argument
    repeats = serializers.IntegerField(
        min_value=0, max_value=12, required=False, default=0, help_text="Repeats (GB) or refills (US)."
    )
    earliest_fill_date = IsoDateField(
        required=False,
        allow_null=True,
        default=None,
        help_text="US: the earliest date a pharmacy may fill it (21 CFR 1306.12(b)), e.g. 2026-12-28.",
    )
    start_date = IsoDateField(
        required=False,
        allow_null=True,
        default=None,
        help_text="Not to be supplied before this date, e.g. 2026-12-07: on or after issued_on and within "
        "180 days of it. In GB the later of issued_on and start_date is the appropriate date from which "
        "the prescription's validity runs. The prescription is held and sent to the pharmacy on that day.",
    )
    clinical_justification = serializers.CharField(
        max_length=2000, required=False, allow_blank=True, default=""
    )
    two_factor_signed_at = IsoDateTimeField(
        required=False,
        allow_null=True,
        default=None,
        help_text="When the prescriber signed with two-factor authentication (US EPCS, 21 CFR 1311).",
    )
    diagnoses = DiagnosisInputSerializer(many=True, required=False, default=list, max_length=20)  # type: ignore[call-arg]  # many=True: a ListSerializer's argument
    observations = ObservationInputSerializer(many=True, required=False, default=list, max_length=50)  # type: ignore[call-arg]  # many=True: a ListSerializer's argument
    clinical_context = ClinicalContextSerializer(
        required=False,
        help_text="Updates the patient's clinical context (pregnancy, breastfeeding, hepatic impairment, "
        "cardiac history) before the checks run; fields left out keep their recorded values.",
    )

    # Who pays; NHS (GB clinics only) may declare a charge exemption.
    funding = serializers.ChoiceField(choices=Funding.choices, required=False, default=Funding.PRIVATE)
    nhs_exemption = NhsExemptionInputSerializer(required=False, allow_null=True, default=None)

    # Repeats every N days (default: the longest item's days' supply),
    # and a titration step names the prescription whose dose it changes.
    repeat_interval_days = serializers.IntegerField(
        min_value=1, max_value=365, required=False, allow_null=True, default=None
    )
    titration_of = serializers.IntegerField(
        min_value=1,
        required=False,
        allow_null=True,
        default=None,
        help_text="The id of this patient's earlier prescription whose dose this one changes.",
    )

    def validate_titration_of(self, value: int | None) -> Prescription | None:
        if value is None:
            return None
        previous = Prescription.objects.filter(clinic=self.clinic, pk=value).first()
        if previous is None:
            raise serializers.ValidationError("No such prescription.")
        return previous

    def validate_issued_on(self, value: date) -> date:
        if value > timezone.localdate():
            raise serializers.ValidationError(
                "A prescription is dated the day it is signed and cannot be dated in the future; "
                "give a start_date to start it later."
            )
        if (timezone.localdate() - value).days > 366:
            raise serializers.ValidationError("Must be within a year of today.")
        return value

    def validate_two_factor_signed_at(self, value: datetime | None) -> datetime | None:
        if value is not None and value > timezone.now() + timedelta(minutes=5):
            raise serializers.ValidationError("Cannot be in the future.")
        return value

    def validate(self, data: dict) -> dict:
        errors: dict[str, list[str]] = {}
        earliest = data.get("earliest_fill_date")
        issued = data.get("issued_on") or timezone.localdate()
        if earliest is not None and not issued <= earliest <= issued + timedelta(days=180):
            errors["earliest_fill_date"] = [
                "Must be on or after the prescribing date and within 180 days of it."
            ]
        start = data.get("start_date")
        if start is not None and not issued <= start <= issued + timedelta(days=180):
            errors["start_date"] = [
                "Must be on or after the signing date (issued_on) and within 180 days of it."
            ]
        if data["funding"] == Funding.NHS and self.clinic.jurisdiction != Jurisdiction.GB:
            errors["funding"] = ["NHS funding is only available to clinics in Great Britain."]
        exemption = data.get("nhs_exemption")
        if exemption and data["funding"] != Funding.NHS:
            errors["nhs_exemption"] = ['An NHS exemption needs "funding": "nhs".']
        elif exemption:
            problems = exemption_problems(
                category=exemption["category"],
                evidence=exemption["evidence"],
                birth_date=data["patient"].birth_date,
                on=data.get("issued_on") or timezone.localdate(),
            )
            if problems:
                errors["nhs_exemption"] = problems
        titration_of = data.get("titration_of")
        if titration_of is not None and titration_of.patient_id != data["patient"].pk:
            errors["titration_of"] = ["A titration step must follow the same patient's prescription."]
        if data.get("repeat_interval_days") is not None and not data["repeats"]:
            errors["repeat_interval_days"] = ["Only a prescription with repeats has a repeat interval."]
        if errors:
            raise serializers.ValidationError(errors)
        return data

    @property
    def clinic(self) -> Clinic:
        return self.context["clinic"]

    @cached_property
    def _parties(self) -> tuple[Patient | None, Prescriber | None]:
        # Both people the body names, read in one query the first time either is validated.
        return prescription_parties(
            clinic=self.clinic,
            patient_id=self._named_id("patient"),
            prescriber_id=self._named_id("prescriber"),
        )

    def _named_id(self, field: str) -> int | None:
        try:
            return self.fields[field].run_validation(self.initial_data.get(field))
        except serializers.ValidationError:
            return None

    def validate_patient(self, value: int) -> Patient:
        patient = self._parties[0]
        if patient is None:
            # Same words for "absent" and "another clinic's": existence is not disclosed.
            raise serializers.ValidationError("No such patient.")
        if patient.merged_into_id is not None:
            raise serializers.ValidationError(
                f"This record was merged into patient {patient.merged_into_id}; prescribe for that one."
            )
        return patient

    def validate_prescriber(self, value: int) -> Prescriber:
        prescriber = self._parties[1]
        if prescriber is None:
            raise serializers.ValidationError("No such prescriber.")
        return prescriber

    def validate_items(self, items: list[dict]) -> list[dict]:
        codes = {(item["medication"]["system"], item["medication"]["code"]) for item in items}
        found = {
            (medication.code_system, medication.code): medication
            for medication in formulary_medications(codes=[code for _system, code in codes])
        }
        errors: list[dict] = []
        for item in items:
            medication = found.get((item["medication"]["system"], item["medication"]["code"]))
            if medication is None:
                errors.append({"medication": ["Not on the formulary (see GET /api/v1/medications/)."]})
            else:
                item["medication"] = medication
                errors.append({})
        if any(errors):
            raise serializers.ValidationError(errors)
        return items


class MedicationSerializer(serializers.ModelSerializer):
    system = serializers.CharField(source="code_system")

    class Meta:
        model = Medication
        fields = [
            "id",
            "system",
            "code",
            "name",
            "strength",
            "form",
            "controlled_schedule",
            "price_minor",
            "ingredients",
            "therapeutic_class",
            "unit",
            "strength_value",
            "strength_unit",
            "schedule_gb",
            "schedule_us",
            "max_daily_dose",
        ]
        read_only_fields = fields


class ItemSerializer(serializers.ModelSerializer):
    medication = MedicationSerializer()

    class Meta:
        model = PrescriptionItem
        fields = [
            "id",
            "medication",
            "dose_text",
            "quantity",
            "quantity_words",
            "unit",
            "days_supply",
            "units_per_day",
            "units_per_dose",
        ]
        read_only_fields = fields


class CheckResultSerializer(serializers.Serializer):
    code = serializers.CharField()
    severity = serializers.ChoiceField(choices=["block", "needs_pharmacist", "info"])
    message = serializers.CharField()
    source = serializers.CharField()  # type: ignore[assignment]  # the result's key, not Field.source
    item = serializers.IntegerField(allow_null=True)
    facts = serializers.DictField(
        required=False,
        default=dict,
        help_text="What the finding was computed from, for people to read, e.g. "
        '{"age": "8 years 2 months", "weight": "22 kg, measured 2026-11-20", "per kg": "3.64 mg/kg/day"}.',
    )


class PaymentSummarySerializer(serializers.Serializer):
    status = serializers.CharField()
    amount_minor = serializers.IntegerField()
    currency = serializers.CharField()
    client_secret = serializers.CharField(
        allow_null=True,
        help_text="The Stripe PaymentIntent's client secret, to collect the card with Stripe.js; "
        "null once the payment no longer needs the customer.",
    )


class PrescriptionSerializer(serializers.ModelSerializer):
    items = ItemSerializer(many=True)
    check_results = CheckResultSerializer(many=True)
    payment = serializers.SerializerMethodField()
    appropriate_date = serializers.SerializerMethodField(
        help_text="The later of issued_on (signing) and start_date: validity runs from it, and nothing is "
        "supplied before it (or before earliest_fill_date), e.g. 2026-12-07."
    )

    @extend_schema_field(OpenApiTypes.DATE)
    def get_appropriate_date(self, prescription: Prescription) -> str:
        return appropriate_date(prescription).isoformat()

    @extend_schema_field(PaymentSummarySerializer(allow_null=True))
    def get_payment(self, prescription: Prescription) -> dict | None:
        # Card data never touches Scriptline: the clinic collects it with
        # Stripe using this client secret.
        payment = getattr(prescription, "payment", None)
        if payment is None:
            return None
        collecting = payment.status in ("requires_payment", "failed")
        return {
            "status": payment.status,
            "amount_minor": payment.amount_minor,
            "currency": payment.currency,
            "client_secret": payment.client_secret if collecting and payment.client_secret else None,
        }

    class Meta:
        model = Prescription
        fields = [
            "id",
            "status",
            "status_reason",
            "patient",
            "prescriber",
            "issued_on",
            "note",
            "repeats",
            "earliest_fill_date",
            "start_date",
            "appropriate_date",
            "clinical_justification",
            "two_factor_signed_at",
            "items",
            "check_results",
            "tracking_number",
            "funding",
            "payment",
            "previous",
            "link_kind",
            "repeat_interval_days",
            "created_at",
            "updated_at",
        ]
        read_only_fields = fields


class EventSerializer(serializers.ModelSerializer):
    class Meta:
        model = Event
        fields = ["sequence", "type", "payload", "actor", "created_at"]
        read_only_fields = fields


class PrescriptionDetailSerializer(PrescriptionSerializer):
    timeline = EventSerializer(many=True, source="timeline_events")
    status_url = serializers.SerializerMethodField(
        help_text=(
            "A signed link to a page showing the patient this prescription's status in plain words "
            "(first name only), for the clinic to pass on if it wishes. It stops working "
            "STATUS_LINK_MAX_AGE_DAYS after the prescription was created, or once it is cancelled."
        )
    )

    @extend_schema_field(OpenApiTypes.URI)
    def get_status_url(self, prescription: Prescription) -> str:
        return status_link_url(prescription=prescription)

    class Meta(PrescriptionSerializer.Meta):
        fields = [*PrescriptionSerializer.Meta.fields, "timeline", "status_url"]
        read_only_fields = fields


class CancelInputSerializer(serializers.Serializer):
    reason = serializers.CharField(max_length=500)


class PrescriberSerializer(serializers.ModelSerializer):
    class Meta:
        model = Prescriber
        fields = [
            "id",
            "given_name",
            "family_name",
            "registration_body",
            "registration_number",
            "controlled_drugs_authorised",
            "licensed_states",
        ]
        read_only_fields = fields
