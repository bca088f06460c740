"""The mail-order pharmacy simulator's HTTP API (`/v2`, plus the `/_control`-style operator
endpoints), serve(), and the command-line options shared with the management command."""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import re
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from http import HTTPStatus
from pathlib import Path
from typing import Any

from sandbox import server
from sandbox.mailorder.contract import API_KEY_HEADER, ERRORS, US_STATES, ApiError
from sandbox.mailorder.simulator import (
    DEFAULT_API_KEY,
    DEFAULT_HANG_SECONDS,
    DEFAULT_STEP_DELAY_SECONDS,
    Order,
    Simulator,
    iso_time,
)
from sandbox.server import SimulatorHandler, SimulatorServer, rate, seconds

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8766
MAXIMUM_BODY_BYTES = 256 * 1024

OPTION_NAMES = (
    "host",
    "port",
    "api_key",
    "latency",
    "error_rate",
    "timeout_rate",
    "hang",
    "step_delay",
    "out_of_stock",
    "licensed_states",
    "seed",
    "state_file",
)

ORDERS_PATH = "/v2/orders"
INVENTORY_PATH = "/v2/inventory.csv"
ORDER_PATH = re.compile(r"/v2/orders/(MO-\d{1,12})")
CANCEL_PATH = re.compile(r"/v2/orders/(MO-\d{1,12})/cancel")


class MailOrderRequestHandler(SimulatorHandler):
    server_version = "MailOrderPharmacySimulator/2.0"
    maximum_body_bytes = MAXIMUM_BODY_BYTES
    _body: bytes | None = b""

    @property
    def simulator(self) -> Simulator:
        return self.server.simulator

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        if match := ORDER_PATH.fullmatch(path):
            self._api(lambda: self._send_order(HTTPStatus.OK, self.simulator.order(match.group(1))))
        elif path == INVENTORY_PATH:
            self._api(self._inventory)
        elif path == "/health":
            self.send_json(HTTPStatus.OK, {"status": "ok"})
        elif path == "/_stats":
            self.send_json(HTTPStatus.OK, self.simulator.stats())
        elif path == "/_control":
            self.send_json(HTTPStatus.OK, self.simulator.knobs())
        else:
            self._send_error(
                ApiError("METHOD_NOT_ALLOWED" if path in {ORDERS_PATH, "/_reset"} else "NOT_FOUND")
            )

    def do_POST(self) -> None:
        path = self.path.split("?", 1)[0]
        if path == ORDERS_PATH:
            self._api(self._submit, with_body=True)
        elif match := CANCEL_PATH.fullmatch(path):
            self._api(lambda: self._send_order(HTTPStatus.OK, self.simulator.cancel_order(match.group(1))))
        elif path == "/_control":
            self.answer_control(self.simulator, self.read_body())
        elif path == "/_stock":
            self._set_stock()
        elif path == "/_reset":
            self.read_body()
            self.simulator.reset()
            self.send_json(HTTPStatus.OK, self.simulator.stats())
        else:
            known = path in {INVENTORY_PATH, "/health", "/_stats"} or ORDER_PATH.fullmatch(path) is not None
            self._send_error(ApiError("METHOD_NOT_ALLOWED" if known else "NOT_FOUND"))

    def _api(self, answer: Callable[[], None], *, with_body: bool = False) -> None:
        """The vendor API's common path: count, latency, faults, the API key, then `answer`;
        an ApiError becomes the vendor's error body."""
        simulator = self.simulator
        simulator.record_request()
        self._body = self.read_body() if with_body or self.command == "POST" else b""
        try:
            if self._body is None:
                raise ApiError("PAYLOAD_TOO_LARGE")
            simulator.sleep(simulator.knobs()["latency"])
            fault = simulator.injected_fault()
            if fault == "GATEWAY_TIMEOUT":
                simulator.sleep(simulator.knobs()["hang"])
            if fault is not None:
                raise ApiError(fault)
            if not simulator.is_authorized(self.headers.get(API_KEY_HEADER)):
                raise ApiError("UNAUTHORIZED")
            answer()
        except ApiError as error:
            simulator.refused(error.code)
            self._send_error(error)

    def _submit(self) -> None:
        idempotency_key = (self.headers.get("Idempotency-Key") or "").strip()
        if not idempotency_key or len(idempotency_key) > 255:
            raise ApiError("IDEMPOTENCY_KEY_REQUIRED")
        order, replayed = self.simulator.submit_order(idempotency_key, self._body or b"")
        if replayed:
            self._send_order(HTTPStatus.OK, order, replayed=True)
        else:
            self._send_order(HTTPStatus.CREATED, order)

    def _inventory(self) -> None:
        as_of = iso_time(time.time())
        text = io.StringIO()
        writer = csv.writer(text, lineterminator="\n")
        writer.writerow(["product_code", "code_type", "quantity", "as_of"])
        for code, code_type, quantity in self.simulator.inventory():
            writer.writerow([code, code_type, quantity, as_of])
        body = text.getvalue().encode("utf-8")
        self.send_response(HTTPStatus.OK)
        self.send_header("Content-Type", "text/csv; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _set_stock(self) -> None:
        try:
            levels = json.loads(self.read_body() or b"{}")
            if not isinstance(levels, dict):
                raise ValueError("body must be a JSON object of product code to quantity")
            stock = self.simulator.set_stock(levels)
        except ValueError as error:
            self.send_json(HTTPStatus.BAD_REQUEST, {"error": str(error)})
            return
        self.send_json(HTTPStatus.OK, stock)

    def _send_order(self, status: HTTPStatus, order: Order, *, replayed: bool = False) -> None:
        self.send_json(
            status, order.as_json(), extra_headers={"Idempotent-Replayed": "true"} if replayed else None
        )

    def _send_error(self, error: ApiError) -> None:
        kind = ERRORS[error.code]
        headers = (
            {"WWW-Authenticate": f'ApiKey header="{API_KEY_HEADER}"'} if error.code == "UNAUTHORIZED" else {}
        )
        if error.code in {"SERVICE_UNAVAILABLE", "RATE_LIMITED"}:
            headers["Retry-After"] = "1"
        self.send_json(kind.status, error.body(), extra_headers=headers)


def make_server(host: str, port: int, simulator: Simulator) -> SimulatorServer:
    """Bind (port 0 picks a free port) without serving; call serve_forever()."""
    return SimulatorServer((host, port), MailOrderRequestHandler, simulator)


def serve(
    *,
    host: str = DEFAULT_HOST,
    port: int = DEFAULT_PORT,
    api_key: str = DEFAULT_API_KEY,
    latency: float = 0.0,
    error_rate: float = 0.0,
    timeout_rate: float = 0.0,
    hang: float = DEFAULT_HANG_SECONDS,
    step_delay: float = DEFAULT_STEP_DELAY_SECONDS,
    out_of_stock: Sequence[str] = (),
    licensed_states: Sequence[str] | None = None,
    seed: int | None = None,
    state_file: Path | None = None,
) -> None:
    """Load the saved state and run until SIGTERM or SIGINT."""
    simulator = Simulator(
        api_key=api_key,
        latency=latency,
        error_rate=error_rate,
        timeout_rate=timeout_rate,
        hang=hang,
        step_delay=step_delay,
        out_of_stock=out_of_stock,
        licensed_states=licensed_states,
        seed=seed,
        state_file=state_file,
    )
    if simulator.load():
        simulator.log(f"loaded {simulator.stats()['orders']} order(s) from {state_file}")
    server.run_until_stopped(
        make_server(host, port, simulator), simulator, name="mail-order pharmacy simulator"
    )


def _code_list(text: str) -> list[str]:
    return [code.strip() for code in text.split(",") if code.strip()]


def _state_list(text: str) -> list[str]:
    listed = [state.strip().upper() for state in text.split(",") if state.strip()]
    unknown = sorted(set(listed) - US_STATES)
    if unknown:
        raise argparse.ArgumentTypeError(f"not USPS state codes: {', '.join(unknown)}")
    return listed


def add_arguments(
    parser: argparse.ArgumentParser,
    environment: Mapping[str, str] | None = None,
    preferred_defaults: Mapping[str, Any] | None = None,
) -> None:
    """Declare the simulator options; shared by main() and the Django command. Defaults come
    from ``preferred_defaults`` (non-None values), then the environment, then built-in values."""
    default = server.option_defaults(os.environ if environment is None else environment, preferred_defaults)
    parser.add_argument("--host", default=default("host", None, DEFAULT_HOST))
    parser.add_argument("--port", type=int, default=int(default("port", "MAILORDER_SIM_PORT", DEFAULT_PORT)))
    parser.add_argument("--api-key", default=default("api_key", "MAILORDER_API_KEY", DEFAULT_API_KEY))
    parser.add_argument("--latency", type=seconds, default=0.0, help="seconds added before each API answer")
    parser.add_argument("--error-rate", type=rate, default=0.0, help="fraction of API requests answered 503")
    parser.add_argument("--timeout-rate", type=rate, default=0.0, help="fraction of API requests that hang")
    parser.add_argument(
        "--hang", type=seconds, default=DEFAULT_HANG_SECONDS, help="seconds a hanging request sleeps"
    )
    parser.add_argument(
        "--step-delay",
        type=seconds,
        default=float(default("step_delay", "MAILORDER_STEP_DELAY", DEFAULT_STEP_DELAY_SECONDS)),
        help="seconds an order spends in each status before the next",
    )
    # A string default goes through `type` too, so a bad environment value is refused as an
    # argument would be.
    parser.add_argument(
        "--out-of-stock",
        type=_code_list,
        default=default("out_of_stock", "MAILORDER_OUT_OF_STOCK", []),
        help="comma-separated product codes refused as OUT_OF_STOCK",
    )
    parser.add_argument(
        "--licensed-states",
        type=_state_list,
        default=default("licensed_states", "MAILORDER_LICENSED_STATES", None),
        help="comma-separated USPS codes the pharmacy ships to (default: all)",
    )
    parser.add_argument("--seed", type=int, default=None, help="seed for reproducible fault injection")
    server.add_state_arguments(parser, name="mailorder", webhooks=False)


def options_from(parsed: Mapping[str, Any]) -> dict[str, Any]:
    """Pick serve()'s keyword arguments out of parsed options."""
    return server.options_from(parsed, OPTION_NAMES)


def main(arguments: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m sandbox.mailorder",
        description="Mail-order pharmacy simulator: a US mail-order pharmacy's JSON order API.",
    )
    add_arguments(parser)
    serve(**options_from(vars(parser.parse_args(arguments))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
