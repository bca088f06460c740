"""The clinic API's JSON parser: hostile bodies are a 400 problem, never a 500."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from django.conf import settings
from rest_framework.exceptions import ParseError
from rest_framework.parsers import JSONParser

from common.jsonsafe import json_loads_bounded


class BoundedJSONParser(JSONParser):
    """DRF's JSONParser with common.jsonsafe's limits (depth, NUL, non-finite numbers)."""

    def parse(
        self, stream: Any, media_type: str | None = None, parser_context: Mapping[str, Any] | None = None
    ) -> Any:
        parser_context = parser_context or {}
        encoding = parser_context.get("encoding", settings.DEFAULT_CHARSET)
        try:
            return json_loads_bounded(stream.read().decode(encoding))
        except ValueError as error:
            raise ParseError(f"The body is not acceptable JSON: {error}.") from error
