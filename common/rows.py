"""Model instances from hand-written SQL, for the few hot reads where building the query through
the ORM costs more than running it. The fields' own converters run, as in the ORM (decryption,
JSON), so an instance read here is the same as one read through a queryset."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, TypeVar, cast

from django.db import DEFAULT_DB_ALIAS, connections
from django.db.models import Model

ModelT = TypeVar("ModelT", bound=Model)


def columns_sql(model: type[Model], alias: str) -> str:
    """Every concrete column of `model` under the table alias `alias`, in field order."""
    return ", ".join(f'{alias}."{field.column}"' for field in model._meta.concrete_fields)


def column_count(model: type[Model]) -> int:
    return len(model._meta.concrete_fields)


def instance_from_columns(model: type[ModelT], values: Sequence[Any]) -> ModelT | None:
    """An instance from the columns columns_sql() named; None when they are all a LEFT JOIN's
    NULLs (its primary key is NULL)."""
    fields = model._meta.concrete_fields
    if values[[field.primary_key for field in fields].index(True)] is None:
        return None
    wrapper = connections[DEFAULT_DB_ALIAS]
    converted = []
    for field, value in zip(fields, values, strict=True):
        # Field.get_db_converters is Django's, missing from its type stubs.
        for converter in cast(Any, field).get_db_converters(wrapper):
            value = converter(value, field, wrapper)
        converted.append(value)
    return model.from_db(DEFAULT_DB_ALIAS, [field.attname for field in fields], converted)
