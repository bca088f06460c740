"""Each role's main journey, in a real browser (Chromium) against a live server. Each saves a
screenshot under var/screenshots/."""

from __future__ import annotations

import csv
import datetime
import io
import re
from pathlib import Path

import pytest
from django.utils import timezone
from django_otp.plugins.otp_totp.models import TOTPDevice
from playwright.sync_api import Browser, Page, expect

from billing.models import ClaimBatch
from billing.services import nhs
from notifications.models import Notification
from pharmacy.models import DeadLetter, Dispatch
from prescriptions.models import PharmacistReview, Prescription, Status
from prescriptions.status_link import status_link_token
from support import roles
from support.models import Enquiry, SupportAction
from support.services import staff_assign_clinic
from tests.browser.conftest import screenshot, sign_in, totp_code
from tests.support.factories import (
    PASSWORD,
    EnquiryFactory,
    StaffFactory,
    dead_lettered_prescription,
    pharmacist_create,
    shipped_prescription,
)

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_staff_sign_in_with_a_totp_code(page: Page, live_server):  # type: ignore[no-untyped-def]
    user = StaffFactory(role=roles.OPERATOR)

    page.goto(f"{live_server.url}/admin/")
    page.fill("#id_username", user.username)
    page.fill("#id_password", PASSWORD)
    page.fill("#id_otp_token", "000000" if totp_code(user) != "000000" else "111111")
    page.click("input[type=submit]")
    expect(page.locator(".errornote")).to_be_visible()
    screenshot(page, "sign-in-wrong-code")
    # A failed code throttles the device for a second; let that second pass.
    TOTPDevice.objects.filter(user=user).update(
        throttling_failure_timestamp=timezone.now() - datetime.timedelta(seconds=5)
    )

    page.fill("#id_password", PASSWORD)
    page.fill("#id_otp_token", totp_code(user))
    page.click("input[type=submit]")

    expect(page).to_have_title("Your work | Scriptline back office")
    expect(page.locator("#my-work-title")).to_have_text("My work")
    expect(page.locator('[data-work="dead_letters"]')).to_contain_text("dead letters")
    screenshot(page, "sign-in-my-work")


def test_a_pharmacist_approves_a_controlled_drug_with_a_reason(  # type: ignore[no-untyped-def]
    page: Page, live_server, formulary, csp_violations
):
    from tests.prescriptions.test_admin import awaiting

    prescription = awaiting()
    assert any(item.medication.is_controlled for item in prescription.items.all())
    pharmacist = pharmacist_create()

    sign_in(page, live_server.url, pharmacist)
    page.click('[data-work="pharmacist_queue"] a')
    page.click(f"text=Review #{prescription.pk}")
    expect(page.locator("h2").first).to_contain_text(f"Prescription #{prescription.pk}")
    expect(page.locator(".prescriber-registration")).to_contain_text("controlled drugs authorised")
    page.wait_for_load_state("load")  # the shortcuts' deferred script has run
    page.keyboard.press("a")  # the shortcut picks "approved" and moves to the reason
    expect(page.locator("input[name=decision][value=approved]")).to_be_checked()
    page.keyboard.type("Schedule 2 checked: dose, quantity in words and prescriber address are lawful.")
    screenshot(page, "pharmacist-review")
    page.keyboard.press("Control+Enter")

    expect(page.locator(".messagelist")).to_contain_text(
        f"Decision recorded on Prescription #{prescription.pk}"
    )
    screenshot(page, "pharmacist-decided")
    review = PharmacistReview.objects.get(prescription=prescription)
    assert (review.decision, review.pharmacist_id) == ("approved", pharmacist.pk)
    assert review.reason.startswith("Schedule 2 checked")
    assert Prescription.objects.get(pk=prescription.pk).status == Status.APPROVED
    assert csp_violations == []


def test_support_finds_a_patient_checks_identity_answers_where_is_my_order_and_resends(  # type: ignore[no-untyped-def]
    page: Page, live_server, formulary
):
    prescription = shipped_prescription(tracking_number="SIM2026113001")
    patient = prescription.patient
    enquiry = EnquiryFactory(patient=patient, prescription=prescription, category="where_is_my_order")
    support = StaffFactory(role=roles.SUPPORT)
    staff_assign_clinic(user=support, clinic=prescription.clinic)

    sign_in(page, live_server.url, support)
    page.click('[data-work="open_enquiries"] a')
    expect(page.locator("#result_list")).to_contain_text("Where is my order")
    page.click("text=Find a patient")
    page.fill("#id_q", patient.nhs_number)
    page.click("input[value=Search]")
    page.click(f"text=Patient #{patient.pk}")
    expect(page.locator("#identity-check")).to_be_visible()
    expect(page.locator("body")).not_to_contain_text(patient.family_name)
    page.fill("#id_family_name", patient.family_name)
    page.fill("#id_birth_date", patient.birth_date.isoformat())
    page.fill("#id_postal_code", patient.postal_code)
    page.click("input[value='Check identity']")

    card = page.locator(f'[data-prescription="{prescription.pk}"]')
    expect(card.locator(".plain-status")).to_have_text(
        re.compile(r"Shipped with Royal Mail at \d\d:\d\d, tracking SIM2026113001")
    )
    notification = Notification.objects.get(patient=patient)
    row = card.locator(f'[data-notification="{notification.pk}"]')
    row.locator("summary", has_text="Resend").click()
    row.locator("select[name=enquiry]").select_option(str(enquiry.pk))
    row.locator("textarea[name=reason]").fill("Patient cannot find the shipping email; resent with tracking.")
    screenshot(page, "support-patient-page")
    row.locator("button", has_text="Resend notification").click()
    expect(page.locator(".messagelist")).to_contain_text("is being sent again")

    answer = page.locator(f'[data-enquiry="{enquiry.pk}"]')
    answer.locator("summary", has_text="Resolve").click()
    answer.get_by_label("Resolution").fill("Gave the tracking number SIM2026113001; parcel due tomorrow.")
    answer.locator("button", has_text="Resolve").click()
    expect(page.locator(".messagelist")).to_contain_text("Enquiry resolved.")
    screenshot(page, "support-answered")

    resend = Notification.objects.get(resend_of=notification)
    assert (resend.status, resend.requested_by) == ("queued", f"user:{support.pk}")
    assert Enquiry.objects.get(pk=enquiry.pk).status == Enquiry.Status.RESOLVED
    assert list(SupportAction.objects.order_by("id").values_list("kind", "enquiry_id")) == [
        ("identity_check", None),
        ("resend_notification", enquiry.pk),
        ("resolve", enquiry.pk),
    ]


def test_an_operator_replays_a_dead_letter_from_the_dashboard(  # type: ignore[no-untyped-def]
    page: Page, live_server, formulary, settings, csp_violations
):
    settings.DASHBOARD_REFRESH_SECONDS = 2
    prescription, letter = dead_lettered_prescription()
    operator = StaffFactory(role=roles.OPERATOR)

    sign_in(page, live_server.url, operator)
    page.click("a.nav-dashboard")
    expect(page.locator('[data-tile="dead_letters"]')).to_have_class(re.compile("tile-red"))
    expect(page.locator(f'[data-dead-letter="{letter.pk}"]')).to_be_visible()
    # The page refreshes in place: a new dead letter appears without navigating.
    _, later = dead_lettered_prescription()
    expect(page.locator(f'[data-dead-letter="{later.pk}"]')).to_be_visible(timeout=10_000)
    screenshot(page, "operator-dashboard")

    page.locator(f'[data-dead-letter="{letter.pk}"] button', has_text="Replay").click()

    expect(page.locator(".messagelist")).to_contain_text(f"Dead letter #{letter.pk} replayed")
    expect(page.locator(f'[data-dead-letter="{letter.pk}"]')).to_have_count(0)
    screenshot(page, "operator-replayed")
    letter.refresh_from_db()
    assert (letter.resolution, Dispatch.objects.get(prescription=prescription).status) == (
        "replayed",
        "pending",
    )
    assert DeadLetter.objects.filter(resolved_at__isnull=True).count() == 1
    assert csp_violations == []


def test_finance_exports_the_nhs_claim_csv(  # type: ignore[no-untyped-def]
    page: Page, live_server, clinic_a, paracetamol, nhs_charge_rates
):
    from tests.billing.test_nhs import at, dispensed_nhs_prescription

    prescription = dispensed_nhs_prescription(clinic_a, paracetamol, at(3))
    batch = nhs.claim_batch_build(month=datetime.date(2026, 11, 1))
    finance = StaffFactory(role=roles.FINANCE)

    sign_in(page, live_server.url, finance)
    page.locator(".role-finance").get_by_role("link", name="Claim batches").click()
    page.locator(f'input[name=_selected_action][value="{batch.pk}"]').check()
    page.select_option("select[name=action]", "export_csv")
    screenshot(page, "finance-claims")
    with page.expect_download() as download_info:
        page.click("button[name=index]")
    download = download_info.value

    assert download.suggested_filename == "nhs-claim-2026-11.csv"
    rows = list(csv.reader(io.StringIO(Path(download.path()).read_text(encoding="utf-8"))))
    assert rows[0] == nhs.CSV_COLUMNS
    assert rows[1][:3] == ["2026-11", str(prescription.pk), str(prescription.items.get().pk)]
    assert rows[-1][0] == "TOTAL"
    assert ClaimBatch.objects.count() == 1


def test_a_patient_opens_the_status_link_on_a_phone(browser: Browser, live_server, formulary):  # type: ignore[no-untyped-def]
    prescription = shipped_prescription(
        tracking_number="SIM9990001234", patient={"given_name": "Robin", "family_name": "Quarterly"}
    )
    phone = browser.new_context(
        viewport={"width": 390, "height": 844}, device_scale_factor=3, is_mobile=True, has_touch=True
    )
    page = phone.new_page()
    try:
        page.goto(f"{live_server.url}/track/{status_link_token(prescription=prescription)}/")

        expect(page.locator("h1")).to_have_text("Hello Robin")
        expect(page.locator("#status")).to_contain_text("Shipped with Royal Mail")
        expect(page.locator("#tracking-number")).to_have_text("SIM9990001234")
        expect(page.locator("body")).not_to_contain_text("Quarterly")
        assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
        screenshot(page, "patient-status-phone")

        page.goto(f"{live_server.url}/track/not-a-real-token/")
        expect(page.locator("h1")).to_have_text("This link is not available")
        screenshot(page, "patient-status-bad-link")
    finally:
        phone.close()
