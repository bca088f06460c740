"""Pharmacy-gateway simulator, exercised over real HTTP without Django."""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from common.signing import signature_header
from sandbox.gateway import Simulator, make_server
from tests.sandbox.wire import Response, WebhookReceiver, message_bundle, request

PROJECT_ROOT = Path(__file__).resolve().parents[2]
API_KEY = "test-api-key"
WEBHOOK_SECRET = "whsec_test"


@dataclass
class Gateway:
    url: str
    simulator: Simulator

    def post_order(
        self,
        bundle: Any = None,
        key: str | None = "key-1",
        api_key: str = API_KEY,
        raw_body: bytes | None = None,
    ) -> Response:
        headers = {"Content-Type": "application/fhir+json", "Authorization": f"Bearer {api_key}"}
        if key is not None:
            headers["Idempotency-Key"] = key
        payload = message_bundle() if bundle is None and raw_body is None else bundle
        return request("POST", f"{self.url}/orders", payload, headers, raw_body)

    def stats(self) -> dict[str, Any]:
        return request("GET", f"{self.url}/_stats").body

    def order_status(self, order_id: str, api_key: str = API_KEY) -> Response:
        return request("GET", f"{self.url}/orders/{order_id}", headers={"Authorization": f"Bearer {api_key}"})


def start_in_thread(server: ThreadingHTTPServer) -> threading.Thread:
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    return thread


def stop(server: ThreadingHTTPServer, thread: threading.Thread) -> None:
    server.shutdown()
    server.server_close()
    thread.join(timeout=5)


@pytest.fixture
def start_gateway() -> Iterator[Callable[..., Gateway]]:
    running: list[tuple[Simulator, ThreadingHTTPServer, threading.Thread]] = []

    def start(**knobs: Any) -> Gateway:
        simulator = Simulator(
            api_key=API_KEY, webhook_secret=WEBHOOK_SECRET, seed=7, log=lambda message: None, **knobs
        )
        if simulator.load():
            simulator.resume()
        server = make_server("127.0.0.1", 0, simulator)
        running.append((simulator, server, start_in_thread(server)))
        host, port = server.server_address[:2]
        return Gateway(f"http://{host}:{port}", simulator)

    yield start
    for simulator, server, thread in running:
        simulator.close()
        stop(server, thread)


@pytest.fixture
def gateway(start_gateway: Callable[..., Gateway]) -> Gateway:
    return start_gateway()


def verify_signature(header: str, body: bytes, secret: str = WEBHOOK_SECRET) -> int:
    """Check the header independently of sign(); return its timestamp."""
    parts = dict(part.split("=", 1) for part in header.split(","))
    expected = hmac.new(secret.encode(), f"{parts['t']}.".encode() + body, hashlib.sha256).hexdigest()
    assert hmac.compare_digest(parts["v1"], expected)
    return int(parts["t"])


def wait_until(condition: Callable[[], bool], timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.02)
    return condition()


def test_it_answers_health_checks(gateway: Gateway) -> None:
    response = request("GET", f"{gateway.url}/health")

    assert response.status == 200
    assert response.body == {"status": "ok"}


def test_it_acknowledges_a_new_key_with_one_order(gateway: Gateway) -> None:
    response = gateway.post_order(key="new-key")

    assert response.status == 202
    assert response.headers["Content-Type"] == "application/json"
    assert re.fullmatch(r"ord_[0-9a-f]{32}", response.body["order_id"])
    assert response.body["status"] == "acknowledged"
    assert response.body["idempotency_key"] == "new-key"
    assert response.body["bundle_id"] == "bundle-1"
    assert response.body["received_at"]
    stats = gateway.stats()
    assert stats["orders"] == 1
    assert stats["requests"] == 1
    assert stats["orders_by_key"] == {"new-key": response.body["order_id"]}


def test_it_replays_the_same_order_for_the_same_key(gateway: Gateway) -> None:
    first = gateway.post_order(key="same-key")
    second = gateway.post_order(key="same-key")

    assert first.status == 202
    assert second.status == 200
    assert second.headers["Idempotent-Replayed"] == "true"
    assert second.body == first.body
    stats = gateway.stats()
    assert stats["orders"] == 1
    assert stats["duplicates"] == 1
    assert stats["requests"] == 2


def test_it_rejects_a_reused_key_with_a_different_body(gateway: Gateway) -> None:
    gateway.post_order(key="reused-key", bundle=message_bundle(note="first"))

    response = gateway.post_order(key="reused-key", bundle=message_bundle(note="changed"))

    assert response.status == 422
    assert response.body["resourceType"] == "OperationOutcome"
    assert gateway.stats()["orders"] == 1


def test_it_requires_an_idempotency_key(gateway: Gateway) -> None:
    response = gateway.post_order(key=None)

    assert response.status == 400
    assert response.body["resourceType"] == "OperationOutcome"
    assert gateway.stats()["orders"] == 0


def test_it_rejects_a_wrong_api_key(gateway: Gateway) -> None:
    response = gateway.post_order(api_key="not-the-key")

    assert response.status == 401
    assert response.body["resourceType"] == "OperationOutcome"
    assert gateway.stats()["orders"] == 0


@pytest.mark.parametrize(
    "raw_body",
    [
        b"not json",
        json.dumps({"resourceType": "Patient"}).encode(),
        json.dumps({**message_bundle(), "type": "transaction"}).encode(),
        json.dumps(
            {**message_bundle(), "entry": [{"resource": {"resourceType": "MedicationRequest"}}]}
        ).encode(),
        json.dumps({**message_bundle(), "entry": []}).encode(),
    ],
    ids=["not-json", "not-a-bundle", "not-a-message", "no-message-header-first", "no-entries"],
)
def test_it_rejects_a_body_that_is_not_a_message_bundle(gateway: Gateway, raw_body: bytes) -> None:
    response = gateway.post_order(raw_body=raw_body)

    assert response.status == 400
    issue = response.body["issue"][0]
    assert response.body["resourceType"] == "OperationOutcome"
    assert issue["severity"] == "error"
    assert issue["code"] == "invalid"
    assert issue["diagnostics"]
    assert gateway.stats()["orders"] == 0


def test_it_creates_exactly_one_order_when_thirty_threads_race_on_one_key(gateway: Gateway) -> None:
    start_together = threading.Barrier(30)
    statuses: list[int] = []
    order_ids: set[str] = set()
    results_lock = threading.Lock()

    def post() -> None:
        start_together.wait()
        response = gateway.post_order(key="racing-key")
        with results_lock:
            statuses.append(response.status)
            order_ids.add(response.body.get("order_id", ""))

    threads = [threading.Thread(target=post) for _ in range(30)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=10)

    assert len(statuses) == 30
    assert sorted(statuses) == [200] * 29 + [202]
    assert len(order_ids) == 1
    stats = gateway.stats()
    assert stats["orders"] == 1
    assert stats["duplicates"] == 29
    assert stats["requests"] == 30


def test_it_answers_503_without_creating_an_order_when_error_rate_is_one(
    start_gateway: Callable[..., Gateway],
) -> None:
    gateway = start_gateway(error_rate=1.0)

    response = gateway.post_order(key="unlucky-key")

    assert response.status == 503
    assert response.body["resourceType"] == "OperationOutcome"
    stats = gateway.stats()
    assert stats["orders"] == 0
    assert stats["errors"] == 1
    gateway.simulator.update_knobs({"error_rate": 0.0})
    assert gateway.post_order(key="unlucky-key").status == 202


def test_it_answers_503_to_every_order_while_down(start_gateway: Callable[..., Gateway]) -> None:
    gateway = start_gateway(down=True)

    statuses = [gateway.post_order(key=f"key-{number}").status for number in range(3)]

    assert statuses == [503, 503, 503]
    assert gateway.stats()["orders"] == 0


def test_it_hangs_without_creating_an_order_when_timeout_rate_is_one(
    start_gateway: Callable[..., Gateway],
) -> None:
    gateway = start_gateway(timeout_rate=1.0, hang=0.2)

    started = time.monotonic()
    response = gateway.post_order(key="slow-key")

    assert time.monotonic() - started >= 0.2
    assert response.status == 504
    stats = gateway.stats()
    assert stats["orders"] == 0
    assert stats["timeouts"] == 1


def test_it_injects_the_same_faults_for_the_same_seed() -> None:
    def fault_sequence() -> list[Any]:
        simulator = Simulator(error_rate=0.3, timeout_rate=0.3, seed=42, log=lambda message: None)
        return [simulator.choose_fault() for _ in range(50)]

    first = fault_sequence()

    assert first == fault_sequence()
    assert len(set(first)) == 3


def test_it_sends_signed_webhooks_in_lifecycle_order(
    start_gateway: Callable[..., Gateway], webhook_receiver: WebhookReceiver
) -> None:
    gateway = start_gateway(webhook_url=webhook_receiver.url, step_delay=0.05)
    order = gateway.post_order(key="webhook-key").body

    deliveries = webhook_receiver.wait_for(3)

    events = [json.loads(body) for _, body in deliveries]
    assert [event["type"] for event in events] == ["order.dispensed", "order.shipped", "order.delivered"]
    for headers, body in deliveries:
        assert headers["Content-Type"] == "application/json"
        assert abs(verify_signature(headers["Gateway-Signature"], body) - time.time()) < 60
        assert b": " not in body
        assert b", " not in body
    for event in events:
        assert re.fullmatch(r"evt_[0-9a-f]{32}", event["id"])
        assert isinstance(event["created"], int)
        assert event["data"]["order_id"] == order["order_id"]
        assert event["data"]["idempotency_key"] == "webhook-key"
        assert event["data"]["bundle_id"] == "bundle-1"
    dispensed, shipped, delivered = (event["data"] for event in events)
    assert "tracking_number" not in dispensed
    assert re.fullmatch(r"SIM\d{10}", shipped["tracking_number"])
    assert delivered["tracking_number"] == shipped["tracking_number"]
    assert wait_until(lambda: gateway.stats()["webhooks_sent"] == 3)


def test_it_sends_no_webhooks_for_a_replayed_order(
    start_gateway: Callable[..., Gateway], webhook_receiver: WebhookReceiver
) -> None:
    gateway = start_gateway(webhook_url=webhook_receiver.url, step_delay=0.02)
    gateway.post_order(key="once-key")
    gateway.post_order(key="once-key")

    webhook_receiver.wait_for(3)
    assert wait_until(lambda: gateway.stats()["advancing"] == 0)

    assert len(webhook_receiver.deliveries) == 3
    assert gateway.stats()["webhooks_sent"] == 3


def test_it_retries_a_webhook_the_receiver_rejected(
    start_gateway: Callable[..., Gateway], webhook_receiver: WebhookReceiver
) -> None:
    webhook_receiver.planned_statuses = [500]
    gateway = start_gateway(webhook_url=webhook_receiver.url, step_delay=0.01)
    gateway.post_order(key="retry-key")

    deliveries = webhook_receiver.wait_for(4)

    types = [json.loads(body)["type"] for _, body in deliveries]
    assert types == ["order.dispensed", "order.dispensed", "order.shipped", "order.delivered"]
    assert deliveries[0][1] == deliveries[1][1]
    assert wait_until(lambda: gateway.stats()["webhooks_sent"] == 3)
    assert gateway.stats()["webhooks_failed"] == 0


def test_it_sends_no_webhooks_when_auto_advance_is_off(
    start_gateway: Callable[..., Gateway], webhook_receiver: WebhookReceiver
) -> None:
    gateway = start_gateway(webhook_url=webhook_receiver.url, step_delay=0.01, auto_advance=False)
    gateway.post_order(key="still-key")

    # An advancer is counted before the order is acknowledged, so none was started.
    assert gateway.stats()["advancing"] == 0
    assert webhook_receiver.deliveries == []


def test_it_changes_knobs_through_control(gateway: Gateway) -> None:
    response = request(
        "POST", f"{gateway.url}/_control", {"error_rate": 1, "latency": 0.05, "auto_advance": False}
    )

    assert response.status == 200
    assert response.body["error_rate"] == 1.0
    assert response.body["latency"] == 0.05
    assert response.body["auto_advance"] is False
    assert response.body["step_delay"] == 1.0
    assert "webhook_secret" not in response.body
    assert gateway.post_order(key="after-control").status == 503
    request("POST", f"{gateway.url}/_control", {"error_rate": 0, "down": True})
    assert gateway.post_order(key="after-control").status == 503
    request("POST", f"{gateway.url}/_control", {"down": False})
    assert gateway.post_order(key="after-control").status == 202


@pytest.mark.parametrize(
    "changes",
    [{"error_rate": 1.5}, {"latency": -1}, {"down": "yes"}, {"no_such_knob": 1}, ["error_rate"]],
    ids=["rate-above-one", "negative-latency", "non-boolean", "unknown-knob", "not-an-object"],
)
def test_it_rejects_invalid_control_changes_without_applying_any(gateway: Gateway, changes: Any) -> None:
    before = gateway.simulator.knobs()

    response = request("POST", f"{gateway.url}/_control", changes)

    assert response.status == 400
    assert gateway.simulator.knobs() == before


def test_it_clears_orders_and_counters_on_reset(gateway: Gateway) -> None:
    gateway.post_order(key="to-forget")
    gateway.post_order(key="to-forget")

    response = request("POST", f"{gateway.url}/_reset")

    assert response.status == 200
    stats = gateway.stats()
    assert stats["orders"] == 0
    assert stats["requests"] == 0
    assert stats["duplicates"] == 0
    assert stats["orders_by_key"] == {}
    assert gateway.post_order(key="to-forget").status == 202


def test_it_answers_404_json_for_an_unknown_path(gateway: Gateway) -> None:
    response = request("GET", f"{gateway.url}/no/such/path")

    assert response.status == 404
    assert response.headers["Content-Type"] == "application/json"


def test_it_signs_the_timestamp_and_raw_body() -> None:
    body = b'{"id":"evt_1"}'
    digest = hmac.new(b"secret", b"1700000000." + body, hashlib.sha256).hexdigest()

    assert (
        signature_header(secrets=["secret"], body=body, timestamp=1700000000) == f"t=1700000000,v1={digest}"
    )


def test_it_runs_as_a_module_prints_its_port_and_stops_on_sigterm(tmp_path: Path) -> None:
    environment = {**os.environ, "GATEWAY_API_KEY": "module-key"}
    state_file = tmp_path / "gateway.json"
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "sandbox.gateway",
            "--port",
            "0",
            "--seed",
            "1",
            "--state-file",
            str(state_file),
        ],
        cwd=PROJECT_ROOT,
        env=environment,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        line = process.stdout.readline().strip()
        match = re.fullmatch(r"gateway simulator listening on (http://127\.0\.0\.1:(\d+))", line)
        assert match, line
        assert int(match.group(2)) > 0
        gateway = Gateway(match.group(1), simulator=None)  # type: ignore[arg-type]
        assert gateway.post_order(api_key="module-key").status == 202
        assert [order["idempotency_key"] for order in json.loads(state_file.read_text())["orders"]] == [
            "key-1"
        ]
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=5) == 0
    finally:
        if process.poll() is None:
            process.kill()
        process.communicate(timeout=5)


# --- Cancellation and rejection (issue 5) -----------------------------------------------------


def post_cancel(gateway: Gateway, order_id: str, api_key: str = API_KEY) -> Response:
    headers = {"Authorization": f"Bearer {api_key}", "Idempotency-Key": f"cancel-{order_id}"}
    return request("POST", f"{gateway.url}/orders/{order_id}/cancel", raw_body=b"", headers=headers)


def test_cancelling_an_order_is_idempotent_and_counted_once(start_gateway: Callable[..., Gateway]) -> None:
    gateway = start_gateway(auto_advance=False)
    order_id = gateway.post_order().body["order_id"]

    first = post_cancel(gateway, order_id)
    again = post_cancel(gateway, order_id)

    assert (first.status, again.status) == (200, 200)
    assert first.body["status"] == again.body["status"] == "cancelled"
    assert gateway.stats()["cancellations"] == 1


def test_a_dispensed_order_cannot_be_cancelled(start_gateway: Callable[..., Gateway]) -> None:
    gateway = start_gateway(auto_advance=False)
    order_id = gateway.post_order().body["order_id"]
    order = next(iter(gateway.simulator._orders_by_key.values()))
    assert gateway.simulator._step(order) == "order.dispensed"

    response = post_cancel(gateway, order_id)

    assert response.status == 409
    assert response.body["issue"][0]["diagnostics"] == "The order is already dispensed."
    assert gateway.stats()["cancellations"] == 0


def test_cancelling_needs_the_api_key_and_a_known_order(start_gateway: Callable[..., Gateway]) -> None:
    gateway = start_gateway(auto_advance=False)
    order_id = gateway.post_order().body["order_id"]

    assert post_cancel(gateway, order_id, api_key="wrong").status == 401
    assert post_cancel(gateway, "ord_unknown").status == 404
    assert gateway.stats()["cancellations"] == 0


def test_a_cancelled_order_sends_no_more_webhooks(
    start_gateway: Callable[..., Gateway], webhook_receiver: WebhookReceiver
) -> None:
    # The first step is far away, so the cancel always comes before it; cancelling wakes
    # the order's advancer, which must then stop without sending anything.
    gateway = start_gateway(webhook_url=webhook_receiver.url, step_delay=60)
    order_id = gateway.post_order().body["order_id"]
    assert gateway.stats()["advancing"] == 1
    assert post_cancel(gateway, order_id).status == 200

    assert wait_until(lambda: gateway.stats()["advancing"] == 0)

    assert webhook_receiver.deliveries == []
    assert gateway.stats()["webhooks_sent"] == 0


def test_reject_next_rejects_that_many_orders_with_a_reason_instead_of_dispensing(
    start_gateway: Callable[..., Gateway], webhook_receiver: WebhookReceiver
) -> None:
    gateway = start_gateway(webhook_url=webhook_receiver.url, step_delay=0.05)
    gateway.simulator.update_knobs({"reject_next": 1, "acknowledged_webhook": True})

    gateway.post_order(key="rejected")
    deliveries = webhook_receiver.wait_for(2)
    assert wait_until(lambda: gateway.stats()["advancing"] == 0)

    events = [json.loads(body) for _, body in webhook_receiver.deliveries]
    assert [event["type"] for event in events] == ["order.acknowledged", "order.rejected"]
    assert events[1]["data"]["reason"] == "Pharmacy cannot fulfil this order: item out of stock."
    assert len(deliveries) == 2
    assert gateway.simulator.knobs()["reject_next"] == 0
    assert gateway.stats()["rejections"] == 1
    assert post_cancel(gateway, events[1]["data"]["order_id"]).status == 409


# --- The status call, lost webhooks and the state file ------------------------------------------


def test_the_status_call_answers_where_an_order_is_now_and_its_tracking_number_once_shipped(
    start_gateway: Callable[..., Gateway], webhook_receiver: WebhookReceiver
) -> None:
    gateway = start_gateway(webhook_url=webhook_receiver.url, step_delay=0.02)
    order = gateway.post_order(key="polled").body

    deliveries = webhook_receiver.wait_for(3)
    assert wait_until(lambda: gateway.stats()["advancing"] == 0)
    answer = gateway.order_status(order["order_id"])

    shipped = json.loads(deliveries[1][1])
    assert shipped["type"] == "order.shipped"
    assert answer.status == 200
    assert answer.body == {
        **order,
        "status": "delivered",
        "tracking_number": shipped["data"]["tracking_number"],
    }


def test_the_status_call_shows_acknowledged_then_cancelled_without_a_tracking_number(
    start_gateway: Callable[..., Gateway],
) -> None:
    gateway = start_gateway(auto_advance=False)
    order_id = gateway.post_order().body["order_id"]

    before = gateway.order_status(order_id).body
    post_cancel(gateway, order_id)
    after = gateway.order_status(order_id).body

    assert (before["status"], before["tracking_number"]) == ("acknowledged", None)
    assert (after["status"], after["tracking_number"]) == ("cancelled", None)


def test_an_order_to_be_rejected_shows_as_acknowledged_until_it_is(
    start_gateway: Callable[..., Gateway],
) -> None:
    gateway = start_gateway(auto_advance=False)
    gateway.simulator.update_knobs({"reject_next": 1})

    accepted = gateway.post_order()

    assert accepted.body["status"] == "acknowledged"
    assert gateway.order_status(accepted.body["order_id"]).body["status"] == "acknowledged"


def test_the_status_call_needs_the_api_key_and_a_known_order(start_gateway: Callable[..., Gateway]) -> None:
    gateway = start_gateway(auto_advance=False)
    order_id = gateway.post_order().body["order_id"]

    assert gateway.order_status(order_id, api_key="wrong").status == 401
    missing = gateway.order_status("ord_unknown")
    assert missing.status == 404
    assert missing.body["issue"][0]["code"] == "not-found"
    assert request("GET", f"{gateway.url}/orders/{order_id}/cancel").status == 404


def test_drop_next_webhooks_loses_that_many_webhooks_while_the_order_moves_on(
    start_gateway: Callable[..., Gateway], webhook_receiver: WebhookReceiver
) -> None:
    gateway = start_gateway(webhook_url=webhook_receiver.url, step_delay=0.02)
    gateway.simulator.update_knobs({"drop_next_webhooks": 1})
    order_id = gateway.post_order().body["order_id"]

    assert wait_until(lambda: gateway.stats()["advancing"] == 0)

    types = [json.loads(body)["type"] for _, body in webhook_receiver.deliveries]
    assert types == ["order.shipped", "order.delivered"]
    stats = gateway.stats()
    assert (stats["webhooks_dropped"], stats["webhooks_sent"], stats["pending_webhooks"]) == (1, 2, 0)
    assert gateway.simulator.knobs()["drop_next_webhooks"] == 0
    assert gateway.order_status(order_id).body["status"] == "delivered"


def test_a_gateway_started_on_the_same_state_file_knows_its_orders_keys_and_counters(
    start_gateway: Callable[..., Gateway], tmp_path: Path
) -> None:
    state_file = tmp_path / "gateway.json"
    first = start_gateway(auto_advance=False, state_file=state_file)
    order = first.post_order(key="remembered").body
    first.post_order(key="remembered")
    cancelled = first.post_order(key="cancelled", bundle=message_bundle("bundle-2")).body
    post_cancel(first, cancelled["order_id"])
    first.simulator.close()

    second = start_gateway(auto_advance=False, state_file=state_file)

    replay = second.post_order(key="remembered")
    conflict = second.post_order(key="remembered", bundle=message_bundle(note="changed"))
    assert (replay.status, replay.headers["Idempotent-Replayed"]) == (200, "true")
    assert replay.body == order
    assert conflict.status == 422
    assert second.order_status(cancelled["order_id"]).body["status"] == "cancelled"
    stats = second.stats()
    assert stats["orders_by_key"] == {"remembered": order["order_id"], "cancelled": cancelled["order_id"]}
    assert (stats["duplicates"], stats["cancellations"]) == (2, 1)


def test_the_state_file_is_replaced_whole_and_leaves_no_temporary_files(
    start_gateway: Callable[..., Gateway], tmp_path: Path
) -> None:
    state_file = tmp_path / "gateway.json"
    gateway = start_gateway(auto_advance=False, state_file=state_file)

    for number in range(20):
        gateway.post_order(key=f"key-{number}", bundle=message_bundle(f"bundle-{number}"))

    saved = json.loads(state_file.read_text())
    assert [path.name for path in tmp_path.iterdir()] == ["gateway.json"]
    assert saved["version"] == 1
    assert [order["idempotency_key"] for order in saved["orders"]] == [f"key-{n}" for n in range(20)]
    assert saved["counters"]["requests"] == 20
