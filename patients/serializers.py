from django.utils import timezone
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


class AllergySerializer(serializers.ModelSerializer):
    class Meta:
        model = Allergy
        fields = ["substance", "reaction"]


class CurrentMedicationSerializer(serializers.ModelSerializer):
    class Meta:
        model = CurrentMedication
        fields = ["name", "code"]


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
    allergies = AllergySerializer(many=True, required=False, default=list, max_length=MAX_ALLERGIES)
    current_medications = CurrentMedicationSerializer(
        many=True, required=False, default=list, max_length=MAX_CURRENT_MEDICATIONS
    )

    def validate_birth_date(self, value):  # type: ignore[no-untyped-def]
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
            "created_at",
        ]
        read_only_fields = fields
