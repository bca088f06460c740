"""Clinic webhook URLs cannot aim Scriptline at itself or its network (SSRF): outside local mode
https only, and no private, loopback, link-local or reserved target — when the URL is saved and
again when a delivery would be sent (DNS may have changed in between)."""

from __future__ import annotations

import socket

import pytest
import requests

from events import webhooks
from events.adapters.http import PinnedAddressAdapter, webhook_post, webhook_target_refusal
from events.models import ClinicWebhookEndpoint, Event, WebhookAttempt, WebhookDelivery
from tests.events.receiver import receiver_start
from tests.prescriptions.factories import scenario


@pytest.fixture
def production_rules(settings):  # type: ignore[no-untyped-def]
    settings.CLINIC_WEBHOOK_REQUIRE_HTTPS = True
    settings.CLINIC_WEBHOOK_ALLOW_PRIVATE_TARGETS = False


def _resolving_to(monkeypatch, address: str) -> None:  # type: ignore[no-untyped-def]
    """DNS at the edge: every host resolves to `address`."""
    family = socket.AF_INET6 if ":" in address else socket.AF_INET

    def getaddrinfo(host, port, *args, **kwargs):  # type: ignore[no-untyped-def]
        return [(family, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", (address, port))]

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)


@pytest.mark.parametrize(
    "url",
    [
        "https://127.0.0.1/hook",
        "https://localhost/hook",
        "https://[::1]/hook",
        "https://10.0.0.5/hook",
        "https://172.16.3.4/hook",
        "https://192.168.1.10/hook",
        "https://169.254.169.254/latest/meta-data/",
        "https://[fe80::1]/hook",
        "https://[fd00::1]/hook",
        "https://0.0.0.0/hook",
        "https://100.64.0.1/hook",
        "https://[::ffff:127.0.0.1]/hook",
    ],
)
def test_private_loopback_and_link_local_targets_are_refused(production_rules, url):
    assert "private, loopback, link-local or reserved" in webhook_target_refusal(url)


def test_a_public_name_that_resolves_to_a_private_address_is_refused(production_rules, monkeypatch):
    _resolving_to(monkeypatch, "10.1.2.3")

    assert "private" in webhook_target_refusal("https://hooks.clinic.example/scriptline")


def test_a_public_https_target_is_accepted(production_rules, monkeypatch):
    _resolving_to(monkeypatch, "93.184.215.14")

    assert webhook_target_refusal("https://hooks.clinic.example/scriptline") == ""


@pytest.mark.parametrize(
    "url",
    [
        "http://hooks.clinic.example/x",
        "ftp://hooks.clinic.example/x",
        "https://user:pw@hooks.clinic.example/x",
    ],
)
def test_plain_http_other_schemes_and_credentials_are_refused_outside_local_mode(
    production_rules, monkeypatch, url
):
    _resolving_to(monkeypatch, "93.184.215.14")

    assert webhook_target_refusal(url) != ""


def test_local_mode_allows_a_local_http_receiver(settings):
    settings.CLINIC_WEBHOOK_REQUIRE_HTTPS = False
    settings.CLINIC_WEBHOOK_ALLOW_PRIVATE_TARGETS = True

    assert webhook_target_refusal("http://127.0.0.1:8123/hook") == ""


@pytest.mark.django_db
def test_the_admin_refuses_to_save_an_internal_webhook_url(production_rules, admin_client, formulary):
    clinic = scenario().clinic

    response = admin_client.post(
        "/admin/events/clinicwebhookendpoint/add/",
        {"clinic": clinic.pk, "url": "https://169.254.169.254/latest/meta-data/", "is_active": "on"},
    )

    assert response.status_code == 200
    assert "This webhook URL cannot be used" in response.content.decode()
    assert ClinicWebhookEndpoint.objects.count() == 0


@pytest.mark.django_db
def test_a_delivery_to_a_target_that_became_internal_is_refused_and_nothing_is_sent(
    production_rules, settings, formulary
):
    receiver = receiver_start()
    try:
        prescription = scenario()
        # Saved while allowed (say the name resolved publicly then); now it points inside.
        endpoint = ClinicWebhookEndpoint.objects.create(
            clinic=prescription.clinic, url=receiver.url.replace("http://", "https://"), secret="s"
        )
        event = Event.objects.get(aggregate_id=prescription.pk, type="prescription.received")
        delivery = webhooks.webhook_deliveries_create(event_id=event.pk)

        outcome = webhooks.webhook_deliver(delivery_id=delivery.pk)

        assert outcome == "refused"
        assert receiver.received == []
        delivery.refresh_from_db()
        assert delivery.status == WebhookDelivery.Status.FAILED
        (attempt,) = WebhookAttempt.objects.filter(delivery=delivery)
        assert attempt.error.startswith("refused: ")
        assert attempt.status_code is None
        assert endpoint.pk
    finally:
        receiver.stop()


def _rebinding_dns(monkeypatch, name: str, first: str, then: str) -> list[str]:  # type: ignore[no-untyped-def]
    """DNS at the edge that answers `first` for `name` once, then `then` (a rebinding attack);
    an address literal resolves to itself. Returns the log of names asked for."""
    asked: list[str] = []
    real = socket.getaddrinfo

    def getaddrinfo(host, port, *args, **kwargs):  # type: ignore[no-untyped-def]
        if host != name:
            return real(host, port, *args, **kwargs)
        asked.append(host)
        address = first if len(asked) == 1 else then
        return [(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", (address, port))]

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    return asked


@pytest.mark.django_db
def test_a_name_rebound_to_a_private_address_after_the_check_gets_nothing(settings, monkeypatch, formulary):
    """The check resolves the name to a public address; by the time the connection opens the
    name points at the receiver on 127.0.0.1. The delivery goes to the vetted address only."""
    settings.CLINIC_WEBHOOK_REQUIRE_HTTPS = False  # the receiver speaks plain HTTP
    settings.CLINIC_WEBHOOK_ALLOW_PRIVATE_TARGETS = False
    settings.CLINIC_WEBHOOK_TIMEOUT_SECONDS = 1
    receiver = receiver_start()
    try:
        port = receiver.url.split(":")[2].split("/")[0]
        asked = _rebinding_dns(monkeypatch, "hooks.clinic.example", first="93.184.215.14", then="127.0.0.1")
        prescription = scenario()
        ClinicWebhookEndpoint.objects.create(
            clinic=prescription.clinic, url=f"http://hooks.clinic.example:{port}/hook", secret="s"
        )
        event = Event.objects.get(aggregate_id=prescription.pk, type="prescription.received")
        delivery = webhooks.webhook_deliveries_create(event_id=event.pk)

        with pytest.raises(webhooks.WebhookRetry):
            webhooks.webhook_deliver(delivery_id=delivery.pk)

        assert receiver.received == []
        assert asked == ["hooks.clinic.example"]
        (attempt,) = WebhookAttempt.objects.filter(delivery=delivery)
        assert attempt.status_code is None
        assert attempt.error in {"ConnectionError", "ConnectTimeout"}
    finally:
        receiver.stop()


def test_a_pinned_post_reaches_the_vetted_address_with_the_urls_host_header(monkeypatch):
    receiver = receiver_start()
    try:
        port = receiver.url.split(":")[2].split("/")[0]
        # The name does not resolve at all: only the pinned address can be reached.
        asked = _rebinding_dns(monkeypatch, "hooks.clinic.example", first="0.0.0.0", then="0.0.0.0")

        result = webhook_post(
            url=f"http://hooks.clinic.example:{port}/hook",
            body=b"{}",
            headers={"Content-Type": "application/json"},
            timeout=5,
            address="127.0.0.1",
        )

        assert result.status_code == 200
        assert asked == []
        assert receiver.received[0].headers["host"] == f"hooks.clinic.example:{port}"
    finally:
        receiver.stop()


def test_a_pinned_https_connection_still_names_and_verifies_the_urls_host():
    adapter = PinnedAddressAdapter(address="93.184.215.14", hostname="hooks.clinic.example")
    request = requests.Request("POST", "https://hooks.clinic.example/hook").prepare()

    host_params, pool_kwargs = adapter.build_connection_pool_key_attributes(request, True)

    assert host_params["host"] == "93.184.215.14"
    assert (pool_kwargs["server_hostname"], pool_kwargs["assert_hostname"]) == (
        "hooks.clinic.example",
        "hooks.clinic.example",
    )
    assert pool_kwargs["cert_reqs"] == "CERT_REQUIRED"
