"""Stripe simulator: the part of the Stripe API Scriptline uses, for development and tests.

The real stripe SDK talks to it (``api_base`` pointed here). It implements form-encoded
``/v1/payment_intents`` (create, retrieve, confirm, cancel) and ``/v1/refunds`` (create) with
Stripe's idempotency semantics (same key + same parameters: the first answer replayed; same
key + other parameters: 400 ``idempotency_error``), Stripe's error JSON, the test payment
methods (``pm_card_visa`` succeeds, ``pm_card_chargeDeclined`` is declined), and signed
webhooks (``Stripe-Signature: t=...,v1=<HMAC-SHA256(whsec, "t.payload")>``).

Knobs (command line, or ``POST /_control`` at run time): ``auto_confirm`` confirms every new
PaymentIntent with ``pm_card_visa`` after ``auto_confirm_delay`` seconds (the demo);
``drop_next_webhooks`` silently drops that many webhooks (to make a reconciliation gap);
``down`` / ``error_rate`` answer 500. ``GET /_stats`` counts, ``GET /_events`` lists every
event body sent (or dropped), ``POST /_reset`` clears everything.

Standard library only (with sandbox/server.py and common/signing.py); it needs no Django
settings or database: ``python -m sandbox.stripe`` works too.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import re
import secrets
import sys
import time
import urllib.parse
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from http import HTTPStatus
from pathlib import Path
from typing import Any, ClassVar

from common.signing import signature_header
from sandbox import server
from sandbox.server import Delivery, Log, SimulatorHandler, SimulatorServer, rate, seconds

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 12111
DEFAULT_API_KEY = "sk_test_scriptline_simulator"
DEFAULT_WEBHOOK_SECRET = "whsec_scriptline_simulator"
DEFAULT_AUTO_CONFIRM_DELAY = 2.0
API_VERSION = "2025-09-30.clover"
MAXIMUM_BODY_BYTES = 1024 * 1024

# The events the simulated webhook endpoint is subscribed to (Stripe sends only these).
ENABLED_EVENTS = ("payment_intent.succeeded", "payment_intent.payment_failed", "payment_intent.canceled")
SUCCEEDING_METHODS = frozenset({"pm_card_visa", "pm_card_mastercard", "pm_card_amex", "pm_card_gb"})
DECLINING_METHODS = {
    "pm_card_chargeDeclined": ("generic_decline", "Your card was declined."),
    "pm_card_chargeDeclinedInsufficientFunds": ("insufficient_funds", "Your card has insufficient funds."),
    "pm_card_chargeDeclinedExpiredCard": ("expired_card", "Your card has expired."),
}
CANCELLABLE = frozenset({"requires_payment_method", "requires_confirmation", "requires_action", "processing"})
CONFIRMABLE = frozenset({"requires_payment_method", "requires_confirmation"})

OPTION_NAMES = (
    "host",
    "port",
    "api_key",
    "webhook_url",
    "webhook_secret",
    "auto_confirm",
    "auto_confirm_delay",
    "latency",
    "error_rate",
    "seed",
    "state_file",
    "drop_pending_webhooks",
)

log_to_stderr = server.log_to_stderr("stripe-simulator")


def _new_id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(12)}"


def parse_form(body: bytes) -> dict[str, Any]:
    """Stripe's form encoding: ``metadata[key]=value`` becomes ``{"metadata": {"key": value}}``."""
    params: dict[str, Any] = {}
    for name, value in urllib.parse.parse_qsl(
        body.decode("utf-8"), keep_blank_values=True, strict_parsing=False
    ):
        keys = re.findall(r"[^\[\]]+", name)
        if not keys:
            continue
        target = params
        for key in keys[:-1]:
            existing = target.get(key)
            if not isinstance(existing, dict):
                existing = target[key] = {}
            target = existing
        target[keys[-1]] = value
    return params


class StripeApiError(Exception):
    """An error answered in Stripe's shape: ``{"error": {"type", "code", "message", ...}}``."""

    def __init__(self, status: int, error_type: str, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.status = status
        self.body = {"error": {"type": error_type, "message": message, **extra}}


def _missing(kind: str, identifier: str, param: str) -> StripeApiError:
    return StripeApiError(
        404, "invalid_request_error", f"No such {kind}: '{identifier}'", code="resource_missing", param=param
    )


def _integer(params: Mapping[str, Any], name: str, *, required: bool) -> int | None:
    value = params.get(name)
    if value is None:
        if required:
            raise StripeApiError(400, "invalid_request_error", f"Missing required param: {name}.", param=name)
        return None
    if not isinstance(value, str) or not value.isdigit() or int(value) < 1:
        raise StripeApiError(
            400,
            "invalid_request_error",
            f"Invalid positive integer: {name}",
            code="parameter_invalid_integer",
            param=name,
        )
    return int(value)


@dataclass
class Knobs:
    auto_confirm: bool = False
    auto_confirm_delay: float = DEFAULT_AUTO_CONFIRM_DELAY
    drop_next_webhooks: int = 0
    latency: float = 0.0
    error_rate: float = 0.0
    down: bool = False
    webhook_url: str | None = None


class Simulator(server.Simulator):
    """PaymentIntents, refunds, idempotency records, events and knobs; thread-safe."""

    knob_validators: ClassVar[Mapping[str, server.Validator]] = {
        "auto_confirm": server.flag,
        "auto_confirm_delay": server.number,
        "drop_next_webhooks": server.count,
        "latency": server.number,
        "error_rate": server.fraction,
        "down": server.flag,
        "webhook_url": server.url,
    }

    def __init__(
        self,
        *,
        api_key: str = DEFAULT_API_KEY,
        webhook_url: str | None = None,
        webhook_secret: str = DEFAULT_WEBHOOK_SECRET,
        auto_confirm: bool = False,
        auto_confirm_delay: float = DEFAULT_AUTO_CONFIRM_DELAY,
        latency: float = 0.0,
        error_rate: float = 0.0,
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
        self.update_knobs(
            {
                "auto_confirm": auto_confirm,
                "auto_confirm_delay": auto_confirm_delay,
                "latency": latency,
                "error_rate": error_rate,
                "webhook_url": webhook_url,
            }
        )
        self._clear()

    def _clear(self) -> None:
        self.intents: dict[str, dict[str, Any]] = {}
        self.refunds: dict[str, dict[str, Any]] = {}
        self._idempotency: dict[str, tuple[str, int, dict[str, Any]]] = {}
        self._intent_keys: dict[str, str] = {}
        self._events: list[dict[str, Any]] = []
        # Webhooks made and not yet delivered ({"id", "type", "body"}), and PaymentIntents
        # waiting for auto-confirm: a restart delivers and confirms them.
        self._pending: list[dict[str, str]] = []
        self._auto_confirming: list[str] = []
        self._counters = {
            "requests": 0,
            "idempotent_replays": 0,
            "idempotency_conflicts": 0,
            "errors": 0,
            "webhooks_sent": 0,
            "webhooks_failed": 0,
            "webhooks_dropped": 0,
        }
        self._generation = getattr(self, "_generation", 0) + 1

    # State

    def snapshot(self) -> dict[str, Any]:
        return {
            "payment_intents": self.intents,
            "refunds": self.refunds,
            "idempotency": {key: list(record) for key, record in self._idempotency.items()},
            "intents_by_key": self._intent_keys,
            "events": self._events,
            "pending_webhooks": self._pending,
            "auto_confirming": self._auto_confirming,
            "counters": self._counters,
        }

    def restore(self, state: Mapping[str, Any]) -> None:
        self.intents = state["payment_intents"]
        self.refunds = state["refunds"]
        self._idempotency = {key: tuple(record) for key, record in state["idempotency"].items()}
        self._intent_keys = state["intents_by_key"]
        self._events = state["events"]
        self._pending = state["pending_webhooks"]
        self._auto_confirming = state["auto_confirming"]
        self._counters = state["counters"]

    def drop_pending_webhooks(self) -> int:
        """Lose every webhook not yet delivered; how many were lost."""
        with self._lock:
            lost = {webhook["id"] for webhook in self._pending}
            self._pending.clear()
            for event in self._events:
                if event["id"] in lost:
                    event["dropped"] = True
            self._counters["webhooks_dropped"] += len(lost)
            self.save()
        if lost:
            self.log(f"dropped {len(lost)} pending webhook(s)")
        return len(lost)

    def resume(self) -> None:
        """Deliver the webhooks and run the auto-confirms a previous run left pending."""
        with self._lock:
            for webhook in self._pending:
                self.start_thread(self._deliver, webhook, self._generation)
            for intent_id in self._auto_confirming:
                self.start_thread(
                    self._auto_confirm, intent_id, self._knobs.auto_confirm_delay, self._generation
                )

    # Statistics

    def stats(self) -> dict[str, Any]:
        with self._lock:
            refunds_by_intent: dict[str, list[str]] = {}
            for refund in self.refunds.values():
                refunds_by_intent.setdefault(refund["payment_intent"], []).append(refund["id"])
            return {
                "payment_intents": len(self.intents),
                "refunds": len(self.refunds),
                **self._counters,
                "pending_webhooks": len(self._pending),
                "intents_by_key": dict(self._intent_keys),
                "intent_statuses": {pid: intent["status"] for pid, intent in self.intents.items()},
                "refunds_by_intent": refunds_by_intent,
            }

    def events(self) -> list[dict[str, Any]]:
        with self._lock:
            return list(self._events)

    def reset(self) -> None:
        with self._lock:
            self._clear()
            self._random = random.Random(self._seed)
            self.save()

    # The API

    def handle(
        self, method: str, path: str, params: dict[str, Any], idempotency_key: str
    ) -> tuple[int, dict[str, Any], bool]:
        """Answer one API request: (status, body, replayed), saved before it is answered."""
        with self._lock:
            try:
                return self._handle(method, path, params, idempotency_key)
            finally:
                self.save()

    def _handle(
        self, method: str, path: str, params: dict[str, Any], idempotency_key: str
    ) -> tuple[int, dict[str, Any], bool]:
        self._counters["requests"] += 1
        knobs = self._knobs
        if knobs.down or self._random.random() < knobs.error_rate:
            self._counters["errors"] += 1
            # Not saved under the idempotency key: the endpoint never started executing.
            return 500, {"error": {"type": "api_error", "message": "Simulated Stripe outage."}}, False
        fingerprint = hashlib.sha256(
            f"{method} {path}\n{json.dumps(params, sort_keys=True)}".encode()
        ).hexdigest()
        if method == "POST" and idempotency_key:
            stored = self._idempotency.get(idempotency_key)
            if stored is not None:
                if stored[0] != fingerprint:
                    self._counters["idempotency_conflicts"] += 1
                    return (
                        400,
                        {
                            "error": {
                                "type": "idempotency_error",
                                "message": "Keys for idempotent requests can only be used with the "
                                "same parameters they were first used with. Try using a key other "
                                f"than '{idempotency_key}' if you meant to execute a different "
                                "request.",
                            }
                        },
                        False,
                    )
                self._counters["idempotent_replays"] += 1
                return stored[1], stored[2], True
        try:
            status, body = 200, self._route(method, path, params, idempotency_key)
        except StripeApiError as error:
            status, body = error.status, error.body
        if method == "POST" and idempotency_key:
            self._idempotency[idempotency_key] = (fingerprint, status, body)
        return status, body, False

    def _route(self, method: str, path: str, params: dict[str, Any], key: str) -> dict[str, Any]:
        parts = path.strip("/").split("/")
        if parts[:2] == ["v1", "payment_intents"]:
            if method == "POST" and len(parts) == 2:
                return self._intent_create(params, key)
            if len(parts) >= 3 and parts[2] not in self.intents:
                raise _missing("payment_intent", parts[2], "intent")
            if method == "GET" and len(parts) == 3:
                return dict(self.intents[parts[2]])
            if method == "POST" and len(parts) == 4 and parts[3] == "confirm":
                return self._intent_confirm(self.intents[parts[2]], params.get("payment_method"))
            if method == "POST" and len(parts) == 4 and parts[3] == "cancel":
                return self._intent_cancel(self.intents[parts[2]], params)
        if parts[:2] == ["v1", "refunds"]:
            if method == "POST" and len(parts) == 2:
                return self._refund_create(params)
            if method == "GET" and len(parts) == 3:
                if parts[2] not in self.refunds:
                    raise _missing("refund", parts[2], "id")
                return dict(self.refunds[parts[2]])
        raise StripeApiError(
            404,
            "invalid_request_error",
            f"Unrecognized request URL ({method}: {path}). Please see https://stripe.com/docs or we "
            "can help at https://support.stripe.com/.",
        )

    def _intent_create(self, params: dict[str, Any], key: str) -> dict[str, Any]:
        amount = _integer(params, "amount", required=True)
        currency = str(params.get("currency") or "")
        if not re.fullmatch(r"[a-z]{3}", currency):
            raise StripeApiError(400, "invalid_request_error", "Invalid currency.", param="currency")
        metadata = params.get("metadata") or {}
        if not isinstance(metadata, dict):
            raise StripeApiError(400, "invalid_request_error", "Invalid metadata.", param="metadata")
        intent_id = _new_id("pi")
        intent: dict[str, Any] = {
            "id": intent_id,
            "object": "payment_intent",
            "amount": amount,
            "amount_received": 0,
            "amount_refunded": 0,
            "currency": currency,
            "status": "requires_payment_method",
            "client_secret": f"{intent_id}_secret_{secrets.token_hex(12)}",
            "metadata": metadata,
            "payment_method": None,
            "latest_charge": None,
            "last_payment_error": None,
            "cancellation_reason": None,
            "canceled_at": None,
            "created": int(time.time()),
            "livemode": False,
        }
        self.intents[intent_id] = intent
        if key:
            self._intent_keys[key] = intent_id
        payment_method = params.get("payment_method")
        if payment_method:
            intent["payment_method"] = payment_method
            intent["status"] = "requires_confirmation"
        if params.get("confirm") == "true":
            return self._intent_confirm(intent, payment_method)
        knobs = self._knobs
        if knobs.auto_confirm and not payment_method:
            self._auto_confirming.append(intent_id)
            self.start_thread(self._auto_confirm, intent_id, knobs.auto_confirm_delay, self._generation)
        self.log(f"created {intent_id} ({amount} {currency})")
        return dict(intent)

    def _intent_confirm(self, intent: dict[str, Any], payment_method: Any) -> dict[str, Any]:
        if intent["status"] not in CONFIRMABLE:
            raise StripeApiError(
                400,
                "invalid_request_error",
                f"This PaymentIntent's status is {intent['status']}, which does not allow confirmation.",
                code="payment_intent_unexpected_state",
                payment_intent=dict(intent),
            )
        method = payment_method or intent["payment_method"]
        if not method:
            raise StripeApiError(
                400,
                "invalid_request_error",
                "You cannot confirm this PaymentIntent because it's missing a payment method.",
                code="payment_intent_unexpected_state",
            )
        if method not in SUCCEEDING_METHODS and method not in DECLINING_METHODS:
            raise _missing("PaymentMethod", str(method), "payment_method")
        intent["payment_method"] = method
        if method in DECLINING_METHODS:
            decline_code, message = DECLINING_METHODS[method]
            intent["status"] = "requires_payment_method"
            intent["last_payment_error"] = {
                "type": "card_error",
                "code": "card_declined",
                "decline_code": decline_code,
                "message": message,
            }
            self._emit("payment_intent.payment_failed", intent)
            raise StripeApiError(
                402,
                "card_error",
                message,
                code="card_declined",
                decline_code=decline_code,
                payment_intent=dict(intent),
            )
        intent.update(
            status="succeeded",
            amount_received=intent["amount"],
            latest_charge=_new_id("ch"),
            last_payment_error=None,
        )
        self._emit("payment_intent.succeeded", intent)
        self.log(f"confirmed {intent['id']}")
        return dict(intent)

    def _intent_cancel(self, intent: dict[str, Any], params: dict[str, Any]) -> dict[str, Any]:
        if intent["status"] not in CANCELLABLE:
            raise StripeApiError(
                400,
                "invalid_request_error",
                f"You cannot cancel this PaymentIntent because it has a status of {intent['status']}. "
                "Only a PaymentIntent with one of the following statuses may be canceled: "
                "requires_payment_method, requires_capture, requires_confirmation, requires_action, "
                "processing.",
                code="payment_intent_unexpected_state",
                payment_intent=dict(intent),
            )
        intent.update(
            status="canceled",
            canceled_at=int(time.time()),
            cancellation_reason=params.get("cancellation_reason") or "requested_by_customer",
        )
        self._emit("payment_intent.canceled", intent)
        return dict(intent)

    def _refund_create(self, params: dict[str, Any]) -> dict[str, Any]:
        intent_id = str(params.get("payment_intent") or "")
        if not intent_id:
            raise StripeApiError(
                400,
                "invalid_request_error",
                "One of the following params should be provided for this request: payment_intent or charge.",
                param="payment_intent",
            )
        intent = self.intents.get(intent_id)
        if intent is None:
            raise _missing("payment_intent", intent_id, "payment_intent")
        if intent["status"] != "succeeded":
            raise StripeApiError(
                400,
                "invalid_request_error",
                f"This PaymentIntent ({intent_id}) does not have a successful charge to refund.",
                param="payment_intent",
            )
        remaining = intent["amount_received"] - intent["amount_refunded"]
        if remaining <= 0:
            raise StripeApiError(
                400,
                "invalid_request_error",
                f"Charge {intent['latest_charge']} has already been refunded.",
                code="charge_already_refunded",
            )
        amount = _integer(params, "amount", required=False) or remaining
        if amount > remaining:
            raise StripeApiError(
                400,
                "invalid_request_error",
                f"Refund amount ({amount}) is greater than unrefunded amount on charge ({remaining})",
                code="amount_too_large",
                param="amount",
            )
        intent["amount_refunded"] += amount
        refund = {
            "id": _new_id("re"),
            "object": "refund",
            "amount": amount,
            "currency": intent["currency"],
            "payment_intent": intent_id,
            "charge": intent["latest_charge"],
            "status": "succeeded",
            "reason": params.get("reason"),
            "metadata": params.get("metadata") or {},
            "created": int(time.time()),
        }
        self.refunds[refund["id"]] = refund
        self.log(f"refunded {amount} of {intent_id}")
        return dict(refund)

    # Auto-confirm and webhooks

    def _auto_confirm(self, intent_id: str, delay: float, generation: int) -> None:
        if not self.sleep(delay):
            return
        with self._lock:
            if generation != self._generation:
                return
            if intent_id in self._auto_confirming:
                self._auto_confirming.remove(intent_id)
            intent = self.intents.get(intent_id)
            if intent is not None and intent["status"] in CONFIRMABLE:
                self._intent_confirm(intent, "pm_card_visa")
            self.save()

    def _emit(self, event_type: str, intent: dict[str, Any]) -> None:
        """Record an event (caller holds the lock) and deliver it in the background."""
        if event_type not in ENABLED_EVENTS:
            return
        event = {
            "id": _new_id("evt"),
            "object": "event",
            "api_version": API_VERSION,
            "created": int(time.time()),
            "data": {"object": dict(intent)},
            "livemode": False,
            "pending_webhooks": 1,
            "request": {"id": _new_id("req"), "idempotency_key": None},
            "type": event_type,
        }
        body = json.dumps(event, separators=(",", ":"))
        dropped = self._knobs.drop_next_webhooks > 0
        if dropped:
            self._knobs.drop_next_webhooks -= 1
            self._counters["webhooks_dropped"] += 1
            self.log(f"dropped {event_type} for {intent['id']} (drop_next_webhooks)")
        self._events.append({"id": event["id"], "type": event_type, "body": body, "dropped": dropped})
        if not dropped and self._knobs.webhook_url:
            webhook = {"id": event["id"], "type": event_type, "body": body}
            self._pending.append(webhook)
            self.start_thread(self._deliver, webhook, self._generation)

    def _deliver(self, webhook: dict[str, str], generation: int) -> None:
        outcome = self.deliver(webhook["body"].encode("utf-8"), what=webhook["type"])
        if outcome is Delivery.INTERRUPTED:
            return
        with self._lock:
            if generation != self._generation:
                return
            self._pending.remove(webhook)
            self._counters["webhooks_sent" if outcome is Delivery.SENT else "webhooks_failed"] += 1
            self.save()

    def webhook_headers(self, body: bytes) -> dict[str, str]:
        """What stripe.Webhook.construct_event verifies: `Stripe-Signature: t=...,v1=...`."""
        return {
            "Content-Type": "application/json; charset=utf-8",
            "Stripe-Signature": signature_header(secrets=[self.webhook_secret], body=body),
            "User-Agent": "Stripe/1.0 (+https://stripe.com/docs/webhooks) simulator",
        }


class StripeRequestHandler(SimulatorHandler):
    server_version = "StripeSimulator/1.0"
    protocol_version = "HTTP/1.1"
    maximum_body_bytes = MAXIMUM_BODY_BYTES

    @property
    def simulator(self) -> Simulator:
        return self.server.simulator

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        operational = {
            "/health": lambda: {"status": "ok"},
            "/_stats": self.simulator.stats,
            "/_control": self.simulator.knobs,
            "/_events": lambda: {"data": self.simulator.events()},
        }
        if path in operational:
            self.send_json(HTTPStatus.OK, operational[path]())
        else:
            self._api("GET", path, b"")

    def do_POST(self) -> None:
        path = self.path.split("?", 1)[0]
        body = self.read_body()
        if body is None:
            self.send_json(
                HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
                {"error": {"type": "invalid_request_error", "message": "Request too large."}},
            )
        elif path == "/_control":
            self.answer_control(self.simulator, body)
        elif path == "/_reset":
            self.simulator.reset()
            self.send_json(HTTPStatus.OK, self.simulator.stats())
        else:
            self._api("POST", path, body)

    def _api(self, method: str, path: str, body: bytes) -> None:
        simulator = self.simulator
        if not simulator.is_authorized(self.headers.get("Authorization")):
            self.send_json(
                HTTPStatus.UNAUTHORIZED,
                {"error": {"type": "invalid_request_error", "message": "Invalid API Key provided."}},
            )
            return
        simulator.sleep(simulator.knobs()["latency"])
        try:
            params = parse_form(body) if method == "POST" else {}
        except UnicodeDecodeError:
            self.send_json(
                HTTPStatus.BAD_REQUEST,
                {"error": {"type": "invalid_request_error", "message": "Invalid request body."}},
            )
            return
        key = (self.headers.get("Idempotency-Key") or "").strip()
        status, payload, replayed = simulator.handle(method, path, params, key)
        headers = {"Request-Id": _new_id("req"), "Stripe-Version": API_VERSION}
        if key:
            headers["Idempotency-Key"] = key
        if replayed:
            headers["Idempotent-Replayed"] = "true"
        self.send_json(status, payload, extra_headers=headers)


def make_server(host: str, port: int, simulator: Simulator) -> SimulatorServer:
    return SimulatorServer((host, port), StripeRequestHandler, simulator)


def serve(
    *,
    host: str = DEFAULT_HOST,
    port: int = DEFAULT_PORT,
    api_key: str = DEFAULT_API_KEY,
    webhook_url: str | None = None,
    webhook_secret: str = DEFAULT_WEBHOOK_SECRET,
    auto_confirm: bool = False,
    auto_confirm_delay: float = DEFAULT_AUTO_CONFIRM_DELAY,
    latency: float = 0.0,
    error_rate: float = 0.0,
    seed: int | None = None,
    state_file: Path | None = None,
    drop_pending_webhooks: bool = False,
) -> None:
    """Load the saved state, finish what it left pending, and run until SIGTERM or SIGINT."""
    simulator = Simulator(
        api_key=api_key,
        webhook_url=webhook_url,
        webhook_secret=webhook_secret,
        auto_confirm=auto_confirm,
        auto_confirm_delay=auto_confirm_delay,
        latency=latency,
        error_rate=error_rate,
        seed=seed,
        state_file=state_file,
    )
    if simulator.load():
        simulator.log(f"loaded {len(simulator.intents)} PaymentIntent(s) from {state_file}")
    if drop_pending_webhooks:
        simulator.drop_pending_webhooks()
    simulator.resume()
    server.run_until_stopped(make_server(host, port, simulator), simulator, name="stripe simulator")


def add_arguments(
    parser: argparse.ArgumentParser,
    environment: Mapping[str, str] | None = None,
    preferred_defaults: Mapping[str, Any] | None = None,
) -> None:
    """Declare the options; defaults come from preferred_defaults, the environment, built-ins."""
    default = server.option_defaults(os.environ if environment is None else environment, preferred_defaults)
    parser.add_argument("--host", default=default("host", None, DEFAULT_HOST))
    parser.add_argument("--port", type=int, default=int(default("port", "STRIPE_SIM_PORT", DEFAULT_PORT)))
    parser.add_argument("--api-key", default=default("api_key", "STRIPE_SECRET_KEY", DEFAULT_API_KEY))
    parser.add_argument("--webhook-url", default=default("webhook_url", "STRIPE_SIM_WEBHOOK_URL", None))
    parser.add_argument(
        "--webhook-secret", default=default("webhook_secret", "STRIPE_WEBHOOK_SECRET", DEFAULT_WEBHOOK_SECRET)
    )
    parser.add_argument(
        "--auto-confirm", action="store_true", help="confirm each new PaymentIntent with pm_card_visa"
    )
    parser.add_argument(
        "--auto-confirm-delay", type=seconds, default=DEFAULT_AUTO_CONFIRM_DELAY, help="seconds before it"
    )
    parser.add_argument("--latency", type=seconds, default=0.0, help="seconds added before each API answer")
    parser.add_argument("--error-rate", type=rate, default=0.0, help="fraction of API calls answered 500")
    parser.add_argument("--seed", type=int, default=None, help="seed for reproducible fault injection")
    server.add_state_arguments(parser, name="stripe")


def options_from(parsed: Mapping[str, Any]) -> dict[str, Any]:
    return server.options_from(parsed, OPTION_NAMES)


def main(arguments: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sandbox.stripe", description=__doc__.splitlines()[0])
    add_arguments(parser)
    serve(**options_from(vars(parser.parse_args(arguments))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
