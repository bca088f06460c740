"""`make bench`: API latency and query counts on PostgreSQL, in process.

Prints, per request kind, the median and 95th percentile time and the number of SQL
queries, after loading `--prescriptions` rows so the list is not trivially small.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
os.environ.setdefault("OUTBOX_PUBLISH_ON_COMMIT", "false")

import django  # noqa: E402

django.setup()

from django.db import connection  # noqa: E402
from django.test.utils import CaptureQueriesContext, setup_test_environment  # noqa: E402
from rest_framework.test import APIClient  # noqa: E402


def measure(name: str, call: Callable[[], Any], runs: int) -> None:
    timings, queries = [], []
    for _ in range(runs):
        with CaptureQueriesContext(connection) as captured:
            started = time.perf_counter()
            response = call()
            timings.append((time.perf_counter() - started) * 1000)
        assert response.status_code < 300, response.content
        queries.append(len(captured))
    timings.sort()
    p95 = timings[int(len(timings) * 0.95) - 1]
    print(
        f"{name:<36} median {statistics.median(timings):6.1f} ms   p95 {p95:6.1f} ms   "
        f"queries {min(queries)}-{max(queries)}"
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--prescriptions", type=int, default=2000)
    arguments = parser.parse_args()

    from django.conf import settings

    setup_test_environment()
    old_name = connection.settings_dict["NAME"]
    # Its own database, so a benchmark never collides with a test run's.
    connection.settings_dict["TEST"]["NAME"] = f"bench_{old_name}"
    test_name = connection.creation.create_test_db(verbosity=0, keepdb=False)
    try:
        run(arguments, settings)
    finally:
        connection.creation.destroy_test_db(old_name, verbosity=0)
        print(f"(benchmark database {test_name} dropped)")


def run(arguments: argparse.Namespace, settings: Any) -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from tests.conftest import make_clinic_setup, prescription_body
    from tests.patients.factories import PatientFactory
    from tests.prescriptions.factories import MedicationFactory

    setup = make_clinic_setup("Bench clinic")
    medication = MedicationFactory(code="322236009")
    patients = [PatientFactory(clinic=setup.clinic) for _ in range(20)]
    api: APIClient = setup.api

    def post(index: int) -> Any:
        body = prescription_body(patients[index % 20].pk, setup.prescriber.pk, medication)
        return api.post("/api/v1/prescriptions/", body, format="json", HTTP_IDEMPOTENCY_KEY=str(uuid.uuid4()))

    print(f"loading {arguments.prescriptions} prescriptions ...")
    for index in range(arguments.prescriptions):
        post(index)
    counter = iter(range(10**9))
    measure("POST /api/v1/prescriptions/", lambda: post(next(counter)), arguments.runs)
    key = str(uuid.uuid4())
    body = prescription_body(patients[0].pk, setup.prescriber.pk, medication)
    api.post("/api/v1/prescriptions/", body, format="json", HTTP_IDEMPOTENCY_KEY=key)
    measure(
        "POST replay (same Idempotency-Key)",
        lambda: api.post("/api/v1/prescriptions/", body, format="json", HTTP_IDEMPOTENCY_KEY=key),
        arguments.runs,
    )
    measure("GET /api/v1/prescriptions/ (50/page)", lambda: api.get("/api/v1/prescriptions/"), arguments.runs)
    last = setup.clinic.prescriptions.order_by("-id").first().pk
    measure(
        "GET /api/v1/prescriptions/{id}/", lambda: api.get(f"/api/v1/prescriptions/{last}/"), arguments.runs
    )
    measure("GET /api/v1/patients/ (50/page)", lambda: api.get("/api/v1/patients/"), arguments.runs)
    measure(
        "GET /api/v1/medications/?search=",
        lambda: api.get("/api/v1/medications/?search=para"),
        arguments.runs,
    )


if __name__ == "__main__":
    main()
