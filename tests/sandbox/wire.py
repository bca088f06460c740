"""Both sides of the wire for simulator tests: plain HTTP requests to a simulator, and a local
receiver for its webhooks that answers as told."""

from __future__ import annotations

import json
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

# Tests talk to 127.0.0.1 directly, whatever proxy the environment sets.
OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def message_bundle(bundle_id: str = "bundle-1", note: str = "first") -> dict[str, Any]:
    return {
        "resourceType": "Bundle",
        "id": bundle_id,
        "type": "message",
        "entry": [
            {
                "resource": {
                    "resourceType": "MessageHeader",
                    "id": "header-1",
                    # Scriptline's own profile: the NHS rules (sandbox/eps_rules.py) do not apply.
                    "eventCoding": {"system": "https://scriptline.example/CodeSystem/message-event"},
                }
            },
            {"resource": {"resourceType": "MedicationRequest", "id": "request-1", "note": [{"text": note}]}},
        ],
    }


@dataclass
class Response:
    status: int
    headers: dict[str, str]
    body: dict[str, Any]


def request(
    method: str,
    url: str,
    payload: Any = None,
    headers: dict[str, str] | None = None,
    raw_body: bytes | None = None,
) -> Response:
    body = raw_body if raw_body is not None else (None if payload is None else json.dumps(payload).encode())
    prepared = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with OPENER.open(prepared, timeout=10) as answer:
            return Response(answer.status, dict(answer.headers), json.loads(answer.read()))
    except urllib.error.HTTPError as error:
        with error:
            return Response(error.code, dict(error.headers), json.loads(error.read()))


@dataclass
class WebhookReceiver:
    url: str
    # Status codes to answer, in order; then 503 while failing, else 200.
    planned_statuses: list[int] = field(default_factory=list)
    failing: bool = False
    deliveries: list[tuple[dict[str, str], bytes]] = field(default_factory=list)
    arrived: threading.Condition = field(default_factory=threading.Condition)

    def record(self, headers: dict[str, str], body: bytes) -> int:
        with self.arrived:
            self.deliveries.append((headers, body))
            self.arrived.notify_all()
            if self.planned_statuses:
                return self.planned_statuses.pop(0)
            return 503 if self.failing else 200

    def wait_for(self, count: int, timeout: float = 5.0) -> list[tuple[dict[str, str], bytes]]:
        with self.arrived:
            self.arrived.wait_for(lambda: len(self.deliveries) >= count, timeout=timeout)
            return list(self.deliveries)


@contextmanager
def running_receiver() -> Iterator[WebhookReceiver]:
    receiver = WebhookReceiver(url="")

    class RecordingHandler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            status = receiver.record(dict(self.headers), body)
            self.send_response(status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            return

    server = ThreadingHTTPServer(("127.0.0.1", 0), RecordingHandler)
    server.daemon_threads = True
    receiver.url = f"http://127.0.0.1:{server.server_address[1]}/webhooks/pharmacy"
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    try:
        yield receiver
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
