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

from django.utils.functional import cached_property
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


class FieldsKeptPerThread:
    """A serializer mixin: the bound fields (with every nested serializer's) are built once per
    thread and class, and each new instance takes them over, instead of DRF deep-copying and
    binding them all again for every request. Fields keep no state of a validation between
    calls; what they read of the request (`context`) they reach through their root, which is
    re-pointed here at the instance in use. One instance per class at a time per thread: a
    serializer that validates another instance of its own class must not use it."""

    @cached_property
    def fields(self) -> Any:
        kept: dict[type, Any] | None = getattr(_built, "fields", None)
        if kept is None:
            kept = _built.fields = {}
        fields = kept.get(type(self))
        if fields is None:
            fields = kept[type(self)] = super().fields  # type: ignore[misc]  # Serializer.fields
            return fields
        fields.serializer = self
        for field in fields.values():
            field.parent = self
        return fields
