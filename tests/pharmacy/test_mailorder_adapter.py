"""The mail-order pharmacy adapter: the translation of our FHIR message to the partner's order
JSON (table by table), and the adapter against the real simulator process (sandbox/mailorder.py)
for every answer it maps back to the gateway port."""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import pytest

from pharmacy.adapters.mailorder import MailOrderGateway, order_request
from pharmacy.fhir import encode_prescription
from pharmacy.gateway import (
    GatewayRejected,
    GatewayUnavailable,
    OrderAlreadyDispensed,
    OrderUnknown,
    PartnerCannotFill,
)
from prescriptions.models import Prescription
from tests.pharmacy.factories import US_AMOXICILLIN, US_DEA, US_NPI, us_prescription
from tests.processes import MAILORDER_API_KEY, MailOrderSimulator, start_mailorder_simulator

pytestmark = pytest.mark.django_db

STEP_DELAY = 0.2


def message(
    prescription: Prescription, message_id: str = "7d0f5b8e-2a43-4b7e-9a51-0c2b1f3d9e10"
) -> dict[str, Any]:
    return encode_prescription(
        prescription,
        message_id=message_id,
        pharmacy_ods_code="MAILORDER",
        timestamp=datetime(2026, 11, 20, tzinfo=UTC),
    )


def resource(bundle: dict[str, Any], resource_type: str) -> dict[str, Any]:
    return next(e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == resource_type)


def at(document: Any, path: str) -> Any:
    for part in path.split("."):
        document = document[int(part)] if isinstance(document, list) else document[part]
    return document


# --- Translation: our message → the partner's order request ---------------------------------


@pytest.fixture
def prescription() -> Prescription:
    return us_prescription()


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("patient.first_name", "Stacey"),
        ("patient.last_name", "Twitchett"),
        ("patient.date_of_birth", "1948-04-30"),
        ("patient.sex", "F"),
        ("patient.phone", "518 555 0100"),
        ("patient.email", "stacey@example.org"),
        ("shipping_address.line1", "10 Heathfield Ave"),
        ("shipping_address.city", "Albany"),
        ("shipping_address.state", "NY"),
        ("shipping_address.postal_code", "12207"),
        ("shipping_address.country", "US"),
        ("prescriber.npi", US_NPI),
        ("prescriber.dea", US_DEA),
        ("prescriber.first_name", "Ada"),
        ("prescriber.last_name", "Hartley"),
        ("line_items.0.product", {"code_type": "RXNORM", "code": US_AMOXICILLIN}),
        ("line_items.0.description", "Amoxicillin 250mg capsule"),
        ("line_items.0.quantity", 21),
        ("line_items.0.quantity_unit", "capsule"),
        ("line_items.0.sig", "One capsule three times a day"),
        ("line_items.0.days_supply", 7),
        ("notes", "Synthetic test prescription"),
    ],
)
def test_each_field_of_the_order_request_comes_from_its_place_in_the_message(
    prescription: Prescription, path: str, expected: Any
) -> None:
    assert at(order_request(message(prescription)), path) == expected


def test_the_order_is_referenced_by_the_prescription_and_its_line_by_the_item(
    prescription: Prescription,
) -> None:
    body = order_request(message(prescription))

    item = prescription.items.get()
    assert body["client_reference"] == str(prescription.pk)
    assert body["line_items"][0]["client_line_id"] == f"{prescription.pk}-{item.pk}"
    assert len(body["line_items"]) == 1


@pytest.mark.parametrize(
    ("gender", "sex"), [("female", "F"), ("male", "M"), ("other", "U"), ("unknown", "U")]
)
def test_the_patients_gender_is_written_in_the_partners_sex_codes(
    prescription: Prescription, gender: str, sex: str
) -> None:
    bundle = message(prescription)
    resource(bundle, "Patient")["gender"] = gender

    assert order_request(bundle)["patient"]["sex"] == sex


@pytest.mark.parametrize(("quantity", "expected"), [("21.00", 21), ("56.50", 56.5), ("0.5", 0.5)])
def test_a_decimal_quantity_is_sent_as_the_json_number_it_is(quantity: str, expected: float) -> None:
    bundle = message(us_prescription(quantity=quantity))

    sent = order_request(bundle)["line_items"][0]["quantity"]
    assert sent == expected
    assert type(sent) is type(expected)


def without_address(bundle: dict[str, Any]) -> None:
    del resource(bundle, "Patient")["address"]


def abroad(bundle: dict[str, Any]) -> None:
    resource(bundle, "Patient")["address"][0]["country"] = "GB"


def without_state(bundle: dict[str, Any]) -> None:
    del resource(bundle, "Patient")["address"][0]["state"]


def snomed_coded(bundle: dict[str, Any]) -> None:
    resource(bundle, "MedicationRequest")["medicationCodeableConcept"]["coding"][0]["system"] = (
        "http://snomed.info/sct"
    )


def prescriber_without_npi(bundle: dict[str, Any]) -> None:
    practitioner = resource(bundle, "Practitioner")
    practitioner["identifier"] = [i for i in practitioner["identifier"] if "npi" not in i["system"]]


def postcode_not_a_zip(bundle: dict[str, Any]) -> None:
    resource(bundle, "Patient")["address"][0]["postalCode"] = "LS1 1AA"


def not_a_scriptline_message(bundle: dict[str, Any]) -> None:
    resource(bundle, "MessageHeader")["eventCoding"] = {
        "system": "https://fhir.nhs.uk/CodeSystem/message-event",
        "code": "prescription-order",
    }


def without_sig(bundle: dict[str, Any]) -> None:
    del resource(bundle, "MedicationRequest")["dosageInstruction"]


@pytest.mark.parametrize(
    ("change", "element"),
    [
        (without_address, "Patient.address"),
        (abroad, "Patient.address.country"),
        (without_state, "Patient.address.state"),
        (postcode_not_a_zip, "Patient.address.postalCode"),
        (snomed_coded, "MedicationRequest[0].medicationCodeableConcept"),
        (prescriber_without_npi, "Practitioner.identifier"),
        (not_a_scriptline_message, "MessageHeader.eventCoding"),
        (without_sig, "MedicationRequest[0].dosageInstruction.text"),
    ],
)
def test_a_message_the_partner_cannot_carry_is_not_sent_and_names_the_element_only(
    prescription: Prescription, change: Callable[[dict[str, Any]], None], element: str
) -> None:
    bundle = message(prescription)
    change(bundle)
    # Nothing listens here: a request would be a connection error (GatewayUnavailable).
    gateway = MailOrderGateway(base_url="http://127.0.0.1:9", api_key="unused", timeout=1)

    with pytest.raises(PartnerCannotFill) as caught:
        gateway.order_submit(bundle=bundle, idempotency_key="key-1")

    assert caught.value.reason == "unsupported_order"
    assert element in str(caught.value)
    assert "Twitchett" not in str(caught.value)
    assert "Albany" not in str(caught.value)


def test_translation_leaves_the_message_unchanged(prescription: Prescription) -> None:
    bundle = message(prescription)
    before = copy.deepcopy(bundle)

    order_request(bundle)

    assert bundle == before


# --- Against the simulator process -------------------------------------------------------------


@pytest.fixture(scope="module")
def simulator_process() -> Iterator[MailOrderSimulator]:
    simulator = start_mailorder_simulator(step_delay=STEP_DELAY)
    try:
        yield simulator
    finally:
        simulator.stop()


@pytest.fixture
def simulator(simulator_process: MailOrderSimulator) -> MailOrderSimulator:
    simulator_process.reset()
    simulator_process.control(
        step_delay=STEP_DELAY, licensed_states=["CA", "CT", "NJ", "NY"], lose_next=0, reject_next=0, hang=30
    )
    return simulator_process


@pytest.fixture
def gateway(simulator: MailOrderSimulator) -> MailOrderGateway:
    return MailOrderGateway(base_url=simulator.url, api_key=MAILORDER_API_KEY, timeout=5)


def statuses_until(gateway: MailOrderGateway, order_id: str, final: str, seconds: float = 10) -> list[str]:
    """Every distinct status polled, in order, until `final`."""
    seen: list[str] = []
    deadline = time.monotonic() + seconds
    while not seen or seen[-1] != final:
        assert time.monotonic() < deadline, f"still {seen} after {seconds}s"
        status = gateway.order_status(order_id=order_id).status
        if not seen or seen[-1] != status:
            seen.append(status)
        time.sleep(STEP_DELAY / 4)
    return seen


def test_an_order_is_acknowledged_with_the_partners_id_and_a_replay_is_the_same_order(
    gateway: MailOrderGateway, simulator: MailOrderSimulator, prescription: Prescription
) -> None:
    bundle = message(prescription)

    first = gateway.order_submit(bundle=bundle, idempotency_key="dispatch-1")
    again = gateway.order_submit(bundle=bundle, idempotency_key="dispatch-1")

    assert first.order_id.startswith("MO-")
    assert not first.replayed
    assert again.order_id == first.order_id
    assert again.replayed
    stats = simulator.stats()
    assert (stats["orders"], stats["orders_created"], stats["replays"]) == (1, 1, 1)


def test_polling_walks_an_order_to_delivered_in_our_vocabulary_with_its_tracking_number(
    gateway: MailOrderGateway, prescription: Prescription
) -> None:
    order_id = gateway.order_submit(bundle=message(prescription), idempotency_key="dispatch-1").order_id

    seen = statuses_until(gateway, order_id, "delivered")

    assert seen == ["acknowledged", "dispensed", "shipped", "delivered"]
    tracking = gateway.order_status(order_id=order_id).tracking_number
    assert tracking.startswith("1Z")
    assert len(tracking) == 18


def test_an_order_not_filled_yet_is_cancelled_and_a_second_cancel_is_harmless(
    gateway: MailOrderGateway, simulator: MailOrderSimulator, prescription: Prescription
) -> None:
    simulator.control(stall=True)
    order_id = gateway.order_submit(bundle=message(prescription), idempotency_key="dispatch-1").order_id

    gateway.order_cancel(order_id=order_id, idempotency_key="cancel-1")
    gateway.order_cancel(order_id=order_id, idempotency_key="cancel-1")
    simulator.control(stall=False)
    time.sleep(STEP_DELAY * 3)

    assert gateway.order_status(order_id=order_id).status == "cancelled"
    assert simulator.stats()["cancellations"] == 1


def test_a_filled_order_cannot_be_cancelled(gateway: MailOrderGateway, prescription: Prescription) -> None:
    order_id = gateway.order_submit(bundle=message(prescription), idempotency_key="dispatch-1").order_id
    statuses_until(gateway, order_id, "dispensed")

    with pytest.raises(OrderAlreadyDispensed) as caught:
        gateway.order_cancel(order_id=order_id, idempotency_key="cancel-1")

    assert "ORDER_ALREADY_FILLED" in str(caught.value)
    assert gateway.order_status(order_id=order_id).status in {"dispensed", "shipped", "delivered"}


def test_an_order_rejected_at_review_is_rejected_to_us(
    gateway: MailOrderGateway, simulator: MailOrderSimulator, prescription: Prescription
) -> None:
    simulator.control(reject_next=1, reject_reason="PRESCRIBER_VERIFICATION_FAILED")
    order_id = gateway.order_submit(bundle=message(prescription), idempotency_key="dispatch-1").order_id

    assert statuses_until(gateway, order_id, "rejected") == ["acknowledged", "rejected"]
    with pytest.raises(GatewayRejected) as caught:
        gateway.order_cancel(order_id=order_id, idempotency_key="cancel-1")
    assert not isinstance(caught.value, OrderAlreadyDispensed)


def test_an_order_the_partner_lost_stays_acknowledged(
    gateway: MailOrderGateway, simulator: MailOrderSimulator, prescription: Prescription
) -> None:
    simulator.control(lose_next=1)
    order_id = gateway.order_submit(bundle=message(prescription), idempotency_key="dispatch-1").order_id

    time.sleep(STEP_DELAY * 6)

    assert gateway.order_status(order_id=order_id).status == "acknowledged"


def test_an_order_the_partner_does_not_know_is_unknown(gateway: MailOrderGateway) -> None:
    with pytest.raises(OrderUnknown):
        gateway.order_status(order_id="MO-999999999")
    with pytest.raises(OrderUnknown):
        gateway.order_cancel(order_id="MO-999999999", idempotency_key="cancel-1")


def out_of_stock(simulator: MailOrderSimulator, bundle: dict[str, Any]) -> None:
    simulator.control(out_of_stock=[US_AMOXICILLIN])


def too_little_stock(simulator: MailOrderSimulator, bundle: dict[str, Any]) -> None:
    simulator.set_stock(**{US_AMOXICILLIN: 20})


def unlicensed_state(simulator: MailOrderSimulator, bundle: dict[str, Any]) -> None:
    simulator.control(licensed_states=["CA"])


def product_not_carried(simulator: MailOrderSimulator, bundle: dict[str, Any]) -> None:
    resource(bundle, "MedicationRequest")["medicationCodeableConcept"]["coding"][0]["code"] = "99999999"


@pytest.mark.parametrize(
    ("setup", "reason"),
    [
        (out_of_stock, "out_of_stock"),
        (too_little_stock, "out_of_stock"),
        (unlicensed_state, "not_licensed"),
        (product_not_carried, "cannot_dispense"),
    ],
)
def test_a_refusal_that_means_not_this_partner_is_partner_cannot_fill(
    gateway: MailOrderGateway,
    simulator: MailOrderSimulator,
    prescription: Prescription,
    setup: Callable[[MailOrderSimulator, dict[str, Any]], None],
    reason: str,
) -> None:
    bundle = message(prescription)
    setup(simulator, bundle)

    with pytest.raises(PartnerCannotFill) as caught:
        gateway.order_submit(bundle=bundle, idempotency_key="dispatch-1")

    assert caught.value.reason == reason
    assert caught.value.outcome is not None
    assert caught.value.outcome["issue"][0]["severity"] == "error"
    assert simulator.stats()["orders"] == 0


def invalid_ndc(bundle: dict[str, Any]) -> None:
    coding = resource(bundle, "MedicationRequest")["medicationCodeableConcept"]["coding"][0]
    coding.update(system="http://hl7.org/fhir/sid/ndc", code="1234")


def invalid_npi(bundle: dict[str, Any]) -> None:
    practitioner = resource(bundle, "Practitioner")
    next(i for i in practitioner["identifier"] if "npi" in i["system"])["value"] = "1234567890"


def invalid_dea(bundle: dict[str, Any]) -> None:
    practitioner = resource(bundle, "Practitioner")
    next(i for i in practitioner["identifier"] if "usdeanumber" in i["system"])["value"] = "AB1234567"


def unknown_state(bundle: dict[str, Any]) -> None:
    resource(bundle, "Patient")["address"][0]["state"] = "ZZ"


@pytest.mark.parametrize(
    ("change", "code", "field"),
    [
        (invalid_ndc, "INVALID_NDC", "line_items[0].product.code"),
        (invalid_npi, "INVALID_NPI", "prescriber.npi"),
        (invalid_dea, "INVALID_DEA", "prescriber.dea"),
        (unknown_state, "VALIDATION_ERROR", "shipping_address.state"),
    ],
)
def test_a_refusal_of_our_data_is_rejected_with_the_field_and_no_patient_data(
    gateway: MailOrderGateway,
    simulator: MailOrderSimulator,
    prescription: Prescription,
    change: Callable[[dict[str, Any]], None],
    code: str,
    field: str,
) -> None:
    bundle = message(prescription)
    change(bundle)

    with pytest.raises(GatewayRejected) as caught:
        gateway.order_submit(bundle=bundle, idempotency_key="dispatch-1")

    assert not isinstance(caught.value, PartnerCannotFill)
    assert f"{code} ({field})" in str(caught.value)
    assert caught.value.outcome is not None
    assert caught.value.outcome["issue"][0]["details"] == [code]
    for personal in ("Twitchett", "Stacey", "Albany", "12207", "1948"):
        assert personal not in str(caught.value)
        assert personal not in str(caught.value.outcome)
    assert simulator.stats()["orders"] == 0


def test_a_second_order_for_the_same_prescription_under_another_key_is_a_duplicate(
    gateway: MailOrderGateway, simulator: MailOrderSimulator, prescription: Prescription
) -> None:
    bundle = message(prescription)
    gateway.order_submit(bundle=bundle, idempotency_key="dispatch-1")

    with pytest.raises(GatewayRejected) as caught:
        gateway.order_submit(bundle=bundle, idempotency_key="dispatch-2")

    assert "409 DUPLICATE" in str(caught.value)
    assert simulator.stats()["orders"] == 1


def test_a_used_key_with_another_message_is_rejected(
    gateway: MailOrderGateway, simulator: MailOrderSimulator, prescription: Prescription
) -> None:
    gateway.order_submit(bundle=message(prescription), idempotency_key="dispatch-1")
    other = message(us_prescription())

    with pytest.raises(GatewayRejected) as caught:
        gateway.order_submit(bundle=other, idempotency_key="dispatch-1")

    assert "IDEMPOTENCY_KEY_REUSED" in str(caught.value)
    assert simulator.stats()["orders"] == 1


def test_a_wrong_api_key_is_rejected_not_retried(
    simulator: MailOrderSimulator, prescription: Prescription
) -> None:
    gateway = MailOrderGateway(base_url=simulator.url, api_key="wrong-key", timeout=5)

    with pytest.raises(GatewayRejected) as submitted:
        gateway.order_submit(bundle=message(prescription), idempotency_key="dispatch-1")
    with pytest.raises(GatewayRejected) as polled:
        gateway.order_status(order_id="MO-000001")

    assert "401 UNAUTHORIZED" in str(submitted.value)
    assert not isinstance(submitted.value, PartnerCannotFill)
    assert "401" in str(polled.value)
    assert not isinstance(polled.value, OrderUnknown)
    assert simulator.stats()["orders"] == 0


@pytest.mark.parametrize(
    ("knobs", "status"), [({"error_rate": 1.0}, 503), ({"down": True}, 503), ({"rate_limit_rate": 1.0}, 429)]
)
def test_a_partner_answering_5xx_or_429_is_unavailable_for_every_call(
    gateway: MailOrderGateway,
    simulator: MailOrderSimulator,
    prescription: Prescription,
    knobs: dict[str, Any],
    status: int,
) -> None:
    order_id = gateway.order_submit(bundle=message(prescription), idempotency_key="dispatch-1").order_id
    simulator.control(**knobs)

    with pytest.raises(GatewayUnavailable, match=f"answered {status}"):
        gateway.order_submit(bundle=message(prescription), idempotency_key="dispatch-1")
    with pytest.raises(GatewayUnavailable, match=f"answered {status}"):
        gateway.order_status(order_id=order_id)
    with pytest.raises(GatewayUnavailable, match=f"answered {status}"):
        gateway.order_cancel(order_id=order_id, idempotency_key="cancel-1")

    simulator.control(error_rate=0, down=False, rate_limit_rate=0)
    assert gateway.order_status(order_id=order_id).status in {
        "acknowledged",
        "dispensed",
        "shipped",
        "delivered",
    }


def test_a_partner_that_hangs_is_unavailable_after_our_timeout(
    simulator: MailOrderSimulator, prescription: Prescription
) -> None:
    simulator.control(timeout_rate=1.0, hang=5)
    gateway = MailOrderGateway(base_url=simulator.url, api_key=MAILORDER_API_KEY, timeout=0.5)

    started = time.monotonic()
    with pytest.raises(GatewayUnavailable, match="unreachable: ReadTimeout"):
        gateway.order_submit(bundle=message(prescription), idempotency_key="dispatch-1")

    assert time.monotonic() - started < 3


def test_a_partner_that_is_not_there_is_unavailable(prescription: Prescription) -> None:
    gateway = MailOrderGateway(base_url="http://127.0.0.1:9", api_key=MAILORDER_API_KEY, timeout=2)

    with pytest.raises(GatewayUnavailable, match="unreachable: ConnectionError"):
        gateway.order_submit(bundle=message(prescription), idempotency_key="dispatch-1")


def test_a_restarted_partner_still_knows_its_orders_and_keys(prescription: Prescription) -> None:
    simulator = start_mailorder_simulator(step_delay=60)
    try:
        gateway = MailOrderGateway(base_url=simulator.url, api_key=MAILORDER_API_KEY, timeout=5)
        bundle = message(prescription)
        order_id = gateway.order_submit(bundle=bundle, idempotency_key="dispatch-1").order_id

        simulator.kill()
        simulator.restart()
        gateway = MailOrderGateway(base_url=simulator.url, api_key=MAILORDER_API_KEY, timeout=5)
        replay = gateway.order_submit(bundle=bundle, idempotency_key="dispatch-1")
        status = gateway.order_status(order_id=order_id)
    finally:
        simulator.stop()

    assert (replay.order_id, replay.replayed) == (order_id, True)
    assert status.status == "acknowledged"
