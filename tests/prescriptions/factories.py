import datetime

import factory

from prescriptions.models import (
    AllergyClass,
    FormularyRelease,
    InteractionRule,
    Medication,
    OffFormularyItem,
    PaediatricDoseRule,
    PharmacistProfile,
    PharmacistReview,
    Prescriber,
    Prescription,
    PrescriptionItem,
    RepeatSeries,
    StateValidityLimit,
)
from tests.patients.factories import ClinicFactory, PatientFactory


class PrescriberFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Prescriber

    clinic = factory.SubFactory(ClinicFactory)
    given_name = "Ada"
    family_name = "Hartley"
    registration_body = "GMC"
    registration_number = factory.Sequence(lambda n: f"{7000000 + n}")
    address = "1 Clinic Road, Leeds LS2 9JT"
    controlled_drugs_authorised = True
    # NHS EPS: the prescriber's Spine directory identities (invented).
    sds_user_id = factory.Sequence(lambda n: f"{555000000000 + n}")
    sds_role_profile_id = factory.Sequence(lambda n: f"{200000000000 + n}")
    sds_job_role_code = "R8000"


class MedicationFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Medication
        django_get_or_create = ("code_system", "code")

    code_system = "http://snomed.info/sct"
    code = factory.Sequence(lambda n: f"90000{n}")
    name = "Paracetamol"
    strength = "500mg"
    form = "tablet"
    controlled_schedule = ""
    price_minor = 2
    ingredients = factory.LazyAttribute(lambda medication: [medication.name.lower()])
    therapeutic_class = "analgesic"
    unit = "tablet"
    unit_of_measure_code = factory.LazyAttribute(
        lambda medication: (
            {"tablet": "428673006", "capsule": "428641000"}.get(medication.unit, "")
            if medication.code_system == "http://snomed.info/sct"
            else ""
        )
    )
    strength_value = 500
    strength_unit = "mg"
    max_daily_dose = 4000


class PrescriptionFactory(factory.django.DjangoModelFactory):
    """A prescription row as intake leaves it (received, checks not yet run); for a prescription
    that went through the services, use `scenario`."""

    class Meta:
        model = Prescription

    clinic = factory.SubFactory(ClinicFactory)
    patient = factory.SubFactory(PatientFactory, clinic=factory.SelfAttribute("..clinic"))
    prescriber = factory.SubFactory(PrescriberFactory, clinic=factory.SelfAttribute("..clinic"))
    issued_on = datetime.date(2026, 11, 20)


class PrescriptionItemFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = PrescriptionItem

    prescription = factory.SubFactory(PrescriptionFactory)
    medication = factory.SubFactory(MedicationFactory)
    dose_text = "One tablet twice a day"
    quantity = 28
    unit = "tablet"
    days_supply = 14


class OffFormularyItemFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = OffFormularyItem

    prescription = factory.SubFactory(PrescriptionFactory)
    line = factory.Sequence(lambda n: n + 1)
    code_system = "http://snomed.info/sct"
    code = "39113611000001102"
    display = "Unlicensed special oral solution"
    dose_text = "5ml twice a day"
    quantity = 100
    unit = "ml"
    days_supply = 10


class PharmacistReviewFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = PharmacistReview

    prescription = factory.SubFactory(PrescriptionFactory)
    pharmacist = factory.SubFactory("tests.support.factories.StaffFactory")
    decision = PharmacistReview.Decision.APPROVED


class PharmacistProfileFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = PharmacistProfile

    user = factory.SubFactory("tests.support.factories.StaffFactory")
    registration_body = "GPhC"
    registration_number = factory.Sequence(lambda n: f"{2000000 + n}")


class RepeatSeriesFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = RepeatSeries

    origin = factory.SubFactory(PrescriptionFactory)
    latest = factory.SelfAttribute("origin")
    interval_days = 28
    repeats_total = 2


class InteractionRuleFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = InteractionRule

    left = factory.Sequence(lambda n: f"ingredient{n}")
    right = "warfarin"
    severity = InteractionRule.Severity.MAJOR
    message = "Raises the INR; monitor it."
    source = "BNF Appendix 1 (synthetic rule)"


class AllergyClassFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = AllergyClass

    name = factory.Sequence(lambda n: f"allergy-class-{n}")
    source = "BNF (synthetic class)"


class PaediatricDoseRuleFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = PaediatricDoseRule

    name = factory.Sequence(lambda n: f"paediatric-rule-{n}")
    ingredient = "paracetamol"
    indication = "pain or fever"
    min_age_months = 3
    max_age_months = 144
    dose_unit = "mg"
    source = "BNF for Children (synthetic rule)"


class StateValidityLimitFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = StateValidityLimit

    state = "ZZ"
    schedule = factory.Sequence(lambda n: f"s{n % 100000}")
    days = 90
    source = "State board rule (synthetic)"


class FormularyReleaseFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = FormularyRelease

    version = factory.Sequence(lambda n: f"test-{n}")


# --- Clinical-check scenarios ---------------------------------------------------------------------
GB_SNOMED = "http://snomed.info/sct"
ICD10 = "http://hl7.org/fhir/sid/icd-10"
VALID_NPI = "1234567893"  # the CMS example NPI (Luhn-valid with prefix 80840)
VALID_DEA = "AB1234563"


def one_a_day(medication) -> dict:  # type: ignore[no-untyped-def]
    """An item as prescription_create takes it: 28 tablets of `medication`, one a day."""
    return {
        "medication": medication,
        "dose_text": "One a day",
        "quantity": 28,
        "unit": "tablet",
        "days_supply": 28,
    }


def adhd_context(observed_on=None) -> dict:  # type: ignore[no-untyped-def]
    """A recorded ADHD diagnosis and recent blood pressure, pulse and weight."""
    import datetime

    from django.utils import timezone

    day = observed_on or timezone.localdate() - datetime.timedelta(days=10)
    return {
        "diagnoses": [{"code_system": ICD10, "code": "F90.0", "display": "ADHD", "recorded_on": day}],
        "observations": [
            {"kind": "blood_pressure", "value": 118, "diastolic": 76, "observed_on": day},
            {"kind": "pulse", "value": 72, "observed_on": day},
            {"kind": "weight", "value": 70, "observed_on": day},
        ],
    }


def scenario(  # type: ignore[no-untyped-def]
    *,
    code: str = "322236009",
    jurisdiction: str = "GB",
    item: dict | None = None,
    patient: dict | None = None,
    prescriber: dict | None = None,
    clinic=None,
    patient_object=None,
    prescriber_object=None,
    **fields,
):
    """A prescription made through the services as the API would (the formulary must be loaded)."""
    from prescriptions import services
    from tests.patients.factories import ClinicFactory, PatientFactory

    if clinic is None:
        clinic = ClinicFactory(jurisdiction=jurisdiction)
    if patient_object is None:
        us = {"region": "NY", "nhs_number": ""} if clinic.jurisdiction == "US" else {}
        patient_object = PatientFactory(clinic=clinic, **{**us, **(patient or {})})
    if prescriber_object is None:
        us = (
            {"registration_body": "NPI", "registration_number": VALID_NPI, "licensed_states": ["NY"],
             "dea_number": VALID_DEA, "address": "10 Main St, Albany NY"}
            if clinic.jurisdiction == "US"
            else {}
        )  # fmt: skip
        prescriber_object = PrescriberFactory(clinic=clinic, **{**us, **(prescriber or {})})
    line = {
        "medication": Medication.objects.get(code=code),
        "dose_text": "One tablet twice a day",
        "quantity": 28,
        "quantity_words": "twenty eight",
        "unit": "tablet",
        "days_supply": 14,
        **(item or {}),
    }
    return services.prescription_create(
        clinic=clinic, patient=patient_object, prescriber=prescriber_object, items=[line], **fields
    )


def checked(prescription) -> dict[str, str]:  # type: ignore[no-untyped-def]
    """Run the checks; the results as {code: severity} (most severe kept for a repeated code)."""
    from prescriptions import services
    from prescriptions.models import Prescription

    services.prescription_run_checks(prescription_id=prescription.pk)
    order = {"block": 0, "needs_pharmacist": 1, "info": 2}
    results: dict[str, str] = {}
    for result in Prescription.objects.get(pk=prescription.pk).check_results:
        if result["code"] not in results or order[result["severity"]] < order[results[result["code"]]]:
            results[result["code"]] = result["severity"]
    return results
