"""Template filters for the back office: the facts behind a check result, waiting times."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from django import template
from django.utils import timezone
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString

register = template.Library()

# Words that read better than their snake_case keys.
LABELS = {
    "mg_per_kg": "mg/kg",
    "mg_per_kg_per_day": "mg/kg/day",
    "max_mg_per_kg_per_day": "maximum mg/kg/day",
    "age_years": "age (years)",
    "weight_kg": "weight (kg)",
    "days_remaining": "days remaining",
}


def _label(key: object) -> str:
    text = str(key)
    return LABELS.get(text, text.replace("_", " "))


def _value(value: Any, depth: int) -> SafeString | str:
    if depth > 3:
        return str(value)
    if isinstance(value, dict):
        return facts_html(value, depth + 1)
    if isinstance(value, list | tuple):
        if not value:
            return "none"
        return format_html(
            "<ul>{}</ul>", format_html_join("", "<li>{}</li>", ((_value(item, depth + 1),) for item in value))
        )
    if value is None or value == "":
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    return str(value)


@register.filter
def facts_html(facts: Any, depth: int = 0) -> SafeString | str:
    """A check result's `facts` (what the finding was computed from) as a definition list;
    nested dicts and lists (e.g. last supplies with days remaining) as nested lists."""
    if not isinstance(facts, dict) or not facts:
        return ""
    rows = format_html_join(
        "", "<dt>{}</dt><dd>{}</dd>", ((_label(key), _value(value, depth)) for key, value in facts.items())
    )
    return format_html('<dl class="facts">{}</dl>', rows)


@register.filter
def waited(moment: datetime | None) -> str:
    """How long since `moment`, for people: "45 min", "2 h 05 min", "3 d 4 h"."""
    if moment is None:
        return "—"
    minutes = max(int((timezone.now() - moment).total_seconds() // 60), 0)
    hours, minutes = divmod(minutes, 60)
    days, hours = divmod(hours, 24)
    if days:
        return f"{days} d {hours} h"
    if hours:
        return f"{hours} h {minutes:02d} min"
    return f"{minutes} min"
