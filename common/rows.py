"""Model instances from hand-written SQL, for the few hot reads where building the query through
the ORM costs more than running it. The fields' own converters run, as in the ORM (decryption,
JSON), so an instance read here is the same as one read through a queryset."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any, TypeVar, cast

from django.db import DEFAULT_DB_ALIAS, connections
from django.db.backends.postgresql.base import ServerBindingCursor  # type: ignore[attr-defined]  # defined for psycopg 3 only
from django.db.backends.utils import CursorWrapper
from django.db.models import Model

ModelT = TypeVar("ModelT", bound=Model)


def planned_cursor() -> CursorWrapper:
    """A cursor for a statement on a hot path, planned once per connection: its parameters are
    bound by the server, so psycopg prepares the statement the fifth time this connection runs
    it and the server reuses the plan (a join's plan can cost more than running it), and no
    parameter is quoted into the SQL text. settings.DATABASES OPTIONS prepare_threshold;
    DATABASE_PREPARED_STATEMENTS=false turns preparing off. A parameter whose type the SQL
    does not fix (in a SELECT list, say) needs a cast. Everything else about the cursor is
    Django's: health check, error wrapping, query logging."""
    wrapper = connections[DEFAULT_DB_ALIAS]
    wrapper.ensure_connection()
    connection = wrapper.connection
    client_binding = connection.cursor_factory
    connection.cursor_factory = ServerBindingCursor
    try:
        return wrapper.cursor()
    finally:
        connection.cursor_factory = client_binding


def columns_sql(model: type[Model], alias: str, *, leaving_out: Sequence[str] = ()) -> str:
    """Every concrete column of `model` under the table alias `alias`, in field order, but the
    fields named in `leaving_out` (deferred on the instance, read if ever used)."""
    return ", ".join(f'{alias}."{field.column}"' for field in _read_fields(model, leaving_out))


def column_count(model: type[Model], *, leaving_out: Sequence[str] = ()) -> int:
    return len(_read_fields(model, leaving_out))


def _read_fields(model: type[Model], leaving_out: Sequence[str]) -> list[Any]:
    return _reading(model, tuple(leaving_out)).fields


class _Reading:
    """What instance_from_columns needs of a model's columns, worked out once per model."""

    def __init__(self, model: type[Model], leaving_out: tuple[str, ...]) -> None:
        self.fields = [field for field in model._meta.concrete_fields if field.name not in leaving_out]
        self.attnames = [field.attname for field in self.fields]
        self.pk_index = [field.primary_key for field in self.fields].index(True)
        # Field.get_db_converters is Django's, missing from its type stubs. The converters are
        # the backend's and the field's, the same for every connection to PostgreSQL.
        wrapper = connections[DEFAULT_DB_ALIAS]
        self.converters = [cast(Any, field).get_db_converters(wrapper) for field in self.fields]


@functools.cache
def _reading(model: type[Model], leaving_out: tuple[str, ...]) -> _Reading:
    return _Reading(model, leaving_out)


def instance_from_columns(
    model: type[ModelT], values: Sequence[Any], *, leaving_out: Sequence[str] = ()
) -> ModelT | None:
    """An instance from the columns columns_sql() named (with the same `leaving_out`); None when
    they are all a LEFT JOIN's NULLs (its primary key is NULL)."""
    reading = _reading(model, tuple(leaving_out))
    if values[reading.pk_index] is None:
        return None
    wrapper = connections[DEFAULT_DB_ALIAS]
    converted = []
    for field, converters, value in zip(reading.fields, reading.converters, values, strict=True):
        for converter in converters:
            value = converter(value, field, wrapper)
        converted.append(value)
    return model.from_db(DEFAULT_DB_ALIAS, reading.attnames, converted)


def insert_fields(model: type[Model], *, with_pk: bool = True) -> list[Any]:
    """`model`'s concrete fields in order, its primary key left out unless `with_pk`: what
    insert_sql() writes."""
    return _insert_fields(model, with_pk)


@functools.cache
def _insert_fields(model: type[Model], with_pk: bool) -> list[Any]:
    return [field for field in model._meta.concrete_fields if with_pk or not field.primary_key]


def insert_sql(model: type[Model], *, rows: int = 1, with_pk: bool = True) -> str:
    """`INSERT INTO <table> (<columns>) VALUES (...), ...` for `rows` rows, with %s placeholders
    in insert_fields() order; without the primary key, the table's default numbers the rows."""
    fields = insert_fields(model, with_pk=with_pk)
    row = f"({', '.join(['%s'] * len(fields))})"
    columns = ", ".join(f'"{field.column}"' for field in fields)
    return f'INSERT INTO "{model._meta.db_table}" ({columns}) VALUES {", ".join([row] * rows)}'


def insert_values(instance: Model, *, with_pk: bool = True) -> list[Any]:
    """The values insert_sql() takes for `instance`, prepared as Model.save prepares them:
    auto_now stamps set on the instance, encryption, JSON."""
    wrapper = connections[DEFAULT_DB_ALIAS]
    return [
        field.get_db_prep_save(field.pre_save(instance, True), wrapper)
        for field in insert_fields(type(instance), with_pk=with_pk)
    ]


def insert(instance: ModelT) -> ModelT:
    """Write the new `instance` as Model.save would (defaults, auto_now, preparation) in one
    planned INSERT returning its key. No model signals are sent: for a model nothing listens
    to (not in the audit log's registry) on a hot path."""
    model = type(instance)
    with planned_cursor() as cursor:
        cursor.execute(
            f'{insert_sql(model, with_pk=False)} RETURNING "{model._meta.pk.column}"',
            insert_values(instance, with_pk=False),
        )
        instance.pk = cursor.fetchone()[0]
    return mark_saved(instance)


def mark_saved(instance: ModelT) -> ModelT:
    """Mark an instance written by hand-written SQL as the ORM marks one it saved."""
    instance._state.adding = False
    instance._state.db = DEFAULT_DB_ALIAS
    return instance
