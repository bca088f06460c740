"""Latency and query counts at volume, on the database `manage.py bench_seed` filled.

Runs in process (Django's test client) against the configured database, not a test copy:
the clinic API as the first bench clinic's client, the pharmacist queue, support's patient
search, and every registered admin changelist and one change page of each as a superuser
(median wall, SQL and CPU milliseconds and the query count; a warm-up request first). Adds one staff user, one API client and one
token (synthetic); changes nothing else.

    .venv/bin/python manage.py bench_seed --prescriptions 1000000
    .venv/bin/python scripts/bench_scale.py [--runs 5]     # or: make bench-scale
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
os.environ.setdefault("OUTBOX_PUBLISH_ON_COMMIT", "false")

import django  # noqa: E402

django.setup()

from django.conf import settings  # noqa: E402
from django.contrib import admin  # noqa: E402
from django.db import connection  # noqa: E402
from django.test import RequestFactory  # noqa: E402
from django.test.utils import CaptureQueriesContext  # noqa: E402
from django.urls import reverse  # noqa: E402
from django.utils import timezone  # noqa: E402
from rest_framework.test import APIClient  # noqa: E402

BUDGET_MS = 200


def measure(name: str, call: Callable[[], object], runs: int) -> tuple[float, int]:
    """Median wall time, and of it the median time in SQL and in this process's own CPU: on a
    loaded machine the wall time is mostly waiting for a core."""
    call()  # warm the cache and the connection
    timings, cpu, sql, queries = [], [], [], []
    for _ in range(runs):
        with CaptureQueriesContext(connection) as captured:
            started, started_cpu = time.perf_counter(), time.process_time()
            response = call()
            timings.append((time.perf_counter() - started) * 1000)
            cpu.append((time.process_time() - started_cpu) * 1000)
        status = getattr(response, "status_code", 200)
        assert status < 300, (name, status)
        queries.append(len(captured))
        sql.append(sum(float(query["time"]) for query in captured.captured_queries) * 1000)
    median = statistics.median(timings)
    flag = "" if median <= BUDGET_MS else "  over 200 ms"
    print(
        f"| {name} | {median:.0f} | {statistics.median(sql):.0f} | {statistics.median(cpu):.0f} "
        f"| {max(queries)} |{flag}"
    )
    return median, max(queries)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=5)
    arguments = parser.parse_args()
    # Not setup_test_environment(): its instrumented template rendering (for response.context)
    # costs a third of a changelist's CPU, which production does not pay.
    settings.ALLOWED_HOSTS = [*settings.ALLOWED_HOSTS, "testserver"]
    settings.DEBUG = False

    from django.contrib.auth.models import User
    from oauth2_provider.models import AccessToken, Application

    from patients.models import Clinic, ClinicClient, Patient
    from prescriptions.models import Prescription, Status
    from tests.support.factories import StaffClient

    clinic = Clinic.objects.get(name="Bench clinic 02")
    application, _ = Application.objects.get_or_create(
        name="bench-scale",
        defaults={
            "client_type": Application.CLIENT_CONFIDENTIAL,
            "authorization_grant_type": Application.GRANT_CLIENT_CREDENTIALS,
        },
    )
    ClinicClient.objects.get_or_create(application=application, defaults={"clinic": clinic})
    token = AccessToken.objects.create(
        application=application,
        token=f"bench-scale-{time.time_ns()}",
        expires=timezone.now() + timedelta(hours=1),
        scope=" ".join(settings.OAUTH2_PROVIDER["SCOPES"]),
    )
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Bearer {token.token}")
    user, _ = User.objects.get_or_create(
        username="bench-scale-admin", defaults={"is_staff": True, "is_superuser": True}
    )
    staff = StaffClient()
    staff.force_login(user)

    prescription = Prescription.objects.filter(clinic=clinic).order_by("-id").first()
    patient = Patient.objects.filter(clinic=clinic).order_by("-id").first()
    assert prescription is not None
    assert patient is not None
    print(
        f"{Prescription.objects.order_by().count()} prescriptions, {Patient.objects.order_by().count()} patients;"
        f" load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores"
    )
    runs = arguments.runs
    print("| request | wall ms | SQL ms | CPU ms | queries |")
    print("|---|---:|---:|---:|---:|")
    measure("GET /api/v1/prescriptions/", lambda: api.get("/api/v1/prescriptions/"), runs)
    measure(
        "GET /api/v1/prescriptions/?status=delivered",
        lambda: api.get("/api/v1/prescriptions/?status=delivered"),
        runs,
    )
    measure(
        "GET /api/v1/prescriptions/{id}/", lambda: api.get(f"/api/v1/prescriptions/{prescription.pk}/"), runs
    )
    measure("GET /api/v1/patients/", lambda: api.get("/api/v1/patients/"), runs)
    measure("GET /api/v1/patients/{id}/", lambda: api.get(f"/api/v1/patients/{patient.pk}/"), runs)
    queue = reverse("admin:prescriptions_pharmacistqueue_changelist")
    measure(f"pharmacist queue ({Status.AWAITING_PHARMACIST})", lambda: staff.get(queue), runs)
    search = reverse("admin:support_patient_find")
    measure("support patient search (NHS number)", lambda: staff.get(search, {"q": patient.nhs_number}), runs)
    measure(
        "support patient search (tracking number)",
        lambda: staff.get(search, {"q": prescription.tracking_number or "TRK1"}),
        runs,
    )
    page = reverse("admin:support_patient", args=[patient.pk])
    measure("support patient page", lambda: staff.get(page), runs)
    request = RequestFactory().get("/")
    request.user = user
    registered = sorted(admin.site._registry.items(), key=lambda pair: pair[0]._meta.label)
    for model, _model_admin in registered:
        url = reverse(f"admin:{model._meta.app_label}_{model._meta.model_name}_changelist")
        measure(f"admin {model._meta.label}", lambda url=url: staff.get(url), runs)
    for model, model_admin in registered:
        # The newest row the admin lists (an index lookup on the primary key).
        pk = model_admin.get_queryset(request).order_by("-pk").values_list("pk", flat=True).first()
        if pk is None:
            print(f"| admin {model._meta.label} change page | (no rows) | | | |")
            continue
        url = reverse(f"admin:{model._meta.app_label}_{model._meta.model_name}_change", args=[pk])
        measure(f"admin {model._meta.label} change page", lambda url=url: staff.get(url), runs)
    measure(
        "admin prescriptions, status filter",
        lambda: staff.get(
            reverse("admin:prescriptions_prescription_changelist"), {"status__exact": "rejected"}
        ),
        runs,
    )
    measure(
        "admin prescriptions, search by id",
        lambda: staff.get(
            reverse("admin:prescriptions_prescription_changelist"), {"q": str(prescription.pk)}
        ),
        runs,
    )
    measure(
        "admin events, search by prescription id",
        lambda: staff.get(reverse("admin:events_event_changelist"), {"q": str(prescription.pk)}),
        runs,
    )
    measure(
        "admin access log, search by patient id",
        lambda: staff.get(reverse("admin:audit_patientaccess_changelist"), {"q": str(patient.pk)}),
        runs,
    )


if __name__ == "__main__":
    main()
