"""A real worker writes its task statistics in batches: what it has not written yet reaches the
database when its processes stop (support.metrics, TASK_STATISTICS_FLUSH_SECONDS)."""

from __future__ import annotations

import pytest

from prescriptions import services
from prescriptions.formulary import formulary_load
from prescriptions.models import Medication, Prescription, Status
from support.models import TaskStatistic
from tests.conftest import FORMULARY_FILE
from tests.patients.factories import ClinicFactory, PatientFactory
from tests.prescriptions.factories import PrescriberFactory, one_a_day
from tests.processes import purge_queues, start_simulator, start_worker, stop_process, wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


def test_a_stopping_worker_writes_every_task_it_counted(live_server, settings):  # type: ignore[no-untyped-def]
    settings.OUTBOX_PUBLISH_ON_COMMIT = True
    formulary_load(path=FORMULARY_FILE)
    purge_queues()
    simulator = start_simulator(webhook_url=f"{live_server.url}/webhooks/gateway/", step_delay=0.2)
    # Written only when a process stops (or on its first task after an hour of uptime).
    worker = start_worker(gateway_url=simulator.url, extra_env={"TASK_STATISTICS_FLUSH_SECONDS": "3600"})
    try:
        clinic = ClinicFactory()
        prescriber = PrescriberFactory(clinic=clinic)
        medication = Medication.objects.get(code="322236009")
        item = one_a_day(medication)
        ids = [
            services.prescription_create(
                clinic=clinic, patient=PatientFactory(clinic=clinic), prescriber=prescriber, items=[item]
            ).pk
            for _ in range(4)
        ]
        wait_until(
            lambda: not Prescription.objects.filter(pk__in=ids, status=Status.RECEIVED).exists(),
            seconds=60,
            what="four prescriptions checked",
        )
    finally:
        stop_process(worker, timeout=30, whole_group=False)
        simulator.stop()

    checks = TaskStatistic.objects.filter(task="prescriptions.tasks.prescription_check", outcome="success")
    assert sum(row.count for row in checks) == 4
