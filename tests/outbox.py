"""What the product owes to its tasks (events.OutboxTask rows), for assertions."""

from __future__ import annotations

from typing import Any

from events.models import OutboxTask


def owed_tasks(task: str | None = None) -> list[tuple[str, list[Any]]]:
    """(task, args) of every owed task (of `task` only, if given), oldest first."""
    rows = OutboxTask.objects.order_by("id")
    if task is not None:
        rows = rows.filter(task=task)
    return [(row.task, row.args) for row in rows]
