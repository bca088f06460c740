import factory

from notifications.models import Notification
from tests.events.factories import EventFactory
from tests.patients.factories import PatientFactory


class NotificationFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Notification

    event = factory.SubFactory(EventFactory)
    patient = factory.SubFactory(PatientFactory)
    prescription_id = factory.SelfAttribute("event.aggregate_id")
    channel = Notification.Channel.EMAIL
    kind = "prescription.shipped"
