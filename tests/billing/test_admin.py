"""Finance admin: reconciliation after a dropped webhook, claim build and CSV export."""

from __future__ import annotations

import datetime

import pytest

from billing.adapters import stripe as stripe_api
from billing.models import ClaimBatch, Payment
from billing.services import payments
from prescriptions.models import Prescription, Status
from tests.billing.factories import approved_prescription

pytestmark = pytest.mark.django_db


@pytest.fixture
def finance(admin_client):  # type: ignore[no-untyped-def]
    return admin_client


def test_a_dropped_webhook_shows_in_reconciliation_and_sync_applies_stripes_state(
    stripe_sim, finance, clinic_a, paracetamol
):  # type: ignore[no-untyped-def]
    prescription = approved_prescription(clinic_a, paracetamol)
    payments.payment_start(prescription_id=prescription.pk)
    payment = Payment.objects.get(prescription=prescription)
    stripe_sim.control(drop_next_webhooks=1)
    stripe_api.payment_intent_confirm(
        intent_id=payment.stripe_payment_intent_id, payment_method="pm_card_visa", idempotency_key="pay"
    )

    page = finance.get("/admin/billing/payment/reconciliation/")
    synced = finance.post("/admin/billing/payment/reconciliation/", {"payment_id": payment.pk})
    after = finance.get("/admin/billing/payment/reconciliation/")

    assert page.status_code == 200
    assert [(m.payment_id, m.ours, m.stripes) for m in page.context["mismatches"]] == [
        (payment.pk, "requires_payment", "succeeded")
    ]
    assert synced.status_code == 302
    assert Payment.objects.get(pk=payment.pk).status == Payment.Status.SUCCEEDED
    assert Prescription.objects.get(pk=prescription.pk).status == Status.PAID
    assert after.context["mismatches"] == []
    assert stripe_sim.stats()["webhooks_dropped"] == 1


def test_finance_builds_a_month_and_exports_it_as_csv(finance):  # type: ignore[no-untyped-def]
    built = finance.post("/admin/billing/claimbatch/build/", {"month": "2026-11"})
    batch = ClaimBatch.objects.get()
    exported = finance.post(
        "/admin/billing/claimbatch/", {"action": "export_csv", "_selected_action": [batch.pk]}
    )

    assert built.status_code == 302
    assert batch.month == datetime.date(2026, 11, 1)
    assert exported.status_code == 200
    assert exported["Content-Disposition"] == 'attachment; filename="nhs-claim-2026-11.csv"'
    assert exported.content.decode().splitlines()[-1] == "TOTAL,,0,,,0 exempt,,,,,0"


def test_a_bad_month_builds_nothing(finance):  # type: ignore[no-untyped-def]
    response = finance.post("/admin/billing/claimbatch/build/", {"month": "2026-13"})

    assert response.status_code == 200
    assert "Give the month as YYYY-MM." in response.content.decode()
    assert not ClaimBatch.objects.exists()


@pytest.mark.parametrize(
    "url",
    [
        "/admin/billing/payment/",
        "/admin/billing/refund/",
        "/admin/billing/stripeevent/",
        "/admin/billing/cancellationrequest/",
        "/admin/billing/nhscharge/",
        "/admin/billing/nhschargerate/",
        "/admin/billing/claimbatch/",
    ],
)
def test_every_finance_list_renders(finance, url):  # type: ignore[no-untyped-def]
    assert finance.get(url).status_code == 200
