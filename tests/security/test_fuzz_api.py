"""Schemathesis walks the OpenAPI schema against the app with a real token: no 5xx, and every
response matches the schema (status code, content type, body). Bounded for CI (FUZZ_EXAMPLES)."""

from __future__ import annotations

import os

import pytest
import schemathesis
from django.core.signals import request_finished, request_started
from django.db import close_old_connections
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from config.wsgi import application
from tests.patients.factories import PatientFactory

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "100"))
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]


# The schema is read from the running app, as a client would (it needs no database).
schema = schemathesis.openapi.from_wsgi("/api/schema/", application)


@pytest.fixture
def live_clinic(db, clinic_a, paracetamol):  # type: ignore[no-untyped-def]
    # Requests go through the real WSGI stack inside the test's transaction; like Django's test
    # client, keep each request's start and end from closing the connection (and the transaction).
    for signal in (request_started, request_finished):
        signal.disconnect(close_old_connections)
    PatientFactory(clinic=clinic_a.clinic)
    yield clinic_a
    for signal in (request_started, request_finished):
        signal.connect(close_old_connections)


@schema.parametrize()
@settings(
    max_examples=EXAMPLES,
    deadline=None,
    # CI replays the same examples every run (a red build means a regression, not bad luck);
    # locally each run explores new ones.
    derandomize=bool(os.environ.get("CI")),
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,
        HealthCheck.too_slow,
        HealthCheck.filter_too_much,
    ],
)
def test_the_api_answers_every_generated_request_without_5xx_and_as_documented(case, live_clinic):
    case.call_and_validate(headers={"Authorization": f"Bearer {live_clinic.token}"}, checks=CHECKS)
