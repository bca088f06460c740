import factory

from interop.models import ReceivedOrder
from tests.prescriptions.factories import PrescriptionFactory


class ReceivedOrderFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = ReceivedOrder

    prescription = factory.SubFactory(PrescriptionFactory)
    clinic = factory.SelfAttribute("prescription.clinic")
    message_id = factory.Sequence(lambda n: f"00000000-0000-4000-8000-{n:012d}")
    short_form_id = factory.Sequence(lambda n: f"{n:06X}-A83008-{n:05X}")
    long_form_id = factory.Sequence(lambda n: f"00000000-0000-4000-9000-{n:012d}")
