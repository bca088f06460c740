"""Admin changelists over tables that grow with every prescription (events, payments, the access
log): no full COUNT(*) and no full-table DISTINCT on any page load.

- `EstimatedCountPaginator` counts exactly up to COUNT_EXACT_UP_TO rows (a bounded subquery,
  cheap on any index), and past that takes PostgreSQL's own estimate of the filtered query.
- `LargeTableAdminMixin` uses it, turns off the admin's second, unfiltered count
  (`show_full_result_count`) and searches with index lookups.
- Its changelist leaves out the columns `list_defer` names (encrypted identifiers a list does
  not show cost a decryption each per row), and draws each row's action checkbox directly
  rather than through the form widget templates (`QuickCheckboxAdminMixin`: the same markup, a
  fifth of a 100-row page's CPU; also on the formulary's 100-row lists).
- `DistinctValuesFilter` offers a column's values without `SELECT DISTINCT` over the whole
  table: a recursive query walks an index whose first column is that one, one lookup per value.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import cached_property
from typing import Any

from django.contrib import admin
from django.contrib.admin import helpers
from django.contrib.admin.views.main import ChangeList
from django.core.exceptions import ValidationError
from django.core.paginator import Paginator
from django.db import connections
from django.db.models import CharField, Q, QuerySet
from django.http import HttpRequest
from django.utils.html import format_html
from django.utils.safestring import SafeString
from django.utils.translation import gettext as _

COUNT_EXACT_UP_TO = 10_000
SEARCH_RELATED_LIMIT = 100
DISTINCT_VALUES_SHOWN = 100


class EstimatedCountPaginator(Paginator):
    """Exact counts up to COUNT_EXACT_UP_TO; beyond, the planner's estimate of the filtered rows."""

    @cached_property
    def count(self) -> int:
        queryset = self.object_list
        if not isinstance(queryset, QuerySet):
            return super().count
        exact = queryset.order_by()[: COUNT_EXACT_UP_TO + 1].count()
        if exact <= COUNT_EXACT_UP_TO:
            return exact
        return max(COUNT_EXACT_UP_TO + 1, planner_row_estimate(queryset))


def planner_row_estimate(queryset: QuerySet[Any]) -> int:
    """How many rows PostgreSQL expects the query to return (EXPLAIN, nothing executed)."""
    sql, params = queryset.order_by().query.sql_with_params()
    with connections[queryset.db].cursor() as cursor:
        cursor.execute(f"EXPLAIN (FORMAT JSON) {sql}", params)
        plan = cursor.fetchone()[0]
    return int(plan[0]["Plan"]["Plan Rows"])


class DeferringChangeList(ChangeList):
    """A changelist whose rows leave out the columns its admin's `list_defer` names."""

    def get_queryset(self, request: HttpRequest, exclude_parameters: Any = None) -> QuerySet[Any]:
        queryset = super().get_queryset(request, exclude_parameters)
        deferred = getattr(self.model_admin, "list_defer", ())
        return queryset.defer(*deferred) if deferred else queryset


class QuickCheckboxAdminMixin:
    """Draws each row's action checkbox directly: ModelAdmin.action_checkbox's markup, without
    rendering a CheckboxInput through the form templates per row (a fifth of a 100-row page)."""

    def action_checkbox(self, obj: Any) -> SafeString:
        return format_html(
            '<input type="checkbox" name="{}" value="{}" class="action-select" aria-label="{}">',
            helpers.ACTION_CHECKBOX_NAME,
            str(obj.pk),
            format_html(_("Select this object for an action - {}"), str(obj)),
        )


class LargeTableAdminMixin(QuickCheckboxAdminMixin):
    """For a ModelAdmin whose table grows with traffic.

    `list_defer` names the columns (also across `list_select_related`) the list does not show
    and would otherwise read for every row: a row that needs one reads it in a query of its own,
    which the changelists' constant-query test would catch. Its search fields are exact ("=field"), and searched with `exact`, not the admin's `iexact`
    (`UPPER(column::text) = UPPER(term)`, which no index answers). A field across a relation is
    looked up in its own table first, so the search is one OR of index lookups on this table.
    """

    show_full_result_count: bool = False
    paginator: type[Paginator] = EstimatedCountPaginator
    list_defer: Sequence[str] = ()

    def get_changelist(self, request: HttpRequest, **kwargs: Any) -> type[ChangeList]:
        return DeferringChangeList

    def get_search_results(
        self, request: HttpRequest, queryset: QuerySet[Any], search_term: str
    ) -> tuple[QuerySet[Any], bool]:
        term = search_term.strip()
        fields = self.get_search_fields(request)  # type: ignore[attr-defined]  # a mixin for ModelAdmin
        if not term or not all(name.startswith("=") for name in fields):
            return super().get_search_results(request, queryset, search_term)  # type: ignore[misc]  # ModelAdmin follows in the MRO
        condition = Q()
        for name in fields:
            condition |= exact_search(queryset.model, name[1:], term)
        return queryset.filter(condition), False


def exact_search(model: type[Any], path: str, term: str) -> Q:
    """`path` equal to `term` (Q that matches nothing when the term cannot be such a value)."""
    nothing = Q(pk__in=[])
    relation, _, rest = path.partition("__")
    field = model._meta.get_field(relation)
    if rest and rest not in {"id", "pk"}:
        matches = field.related_model._default_manager.filter(exact_search(field.related_model, rest, term))
        return Q(**{f"{relation}__in": list(matches.values_list("pk", flat=True)[:SEARCH_RELATED_LIMIT])})
    target = field.target_field if rest else field
    try:
        value = target.to_python(term)
    except ValidationError:
        return nothing
    if isinstance(value, int) and not -(2**63) <= value < 2**63:
        return nothing
    if isinstance(target, CharField) and target.max_length and len(term) > target.max_length:
        return nothing
    return Q(**{f"{relation}_id" if rest else relation: value})


def distinct_column_values(model: type[Any], column: str, *, limit: int = DISTINCT_VALUES_SHOWN) -> list[str]:
    """The distinct values of `column`, in order, by a loose index scan (the column must lead an index)."""
    table = model._meta.db_table
    quoted = connections["default"].ops.quote_name(column)
    with connections["default"].cursor() as cursor:
        cursor.execute(
            f"""
            WITH RECURSIVE walk(value) AS (
                (SELECT {quoted} FROM {table} ORDER BY {quoted} LIMIT 1)
                UNION ALL
                SELECT (SELECT {quoted} FROM {table} WHERE {quoted} > walk.value ORDER BY {quoted} LIMIT 1)
                  FROM walk WHERE walk.value IS NOT NULL
            )
            SELECT value FROM walk WHERE value IS NOT NULL LIMIT %s
            """,
            [limit],
        )
        return [row[0] for row in cursor.fetchall()]


class DistinctValuesFilter(admin.SimpleListFilter):
    """A list filter on one text column, its choices read by `distinct_column_values`.

    Subclass with `title`, `parameter_name` (the column, which must lead an index).
    """

    def lookups(self, request: HttpRequest, model_admin: admin.ModelAdmin[Any]) -> list[tuple[str, str]]:
        return [
            (value, value) for value in distinct_column_values(model_admin.model, str(self.parameter_name))
        ]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        value = self.value()
        return queryset.filter(**{str(self.parameter_name): value}) if value else queryset


def distinct_values_filter(column: str, title: str | None = None) -> type[DistinctValuesFilter]:
    """A DistinctValuesFilter on `column`."""
    return type(
        f"{column.title().replace('_', '')}Filter",
        (DistinctValuesFilter,),
        {"title": title or column.replace("_", " "), "parameter_name": column},
    )
