"""Shared fixtures: clinics with API clients, and an authenticated API client per clinic."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest
from rest_framework.test import APIClient

from patients.models import Clinic
from prescriptions.formulary import formulary_load
from prescriptions.models import Medication, Prescriber
from tests.patients.factories import AccessTokenFactory, ClinicClientFactory, ClinicFactory, PatientFactory
from tests.prescriptions.factories import PrescriberFactory
from tests.support.factories import StaffClient

FORMULARY_FILE = Path(__file__).resolve().parent.parent / "prescriptions" / "data" / "formulary.json"


@dataclass
class ClinicSetup:
    clinic: Clinic
    api: APIClient
    prescriber: Prescriber
    token: str


def make_clinic_setup(name: str, scope: str | None = None) -> ClinicSetup:
    clinic = ClinicFactory(name=name)
    link = ClinicClientFactory(clinic=clinic)
    token_kwargs = {"application": link.application}
    if scope is not None:
        token_kwargs["scope"] = scope
    token = AccessTokenFactory(**token_kwargs)
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Bearer {token.token}")
    return ClinicSetup(clinic=clinic, api=api, prescriber=PrescriberFactory(clinic=clinic), token=token.token)


def pytest_collection_modifyitems(config, items):  # type: ignore[no-untyped-def]
    """Browser journeys run last: once Playwright's sync API has started, this thread holds an
    event loop, and the tests after it would need DJANGO_ALLOW_ASYNC_UNSAFE (tests/browser)."""
    items.sort(key=lambda item: item.get_closest_marker("browser") is not None)


@pytest.fixture
def clinic_a(db) -> ClinicSetup:  # type: ignore[no-untyped-def]
    return make_clinic_setup("Clinic A")


@pytest.fixture
def clinic_b(db) -> ClinicSetup:  # type: ignore[no-untyped-def]
    return make_clinic_setup("Clinic B")


@pytest.fixture
def formulary(db) -> None:  # type: ignore[no-untyped-def]
    """The real formulary file, loaded: the clinical checks fail closed without it."""
    formulary_load(path=FORMULARY_FILE)


@pytest.fixture
def paracetamol(formulary) -> Medication:  # type: ignore[no-untyped-def]
    return Medication.objects.get(code="322236009")


@pytest.fixture
def methylphenidate(formulary) -> Medication:  # type: ignore[no-untyped-def]
    return Medication.objects.get(code="324907005")


def prescription_body(patient_id: int, prescriber_id: int, medication: Medication, **overrides) -> dict:  # type: ignore[no-untyped-def]
    item = {
        "medication": {"system": medication.code_system, "code": medication.code},
        "dose_text": "Take one tablet four times a day",
        "quantity": "28",
        "unit": "tablet",
        "days_supply": 7,
    }
    item.update(overrides.pop("item", {}))
    return {"patient": patient_id, "prescriber": prescriber_id, "items": [item], **overrides}


@pytest.fixture
def patient_a(clinic_a):  # type: ignore[no-untyped-def]
    return PatientFactory(clinic=clinic_a.clinic)


@pytest.fixture(autouse=True)
def _no_publish_on_commit(settings):  # type: ignore[no-untyped-def]
    # Unit tests run without a worker; journeys turn publishing back on explicitly.
    settings.OUTBOX_PUBLISH_ON_COMMIT = False


@pytest.fixture(autouse=True)
def _api_requests_narrow_the_system_connection(settings):  # type: ignore[no-untyped-def]
    # A test's data sits in its transaction on the system connection, which the API login
    # role's own connection could not see: in-process requests narrow that transaction with
    # SET LOCAL ROLE instead (accounts.tenancy). tests/security/test_api_login_connection.py
    # and the e2e processes run with the API connection.
    settings.API_LOGIN_CONNECTION = False


@pytest.fixture
def nhs_charge_rates(db):  # type: ignore[no-untyped-def]
    """The seeded NHS charge rates: transactional tests truncate the migration's data rows."""
    from importlib import import_module

    from django.apps import apps

    import_module("billing.migrations.0002_seed_england_nhs_charge_rates").seed(apps, None)


# --- Staff: the admin requires a second factor; force_login stands in for both. -------------------
@pytest.fixture
def client() -> StaffClient:
    return StaffClient()


@pytest.fixture
def admin_client(db, admin_user) -> StaffClient:  # type: ignore[no-untyped-def]
    client = StaffClient()
    client.force_login(admin_user)
    return client


EDGE_CONSUMERS = frozenset(
    {"events.tasks.webhook_on_prescription_event", "notifications.tasks.notification_on_event"}
)


@pytest.fixture
def core_consumers_only(settings):  # type: ignore[no-untyped-def]
    """Tests that count the saga's own consumers leave out the clinic-webhook and notification
    consumers (they subscribe to every status event and have their own tests)."""
    settings.EVENT_CONSUMERS = {
        event_type: [name for name in consumers if name not in EDGE_CONSUMERS]
        for event_type, consumers in settings.EVENT_CONSUMERS.items()
    }


@pytest.fixture(scope="module")
def gateway_simulator():  # type: ignore[no-untyped-def]
    """The gateway simulator as its own process (orders only: no webhooks), one per module."""
    from tests.processes import start_simulator

    running = start_simulator(no_auto_advance=True)
    yield running
    running.stop()


@pytest.fixture
def gateway(gateway_simulator, settings):  # type: ignore[no-untyped-def]
    """The simulator, reset, with the app pointed at it and a short retry budget."""
    settings.GATEWAY_URL = gateway_simulator.url
    settings.GATEWAY_MAX_ATTEMPTS = 3
    settings.GATEWAY_TIMEOUT_SECONDS = 2
    gateway_simulator.reset()
    return gateway_simulator


@pytest.fixture(scope="session")
def stripe_process():  # type: ignore[no-untyped-def]
    from tests.processes import start_stripe_simulator

    running = start_stripe_simulator()
    yield running
    running.stop()


@pytest.fixture
def stripe_sim(stripe_process, settings):  # type: ignore[no-untyped-def]
    """The Stripe simulator, reset, with settings pointing the SDK at it."""
    settings.STRIPE_API_BASE = stripe_process.url
    settings.STRIPE_MAX_ATTEMPTS = 3
    settings.STRIPE_TIMEOUT_SECONDS = 5
    stripe_process.reset()
    stripe_process.control(auto_confirm=False, drop_next_webhooks=0, down=False, error_rate=0, latency=0)
    return stripe_process
