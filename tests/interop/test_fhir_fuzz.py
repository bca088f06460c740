"""Fuzzing $process-message and the reads: whatever arrives, the answer is never a 5xx and is
always FHIR JSON (an OperationOutcome, or a Bundle when the message was accepted)."""

from __future__ import annotations

import json
import os
import uuid
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.interop.test_fhir_intake import ERD_ORDER, FHIR_JSON, REPEAT_ORDER, eps_clinic, example, post

pytestmark = pytest.mark.django_db

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "100"))
FUZZ_SETTINGS = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False)
    | st.text(max_size=40)
    | st.sampled_from(
        ["", "Bundle", "message", "prescription-order", "urn:uuid:x", "Patient/1", "9449304130"]
    ),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4)
    ),
    max_leaves=12,
)


def _paths(value: Any, prefix: tuple = ()) -> list[tuple]:
    found = [prefix]
    if isinstance(value, dict):
        for key, child in value.items():
            found.extend(_paths(child, (*prefix, key)))
    elif isinstance(value, list):
        for index, child in enumerate(value):
            found.extend(_paths(child, (*prefix, index)))
    return found


BASES = {name: example(name) for name in (REPEAT_ORDER, ERD_ORDER)}
PATHS = {name: _paths(body)[1:] for name, body in BASES.items()}


@st.composite
def mutated_messages(draw: st.DrawFn) -> dict:
    name = draw(st.sampled_from(sorted(BASES)))
    message = json.loads(json.dumps(BASES[name]))
    if draw(st.booleans()):
        message["identifier"]["value"] = str(uuid.uuid4())
    for _ in range(draw(st.integers(min_value=1, max_value=4))):
        path = draw(st.sampled_from(PATHS[name]))
        parent = message
        try:
            for step in path[:-1]:
                parent = parent[step]
            if draw(st.booleans()) and isinstance(parent, dict):
                parent.pop(path[-1], None)
            else:
                parent[path[-1]] = draw(json_values)
        except (KeyError, IndexError, TypeError):
            continue  # an earlier mutation removed or replaced this path
    return message


def _assert_fhir_answer(response) -> None:  # type: ignore[no-untyped-def]
    assert response.status_code < 500, response.content[:500]
    assert response["Content-Type"] == FHIR_JSON
    assert response.json()["resourceType"] in ("OperationOutcome", "Bundle")


@pytest.fixture
def clinic(db):  # type: ignore[no-untyped-def]
    return eps_clinic()


@FUZZ_SETTINGS
@given(message=mutated_messages())
def test_mutated_eps_messages_never_get_a_5xx(clinic, message):
    _assert_fhir_answer(post(clinic, message))


@FUZZ_SETTINGS
@given(body=json_values)
def test_arbitrary_json_never_gets_a_5xx(clinic, body):
    _assert_fhir_answer(post(clinic, body))


@FUZZ_SETTINGS
@given(
    body=st.binary(max_size=200),
    content_type=st.sampled_from(
        [FHIR_JSON, f"{FHIR_JSON}; charset=utf-8", "application/json", "application/octet-stream"]
    ),
)
def test_arbitrary_bytes_never_get_a_5xx(clinic, body, content_type):
    _assert_fhir_answer(post(clinic, body, content_type=content_type))


@FUZZ_SETTINGS
@given(resource_id=st.text(max_size=30), identifier=st.text(max_size=60))
def test_arbitrary_reads_never_get_a_5xx(clinic, resource_id, identifier):
    quoted = resource_id.replace("/", "").replace("?", "").replace("#", "") or "x"
    _assert_fhir_answer(clinic.api.get(f"/fhir/R4/MedicationRequest/{quoted}"))
    _assert_fhir_answer(clinic.api.get("/fhir/R4/MedicationRequest", {"identifier": identifier}))


@pytest.mark.parametrize(
    "mutate",
    [
        lambda message: message["entry"][1]["resource"].__setitem__("resourceType", ["Patient"]),
        lambda message: message["entry"][1]["resource"].__setitem__("resourceType", {"x": 1}),
        lambda message: message["entry"][0]["resource"]["eventCoding"].__setitem__("code", ["order"]),
        # fhir.resources answers this one with an AttributeError, not a ValidationError.
        lambda message: message["entry"][0]["resource"]["source"].__setitem__("endpoint", False),
    ],
    ids=["resource-type-list", "resource-type-object", "event-code-list", "url-boolean"],
)
def test_a_resource_type_or_event_code_that_is_not_a_string_is_refused_not_a_5xx(clinic, mutate):
    message = json.loads(json.dumps(BASES[REPEAT_ORDER]))
    message["identifier"]["value"] = str(uuid.uuid4())
    mutate(message)

    response = post(clinic, message)

    _assert_fhir_answer(response)
    assert response.status_code == 400
