"""The journeys run on committed data, as real processes do: their clinic requests log in as
the API role (accounts.tenancy), as they would in production."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def _api_login_connection(settings):  # type: ignore[no-untyped-def]
    settings.API_LOGIN_CONNECTION = True
