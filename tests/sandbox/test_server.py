"""What every simulator's HTTP server does alike."""

from __future__ import annotations

import socket
import threading

import pytest

from sandbox.gateway import GatewayRequestHandler
from sandbox.mailorder.app import MailOrderRequestHandler
from sandbox.server import SimulatorHandler, SimulatorServer
from sandbox.stripe import StripeRequestHandler


@pytest.mark.parametrize("handler", [StripeRequestHandler, GatewayRequestHandler, MailOrderRequestHandler])
def test_a_simulator_answers_with_nagle_off(handler: type[SimulatorHandler]) -> None:
    """Every simulator's accepted socket has TCP_NODELAY (why: SimulatorHandler)."""
    seen: list[int] = []

    class Recording(handler):  # type: ignore[valid-type,misc]
        def setup(self) -> None:
            super().setup()
            seen.append(self.connection.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))

    server = SimulatorServer(("127.0.0.1", 0), Recording, simulator=None)
    try:
        serving = threading.Thread(target=server.handle_request, daemon=True)
        serving.start()
        socket.create_connection(("127.0.0.1", server.server_port), timeout=5).close()
        serving.join(timeout=5)
    finally:
        server.server_close()
    assert len(seen) == 1
    assert seen[0] != 0
