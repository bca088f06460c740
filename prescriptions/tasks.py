from celery import shared_task

from prescriptions import repeats


@shared_task(time_limit=300, soft_time_limit=240)
def repeat_series_issue_due() -> int:
    """Beat: issue the repeats that are due today (safe with two schedulers running)."""
    return len(repeats.repeat_series_issue_due())
