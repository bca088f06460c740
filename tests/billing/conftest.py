import pytest

from tests.processes import start_stripe_simulator


@pytest.fixture(scope="session")
def stripe_process():  # type: ignore[no-untyped-def]
    running = start_stripe_simulator()
    yield running
    running.stop()


@pytest.fixture
def stripe_sim(stripe_process, settings):  # type: ignore[no-untyped-def]
    """The Stripe simulator, reset, with settings pointing the SDK at it."""
    settings.STRIPE_API_BASE = stripe_process.url
    settings.STRIPE_MAX_ATTEMPTS = 3
    settings.STRIPE_TIMEOUT_SECONDS = 5
    stripe_process.reset()
    stripe_process.control(auto_confirm=False, drop_next_webhooks=0, down=False, error_rate=0, latency=0)
    return stripe_process
