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
