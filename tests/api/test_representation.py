"""Detail responses come from a serializer built once per thread, with the same output."""

from __future__ import annotations

import threading

import pytest
from rest_framework import serializers

from api.representation import representation
from events.services import events_for
from prescriptions import selectors
from prescriptions.serializers import PrescriptionDetailSerializer
from tests.conftest import prescription_body

pytestmark = pytest.mark.django_db


def test_a_kept_serializer_answers_as_a_new_one_for_each_instance(clinic_a, patient_a, paracetamol):
    for quantity in (28, 56):
        body = prescription_body(patient_a.pk, clinic_a.prescriber.pk, paracetamol)
        body["items"][0]["quantity"] = quantity
        response = clinic_a.api.post(
            "/api/v1/prescriptions/", body, format="json", HTTP_IDEMPOTENCY_KEY=f"key-{quantity}"
        )
        assert response.status_code == 201, response.content
    prescriptions = list(selectors.prescription_list(clinic=clinic_a.clinic).order_by("pk"))
    for prescription in prescriptions:
        prescription.timeline_events = events_for(  # type: ignore[attr-defined]
            aggregate_type="prescription", aggregate_id=prescription.pk
        )

    kept = [representation(PrescriptionDetailSerializer, prescription) for prescription in prescriptions]

    assert kept == [dict(PrescriptionDetailSerializer(prescription).data) for prescription in prescriptions]
    assert [answer["items"][0]["quantity"] for answer in kept] == ["28.00", "56.00"]


def test_the_serializer_is_built_once_per_thread(monkeypatch):
    built: list[int] = []

    class Counting(serializers.Serializer):
        name = serializers.CharField()

        def __init__(self, *args: object, **kwargs: object) -> None:
            built.append(threading.get_ident())
            super().__init__(*args, **kwargs)

    class Thing:
        def __init__(self, name: str) -> None:
            self.name = name

    assert [representation(Counting, Thing(name)) for name in ("a", "b")] == [{"name": "a"}, {"name": "b"}]
    other = threading.Thread(target=lambda: representation(Counting, Thing("c")))
    other.start()
    other.join()

    assert len(built) == 2
    assert built[0] != built[1]


def test_kept_fields_are_built_once_and_read_the_context_of_the_instance_in_use():
    from api.representation import FieldsKeptPerThread

    built: list[str] = []

    class Seen(serializers.CharField):
        def __init__(self, **kwargs: object) -> None:
            built.append("field")
            super().__init__(**kwargs)

        def to_internal_value(self, data: object) -> str:
            return f"{data} for {self.context['clinic']}"

    class Child(serializers.Serializer):
        name = Seen()

    class Body(FieldsKeptPerThread, serializers.Serializer):
        name = Seen()
        items = Child(many=True)

    answers = []
    for clinic in ("clinic A", "clinic B"):
        body = Body(data={"name": "x", "items": [{"name": "y"}]}, context={"clinic": clinic})
        assert body.is_valid(), body.errors
        answers.append(body.validated_data)
    failing = Body(data={"items": "not a list"}, context={"clinic": "clinic C"})

    assert answers == [
        {"name": "x for clinic A", "items": [{"name": "y for clinic A"}]},
        {"name": "x for clinic B", "items": [{"name": "y for clinic B"}]},
    ]
    assert not failing.is_valid()
    assert set(failing.errors) == {"name", "items"}
    # Declared twice (the class attributes), copied once for the kept instance's fields.
    assert len(built) == 4
