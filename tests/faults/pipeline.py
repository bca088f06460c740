"""Helpers for the fault-injection suite: NHS-funded prescriptions and a real worker."""

from __future__ import annotations

import contextlib
import datetime
import time
from collections.abc import Callable

from django.conf import settings
from django.utils import timezone
from kombu.exceptions import OperationalError as BrokerError

from billing.services import nhs
from events.models import Event, OutboxMessage
from events.services import outbox_tasks_publish
from pharmacy.models import Dispatch
from prescriptions import services
from prescriptions.models import Funding, Medication, Prescription, Status
from saga import reconciler
from tests.patients.factories import PatientFactory, distinct_nhs_number

# Workers in this suite notice a dead peer's tasks within seconds, not kombu's 100.
FAST_REDELIVERY = {
    "CELERY_VISIBILITY_TIMEOUT": "3",
    "CELERY_UNACKED_RESTORE_INTERVAL": "1",
    "CELERY_UNACKED_RESTORE_THROTTLE": "1",
}


def nhs_funded_prescriptions(setup, medication: Medication, count: int) -> list[int]:  # type: ignore[no-untyped-def]
    """Prescriptions checked and NHS-funded (an exemption, so no Stripe step) in this process,
    with only their `nhs_funded` events left for the relay: dispatch is what the faults hit."""
    ids = []
    for _ in range(count):
        prescription = services.prescription_create(
            clinic=setup.clinic,
            patient=PatientFactory(clinic=setup.clinic, nhs_number=distinct_nhs_number()),
            prescriber=setup.prescriber,
            issued_on=datetime.date(2026, 11, 20),
            items=[
                {
                    "medication": medication,
                    "dose_text": "One tablet twice a day",
                    "quantity": 28,
                    "unit": "tablet",
                    "days_supply": 14,
                }
            ],
            funding=Funding.NHS,
            nhs_exemption={"category": "age_60_or_over", "evidence": ""},
        )
        assert services.prescription_run_checks(prescription_id=prescription.pk) == Status.APPROVED
        nhs.nhs_charge_record(prescription_id=prescription.pk)
        ids.append(prescription.pk)
    assert Prescription.objects.filter(pk__in=ids, status=Status.NHS_FUNDED).count() == count
    OutboxMessage.objects.exclude(event__type="prescription.nhs_funded").update(published_at=timezone.now())
    return ids


def acknowledged_count(ids: list[int]) -> int:
    return Prescription.objects.filter(pk__in=ids, status=Status.ACKNOWLEDGED).count()


def wait_with_reconciler(predicate: Callable[[], bool], *, seconds: float, what: str) -> float:
    """Wait for `predicate`, running the reconciler and the relay (events and owed tasks that
    are due) every 2 s as beat would; returns the time taken.

    The reconciler's thresholds and the owed tasks' lease are lowered so they act within the
    scenario's bounds.
    """
    settings.RECONCILE_STALE_SECONDS = 4
    settings.RECONCILE_DISPATCH_STALE_SECONDS = 4
    settings.OUTBOX_TASK_LEASE_SECONDS = 8
    started = time.monotonic()
    next_pass = started
    while time.monotonic() - started < seconds:
        if predicate():
            return time.monotonic() - started
        if time.monotonic() >= next_pass:
            # While the broker is down a pass fails; the next one tries again.
            with contextlib.suppress(BrokerError):
                reconciler.stuck_work_reconcile()
                outbox_tasks_publish()
            next_pass = time.monotonic() + 2
        time.sleep(0.2)
    raise AssertionError(f"timed out after {seconds}s waiting for {what}")


def assert_one_order_per_prescription(simulator, ids: list[int]) -> None:  # type: ignore[no-untyped-def]
    """The invariant counted at the gateway: exactly one order per prescription, under our keys."""
    stats = simulator.stats()
    keys = {
        str(key)
        for key in Dispatch.objects.filter(prescription_id__in=ids).values_list("idempotency_key", flat=True)
    }
    assert len(keys) == len(ids)
    assert stats["orders"] == len(ids)
    assert set(stats["orders_by_key"]) == keys
    acknowledged = Event.objects.filter(aggregate_id__in=ids, type="prescription.acknowledged")
    assert acknowledged.count() == len(ids)
    assert set(acknowledged.values_list("aggregate_id", flat=True)) == set(ids)
