"""Pharmacy-gateway simulator: a stand-in for the real dispensing gateway.

It accepts FHIR R4 message Bundles on ``POST /orders`` with Idempotency-Key
de-duplication, injects faults on demand, and walks each new order through
signed ``order.dispensed`` -> ``order.shipped`` -> ``order.delivered``
webhooks.  Standard library only (with sandbox/server.py and common/signing.py); it needs no
Django settings or database, so it runs as ``python -m sandbox.gateway`` as well as through the
management command.
"""

from __future__ import annotations

import argparse
import collections
import csv
import enum
import hashlib
import hmac
import io
import json
import os
import random
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from http import HTTPStatus
from pathlib import Path
from typing import Any, ClassVar, TypeGuard

from common.signing import signature_header
from sandbox import eps_rules, server
from sandbox.server import JSON_CONTENT_TYPE, Delivery, Log, SimulatorHandler, SimulatorServer, rate, seconds

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8765
DEFAULT_API_KEY = "sim-gateway-key"
DEFAULT_HANG_SECONDS = 30.0
DEFAULT_STEP_DELAY_SECONDS = 1.0

EVENTS_WITH_TRACKING = frozenset({"order.shipped", "order.delivered"})
# A pharmacy may refuse an order after accepting it; a cancelled order stops advancing.
REJECTION_REASON = "Pharmacy cannot fulfil this order: item out of stock."
DISPENSED_OR_LATER = frozenset({"dispensed", "shipped", "delivered"})
SIGNATURE_HEADER = "Gateway-Signature"
MAXIMUM_BODY_BYTES = 10 * 1024 * 1024
# Every message received is kept for GET /_messages, newest first, up to this many (in
# memory only: a full message per request would make the state file slow to rewrite).
MESSAGES_KEPT = 1000
FHIR_CONTENT_TYPE = "application/fhir+json"

# Names accepted by serve(); the management command forwards exactly these.
OPTION_NAMES = (
    "host",
    "port",
    "webhook_url",
    "webhook_secret",
    "api_key",
    "latency",
    "error_rate",
    "timeout_rate",
    "hang",
    "step_delay",
    "auto_advance",
    "seed",
    "state_file",
    "drop_pending_webhooks",
)

log_to_stderr = server.log_to_stderr("gateway-simulator")


def operation_outcome(code: str, diagnostics: str) -> dict[str, Any]:
    return {
        "resourceType": "OperationOutcome",
        "issue": [{"severity": "error", "code": code, "diagnostics": diagnostics}],
    }


def out_of_stock_outcome(products: Sequence[str]) -> dict[str, Any]:
    """The refusal of an order this pharmacy cannot fill: a business-rule issue whose detail code
    says why (out-of-stock), so the client knows another pharmacy may fill it."""
    return {
        "resourceType": "OperationOutcome",
        "issue": [
            {
                "severity": "error",
                "code": "business-rule",
                "details": {"coding": [{"code": "out-of-stock", "display": "Out of stock"}]},
                "diagnostics": f"Out of stock: {product}.",
                "expression": ["MedicationRequest.medicationCodeableConcept"],
            }
            for product in products
        ],
    }


class BundleError(ValueError):
    """The request body is not a FHIR message Bundle."""


def parse_message_bundle(body: bytes) -> dict[str, Any]:
    try:
        bundle = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise BundleError("Request body is not valid JSON.") from error
    if not isinstance(bundle, dict) or bundle.get("resourceType") != "Bundle":
        raise BundleError("Request body must be a FHIR Bundle resource.")
    if bundle.get("type") != "message":
        raise BundleError("Bundle.type must be 'message'.")
    entries = bundle.get("entry")
    first_resource = entries[0].get("resource") if _is_non_empty_list_of_dicts(entries) else None
    if not isinstance(first_resource, dict) or first_resource.get("resourceType") != "MessageHeader":
        raise BundleError("The first Bundle.entry must hold a MessageHeader resource.")
    return bundle


def _is_non_empty_list_of_dicts(value: Any) -> TypeGuard[list[dict[str, Any]]]:
    return isinstance(value, list) and bool(value) and isinstance(value[0], dict)


def _utc_now_iso() -> str:
    return datetime.now(UTC).isoformat()


def _new_tracking_number() -> str:
    # Not drawn from the seeded generator: repeating tracking numbers across
    # simulator restarts could collide in the application's database.
    return "SIM" + "".join(random.SystemRandom().choice("0123456789") for _ in range(10))


# Where an order goes next from each status, and the webhook that announces it.
NEXT_STEP = {
    "acknowledged": ("dispensed", "order.dispensed"),
    "dispensed": ("shipped", "order.shipped"),
    "shipped": ("delivered", "order.delivered"),
    # Accepted, then refused by the pharmacy at what would have been dispensing.
    "rejecting": ("rejected", "order.rejected"),
}


@dataclass
class Order:
    order_id: str
    idempotency_key: str
    bundle_id: Any
    received_at: str
    body_digest: str
    # "rejecting" is internal: the order will be rejected at its first step.
    status: str = "acknowledged"
    tracking_number: str | None = None
    # Whether order.acknowledged was sent (only with the acknowledged_webhook knob).
    announced: bool = False

    @property
    def public_status(self) -> str:
        return "acknowledged" if self.status == "rejecting" else self.status

    def as_json(self) -> dict[str, Any]:
        return {
            "order_id": self.order_id,
            "status": self.public_status,
            "idempotency_key": self.idempotency_key,
            "bundle_id": self.bundle_id,
            "received_at": self.received_at,
        }

    def status_json(self) -> dict[str, Any]:
        """`GET /orders/{order_id}`: where the order is now."""
        return {**self.as_json(), "tracking_number": self.tracking_number}


class Submission(enum.Enum):
    CREATED = "created"
    REPLAYED = "replayed"
    CONFLICT = "conflict"


class Fault(enum.Enum):
    ERROR = "error"
    TIMEOUT = "timeout"


@dataclass
class Knobs:
    latency: float = 0.0
    error_rate: float = 0.0
    timeout_rate: float = 0.0
    hang: float = DEFAULT_HANG_SECONDS
    step_delay: float = DEFAULT_STEP_DELAY_SECONDS
    auto_advance: bool = True
    down: bool = False
    webhook_url: str | None = None
    # Reject the next N orders (order.rejected instead of dispensing); announce acceptance
    # with an order.acknowledged webhook before the first step.
    reject_next: int = 0
    acknowledged_webhook: bool = False
    # Silently lose the next N webhooks (the order still moves on), as a partner may.
    drop_next_webhooks: int = 0
    # Seconds between taking a new order and answering: a client killed meanwhile never
    # hears of the order it made.
    answer_delay: float = 0.0
    # Stock levels served as GET /stock.csv (product code -> quantity), and the product codes
    # the pharmacy has none of: an order naming one is refused (422, detail code out-of-stock).
    stock: dict[str, int] = field(default_factory=dict)
    out_of_stock: list[str] = field(default_factory=list)


def stock_levels(name: str, value: Any) -> dict[str, int]:
    if not isinstance(value, dict) or not all(
        isinstance(code, str)
        and code
        and isinstance(quantity, int)
        and not isinstance(quantity, bool)
        and quantity >= 0
        for code, quantity in value.items()
    ):
        raise ValueError(f"{name} must map product codes to whole numbers, zero or more")
    return dict(value)


def product_codes(name: str, value: Any) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(code, str) and code for code in value):
        raise ValueError(f"{name} must be a list of product codes")
    return list(value)


def ordered_product_codes(bundle: Mapping[str, Any]) -> set[str]:
    """Every medication code the message's MedicationRequests name."""
    codes = set()
    for entry in bundle.get("entry") or []:
        resource = entry.get("resource") if isinstance(entry, dict) else None
        if not isinstance(resource, dict) or resource.get("resourceType") != "MedicationRequest":
            continue
        concept = resource.get("medicationCodeableConcept")
        for coding in (concept.get("coding") if isinstance(concept, dict) else None) or []:
            if isinstance(coding, dict) and isinstance(coding.get("code"), str):
                codes.add(coding["code"])
    return codes


@dataclass
class Counters:
    requests: int = 0
    duplicates: int = 0
    errors: int = 0
    timeouts: int = 0
    webhooks_sent: int = 0
    webhooks_failed: int = 0
    webhooks_dropped: int = 0
    cancellations: int = 0
    rejections: int = 0
    refused_by_eps_rules: int = 0
    refused_out_of_stock: int = 0


@dataclass
class Webhook:
    """A webhook made and not yet delivered; its body is fixed once made, so a redelivery
    after a restart is byte-for-byte the same event."""

    event_id: str
    event_type: str
    order_id: str
    body: str

    @classmethod
    def make(cls, order: Order, event_type: str, *, reason: str | None = None) -> Webhook:
        event_id = f"evt_{uuid.uuid4().hex}"
        data: dict[str, Any] = {
            "order_id": order.order_id,
            "idempotency_key": order.idempotency_key,
            "bundle_id": order.bundle_id,
        }
        if event_type in EVENTS_WITH_TRACKING:
            data["tracking_number"] = order.tracking_number
        if reason is not None:
            data["reason"] = reason
        event = {"id": event_id, "type": event_type, "created": int(time.time()), "data": data}
        return cls(event_id, event_type, order.order_id, json.dumps(event, separators=(",", ":")))


class Simulator(server.Simulator):
    """Orders, pending webhooks, counters and fault knobs of one simulated gateway; thread-safe,
    and with a state file, a restart keeps orders, idempotency keys, pending webhooks and
    counters, and walks unfinished orders on."""

    knob_validators: ClassVar[Mapping[str, server.Validator]] = {
        "latency": server.number,
        "error_rate": server.fraction,
        "timeout_rate": server.fraction,
        "hang": server.number,
        "step_delay": server.number,
        "auto_advance": server.flag,
        "down": server.flag,
        "webhook_url": server.url,
        "reject_next": server.count,
        "acknowledged_webhook": server.flag,
        "drop_next_webhooks": server.count,
        "answer_delay": server.number,
        "stock": stock_levels,
        "out_of_stock": product_codes,
    }

    def __init__(
        self,
        *,
        api_key: str = DEFAULT_API_KEY,
        webhook_url: str | None = None,
        webhook_secret: str = "",
        latency: float = 0.0,
        error_rate: float = 0.0,
        timeout_rate: float = 0.0,
        hang: float = DEFAULT_HANG_SECONDS,
        step_delay: float = DEFAULT_STEP_DELAY_SECONDS,
        auto_advance: bool = True,
        down: bool = False,
        seed: int | None = None,
        log: Log = log_to_stderr,
        state_file: Path | None = None,
    ) -> None:
        super().__init__(
            api_key=api_key,
            webhook_secret=webhook_secret,
            knobs=Knobs(),
            seed=seed,
            log=log,
            state_file=state_file,
        )
        self._orders_by_key: dict[str, Order] = {}
        self._messages: collections.deque[dict[str, Any]] = collections.deque(maxlen=MESSAGES_KEPT)
        self._orders_by_id: dict[str, Order] = {}
        self._pending: list[Webhook] = []
        self._counters = Counters()
        # Bumped by reset() so advancers of cleared orders stop and stay silent.
        self._generation = 0
        # Orders whose lifecycle thread is running; a waiting advancer wakes on every notify.
        self._advancing: set[str] = set()
        self._changed = threading.Condition(self._lock)
        self.update_knobs(
            {
                "latency": latency,
                "error_rate": error_rate,
                "timeout_rate": timeout_rate,
                "hang": hang,
                "step_delay": step_delay,
                "auto_advance": auto_advance,
                "down": down,
                "webhook_url": webhook_url,
            }
        )

    # State

    def snapshot(self) -> dict[str, Any]:
        return {
            "orders": [asdict(order) for order in self._orders_by_key.values()],
            "pending_webhooks": [asdict(webhook) for webhook in self._pending],
            "counters": asdict(self._counters),
        }

    def restore(self, state: Mapping[str, Any]) -> None:
        orders = [Order(**fields) for fields in state["orders"]]
        self._orders_by_key = {order.idempotency_key: order for order in orders}
        self._orders_by_id = {order.order_id: order for order in orders}
        self._pending = [Webhook(**fields) for fields in state["pending_webhooks"]]
        self._counters = Counters(**state["counters"])

    def drop_pending_webhooks(self) -> int:
        """Lose every webhook not yet delivered (orders keep their status); how many were lost."""
        with self._lock:
            dropped = len(self._pending)
            self._pending.clear()
            self._counters.webhooks_dropped += dropped
            self.save()
        if dropped:
            self.log(f"dropped {dropped} pending webhook(s)")
        return dropped

    def resume(self) -> int:
        """Walk on every order that has pending webhooks or is not finished; how many."""
        with self._lock:
            waiting = {webhook.order_id for webhook in self._pending}
            orders = [
                order
                for order in self._orders_by_key.values()
                if order.order_id in waiting or order.status in NEXT_STEP
            ]
            generation = self._generation
        started = sum(self._start_advancing(order, generation) for order in orders)
        if started:
            self.log(f"resumed {started} order(s)")
        return started

    # Statistics

    def stats(self) -> dict[str, Any]:
        with self._lock:
            orders_by_key = {key: order.order_id for key, order in self._orders_by_key.items()}
            return {
                "orders": len(orders_by_key),
                **vars(self._counters),
                "advancing": len(self._advancing),
                "pending_webhooks": len(self._pending),
                "orders_by_key": orders_by_key,
            }

    def reset(self) -> None:
        with self._lock:
            self._orders_by_key.clear()
            self._messages.clear()
            self._orders_by_id.clear()
            self._pending.clear()
            self._counters = Counters()
            self._knobs.stock = {}
            self._knobs.out_of_stock = []
            self._generation += 1
            self._random = random.Random(self._seed)
            self._changed.notify_all()
            self.save()

    def close(self) -> None:
        super().close()
        with self._lock:
            self._changed.notify_all()

    # Order intake

    def receive_message(self, bundle: dict[str, Any]) -> list[dict[str, Any]]:
        """Keep `bundle` and check it as the NHS would: the EPS rules it breaks (none for a
        message of Scriptline's own US profile)."""
        with self._lock:
            self._messages.appendleft(bundle)
        issues = [] if eps_rules.is_scriptline_message(bundle) else eps_rules.check_message(bundle)
        if issues:
            with self._lock:
                self._counters.refused_by_eps_rules += 1
                self.save()
        return issues

    def messages(self) -> list[dict[str, Any]]:
        with self._lock:
            return list(self._messages)

    def missing_products(self, bundle: Mapping[str, Any]) -> list[str]:
        """The ordered products this pharmacy has none of (the out_of_stock knob)."""
        with self._lock:
            missing = sorted(ordered_product_codes(bundle) & set(self._knobs.out_of_stock))
            if missing:
                self._counters.refused_out_of_stock += 1
                self.save()
        return missing

    def stock_publish(self, target: str) -> str | None:
        """POST the stock levels to `target` as a signed stock webhook (Partner-Signature), as a
        partner's warehouse does when its levels change; None when accepted, else why not."""
        with self._lock:
            levels = sorted(self._knobs.stock.items())
        event = {
            "id": f"stk_{uuid.uuid4().hex}",
            "items": [{"product_code": code, "quantity": quantity} for code, quantity in levels],
        }
        body = json.dumps(event, separators=(",", ":")).encode("utf-8")
        headers = {
            "Content-Type": JSON_CONTENT_TYPE,
            "Partner-Signature": signature_header(secrets=[self.webhook_secret], body=body),
        }
        request = urllib.request.Request(target, data=body, method="POST", headers=headers)
        try:
            with self._opener.open(request, timeout=10) as response:
                return None if 200 <= response.status < 300 else f"HTTP {response.status}"
        except urllib.error.HTTPError as error:
            return f"HTTP {error.code}"
        except (OSError, ValueError) as error:
            return type(error).__name__

    def stock_csv(self) -> str:
        """The stock levels as the CSV file partners publish: `product_code,quantity`."""
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(["product_code", "quantity"])
        with self._lock:
            writer.writerows(sorted(self._knobs.stock.items()))
        return out.getvalue()

    def choose_fault(self) -> Fault | None:
        return self.fault_draw(
            [("error_rate", "errors", Fault.ERROR), ("timeout_rate", "timeouts", Fault.TIMEOUT)]
        )

    def submit_order(
        self, idempotency_key: str, bundle: Mapping[str, Any], body: bytes
    ) -> tuple[Submission, Order | None]:
        body_digest = hashlib.sha256(body).hexdigest()
        with self._lock:
            existing = self._orders_by_key.get(idempotency_key)
            if existing is not None:
                if not hmac.compare_digest(existing.body_digest, body_digest):
                    return Submission.CONFLICT, None
                self._counters.duplicates += 1
                self.save()
                return Submission.REPLAYED, existing
            order = Order(
                order_id=f"ord_{uuid.uuid4().hex}",
                idempotency_key=idempotency_key,
                bundle_id=bundle.get("id"),
                received_at=_utc_now_iso(),
                body_digest=body_digest,
            )
            self._orders_by_key[idempotency_key] = order
            self._orders_by_id[order.order_id] = order
            if self._knobs.reject_next > 0:
                self._knobs.reject_next -= 1
                order.status = "rejecting"
            # Saved before the answer: an acknowledged order survives a crash that follows.
            self.save()
            generation = self._generation
        self.log(f"acknowledged order {order.order_id}")
        self._start_advancing(order, generation)
        return Submission.CREATED, order

    def order(self, order_id: str) -> Order | None:
        with self._lock:
            order = self._orders_by_id.get(order_id)
            return None if order is None else replace(order)

    # Order lifecycle webhooks

    def _start_advancing(self, order: Order, generation: int) -> bool:
        with self._lock:
            knobs = self._knobs
            if not knobs.auto_advance or not knobs.webhook_url or order.order_id in self._advancing:
                return False
            self._advancing.add(order.order_id)
        self.start_thread(self._advance, order, generation, name=f"advance-{order.order_id}")
        return True

    def _advance(self, order: Order, generation: int) -> None:
        try:
            self._walk(order, generation)
        finally:
            with self._lock:
                self._advancing.discard(order.order_id)

    def _walk(self, order: Order, generation: int) -> None:
        """Announce (with the knob), deliver what is pending, then one step per step_delay."""
        with self._lock:
            if self._knobs.acknowledged_webhook and not order.announced and order.status in NEXT_STEP:
                order.announced = True
                self._queue(Webhook.make(order, "order.acknowledged"))
        while self._flush(order, generation):
            with self._lock:
                finished = order.status not in NEXT_STEP
            if finished or not self._await_step(order, generation) or self._step(order) is None:
                return

    def _await_step(self, order: Order, generation: int) -> bool:
        """Wait step_delay, or less when the order is cancelled, the simulator reset or closed;
        True when the walk may go on (a cancelled order then stops at its next step)."""
        deadline = time.monotonic() + self.knobs()["step_delay"]
        with self._changed:
            while not (
                self._stopping.is_set() or generation != self._generation or order.status == "cancelled"
            ):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._changed.wait(remaining)
            return not self._stopping.is_set() and generation == self._generation

    def _step(self, order: Order) -> str | None:
        """Move the order on and queue its webhook, under the lock, so a cancel and a dispense
        cannot both win; the webhook's type, or None when the order has nowhere to go."""
        with self._lock:
            if order.status not in NEXT_STEP:
                return None
            status, event_type = NEXT_STEP[order.status]
            order.status = status
            if status == "rejected":
                self._counters.rejections += 1
            if status == "shipped":
                order.tracking_number = _new_tracking_number()
            reason = REJECTION_REASON if status == "rejected" else None
            self._queue(Webhook.make(order, event_type, reason=reason))
            return event_type

    def _queue(self, webhook: Webhook) -> None:
        """Queue a webhook for delivery, or lose it when drop_next_webhooks says so (lock held)."""
        if self._knobs.drop_next_webhooks > 0:
            self._knobs.drop_next_webhooks -= 1
            self._counters.webhooks_dropped += 1
            self.log(f"dropped {webhook.event_type} for {webhook.order_id} (drop_next_webhooks)")
        else:
            self._pending.append(webhook)
        self.save()

    def _flush(self, order: Order, generation: int) -> bool:
        """Deliver the order's pending webhooks in order; False when the walk must stop."""
        while True:
            with self._lock:
                if generation != self._generation:
                    return False
                webhook = next((w for w in self._pending if w.order_id == order.order_id), None)
            if webhook is None:
                return True
            what = f"{webhook.event_type} for {webhook.order_id}"
            outcome = self.deliver(webhook.body.encode("utf-8"), what=what)
            if outcome is Delivery.INTERRUPTED:
                return False
            with self._lock:
                if generation != self._generation:
                    return False
                self._pending.remove(webhook)
                if outcome is Delivery.SENT:
                    self._counters.webhooks_sent += 1
                else:
                    self._counters.webhooks_failed += 1
                self.save()

    def cancel_order(self, order_id: str) -> tuple[HTTPStatus, Order | None]:
        """Cancel an order not yet dispensed; repeating a cancel is a no-op that answers 200."""
        with self._lock:
            order = self._orders_by_id.get(order_id)
            if order is None:
                return HTTPStatus.NOT_FOUND, None
            if order.status in DISPENSED_OR_LATER or order.status == "rejected":
                return HTTPStatus.CONFLICT, replace(order)
            if order.status != "cancelled":
                order.status = "cancelled"
                self._counters.cancellations += 1
                self.save()
                self._changed.notify_all()
            answer = replace(order)
        self.log(f"cancelled order {order_id}")
        return HTTPStatus.OK, answer

    def webhook_headers(self, body: bytes) -> dict[str, str]:
        return {
            "Content-Type": JSON_CONTENT_TYPE,
            SIGNATURE_HEADER: signature_header(secrets=[self.webhook_secret], body=body),
            "User-Agent": "pharmacy-gateway-simulator/1.0",
        }


class GatewayRequestHandler(SimulatorHandler):
    server_version = "PharmacyGatewaySimulator/1.0"
    maximum_body_bytes = MAXIMUM_BODY_BYTES

    @property
    def simulator(self) -> Simulator:
        return self.server.simulator

    # Routing

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        order_id = path.removeprefix("/orders/")
        if order_id != path and order_id and "/" not in order_id:
            self._status(order_id)
            return
        routes = {
            "/health": self._health,
            "/_stats": self._stats,
            "/_control": self._show_knobs,
            "/_messages": self._list_messages,
            "/stock.csv": self._stock_csv,
        }
        self._dispatch(routes, allowed_elsewhere={"/orders", "/_reset"})

    def do_POST(self) -> None:
        path = self.path.split("?", 1)[0]
        if path.startswith("/orders/") and path.endswith("/cancel"):
            self._cancel(path.removeprefix("/orders/").removesuffix("/cancel"))
            return
        routes = {
            "/orders": self._orders,
            "/_control": self._control,
            "/_reset": self._reset,
            "/_publish_stock": self._publish_stock,
        }
        self._dispatch(routes, allowed_elsewhere={"/health", "/_stats"})

    def _dispatch(self, routes: Mapping[str, Any], allowed_elsewhere: set[str]) -> None:
        path = self.path.split("?", 1)[0]
        route = routes.get(path)
        if route is not None:
            route()
        elif path in allowed_elsewhere:
            self.send_json(HTTPStatus.METHOD_NOT_ALLOWED, {"error": "method not allowed", "path": path})
        else:
            self.send_json(HTTPStatus.NOT_FOUND, {"error": "not found", "path": path})

    # Operational endpoints

    def _health(self) -> None:
        self.send_json(HTTPStatus.OK, {"status": "ok"})

    def _stats(self) -> None:
        self.send_json(HTTPStatus.OK, self.simulator.stats())

    def _list_messages(self) -> None:
        self.send_json(HTTPStatus.OK, self.simulator.messages())

    def _publish_stock(self) -> None:
        """`POST /_publish_stock {"url": ...}`: send the stock levels there as a signed webhook."""
        try:
            target = server.url("url", json.loads(self.read_body() or b"{}").get("url"))
        except (ValueError, AttributeError) as error:
            self.send_json(HTTPStatus.BAD_REQUEST, {"error": str(error)})
            return
        if target is None:
            self.send_json(HTTPStatus.BAD_REQUEST, {"error": "url is required"})
            return
        failure = self.simulator.stock_publish(target)
        self.send_json(HTTPStatus.OK if failure is None else HTTPStatus.BAD_GATEWAY, {"error": failure})

    def _stock_csv(self) -> None:
        """`GET /stock.csv`: the pharmacy's stock levels, as its warehouse exports them."""
        if not self.simulator.is_authorized(self.headers.get("Authorization")):
            self._send_outcome(HTTPStatus.UNAUTHORIZED, "login", "Missing or invalid API key.")
            return
        body = self.simulator.stock_csv().encode("utf-8")
        self.send_response(HTTPStatus.OK)
        self.send_header("Content-Type", "text/csv; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _show_knobs(self) -> None:
        self.send_json(HTTPStatus.OK, self.simulator.knobs())

    def _control(self) -> None:
        self.answer_control(self.simulator, self.read_body())

    def _reset(self) -> None:
        self.read_body()
        self.simulator.reset()
        self.send_json(HTTPStatus.OK, self.simulator.stats())

    # Order intake

    def _orders(self) -> None:
        simulator = self.simulator
        simulator.record_request()
        body = self.read_body()
        if body is None:
            self._send_outcome(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, "too-long", "Request body is too large.")
            return
        simulator.sleep(simulator.knobs()["latency"])
        fault = simulator.choose_fault()
        if fault is Fault.ERROR:
            self._send_outcome(
                HTTPStatus.SERVICE_UNAVAILABLE, "transient", "Gateway temporarily unavailable."
            )
            return
        if fault is Fault.TIMEOUT:
            simulator.sleep(simulator.knobs()["hang"])
            self._send_outcome(HTTPStatus.GATEWAY_TIMEOUT, "timeout", "Gateway timed out.")
            return
        self._accept_order(body)

    def _cancel(self, order_id: str) -> None:
        simulator = self.simulator
        simulator.record_request()
        self.read_body()
        if simulator.choose_fault() is not None:
            self._send_outcome(
                HTTPStatus.SERVICE_UNAVAILABLE, "transient", "Gateway temporarily unavailable."
            )
            return
        if not simulator.is_authorized(self.headers.get("Authorization")):
            self._send_outcome(HTTPStatus.UNAUTHORIZED, "login", "Missing or invalid API key.")
            return
        status, order = simulator.cancel_order(order_id)
        if order is None:
            self._send_outcome(HTTPStatus.NOT_FOUND, "not-found", "No such order.")
        elif status == HTTPStatus.CONFLICT:
            self._send_outcome(HTTPStatus.CONFLICT, "business-rule", f"The order is already {order.status}.")
        else:
            self.send_json(HTTPStatus.OK, order.as_json())

    def _status(self, order_id: str) -> None:
        """`GET /orders/{order_id}`: the order's status now (and its tracking number once
        shipped), so a client that missed webhooks can ask."""
        simulator = self.simulator
        simulator.record_request()
        if simulator.choose_fault() is not None:
            self._send_outcome(
                HTTPStatus.SERVICE_UNAVAILABLE, "transient", "Gateway temporarily unavailable."
            )
            return
        if not simulator.is_authorized(self.headers.get("Authorization")):
            self._send_outcome(HTTPStatus.UNAUTHORIZED, "login", "Missing or invalid API key.")
            return
        order = simulator.order(order_id)
        if order is None:
            self._send_outcome(HTTPStatus.NOT_FOUND, "not-found", "No such order.")
        else:
            self.send_json(HTTPStatus.OK, order.status_json())

    def _accept_order(self, body: bytes) -> None:
        if not self.simulator.is_authorized(self.headers.get("Authorization")):
            self._send_outcome(HTTPStatus.UNAUTHORIZED, "login", "Missing or invalid API key.")
            return
        idempotency_key = (self.headers.get("Idempotency-Key") or "").strip()
        if not idempotency_key:
            self._send_outcome(HTTPStatus.BAD_REQUEST, "required", "Idempotency-Key header is required.")
            return
        try:
            bundle = parse_message_bundle(body)
        except BundleError as error:
            self._send_outcome(HTTPStatus.BAD_REQUEST, "invalid", str(error))
            return
        issues = self.simulator.receive_message(bundle)
        if issues:
            self.send_json(
                HTTPStatus.BAD_REQUEST, eps_rules.operation_outcome(issues), content_type=FHIR_CONTENT_TYPE
            )
            return
        missing = self.simulator.missing_products(bundle)
        if missing:
            self.send_json(
                HTTPStatus.UNPROCESSABLE_ENTITY,
                out_of_stock_outcome(missing),
                content_type=FHIR_CONTENT_TYPE,
            )
            return
        submission, order = self.simulator.submit_order(idempotency_key, bundle, body)
        if submission is Submission.CREATED:
            self.simulator.sleep(self.simulator.knobs()["answer_delay"])
        self._answer_submission(submission, order)

    def _answer_submission(self, submission: Submission, order: Order | None) -> None:
        if submission is Submission.CONFLICT or order is None:
            diagnostics = "Idempotency-Key was already used with a different request body."
            self._send_outcome(HTTPStatus.UNPROCESSABLE_ENTITY, "conflict", diagnostics)
        elif submission is Submission.REPLAYED:
            self.send_json(HTTPStatus.OK, order.as_json(), extra_headers={"Idempotent-Replayed": "true"})
        else:
            self.send_json(HTTPStatus.ACCEPTED, order.as_json())

    def _send_outcome(self, status: HTTPStatus, code: str, diagnostics: str) -> None:
        self.send_json(
            status,
            operation_outcome(code, diagnostics),
            content_type=FHIR_CONTENT_TYPE,
            extra_headers={"WWW-Authenticate": "Bearer"} if status == HTTPStatus.UNAUTHORIZED else None,
        )


def make_server(host: str, port: int, simulator: Simulator) -> SimulatorServer:
    """Bind (port 0 picks a free port) without serving; call serve_forever()."""
    return SimulatorServer((host, port), GatewayRequestHandler, simulator)


def serve(
    *,
    host: str = DEFAULT_HOST,
    port: int = DEFAULT_PORT,
    webhook_url: str | None = None,
    webhook_secret: str = "",
    api_key: str = DEFAULT_API_KEY,
    latency: float = 0.0,
    error_rate: float = 0.0,
    timeout_rate: float = 0.0,
    hang: float = DEFAULT_HANG_SECONDS,
    step_delay: float = DEFAULT_STEP_DELAY_SECONDS,
    auto_advance: bool = True,
    seed: int | None = None,
    state_file: Path | None = None,
    drop_pending_webhooks: bool = False,
) -> None:
    """Load the saved state, walk unfinished orders on, and run until SIGTERM or SIGINT."""
    simulator = Simulator(
        api_key=api_key,
        webhook_url=webhook_url,
        webhook_secret=webhook_secret,
        latency=latency,
        error_rate=error_rate,
        timeout_rate=timeout_rate,
        hang=hang,
        step_delay=step_delay,
        auto_advance=auto_advance,
        seed=seed,
        state_file=state_file,
    )
    if webhook_url and not webhook_secret:
        simulator.log("warning: no webhook secret configured; webhooks are signed with an empty key")
    if simulator.load():
        simulator.log(f"loaded {simulator.stats()['orders']} order(s) from {state_file}")
    if drop_pending_webhooks:
        simulator.drop_pending_webhooks()
    simulator.resume()
    server.run_until_stopped(make_server(host, port, simulator), simulator, name="gateway simulator")


def add_arguments(
    parser: argparse.ArgumentParser,
    environment: Mapping[str, str] | None = None,
    preferred_defaults: Mapping[str, Any] | None = None,
) -> None:
    """Declare the simulator options; shared by main() and the Django command.

    Defaults come from ``preferred_defaults`` (non-None values), then the
    environment, then the built-in values.
    """
    default = server.option_defaults(os.environ if environment is None else environment, preferred_defaults)
    parser.add_argument("--host", default=default("host", None, DEFAULT_HOST))
    parser.add_argument("--port", type=int, default=int(default("port", "GATEWAY_SIM_PORT", DEFAULT_PORT)))
    parser.add_argument("--webhook-url", default=default("webhook_url", "GATEWAY_WEBHOOK_URL", None))
    parser.add_argument("--webhook-secret", default=default("webhook_secret", "GATEWAY_WEBHOOK_SECRET", ""))
    parser.add_argument("--api-key", default=default("api_key", "GATEWAY_API_KEY", DEFAULT_API_KEY))
    parser.add_argument("--latency", type=seconds, default=0.0, help="seconds added before answering /orders")
    parser.add_argument("--error-rate", type=rate, default=0.0, help="fraction of /orders answered 503")
    parser.add_argument("--timeout-rate", type=rate, default=0.0, help="fraction of /orders that hang")
    parser.add_argument(
        "--hang", type=seconds, default=DEFAULT_HANG_SECONDS, help="seconds a hanging request sleeps"
    )
    parser.add_argument(
        "--step-delay", type=seconds, default=DEFAULT_STEP_DELAY_SECONDS, help="seconds before each webhook"
    )
    parser.add_argument(
        "--no-auto-advance", dest="auto_advance", action="store_false", help="send no webhooks"
    )
    parser.add_argument("--seed", type=int, default=None, help="seed for reproducible fault injection")
    server.add_state_arguments(parser, name="gateway")


def options_from(parsed: Mapping[str, Any]) -> dict[str, Any]:
    """Pick serve()'s keyword arguments out of parsed options."""
    return server.options_from(parsed, OPTION_NAMES)


def main(arguments: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sandbox.gateway", description=__doc__.splitlines()[0])
    add_arguments(parser)
    serve(**options_from(vars(parser.parse_args(arguments))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
