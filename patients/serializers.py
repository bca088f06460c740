from datetime import date, timedelta
from decimal import Decimal

from django.utils import timezone
from drf_spectacular.utils import OpenApiExample, extend_schema_serializer
from rest_framework import serializers

from api.fields import IsoDateField
from patients.models import Allergy, CurrentMedication, Patient, Sex

# A patient's lists are bounded: one request must not write thousands of rows.
MAX_ALLERGIES = 50
MAX_CURRENT_MEDICATIONS = 50


def nhs_number_is_valid(value: str) -> bool:
    """NHS numbers carry a Modulus 11 check digit (NHS Data Dictionary)."""
    if len(value) != 10 or not value.isdigit():
        return False
    total = sum(int(digit) * weight for digit, weight in zip(value[:9], range(10, 1, -1), strict=True))
    check = 11 - total % 11
    check = 0 if check == 11 else check
    return check != 10 and check == int(value[9])


# A SNOMED CT concept id: 6 to 18 digits, no leading zero.
SNOMED_CT_ID = r"^[1-9][0-9]{5,17}$"


def snomed_code_field(help_text: str) -> serializers.RegexField:
    """An optional SNOMED CT concept id (blank when not known)."""
    return serializers.RegexField(
        SNOMED_CT_ID, max_length=18, required=False, allow_blank=True, default="", help_text=help_text
    )


class AllergyReactionSerializer(serializers.Serializer):
    """One reaction of an allergy (FHIR AllergyIntolerance.reaction)."""

    manifestation = serializers.CharField(
        max_length=200, help_text="What happened, as recorded, e.g. 'anaphylaxis' or 'rash'."
    )
    code = snomed_code_field("SNOMED CT clinical finding of the manifestation, e.g. 39579001 (anaphylaxis).")
    severity = serializers.ChoiceField(
        choices=Allergy.ReactionSeverity.choices,
        required=False,
        allow_blank=True,
        default="",
        help_text="mild, moderate or severe (FHIR reaction.severity); blank if not known.",
    )


class AllergySerializer(serializers.ModelSerializer):
    substance = serializers.CharField(
        max_length=120, help_text="The substance as recorded, e.g. 'penicillin' (free text)."
    )
    reaction = serializers.CharField(
        max_length=200,
        required=False,
        allow_blank=True,
        default="",
        help_text="Free-text description of the reaction (the older field; prefer `reactions`).",
    )
    code = snomed_code_field("SNOMED CT substance concept id when known, e.g. 764146007 (penicillin).")
    category = serializers.ChoiceField(
        choices=Allergy.Category.choices,
        required=False,
        default=Allergy.Category.ALLERGY,
        help_text="allergy (immune) or intolerance (non-immune), FHIR AllergyIntolerance.type.",
    )
    criticality = serializers.ChoiceField(
        choices=Allergy.Criticality.choices,
        required=False,
        allow_blank=True,
        default="",
        help_text="Potential harm of a future exposure (FHIR): low, high or unable-to-assess; blank "
        "if not assessed.",
    )
    reactions = AllergyReactionSerializer(many=True, required=False, default=list, max_length=10)  # type: ignore[call-arg]  # many=True: a ListSerializer's argument

    class Meta:
        model = Allergy
        fields = ["substance", "reaction", "code", "category", "criticality", "reactions"]


class CurrentMedicationSerializer(serializers.ModelSerializer):
    started_on = IsoDateField(
        required=False,
        allow_null=True,
        default=None,
        help_text="When the patient started it (ISO date), e.g. 2026-01-15.",
    )
    stopped_on = IsoDateField(
        required=False,
        allow_null=True,
        default=None,
        help_text="When the patient stopped it (ISO date), e.g. 2026-11-20; null while still taken. A "
        "medicine stopped recently still counts for its washout (e.g. 14 days for an MAOI).",
    )
    dose_text = serializers.CharField(
        max_length=300,
        required=False,
        allow_blank=True,
        default="",
        help_text="e.g. 'One tablet twice a day'.",
    )
    daily_dose = serializers.DecimalField(
        max_digits=10,
        decimal_places=3,
        min_value=Decimal("0.001"),
        max_value=Decimal(100000),
        required=False,
        allow_null=True,
        default=None,
        help_text="The total amount taken a day, in daily_dose_unit, e.g. 2000 (mg).",
    )
    daily_dose_unit = serializers.ChoiceField(
        choices=CurrentMedication.DoseUnit.choices,
        required=False,
        allow_blank=True,
        default="",
        help_text="Unit of daily_dose: mg, microgram or g; required with daily_dose.",
    )

    class Meta:
        model = CurrentMedication
        fields = ["name", "code", "started_on", "stopped_on", "dose_text", "daily_dose", "daily_dose_unit"]

    def validate_started_on(self, value: date | None) -> date | None:
        if value is not None and value > timezone.localdate():
            raise serializers.ValidationError("Cannot be in the future.")
        return value

    def validate_stopped_on(self, value: date | None) -> date | None:
        if value is not None and value > timezone.localdate() + timedelta(days=366):
            raise serializers.ValidationError("Must be within a year of today.")
        return value

    def validate(self, data: dict) -> dict:
        errors = {}
        started, stopped = data.get("started_on"), data.get("stopped_on")
        if started is not None and stopped is not None and stopped < started:
            errors["stopped_on"] = ["Cannot be before started_on."]
        if data.get("daily_dose") is not None and not data.get("daily_dose_unit"):
            errors["daily_dose_unit"] = ["Give the unit of daily_dose (mg, microgram or g)."]
        if data.get("daily_dose_unit") and data.get("daily_dose") is None:
            errors["daily_dose"] = ["A unit needs a daily_dose."]
        if errors:
            raise serializers.ValidationError(errors)
        return data


class ClinicalContextSerializer(serializers.Serializer):
    """The patient's clinical context for the safety checks. Every field is optional; a field
    left out keeps what was recorded before, null clears it."""

    pregnant = serializers.BooleanField(
        required=False, allow_null=True, help_text="true if pregnant, false if not, null if not known."
    )
    breastfeeding = serializers.BooleanField(
        required=False, allow_null=True, help_text="true if breastfeeding, false if not, null if not known."
    )
    hepatic_impairment = serializers.ChoiceField(
        choices=Patient.HepaticImpairment.choices,
        required=False,
        allow_blank=True,
        help_text="Hepatic impairment by Child-Pugh class: none, mild (A), moderate (B) or severe (C), "
        "e.g. 'moderate'; blank if not known.",
    )
    cardiac_history = serializers.ListField(
        child=serializers.ChoiceField(choices=Patient.CardiacHistory.choices),
        required=False,
        max_length=len(Patient.CardiacHistory.choices),
        help_text="The NICE NG87 cardiac findings that apply, e.g. ['congenital_heart_disease']; [] for none.",
    )
    cardiology_review_on = IsoDateField(
        required=False,
        allow_null=True,
        help_text="When a cardiology opinion (with ECG) was obtained (ISO date), e.g. 2026-10-01.",
    )

    def validate_cardiology_review_on(self, value: date | None) -> date | None:
        if value is not None and value > timezone.localdate():
            raise serializers.ValidationError("Cannot be in the future.")
        return value

    def validate_cardiac_history(self, value: list[str]) -> list[str]:
        if len(set(value)) != len(value):
            raise serializers.ValidationError("Each finding at most once.")
        return value


REGISTRATION_EXAMPLE = {
    "given_name": "Grace",
    "family_name": "Hopper",
    "birth_date": "1986-12-09",
    "sex": "female",
    "nhs_number": "9434765919",
    "address_line": "2 Test Row",
    "city": "York",
    "postal_code": "YO1 7HH",
    "allergies": [
        {
            "substance": "penicillin",
            "code": "764146007",
            "category": "allergy",
            "criticality": "high",
            "reactions": [{"manifestation": "anaphylaxis", "code": "39579001", "severity": "severe"}],
        }
    ],
    "clinical_context": {
        "pregnant": False,
        "breastfeeding": False,
        "hepatic_impairment": "none",
        "cardiac_history": ["congenital_heart_disease"],
        "cardiology_review_on": "2026-10-01",
    },
    "current_medications": [
        {
            "name": "Phenelzine 15mg tablets",
            "code": "321886008",
            "started_on": "2025-06-01",
            "stopped_on": "2026-11-20",
            "dose_text": "One tablet three times a day",
            "daily_dose": "45",
            "daily_dose_unit": "mg",
        }
    ],
}


@extend_schema_serializer(
    examples=[OpenApiExample("A patient with a coded allergy", value=REGISTRATION_EXAMPLE, request_only=True)]
)
class PatientInputSerializer(serializers.Serializer):
    given_name = serializers.CharField(max_length=100)
    family_name = serializers.CharField(max_length=100)
    birth_date = IsoDateField()
    sex = serializers.ChoiceField(choices=Sex.choices, default=Sex.UNKNOWN)
    # 12 = ten digits written in the usual 3-3-4 groups; spaces are removed before storing.
    nhs_number = serializers.CharField(max_length=12, required=False, allow_blank=True, default="")
    address_line = serializers.CharField(max_length=200, required=False, allow_blank=True, default="")
    city = serializers.CharField(max_length=100, required=False, allow_blank=True, default="")
    region = serializers.CharField(max_length=50, required=False, allow_blank=True, default="")
    postal_code = serializers.CharField(max_length=20, required=False, allow_blank=True, default="")
    email = serializers.EmailField(required=False, allow_blank=True, default="")
    phone = serializers.CharField(max_length=30, required=False, allow_blank=True, default="")
    allergies = AllergySerializer(many=True, required=False, default=list, max_length=MAX_ALLERGIES)  # type: ignore[call-arg]  # many=True: a ListSerializer's argument
    current_medications = CurrentMedicationSerializer(  # type: ignore[call-arg]  # many=True: a ListSerializer's argument
        many=True, required=False, default=list, max_length=MAX_CURRENT_MEDICATIONS
    )
    clinical_context = ClinicalContextSerializer(required=False)

    def validate_birth_date(self, value: date) -> date:
        if value > timezone.localdate():
            raise serializers.ValidationError("Date of birth cannot be in the future.")
        return value

    def validate_nhs_number(self, value: str) -> str:
        value = value.replace(" ", "")
        if value and not nhs_number_is_valid(value):
            raise serializers.ValidationError("Not a valid NHS number (10 digits, Modulus 11).")
        return value


class PatientSerializer(serializers.ModelSerializer):
    allergies = AllergySerializer(many=True, read_only=True)
    current_medications = CurrentMedicationSerializer(many=True, read_only=True)
    clinical_context = ClinicalContextSerializer(source="*", read_only=True)
    # Blank when none is recorded, so not `format: email` in the schema (found by schemathesis).
    email = serializers.CharField(read_only=True, help_text="Email address, or empty if none is recorded.")

    class Meta:
        model = Patient
        fields = [
            "id",
            "given_name",
            "family_name",
            "birth_date",
            "sex",
            "nhs_number",
            "address_line",
            "city",
            "region",
            "postal_code",
            "email",
            "phone",
            "allergies",
            "current_medications",
            "clinical_context",
            "created_at",
        ]
        read_only_fields = fields
