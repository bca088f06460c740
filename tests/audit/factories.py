import factory

from audit.models import PatientAccess
from tests.patients.factories import PatientFactory


class PatientAccessFactory(factory.django.DjangoModelFactory):
    """A read through the API (a client id, no staff user: exactly one principal)."""

    class Meta:
        model = PatientAccess

    patient = factory.SubFactory(PatientFactory)
    clinic = factory.SelfAttribute("patient.clinic")
    channel = PatientAccess.Channel.API
    action = PatientAccess.Action.DETAIL
    client_id = "client-test"
