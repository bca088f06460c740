from celery import shared_task

from events import services


@shared_task(time_limit=60)
def outbox_relay() -> int:
    return services.outbox_relay()


@shared_task(time_limit=120)
def stuck_work_reconcile() -> dict[str, int]:
    from events import reconciler  # imports pharmacy and prescriptions: keep app loading lazy

    return reconciler.stuck_work_reconcile()
