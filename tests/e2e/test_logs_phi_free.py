"""The journey with synthetic patient data: no identifier reaches any log line, web or worker,
and the web request's id follows the prescription into the worker's lines."""

from __future__ import annotations

import json
import logging

import pytest
import requests

from common.logs import logging_config
from prescriptions.formulary import formulary_load
from prescriptions.models import Medication, Prescription, Status
from tests.conftest import FORMULARY_FILE, prescription_body
from tests.e2e.test_journey import token_for
from tests.patients.factories import ClinicFactory
from tests.prescriptions.factories import PrescriberFactory
from tests.processes import purge_queues, start_simulator, start_worker, stop_process, wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

SYNTHETIC_PATIENT = {
    "given_name": "Xanthippe",
    "family_name": "Vorpalsworth",
    "birth_date": "1963-07-29",
    "nhs_number": "943 476 5919",
    "address_line": "42 Unlikely Crescent",
    "city": "Much Wenlock",
    "region": "Shropshire",
    "postal_code": "TF13 6ZZ",
    "email": "xanthippe.vorpalsworth@example.invalid",
    "phone": "+44 7700 900456",
}
NEEDLES = [*SYNTHETIC_PATIENT.values(), "9434765919", "7700900456", "7700 900456", "Vorpalsworth"]


class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(level=logging.DEBUG)
        formatter_config = logging_config("DEBUG")["formatters"]["json"]
        factory = formatter_config.pop("()")
        self.setFormatter(factory(**formatter_config))
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


def test_a_journey_with_synthetic_phi_leaves_no_identifier_in_any_log_line(
    live_server, settings, tmp_path, nhs_charge_rates
):
    settings.OUTBOX_PUBLISH_ON_COMMIT = True
    purge_queues()
    web_lines = _Collect()
    root = logging.getLogger()
    previous_level = root.level
    root.addHandler(web_lines)
    root.setLevel(logging.DEBUG)
    worker_log = (tmp_path / "worker.log").open("w")
    simulator = start_simulator(webhook_url=f"{live_server.url}/webhooks/gateway/", step_delay=0.1)
    worker = start_worker(gateway_url=simulator.url, loglevel="INFO", log_file=worker_log)
    try:
        clinic = ClinicFactory()
        prescriber = PrescriberFactory(clinic=clinic)
        formulary_load(path=FORMULARY_FILE)  # the checks fail closed without it
        medication = Medication.objects.get(code="322236009")
        headers = {"Authorization": f"Bearer {token_for(live_server.url, clinic)}"}
        patient = requests.post(
            f"{live_server.url}/api/v1/patients/",
            json=SYNTHETIC_PATIENT,
            headers={**headers, "Idempotency-Key": "phi-1", "X-Request-ID": "req-patient-1"},
            timeout=10,
        )
        assert patient.status_code == 201, patient.text
        bad = requests.post(
            f"{live_server.url}/api/v1/patients/",
            json={**SYNTHETIC_PATIENT, "birth_date": "not a date"},
            headers={**headers, "Idempotency-Key": "phi-2"},
            timeout=10,
        )
        assert bad.status_code == 400
        created = requests.post(
            f"{live_server.url}/api/v1/prescriptions/",
            # NHS-funded, so the journey needs no payment step (billing has its own journeys).
            json=prescription_body(patient.json()["id"], prescriber.pk, medication, funding="nhs"),
            headers={**headers, "Idempotency-Key": "phi-3", "X-Request-ID": "req-journey-1"},
            timeout=10,
        )
        assert created.status_code == 201, created.text
        assert created.headers["X-Request-ID"] == "req-journey-1"
        wait_until(
            lambda: Prescription.objects.get(pk=created.json()["id"]).status == Status.DELIVERED,
            seconds=90,
            what=f"delivery (prescription {created.json()['id']})",
        )
    finally:
        stop_process(worker)
        simulator.stop()
        worker_log.close()
        root.removeHandler(web_lines)
        root.setLevel(previous_level)

    worker_lines = (tmp_path / "worker.log").read_text().splitlines()
    lines = web_lines.lines + worker_lines
    assert len(web_lines.lines) >= 1
    assert len(worker_lines) >= 3
    leaks = [line for line in lines for needle in NEEDLES if needle.lower() in line.lower()]
    assert leaks == []
    parsed = [json.loads(line) for line in worker_lines if line.startswith("{")]
    acknowledged = [
        entry
        for entry in parsed
        if entry["event"].startswith("dispatch ") and " acknowledged by " in entry["event"]
    ]
    assert [entry["request_id"] for entry in acknowledged] == ["req-journey-1"]
