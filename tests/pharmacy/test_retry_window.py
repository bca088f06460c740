"""Transient gateway failures are retried for a time window (24 hours by default), not a few
attempts, and a per-partner circuit breaker holds sends back during an outage: an outage
delays work and dead-letters nothing."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from events.models import OutboxTask
from events.services import RetryLater
from pharmacy import services, tasks
from pharmacy.gateway import GatewayUnavailable
from pharmacy.models import DeadLetter, Dispatch, PartnerCircuit
from prescriptions.models import Prescription, Status
from tests.pharmacy.factories import approved_prescription

pytestmark = pytest.mark.django_db


@pytest.fixture
def window(gateway, settings):  # type: ignore[no-untyped-def]
    settings.GATEWAY_MAX_ATTEMPTS = 0  # the default: the window alone decides
    settings.GATEWAY_RETRY_WINDOW_SECONDS = 24 * 3600
    settings.GATEWAY_CIRCUIT_FAILURES = 1000
    return gateway


def test_the_default_retry_budget_is_a_day_with_no_attempt_cap():
    from django.conf import settings

    assert (settings.GATEWAY_RETRY_WINDOW_SECONDS, settings.GATEWAY_MAX_ATTEMPTS) == (86400, 0)


def test_failures_inside_the_window_are_retried_however_many_attempts_were_made(
    window, clinic_a, paracetamol
):
    dispatch = services.dispatch_create(prescription_id=approved_prescription(clinic_a, paracetamol).pk)
    Dispatch.objects.filter(pk=dispatch.pk).update(attempts=50)
    window.control(error_rate=1)

    with pytest.raises(GatewayUnavailable):
        services.dispatch_send(dispatch_id=dispatch.pk)

    assert Dispatch.objects.get(pk=dispatch.pk).status == Dispatch.Status.PENDING
    assert not DeadLetter.objects.exists()


def test_a_failure_after_the_window_dead_letters_and_a_replay_opens_a_new_window(
    window, clinic_a, paracetamol
):
    dispatch = services.dispatch_create(prescription_id=approved_prescription(clinic_a, paracetamol).pk)
    Dispatch.objects.filter(pk=dispatch.pk).update(window_started_at=timezone.now() - timedelta(hours=25))
    window.control(error_rate=1)

    assert services.dispatch_send(dispatch_id=dispatch.pk) == "dead-lettered"
    letter = DeadLetter.objects.get(dispatch=dispatch)
    assert services.dead_letter_replay(dead_letter_id=letter.pk) is True
    with pytest.raises(GatewayUnavailable):
        services.dispatch_send(dispatch_id=dispatch.pk)

    assert Dispatch.objects.get(pk=dispatch.pk).status == Dispatch.Status.PENDING


def test_the_circuit_opens_after_failures_in_a_row_and_holds_sends_back_without_an_attempt(
    window, clinic_a, paracetamol, settings
):
    settings.GATEWAY_CIRCUIT_FAILURES = 3
    settings.GATEWAY_CIRCUIT_OPEN_SECONDS = 30
    first, second = (
        services.dispatch_create(prescription_id=approved_prescription(clinic_a, paracetamol).pk)
        for _ in range(2)
    )
    window.control(error_rate=1)
    for _ in range(3):
        with pytest.raises(GatewayUnavailable):
            services.dispatch_send(dispatch_id=first.pk)
    requests = window.stats()["requests"]

    with pytest.raises(RetryLater) as held:
        services.dispatch_send(dispatch_id=second.pk)

    assert 30 <= held.value.delay_seconds <= 36
    assert window.stats()["requests"] == requests  # the partner was left alone
    assert Dispatch.objects.get(pk=second.pk).attempts == 0
    circuit = PartnerCircuit.objects.get(partner="gateway")
    assert (circuit.failures, circuit.times_opened) == (3, 1)


def test_the_task_reschedules_a_held_send_for_when_the_circuit_closes_and_a_success_closes_it(
    window, clinic_a, paracetamol
):
    dispatch = services.dispatch_create(prescription_id=approved_prescription(clinic_a, paracetamol).pk)
    PartnerCircuit.objects.create(
        partner="gateway", failures=5, times_opened=1, open_until=timezone.now() + timedelta(seconds=60)
    )

    tasks.dispatch_send(dispatch.pk)

    owed = OutboxTask.objects.get()
    assert timedelta(seconds=55) < owed.due_at - timezone.now() < timedelta(seconds=70)
    assert owed.last_error == "gateway circuit open"
    assert Dispatch.objects.get(pk=dispatch.pk).attempts == 0

    # When the pause is over, the next send goes through and closes the circuit
    PartnerCircuit.objects.update(open_until=timezone.now() - timedelta(seconds=1))
    tasks.dispatch_send(dispatch.pk)

    assert Prescription.objects.get(pk=dispatch.prescription_id).status == Status.ACKNOWLEDGED
    assert not OutboxTask.objects.exists()
    assert PartnerCircuit.objects.filter(
        partner="gateway", failures=0, times_opened=0, open_until=None
    ).exists()


def test_each_reopening_pauses_longer_up_to_the_maximum(settings):
    settings.GATEWAY_CIRCUIT_FAILURES = 1
    settings.GATEWAY_CIRCUIT_OPEN_SECONDS = 30
    settings.GATEWAY_CIRCUIT_OPEN_MAX_SECONDS = 100
    pauses = []
    for _ in range(4):
        PartnerCircuit.objects.filter(partner="gateway").update(open_until=timezone.now())
        services.circuit_record_failure(partner="gateway")
        open_until = PartnerCircuit.objects.get(partner="gateway").open_until
        pauses.append(round((open_until - timezone.now()).total_seconds()))

    assert pauses == [30, 60, 100, 100]
