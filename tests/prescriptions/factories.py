import factory

from prescriptions.models import Medication, Prescriber
from tests.patients.factories import ClinicFactory


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
    strength_value = 500
    strength_unit = "mg"
    max_daily_dose = 4000
