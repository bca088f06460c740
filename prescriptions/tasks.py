from celery import shared_task

from events.services import consume_once
from patients.idempotency import idempotency_keys_purge as purge
from prescriptions import repeats, services


@shared_task(time_limit=60)
def prescription_check(event_id: int) -> None:
    """Consumer of prescription.received: run the clinical checks."""
    consume_once(
        consumer="prescriptions.tasks.prescription_check",
        event_id=event_id,
        handle=lambda event: services.prescription_run_checks(prescription_id=event.aggregate_id),
    )


@shared_task(time_limit=300)
def idempotency_keys_purge() -> int:
    return purge()


@shared_task(time_limit=60)
def repeat_series_start(event_id: int) -> None:
    """Consumer of prescription approval events: start the repeat series, if it has repeats."""
    consume_once(
        consumer="prescriptions.tasks.repeat_series_start",
        event_id=event_id,
        handle=lambda event: repeats.repeat_series_start(prescription_id=event.aggregate_id),
    )


@shared_task(time_limit=300)
def repeat_series_issue_due() -> int:
    """Beat: issue the repeats that are due today (safe with two schedulers running)."""
    return len(repeats.repeat_series_issue_due())
