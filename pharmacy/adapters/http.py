"""The HTTP adapter for the pharmacy gateway: the only module that talks to it."""

from __future__ import annotations

import json
from typing import Any

import requests
from django.conf import settings

from pharmacy.gateway import GatewayRejected, GatewayUnavailable, OrderAcknowledgement, OrderAlreadyDispensed


class HttpGateway:
    def __init__(self, *, base_url: str, api_key: str, timeout: float) -> None:
        self.base_url = base_url.rstrip("/")
        self.api_key = api_key
        self.timeout = timeout

    def order_submit(self, *, bundle: dict[str, Any], idempotency_key: str) -> OrderAcknowledgement:
        try:
            response = requests.post(
                f"{self.base_url}/orders",
                data=json.dumps(bundle, separators=(",", ":")),
                headers={
                    "Content-Type": "application/fhir+json",
                    "Idempotency-Key": idempotency_key,
                    "Authorization": f"Bearer {self.api_key}",
                },
                timeout=self.timeout,
            )
        except (requests.ConnectionError, requests.Timeout) as error:
            raise GatewayUnavailable(f"gateway unreachable: {type(error).__name__}") from error
        if response.status_code >= 500 or response.status_code == 429:
            raise GatewayUnavailable(f"gateway answered {response.status_code}")
        if response.status_code >= 400:
            raise GatewayRejected(
                f"gateway refused the order: {response.status_code} {_diagnostics(response)}"
            )
        body = response.json()
        return OrderAcknowledgement(
            order_id=str(body["order_id"]),
            replayed=response.headers.get("Idempotent-Replayed") == "true",
        )

    def order_cancel(self, *, order_id: str, idempotency_key: str) -> None:
        """Cancel an order not yet dispensed; cancelling twice is harmless (200 both times)."""
        try:
            response = requests.post(
                f"{self.base_url}/orders/{order_id}/cancel",
                headers={"Idempotency-Key": idempotency_key, "Authorization": f"Bearer {self.api_key}"},
                timeout=self.timeout,
            )
        except (requests.ConnectionError, requests.Timeout) as error:
            raise GatewayUnavailable(f"gateway unreachable: {type(error).__name__}") from error
        if response.status_code >= 500 or response.status_code == 429:
            raise GatewayUnavailable(f"gateway answered {response.status_code}")
        if response.status_code == 409:
            raise OrderAlreadyDispensed(f"gateway refused the cancellation: {_diagnostics(response)}")
        if response.status_code >= 400:
            raise GatewayRejected(
                f"gateway refused the cancellation: {response.status_code} {_diagnostics(response)}"
            )


def _diagnostics(response: requests.Response) -> str:
    try:
        issues = response.json().get("issue", [])
    except ValueError:
        return ""
    return "; ".join(str(issue.get("diagnostics", ""))[:200] for issue in issues)


def gateway_from_settings() -> HttpGateway:
    return HttpGateway(
        base_url=settings.GATEWAY_URL,
        api_key=settings.GATEWAY_API_KEY,
        timeout=settings.GATEWAY_TIMEOUT_SECONDS,
    )
