"""The mail-order pharmacy simulator as a process, over plain HTTP: its contract (API key,
idempotency, validation, statuses by polling, cancellation, the stock CSV), its knobs, and a
restart that keeps what it knew."""

from __future__ import annotations

import argparse
import csv
import io
import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest

from sandbox import mailorder
from tests.processes import (
    MAILORDER_API_KEY,
    ROOT,
    MailOrderSimulator,
    start_mailorder_simulator,
    stop_process,
)
from tests.sandbox.wire import OPENER, Response, request

STEP_DELAY = 0.2
AMOXICILLIN = "308191"  # RxNorm, on the US formulary: carried from the start


def order(**changes: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "client_reference": "rx-1",
        "patient": {
            "first_name": "Stacey",
            "last_name": "Twitchett",
            "date_of_birth": "1948-04-30",
            "sex": "F",
        },
        "shipping_address": {
            "line1": "10 Heathfield Ave",
            "city": "Albany",
            "state": "NY",
            "postal_code": "12207",
        },
        "prescriber": {"npi": "1234567893", "dea": "AB1234563", "first_name": "Ada", "last_name": "Hartley"},
        "line_items": [
            {
                "product": {"code_type": "RXNORM", "code": AMOXICILLIN},
                "quantity": 21,
                "sig": "One capsule three times a day",
                "days_supply": 7,
            }
        ],
    }
    body.update(changes)
    return body


def headers(key: str | None = "key-1", api_key: str = MAILORDER_API_KEY) -> dict[str, str]:
    sent = {"Content-Type": "application/json", "X-Api-Key": api_key}
    return {**sent, "Idempotency-Key": key} if key else sent


def post_order(simulator: MailOrderSimulator, body: Any = None, **options: Any) -> Response:
    return request(
        "POST", f"{simulator.url}/v2/orders", order() if body is None else body, headers(**options)
    )


def get_order(simulator: MailOrderSimulator, order_id: str) -> Response:
    return request("GET", f"{simulator.url}/v2/orders/{order_id}", headers=headers(None))


def cancel(simulator: MailOrderSimulator, order_id: str) -> Response:
    return request("POST", f"{simulator.url}/v2/orders/{order_id}/cancel", headers=headers(None))


def inventory(simulator: MailOrderSimulator, api_key: str = MAILORDER_API_KEY) -> dict[str, dict[str, str]]:
    prepared = urllib.request.Request(f"{simulator.url}/v2/inventory.csv", headers={"X-Api-Key": api_key})
    with OPENER.open(prepared, timeout=10) as answer:
        assert answer.headers["Content-Type"] == "text/csv; charset=utf-8"
        rows = list(csv.DictReader(io.StringIO(answer.read().decode())))
    return {row["product_code"]: row for row in rows}


def wait_for_status(
    simulator: MailOrderSimulator, order_id: str, status: str, seconds: float = 10
) -> dict[str, Any]:
    deadline = time.monotonic() + seconds
    while True:
        body = get_order(simulator, order_id).body
        if body["status"] == status:
            return body
        assert time.monotonic() < deadline, f"order still {body['status']}"
        time.sleep(0.05)


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
    simulator_process.control(step_delay=STEP_DELAY, licensed_states=sorted(mailorder.US_STATES), lose_next=0)
    return simulator_process


# --- The contract ------------------------------------------------------------------------------


def test_an_order_is_created_with_the_partners_id_and_answered_again_for_its_key(
    simulator: MailOrderSimulator,
) -> None:
    simulator.control(stall=True)

    created = post_order(simulator)
    replayed = post_order(simulator)

    assert created.status == 201
    assert re.fullmatch(r"MO-\d{6}", created.body["id"])
    assert created.body["status"] == "RECEIVED"
    assert created.body["client_reference"] == "rx-1"
    assert created.body["line_items"] == [
        {
            "line_id": f"{created.body['id']}-1",
            "client_line_id": "",
            "product": {"code_type": "RXNORM", "code": AMOXICILLIN},
            "quantity": 21.0,
        }
    ]
    assert (created.body["shipment"], created.body["rejection"]) == (None, None)
    assert "patient" not in created.body
    assert replayed.status == 200
    assert replayed.headers["Idempotent-Replayed"] == "true"
    assert replayed.body == created.body
    assert simulator.stats()["orders"] == 1


def test_an_order_walks_through_each_status_once_per_step_and_ships_with_tracking(
    simulator: MailOrderSimulator,
) -> None:
    order_id = post_order(simulator).body["id"]

    delivered = wait_for_status(simulator, order_id, "DELIVERED")

    assert [entry["status"] for entry in delivered["status_history"]] == [
        "RECEIVED",
        "IN_REVIEW",
        "FILLED",
        "SHIPPED",
        "DELIVERED",
    ]
    assert delivered["shipment"]["carrier"] == "UPS"
    assert re.fullmatch(r"1Z[0-9A-Z]{16}", delivered["shipment"]["tracking_number"])


def test_a_stall_holds_orders_and_lifting_it_walks_them_on_one_step_at_a_time(
    simulator: MailOrderSimulator,
) -> None:
    simulator.control(stall=True)
    order_id = post_order(simulator).body["id"]
    time.sleep(STEP_DELAY * 5)
    assert get_order(simulator, order_id).body["status"] == "RECEIVED"

    simulator.control(stall=False)

    assert get_order(simulator, order_id).body["status"] == "RECEIVED"
    wait_for_status(simulator, order_id, "IN_REVIEW")


def test_an_order_is_cancelled_until_it_is_filled_and_then_refused(simulator: MailOrderSimulator) -> None:
    simulator.control(stall=True)
    held = post_order(simulator).body["id"]
    simulator.control(stall=False)
    walking = post_order(simulator, order(client_reference="rx-2"), key="key-2").body["id"]

    cancelled = cancel(simulator, held)
    again = cancel(simulator, held)
    wait_for_status(simulator, walking, "FILLED")
    refused = cancel(simulator, walking)

    assert (cancelled.status, cancelled.body["status"]) == (200, "CANCELLED")
    assert (again.status, again.body["status"]) == (200, "CANCELLED")
    assert refused.status == 409
    assert refused.body["error"]["code"] == "ORDER_ALREADY_FILLED"
    time.sleep(STEP_DELAY * 2)
    assert get_order(simulator, held).body["status"] == "CANCELLED"
    assert simulator.stats()["cancellations"] == 1


def test_an_order_rejected_at_review_carries_its_reason_code(simulator: MailOrderSimulator) -> None:
    simulator.control(reject_next=1, reject_reason="DRUG_INTERACTION")
    order_id = post_order(simulator).body["id"]

    rejected = wait_for_status(simulator, order_id, "REJECTED")
    refused = cancel(simulator, order_id)

    assert rejected["rejection"]["reason_code"] == "DRUG_INTERACTION"
    assert [entry["status"] for entry in rejected["status_history"]] == ["RECEIVED", "IN_REVIEW", "REJECTED"]
    assert refused.body["error"]["code"] == "ORDER_NOT_CANCELLABLE"


def test_a_lost_order_never_moves(simulator: MailOrderSimulator) -> None:
    simulator.control(lose_next=1)
    lost = post_order(simulator).body["id"]
    other = post_order(simulator, order(client_reference="rx-2"), key="key-2").body["id"]

    wait_for_status(simulator, other, "DELIVERED")

    assert get_order(simulator, lost).body["status"] == "RECEIVED"


# --- Refusals --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path"),
    [("POST", "/v2/orders"), ("GET", "/v2/orders/MO-000001"), ("POST", "/v2/orders/MO-000001/cancel")],
)
@pytest.mark.parametrize("api_key", ["wrong-key", ""])
def test_every_api_call_needs_the_api_key(
    simulator: MailOrderSimulator, method: str, path: str, api_key: str
) -> None:
    answer = request(method, f"{simulator.url}{path}", order(), headers("key-1", api_key=api_key))

    assert answer.status == 401
    assert answer.body["error"]["code"] == "UNAUTHORIZED"
    assert answer.headers["WWW-Authenticate"] == 'ApiKey header="X-Api-Key"'
    assert simulator.stats()["orders"] == 0


def test_the_stock_list_needs_the_api_key(simulator: MailOrderSimulator) -> None:
    with pytest.raises(urllib.error.HTTPError) as caught:
        inventory(simulator, api_key="wrong-key")
    assert caught.value.code == 401


def test_an_order_without_an_idempotency_key_is_refused(simulator: MailOrderSimulator) -> None:
    answer = post_order(simulator, key=None)

    assert (answer.status, answer.body["error"]["code"]) == (400, "IDEMPOTENCY_KEY_REQUIRED")
    assert simulator.stats()["orders"] == 0


def test_an_invalid_order_names_every_bad_field_and_echoes_no_value(simulator: MailOrderSimulator) -> None:
    body = order(
        patient={"first_name": "Stacey", "date_of_birth": "30/04/1948", "sex": "female"},
        shipping_address={
            "line1": "10 Heathfield Ave",
            "city": "Albany",
            "state": "Ontario",
            "postal_code": "K1A",
        },
        line_items=[
            {"product": {"code_type": "GTIN", "code": "x"}, "quantity": 0, "sig": "", "days_supply": 400}
        ],
    )

    answer = post_order(simulator, body)

    assert answer.status == 400
    assert answer.body["error"]["code"] == "VALIDATION_ERROR"
    assert {detail["field"] for detail in answer.body["error"]["details"]} == {
        "patient.last_name",
        "patient.date_of_birth",
        "patient.sex",
        "shipping_address.state",
        "shipping_address.postal_code",
        "line_items[0].product.code_type",
        "line_items[0].quantity",
        "line_items[0].days_supply",
        "line_items[0].sig",
    }
    for value in ("Stacey", "30/04/1948", "Ontario", "K1A", "Albany"):
        assert value not in str(answer.body)
    assert simulator.stats()["orders"] == 0


def test_a_body_that_is_not_json_is_a_validation_error(simulator: MailOrderSimulator) -> None:
    answer = request("POST", f"{simulator.url}/v2/orders", headers=headers(), raw_body=b"{not json")

    assert (answer.status, answer.body["error"]["code"]) == (400, "VALIDATION_ERROR")


@pytest.mark.parametrize(
    ("changes", "status", "code"),
    [
        ({"prescriber": {"npi": "1234567890", "last_name": "Hartley"}}, 400, "INVALID_NPI"),
        (
            {"prescriber": {"npi": "1234567893", "dea": "AB1234567", "last_name": "Hartley"}},
            400,
            "INVALID_DEA",
        ),
        (
            {
                "line_items": [
                    {
                        "product": {"code_type": "NDC", "code": "1234-5678"},
                        "quantity": 1,
                        "sig": "x",
                        "days_supply": 1,
                    }
                ]
            },
            400,
            "INVALID_NDC",
        ),
        (
            {
                "line_items": [
                    {
                        "product": {"code_type": "RXNORM", "code": "RX12"},
                        "quantity": 1,
                        "sig": "x",
                        "days_supply": 1,
                    }
                ]
            },
            400,
            "INVALID_RXNORM",
        ),
        (
            {
                "line_items": [
                    {
                        "product": {"code_type": "NDC", "code": "00000-0000-00"},
                        "quantity": 1,
                        "sig": "x",
                        "days_supply": 1,
                    }
                ]
            },
            422,
            "PRODUCT_NOT_CARRIED",
        ),
        (
            {
                "line_items": [
                    {
                        "product": {"code_type": "RXNORM", "code": AMOXICILLIN},
                        "quantity": 5000,
                        "sig": "x",
                        "days_supply": 1,
                    }
                ]
            },
            422,
            "OUT_OF_STOCK",
        ),
    ],
)
def test_each_refusal_has_its_code_and_status(
    simulator: MailOrderSimulator, changes: dict[str, Any], status: int, code: str
) -> None:
    answer = post_order(simulator, order(**changes))

    assert (answer.status, answer.body["error"]["code"]) == (status, code)
    assert answer.body["error"]["message"] == mailorder.ERRORS[code].message
    assert simulator.stats()["refusals"] == {code: 1}
    assert simulator.stats()["orders"] == 0


def test_the_licensed_states_knob_refuses_orders_shipping_elsewhere(simulator: MailOrderSimulator) -> None:
    simulator.control(licensed_states=["CA", "TX"])

    refused = post_order(simulator)
    accepted = post_order(
        simulator, order(shipping_address={**order()["shipping_address"], "state": "TX"}), key="key-2"
    )

    assert (refused.status, refused.body["error"]["code"]) == (422, "NOT_LICENSED_IN_STATE")
    assert accepted.status == 201


def test_a_used_key_with_another_body_and_an_open_order_under_another_key_are_refused(
    simulator: MailOrderSimulator,
) -> None:
    created = post_order(simulator).body["id"]

    reused = post_order(simulator, order(client_reference="rx-2"))
    duplicate = post_order(simulator, key="key-2")
    cancel(simulator, created)
    after_cancel = post_order(simulator, key="key-3")

    assert (reused.status, reused.body["error"]["code"]) == (422, "IDEMPOTENCY_KEY_REUSED")
    assert (duplicate.status, duplicate.body["error"]["code"]) == (409, "DUPLICATE")
    assert duplicate.body["error"]["details"][0]["existing_order_id"] == created
    assert after_cancel.status == 201


def test_unknown_orders_and_paths_are_404_and_wrong_methods_405(simulator: MailOrderSimulator) -> None:
    assert get_order(simulator, "MO-999999999").body["error"]["code"] == "ORDER_NOT_FOUND"
    assert cancel(simulator, "MO-999999999").status == 404
    assert (
        request("GET", f"{simulator.url}/v2/nothing", headers=headers()).body["error"]["code"] == "NOT_FOUND"
    )
    assert request("GET", f"{simulator.url}/v2/orders", headers=headers()).status == 405


# --- Stock -------------------------------------------------------------------------------------


def test_the_stock_list_follows_orders_cancellations_and_the_out_of_stock_knob(
    simulator: MailOrderSimulator,
) -> None:
    simulator.control(stall=True)
    before = inventory(simulator)
    order_id = post_order(simulator).body["id"]
    reserved = inventory(simulator)[AMOXICILLIN]
    simulator.control(out_of_stock=[AMOXICILLIN])
    knob = inventory(simulator)[AMOXICILLIN]
    simulator.control(out_of_stock=[])
    cancel(simulator, order_id)
    released = inventory(simulator)[AMOXICILLIN]

    assert before[AMOXICILLIN]["quantity"] == str(mailorder.DEFAULT_STOCK)
    assert set(before) == set(mailorder.default_catalog())
    assert len(before) > 50
    assert {row["code_type"] for row in before.values()} == {"RXNORM"}
    assert re.fullmatch(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?Z", before[AMOXICILLIN]["as_of"])
    assert reserved["quantity"] == str(mailorder.DEFAULT_STOCK - 21)
    assert knob["quantity"] == "0"
    assert released["quantity"] == str(mailorder.DEFAULT_STOCK)


def test_stock_can_be_set_and_a_bad_level_changes_nothing(simulator: MailOrderSimulator) -> None:
    simulator.set_stock(**{AMOXICILLIN: 20, "00002-3227-30": 5})
    bad = request("POST", f"{simulator.url}/_stock", {AMOXICILLIN: -1})

    rows = inventory(simulator)
    assert bad.status == 400
    assert rows[AMOXICILLIN]["quantity"] == "20"
    assert (rows["00002322730"]["code_type"], rows["00002322730"]["quantity"]) == ("NDC", "5")
    assert post_order(simulator).body["error"]["code"] == "OUT_OF_STOCK"


# --- Knobs -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "changes",
    [
        {"licensed_states": ["NY", "ZZ"]},
        {"out_of_stock": "308191"},
        {"reject_reason": "BECAUSE"},
        {"error_rate": 1.5},
        {"stall": "yes"},
        {"step_delay": 1, "surprise": True},
    ],
)
def test_a_bad_knob_is_refused_and_changes_nothing(
    simulator: MailOrderSimulator, changes: dict[str, Any]
) -> None:
    before = request("GET", f"{simulator.url}/_control").body

    answer = request("POST", f"{simulator.url}/_control", changes)

    assert answer.status == 400
    assert request("GET", f"{simulator.url}/_control").body == before


@pytest.mark.parametrize(
    ("knobs", "status", "code"),
    [
        ({"error_rate": 1.0}, 503, "SERVICE_UNAVAILABLE"),
        ({"down": True}, 503, "SERVICE_UNAVAILABLE"),
        ({"rate_limit_rate": 1.0}, 429, "RATE_LIMITED"),
    ],
)
def test_a_partner_in_trouble_answers_with_retry_after_and_takes_nothing(
    simulator: MailOrderSimulator, knobs: dict[str, Any], status: int, code: str
) -> None:
    simulator.control(**knobs)

    answer = post_order(simulator)

    assert (answer.status, answer.body["error"]["code"]) == (status, code)
    assert answer.headers["Retry-After"] == "1"
    assert simulator.stats()["orders"] == 0


def test_a_hanging_partner_answers_504_after_the_hang(simulator: MailOrderSimulator) -> None:
    simulator.control(timeout_rate=1.0, hang=0.3)

    started = time.monotonic()
    answer = post_order(simulator)

    assert (answer.status, answer.body["error"]["code"]) == (504, "GATEWAY_TIMEOUT")
    assert time.monotonic() - started >= 0.3
    assert simulator.stats()["timeouts"] == 1


# --- Restarts and the command line -------------------------------------------------------------


def test_a_killed_simulator_restarts_with_its_orders_keys_stock_and_numbering() -> None:
    simulator = start_mailorder_simulator(step_delay=1.0)
    try:
        first = post_order(simulator).body
        simulator.kill()
        simulator.restart()

        replayed = post_order(simulator)
        second = post_order(simulator, order(client_reference="rx-2"), key="key-2").body
        stock = inventory(simulator)[AMOXICILLIN]["quantity"]
        walked = wait_for_status(simulator, first["id"], "DELIVERED", seconds=15)
    finally:
        simulator.stop()

    assert (replayed.status, replayed.body["id"]) == (200, first["id"])
    assert int(second["id"][3:]) == int(first["id"][3:]) + 1
    assert stock == str(mailorder.DEFAULT_STOCK - 42)
    assert [entry["status"] for entry in walked["status_history"]][-1] == "DELIVERED"


def test_the_state_file_is_kept_under_var_by_default_and_knobs_come_from_the_environment() -> None:
    parser = argparse.ArgumentParser()
    mailorder.add_arguments(
        parser,
        environment={
            "MAILORDER_OUT_OF_STOCK": "308191, 00002-3227-30",
            "MAILORDER_LICENSED_STATES": "ny,ca",
            "MAILORDER_STEP_DELAY": "5",
        },
    )

    options = mailorder.options_from(vars(parser.parse_args([])))

    assert options["state_file"] == ROOT / "var" / "sandbox" / "mailorder.json"
    assert options["out_of_stock"] == ["308191", "00002-3227-30"]
    assert options["licensed_states"] == ["NY", "CA"]
    assert options["step_delay"] == 5.0
    bad = argparse.ArgumentParser()
    mailorder.add_arguments(bad, environment={"MAILORDER_LICENSED_STATES": "XX"})
    with pytest.raises(SystemExit):
        bad.parse_args([])


def test_the_management_command_serves_until_sigterm() -> None:
    process = subprocess.Popen(
        [
            sys.executable,
            "manage.py",
            "run_mailorder_simulator",
            "--port",
            "0",
            "--state-file",
            "",
            "--step-delay",
            "0",
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,
        env={**os.environ, "MAILORDER_API_KEY": "from-the-environment"},
    )
    try:
        line = process.stdout.readline() if process.stdout else ""
        assert "mail-order pharmacy simulator listening on" in line
        url = line.strip().rsplit(" ", 1)[-1]
        answer = request("GET", f"{url}/v2/orders/MO-000001", headers={"X-Api-Key": "from-the-environment"})
        assert answer.body["error"]["code"] == "ORDER_NOT_FOUND"
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=10) == 0
    finally:
        stop_process(process)


@pytest.mark.parametrize(
    ("npi", "valid"),
    [
        ("1234567893", True),
        ("1234567890", False),
        ("123456789", False),
        ("12345678930", False),
        ("123456789X", False),
    ],
)
def test_an_npi_is_checked_by_its_luhn_digit(npi: str, valid: bool) -> None:
    assert mailorder.npi_is_valid(npi) is valid


@pytest.mark.parametrize(
    ("dea", "valid"),
    [
        ("AB1234563", True),
        ("AB1234567", False),
        ("A91234563", True),
        ("1B1234563", False),
        ("AB123456", False),
    ],
)
def test_a_dea_number_is_checked_by_its_check_digit(dea: str, valid: bool) -> None:
    assert mailorder.dea_is_valid(dea) is valid
