from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.sandbox.wire import WebhookReceiver, running_receiver


@pytest.fixture
def webhook_receiver() -> Iterator[WebhookReceiver]:
    with running_receiver() as receiver:
        yield receiver
