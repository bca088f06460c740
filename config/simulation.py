"""What the local simulators (pharmacy gateway, Stripe) share: the threaded HTTP server, the
run-until-signalled loop and the argparse types. Standard library only, so a simulator runs
as `python -m <app>.simulator` with no Django settings or database."""

from __future__ import annotations

import argparse
import signal
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Protocol


class Closable(Protocol):
    def close(self) -> None: ...


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
        return f"http://{host}:{port}"


def run_until_stopped(server: SimulatorServer, simulator: Closable, *, name: str) -> None:
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
    print(f"{name} listening on {server.url}", flush=True)  # noqa: T201 - the parent process reads it
    try:
        # Poll so the main thread stays responsive to signals on every platform.
        while not stop_requested.wait(0.2):
            pass
    finally:
        simulator.close()
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


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
