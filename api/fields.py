"""Serializer fields stricter than DRF's about what a date is.

DRF's DateField hands the text to Python's `date.fromisoformat`, which also reads ISO week
dates (`1983-W28-1`), the basic format (`19830711`), non-ASCII digits (full-width
`１９８３-０７-１１`) and any year from 1. The API takes calendar dates only, as
`YYYY-MM-DD` in ASCII digits, in a range a prescription or a birth can have.
"""

from __future__ import annotations

import datetime
import re
from typing import Any

from rest_framework import serializers

CALENDAR_DATE = re.compile(r"\d{4}-\d{2}-\d{2}", re.ASCII)
EARLIEST_YEAR = 1900
LATEST_YEAR = 2200


class IsoDateField(serializers.DateField):
    default_error_messages = {
        "invalid": "Date has wrong format. Use one of these formats instead: YYYY-MM-DD.",
        "out_of_range": f"Date must be between {EARLIEST_YEAR} and {LATEST_YEAR}.",
    }

    def to_internal_value(self, value: Any) -> datetime.date:
        if not isinstance(value, str) or not CALENDAR_DATE.fullmatch(value):
            self.fail("invalid")
        try:
            parsed = datetime.date.fromisoformat(value)
        except ValueError:
            self.fail("invalid")
        if not EARLIEST_YEAR <= parsed.year <= LATEST_YEAR:
            self.fail("out_of_range")
        return parsed


class IsoDateTimeField(serializers.DateTimeField):
    """A DRF DateTimeField that also insists on ASCII and a calendar date in range."""

    default_error_messages = {
        "out_of_range": f"Date must be between {EARLIEST_YEAR} and {LATEST_YEAR}.",
    }

    def to_internal_value(self, value: Any) -> datetime.datetime:
        if not isinstance(value, str) or not value.isascii() or not CALENDAR_DATE.match(value):
            self.fail("invalid", format="YYYY-MM-DDThh:mm[:ss[.uuuuuu]][+HH:MM|-HH:MM|Z]")
        parsed = super().to_internal_value(value)
        if not EARLIEST_YEAR <= parsed.year <= LATEST_YEAR:
            self.fail("out_of_range")
        return parsed
