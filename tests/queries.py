"""What a block of code said to the database, for tests that count its statements."""

from __future__ import annotations

from django.test.utils import CaptureQueriesContext


def verbs(captured: CaptureQueriesContext) -> list[str]:
    """The first word of each statement captured, in order (SELECT, UPDATE, WITH, BEGIN...)."""
    return [query["sql"].split()[0] for query in captured.captured_queries]
