"""The HTTP adapter for the pharmacy gateway: the only module that talks to it."""

from __future__ import annotations

import json
from typing import Any

import requests

from pharmacy.gateway import (
    GatewayRejected,
    GatewayUnavailable,
    OrderAcknowledgement,
    OrderAlreadyDispensed,
    OrderStatus,
    OrderUnknown,
    PartnerCannotFill,
)

# OperationOutcome detail codes by which a pharmacy says it cannot fill an order (another may).
CANNOT_FILL_CODES = frozenset({"out-of-stock", "cannot-dispense", "not-licensed"})


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
            outcome = _operation_outcome(response)
            message = f"gateway refused the order: {response.status_code} {_diagnostics(response)}"
            cannot_fill = _cannot_fill_code(outcome)
            if cannot_fill:
                raise PartnerCannotFill(message, reason=cannot_fill.replace("-", "_"), outcome=outcome)
            raise GatewayRejected(message, outcome=outcome)
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

    def order_status(self, *, order_id: str) -> OrderStatus:
        """`GET /orders/{order_id}`: where the order is now (for webhooks that never came)."""
        try:
            response = requests.get(
                f"{self.base_url}/orders/{order_id}",
                headers={"Authorization": f"Bearer {self.api_key}"},
                timeout=self.timeout,
            )
        except (requests.ConnectionError, requests.Timeout) as error:
            raise GatewayUnavailable(f"gateway unreachable: {type(error).__name__}") from error
        if response.status_code >= 500 or response.status_code == 429:
            raise GatewayUnavailable(f"gateway answered {response.status_code}")
        if response.status_code == 404:
            raise OrderUnknown(f"gateway has no order {order_id[:80]}")
        if response.status_code >= 400:
            raise GatewayRejected(f"gateway refused the status request: {response.status_code}")
        try:
            body = response.json()
            return OrderStatus(
                status=str(body["status"]), tracking_number=str(body.get("tracking_number") or "")
            )
        except (ValueError, KeyError, TypeError) as error:
            raise GatewayUnavailable("gateway answered a status that is not JSON with a status") from error


def _diagnostics(response: requests.Response) -> str:
    try:
        issues = response.json().get("issue", [])
    except ValueError:
        return ""
    return "; ".join(str(issue.get("diagnostics", ""))[:200] for issue in issues)


# Kept with a dead letter: enough to show every rule a message broke, bounded in size.
OUTCOME_ISSUES_KEPT = 50
OUTCOME_TEXT_LENGTH = 500


def _operation_outcome(response: requests.Response) -> dict[str, Any] | None:
    """The OperationOutcome in a refusal, trimmed to what an operator needs, or None."""
    try:
        body = response.json()
    except ValueError:
        return None
    if not isinstance(body, dict) or body.get("resourceType") != "OperationOutcome":
        return None
    issues = [issue for issue in body.get("issue") or [] if isinstance(issue, dict)]
    kept = []
    for issue in issues[:OUTCOME_ISSUES_KEPT]:
        trimmed: dict[str, str | list[str]] = {
            key: str(issue[key])[:OUTCOME_TEXT_LENGTH]
            for key in ("severity", "code", "diagnostics")
            if key in issue
        }
        expression = issue.get("expression")
        if isinstance(expression, list):
            trimmed["expression"] = [str(path)[:OUTCOME_TEXT_LENGTH] for path in expression[:5]]
        codes = [
            str(coding.get("code"))[:OUTCOME_TEXT_LENGTH]
            for coding in (issue.get("details") or {}).get("coding") or []
            if isinstance(coding, dict) and coding.get("code")
        ]
        if codes:
            trimmed["details"] = codes
        kept.append(trimmed)
    return {"resourceType": "OperationOutcome", "issue": kept}


def _cannot_fill_code(outcome: dict[str, Any] | None) -> str:
    for issue in (outcome or {}).get("issue", []):
        for code in issue.get("details") or []:
            if code in CANNOT_FILL_CODES:
                return str(code)
    return ""


def stock_csv_fetch(*, url: str, headers: dict[str, str], timeout: float, max_bytes: int) -> bytes:
    """GET a partner's stock CSV file; GatewayUnavailable when it cannot be had now,
    GatewayRejected when the partner refuses or the file is larger than `max_bytes`."""
    try:
        with requests.get(
            url,
            headers={**headers, "Accept": "text/csv"},
            timeout=timeout,
            stream=True,
        ) as response:
            if response.status_code >= 500 or response.status_code == 429:
                raise GatewayUnavailable(f"stock file answered {response.status_code}")
            if response.status_code >= 400:
                raise GatewayRejected(f"stock file refused: {response.status_code}")
            content = b""
            for chunk in response.iter_content(chunk_size=65536):
                content += chunk
                if len(content) > max_bytes:
                    raise GatewayRejected(f"stock file larger than {max_bytes} bytes")
    except requests.RequestException as error:
        raise GatewayUnavailable(f"stock file unreachable: {type(error).__name__}") from error
    return content
