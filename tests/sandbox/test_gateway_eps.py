"""The gateway simulator as the NHS side: EPS rules at the door, every message kept at
/_messages (a real simulator process, over HTTP)."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import requests
from django.conf import settings

EXAMPLES = Path(__file__).resolve().parents[1] / "fixtures" / "fhir-examples"
ERD_EXAMPLE = json.loads((EXAMPLES / "eps-api__spec_prepare_eRD-primary-example-req.json").read_text())
SCRIPTLINE_MESSAGE = {
    "resourceType": "Bundle",
    "id": "scriptline-1",
    "type": "message",
    "entry": [
        {
            "fullUrl": "urn:uuid:8f8f8f8f-8f8f-4f8f-8f8f-8f8f8f8f8f8f",
            "resource": {
                "resourceType": "MessageHeader",
                "eventCoding": {
                    "system": "https://scriptline.example/CodeSystem/message-event",
                    "code": "prescription-order",
                },
            },
        }
    ],
}


def post(url: str, bundle: dict[str, Any], key: str) -> requests.Response:
    return requests.post(
        f"{url}/orders",
        data=json.dumps(bundle),
        headers={
            "Content-Type": "application/fhir+json",
            "Authorization": f"Bearer {settings.GATEWAY_API_KEY}",
            "Idempotency-Key": key,
        },
        timeout=10,
    )


def with_wrong_check_character(bundle: dict[str, Any]) -> dict[str, Any]:
    broken = copy.deepcopy(bundle)
    for entry in broken["entry"]:
        if entry["resource"]["resourceType"] == "MedicationRequest":
            group = entry["resource"]["groupIdentifier"]
            group["value"] = group["value"][:-1] + "Y"
    return broken


def test_a_conforming_eps_message_is_accepted_and_a_broken_one_refused_with_an_operation_outcome(
    gateway,
) -> None:  # type: ignore[no-untyped-def]
    accepted = post(gateway.url, ERD_EXAMPLE, "key-good")
    refused = post(gateway.url, with_wrong_check_character(ERD_EXAMPLE), "key-bad")

    assert accepted.status_code == 202
    assert refused.status_code == 400
    assert refused.headers["Content-Type"] == "application/fhir+json"
    outcome = refused.json()
    assert outcome["resourceType"] == "OperationOutcome"
    assert [issue["details"]["coding"][0]["code"] for issue in outcome["issue"]] == ["INVALID_CHECKSUM"] * 4
    stats = gateway.stats()
    assert (stats["orders"], stats["refused_by_eps_rules"]) == (1, 1)
    assert set(stats["orders_by_key"]) == {"key-good"}


def test_a_scriptline_profile_message_is_not_held_to_nhs_rules(gateway) -> None:  # type: ignore[no-untyped-def]
    response = post(gateway.url, SCRIPTLINE_MESSAGE, "key-us")

    assert response.status_code == 202
    assert gateway.stats()["refused_by_eps_rules"] == 0


def test_every_received_message_is_served_newest_first_until_reset(gateway) -> None:  # type: ignore[no-untyped-def]
    broken = with_wrong_check_character(ERD_EXAMPLE)
    post(gateway.url, ERD_EXAMPLE, "key-1")
    post(gateway.url, broken, "key-2")
    post(gateway.url, SCRIPTLINE_MESSAGE, "key-3")
    post(gateway.url, ERD_EXAMPLE, "key-1")  # a replay is received too

    messages = gateway.messages()

    assert messages == [ERD_EXAMPLE, SCRIPTLINE_MESSAGE, broken, ERD_EXAMPLE]
    gateway.reset()
    assert gateway.messages() == []


def test_a_body_that_is_not_a_bundle_is_not_kept(gateway) -> None:  # type: ignore[no-untyped-def]
    response = requests.post(
        f"{gateway.url}/orders",
        data=b"not json",
        headers={"Authorization": f"Bearer {settings.GATEWAY_API_KEY}", "Idempotency-Key": "key-x"},
        timeout=10,
    )

    assert response.status_code == 400
    assert gateway.messages() == []
