import datetime

import factory

from events.models import (
    ClinicWebhookEndpoint,
    Event,
    OutboxMessage,
    OutboxTask,
    ProcessedEvent,
    WebhookAttempt,
    WebhookDelivery,
)
from tests.patients.factories import ClinicFactory


class EventFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Event

    aggregate_type = "prescription"
    aggregate_id = factory.Sequence(lambda n: 1_000_000 + n)
    sequence = 1
    type = "prescription.received"
    actor = "client:test"


class OutboxMessageFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = OutboxMessage

    event = factory.SubFactory(EventFactory)


class ProcessedEventFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = ProcessedEvent

    consumer = factory.Sequence(lambda n: f"consumer-{n}")
    event = factory.SubFactory(EventFactory)


class ClinicWebhookEndpointFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = ClinicWebhookEndpoint

    clinic = factory.SubFactory(ClinicFactory)
    url = "https://clinic.example/hooks/scriptline"
    secret = factory.Sequence(lambda n: f"whsec_test_{n:08d}")


class WebhookDeliveryFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = WebhookDelivery

    endpoint = factory.SubFactory(ClinicWebhookEndpointFactory)
    event = factory.SubFactory(EventFactory)
    aggregate_id = factory.SelfAttribute("event.aggregate_id")
    sequence = factory.SelfAttribute("event.sequence")
    payload = factory.LazyAttribute(lambda delivery: {"type": delivery.event.type})


class WebhookAttemptFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = WebhookAttempt

    delivery = factory.SubFactory(WebhookDeliveryFactory)
    duration_ms = 12


class OutboxTaskFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = OutboxTask

    task = "pharmacy.dispatch_send"
    key = factory.Sequence(lambda n: f"pharmacy.dispatch_send:{n}")
    due_at = factory.LazyFunction(lambda: datetime.datetime.now(datetime.UTC))
