"""What the partner simulators share, written once: the threaded HTTP server and its
run-until-signalled loop, the argparse types and option defaults, the fault knobs and their
validation, the request handler's body reading and JSON answers, signed webhook delivery with
retries, and the state file that lets a restarted simulator remember what it knew. Standard
library plus `common.signing`, so a simulator runs as `python -m sandbox.<name>` with no Django
settings or database."""

from __future__ import annotations

import argparse
import contextlib
import enum
import hmac
import json
import os
import random
import signal
import sys
import tempfile
import threading
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar, TypeVar

WEBHOOK_TIMEOUT_SECONDS = 5.0
WEBHOOK_RETRY_DELAYS_SECONDS = (0.5, 1.0, 2.0, 4.0, 8.0)
JSON_CONTENT_TYPE = "application/json"
# Where `python -m sandbox.<name>` and the management commands keep state unless told otherwise.
DEFAULT_STATE_DIRECTORY = Path(__file__).resolve().parent.parent / "var" / "sandbox"
STATE_VERSION = 1

Log = Callable[[str], None]
Validator = Callable[[str, Any], Any]


# Knob validation: a bad `POST /_control` is refused whole, with a message naming the knob.


def number(name: str, value: Any, upper_bound: float | None = None) -> float:
    # bool is an int subclass; "true" must not silently become 1.0 seconds.
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{name} must be a number")
    if value < 0 or (upper_bound is not None and value > upper_bound):
        limit = f"between 0 and {upper_bound}" if upper_bound is not None else "zero or more"
        raise ValueError(f"{name} must be {limit}")
    return float(value)


def fraction(name: str, value: Any) -> float:
    return number(name, value, upper_bound=1.0)


def count(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{name} must be a whole number, zero or more")
    return value


def flag(name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"{name} must be true or false")
    return value


def url(name: str, value: Any) -> str | None:
    if value is None or value == "":
        return None
    if not isinstance(value, str) or not value.startswith(("http://", "https://")):
        raise ValueError(f"{name} must be an http(s) URL or null")
    return value


FaultT = TypeVar("FaultT")


class Delivery(enum.Enum):
    SENT = "sent"
    FAILED = "failed"
    # The simulator is shutting down: the webhook stays pending for the next run.
    INTERRUPTED = "interrupted"


class StateFile:
    """A simulator's state as one JSON file, replaced atomically (a temporary file in the same
    directory, then a rename), so a simulator killed at any moment leaves the previous state or
    the new one, never half of one. Not fsynced: it survives a killed process, not a power cut."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def load(self) -> dict[str, Any] | None:
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return None
        state = json.loads(text)
        if not isinstance(state, dict) or state.get("version") != STATE_VERSION:
            raise ValueError(f"{self.path} is not a state file of this simulator version")
        return state

    def save(self, state: Mapping[str, Any]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        descriptor, temporary = tempfile.mkstemp(
            dir=self.path.parent, prefix=f".{self.path.name}.", suffix=".tmp"
        )
        try:
            with os.fdopen(descriptor, "w", encoding="utf-8") as file:
                json.dump({"version": STATE_VERSION, **state}, file, separators=(",", ":"))
            os.replace(temporary, self.path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temporary)
            raise


class Simulator:
    """Fault knobs, the API key, a seeded random source, a lock, prompt shutdown, signed
    webhook delivery and the state file; the gateway and Stripe simulators add their state and
    API on top, and say how it is written (`snapshot`) and read back (`restore`)."""

    knob_validators: ClassVar[Mapping[str, Validator]] = {}
    # Each simulator's counters (read through /_stats); record_request and fault_draw count here.
    _counters: Any

    def __init__(
        self,
        *,
        api_key: str,
        webhook_secret: str,
        knobs: Any,
        seed: int | None,
        log: Log,
        state_file: Path | None = None,
    ) -> None:
        self.api_key = api_key
        self.webhook_secret = webhook_secret
        self.log = log
        self._seed = seed
        self._random = random.Random(seed)
        # One re-entrant lock serialises state changes: requests racing on one idempotency key
        # can never both execute, and the simulated volumes are tiny.
        self._lock = threading.RLock()
        self._stopping = threading.Event()
        self._knobs = knobs
        self._opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        self._state_file = StateFile(state_file) if state_file is not None else None

    # State

    def snapshot(self) -> dict[str, Any]:
        """Everything a restart must remember, as JSON-ready data (caller holds the lock)."""
        raise NotImplementedError

    def restore(self, state: Mapping[str, Any]) -> None:
        """Take back what snapshot() wrote (called once, before serving)."""
        raise NotImplementedError

    def save(self) -> None:
        """Write the state file after a change (caller holds the lock, so writes keep order)."""
        if self._state_file is not None:
            self._state_file.save(self.snapshot())

    def load(self) -> bool:
        """Restore the saved state, if there is one; True when there was."""
        state = self._state_file.load() if self._state_file is not None else None
        if state is None:
            return False
        with self._lock:
            self.restore(state)
        return True

    # Knobs

    def knobs(self) -> dict[str, Any]:
        with self._lock:
            return dict(vars(self._knobs))

    def update_knobs(self, changes: Mapping[str, Any]) -> dict[str, Any]:
        """Validate every change first so a bad request changes nothing."""
        unknown = sorted(set(changes) - set(self.knob_validators))
        if unknown:
            raise ValueError(f"unknown knob(s): {', '.join(unknown)}")
        validated = {name: self.knob_validators[name](name, value) for name, value in changes.items()}
        with self._lock:
            for name, value in validated.items():
                setattr(self._knobs, name, value)
        return self.knobs()

    # Lifetime

    def close(self) -> None:
        """Wake every sleeping hang, advancer and retry so shutdown is prompt."""
        self._stopping.set()

    def sleep(self, seconds: float) -> bool:
        """Sleep unless closed meanwhile; True when the full time elapsed."""
        if seconds <= 0:
            return not self._stopping.is_set()
        return not self._stopping.wait(seconds)

    def start_thread(self, target: Callable[..., None], *args: Any, name: str | None = None) -> None:
        threading.Thread(target=target, args=args, name=name, daemon=True).start()

    # Requests

    def record_request(self) -> None:
        with self._lock:
            self._counters.requests += 1

    def fault_draw(self, faults: Sequence[tuple[str, str, FaultT]]) -> FaultT | None:
        """Which injected fault this request meets, if any: `faults` are (rate knob, counter,
        answer), and one draw partitions requests so each rate is its exact share. A simulator
        that is `down` answers the first fault to every request."""
        with self._lock:
            knobs, counters = self._knobs, self._counters
            draw = self._random.random()
            bound = 0.0
            for index, (rate, counter, answer) in enumerate(faults):
                bound += getattr(knobs, rate)
                if draw < bound or (index == 0 and knobs.down):
                    setattr(counters, counter, getattr(counters, counter) + 1)
                    return answer
            return None

    def is_authorized(self, authorization_header: str | None) -> bool:
        expected = f"Bearer {self.api_key}".encode()
        return hmac.compare_digest((authorization_header or "").encode(), expected)

    # Webhooks

    def webhook_headers(self, body: bytes) -> dict[str, str]:
        """The headers of one delivery attempt (the signature is made fresh for each)."""
        raise NotImplementedError

    def deliver(self, body: bytes, *, what: str) -> Delivery:
        """POST a webhook to the configured URL, retrying with backoff."""
        for retry_delay in (*WEBHOOK_RETRY_DELAYS_SECONDS, None):
            if self._stopping.is_set():
                return Delivery.INTERRUPTED
            target = self.knobs()["webhook_url"]
            outcome = self._post_webhook(target, body) if target else "no webhook url configured"
            if outcome is None:
                self.log(f"delivered {what}")
                return Delivery.SENT
            if retry_delay is None:
                break
            if not self.sleep(retry_delay):
                return Delivery.INTERRUPTED
            self.log(f"retrying {what} in {retry_delay}s ({outcome})")
        self.log(f"gave up delivering {what}")
        return Delivery.FAILED

    def _post_webhook(self, target: str, body: bytes) -> str | None:
        """POST one attempt; None on 2xx, otherwise why it failed."""
        request = urllib.request.Request(target, data=body, method="POST", headers=self.webhook_headers(body))
        try:
            with self._opener.open(request, timeout=WEBHOOK_TIMEOUT_SECONDS) as response:
                status = response.status
        except urllib.error.HTTPError as error:
            return f"HTTP {error.code}"
        except (OSError, ValueError) as error:
            return type(error).__name__
        return None if 200 <= status < 300 else f"HTTP {status}"


def log_to_stderr(prefix: str) -> Log:
    def log(message: str) -> None:
        print(f"[{prefix}] {message}", file=sys.stderr, flush=True)

    return log


class SimulatorServer(ThreadingHTTPServer):
    daemon_threads = True
    # Many clients racing on one key must not overflow the default backlog of 5.
    request_queue_size = 128

    def __init__(
        self, address: tuple[str, int], handler: type[BaseHTTPRequestHandler], simulator: Any
    ) -> None:
        self.simulator = simulator
        super().__init__(address, handler)

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host!s}:{port}"


class SimulatorHandler(BaseHTTPRequestHandler):
    """Body reading, JSON answers and the `/_control` knob endpoint."""

    server: SimulatorServer
    maximum_body_bytes: ClassVar[int] = 1024 * 1024
    # Headers and body go out in two writes; with Nagle's algorithm on, the body of a
    # keep-alive answer waits for the client's delayed ACK (40 ms on Linux), a stall no
    # real partner's server has.
    disable_nagle_algorithm = True

    def version_string(self) -> str:
        return self.server_version

    def log_message(self, format: str, *args: Any) -> None:
        # Access lines add nothing; the simulators log their own events instead.
        return

    def read_body(self) -> bytes | None:
        """The raw body, or None when it exceeds maximum_body_bytes."""
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            length = 0
        if length > self.maximum_body_bytes:
            self.close_connection = True
            return None
        return self.rfile.read(length) if length > 0 else b""

    def send_json(
        self,
        status: int,
        payload: Any,
        *,
        content_type: str = JSON_CONTENT_TYPE,
        extra_headers: Mapping[str, str] | None = None,
    ) -> None:
        body = json.dumps(payload).encode("utf-8")
        try:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            for name, value in (extra_headers or {}).items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):
            # The client gave up (typically during an injected hang); nothing to tell it.
            self.close_connection = True

    def answer_control(self, simulator: Simulator, body: bytes | None) -> None:
        """`POST /_control`: change knobs from a JSON object; 400 and no change when any is bad."""
        try:
            changes = json.loads(body or b"{}")
            if not isinstance(changes, dict):
                raise ValueError("body must be a JSON object of knob names")
            knobs = simulator.update_knobs(changes)
        except ValueError as error:
            self.send_json(HTTPStatus.BAD_REQUEST, {"error": str(error)})
            return
        self.send_json(HTTPStatus.OK, knobs)


def run_until_stopped(server: SimulatorServer, simulator: Simulator, *, name: str) -> None:
    """Serve in a thread, announce the URL on one stdout line (parents read it), and shut down
    cleanly on SIGTERM or SIGINT."""
    stop_requested = threading.Event()
    if threading.current_thread() is threading.main_thread():
        for signal_number in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signal_number, lambda number, frame: stop_requested.set())
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.1}, name=name.replace(" ", "-"), daemon=True
    )
    thread.start()
    print(f"{name} listening on {server.url}", flush=True)  # the parent process reads it
    try:
        # Poll so the main thread stays responsive to signals on every platform.
        while not stop_requested.wait(0.2):
            pass
    finally:
        simulator.close()
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


# Command-line options, shared by `python -m sandbox.<name>` and the management commands.


def rate(text: str) -> float:
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError("must be between 0 and 1")
    return value


def seconds(text: str) -> float:
    value = float(text)
    if value < 0:
        raise argparse.ArgumentTypeError("must be zero or more")
    return value


def option_defaults(
    environment: Mapping[str, str], preferred_defaults: Mapping[str, Any] | None
) -> Callable[[str, str | None, Any], Any]:
    """`default(name, variable, fallback)`: a preferred default (non-None, e.g. from Django
    settings), else the environment variable, else the built-in fallback."""
    preferred = {name: value for name, value in (preferred_defaults or {}).items() if value is not None}

    def default(name: str, variable: str | None, fallback: Any) -> Any:
        if name in preferred:
            return preferred[name]
        if variable and environment.get(variable):
            return environment[variable]
        return fallback

    return default


def add_state_arguments(parser: argparse.ArgumentParser, *, name: str, webhooks: bool = True) -> None:
    """`--state-file`, and `--drop-pending-webhooks` for a simulator that sends webhooks."""
    parser.add_argument(
        "--state-file",
        type=lambda text: Path(text) if text else None,
        default=DEFAULT_STATE_DIRECTORY / f"{name}.json",
        help=f"where state survives a restart (default var/sandbox/{name}.json; '' keeps it in memory)",
    )
    if not webhooks:
        return
    parser.add_argument(
        "--drop-pending-webhooks",
        action="store_true",
        help="start without the webhooks the last run had not delivered (a partner that lost them)",
    )


def options_from(parsed: Mapping[str, Any], names: tuple[str, ...]) -> dict[str, Any]:
    """Pick a serve() function's keyword arguments out of parsed options."""
    return {name: parsed[name] for name in names}
