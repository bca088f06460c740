"""Responses from serializers built once per thread.

DRF builds every field of a serializer, and of each nested serializer, afresh for each
serializer instance (a deep copy of the declared fields plus the model's introspection), which
is most of the cost of one detail response. A serializer that needs no context (its output
depends on the instance alone) can be built once per thread and its `to_representation` reused:
fields are read-only once bound.
"""

from __future__ import annotations

import threading
from typing import Any

from rest_framework import serializers

_built = threading.local()


def representation(serializer_class: type[serializers.Serializer], instance: Any) -> dict[str, Any]:
    """`serializer_class(instance).data`, from this thread's instance of `serializer_class`."""
    kept: dict[type[serializers.Serializer], serializers.Serializer] | None = getattr(
        _built, "serializers", None
    )
    if kept is None:
        kept = _built.serializers = {}
    serializer = kept.get(serializer_class)
    if serializer is None:
        serializer = kept[serializer_class] = serializer_class()
    return dict(serializer.to_representation(instance))
