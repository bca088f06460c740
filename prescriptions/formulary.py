"""Loading the formulary from its versioned data file."""

from __future__ import annotations

import json
from pathlib import Path

from django.db import transaction

from prescriptions.models import Medication

FIELDS = ("name", "strength", "form", "controlled_schedule", "price_minor")


@transaction.atomic
def formulary_load(*, path: Path) -> dict[str, object]:
    data = json.loads(path.read_text())
    if not isinstance(data.get("medications"), list):
        raise ValueError("the file has no 'medications' list")
    counts = {"created": 0, "updated": 0, "unchanged": 0}
    existing = {(m.code_system, m.code): m for m in Medication.objects.all()}
    for entry in data["medications"]:
        values = {field: entry[field] for field in FIELDS}
        current = existing.get((entry["code_system"], entry["code"]))
        if current is None:
            Medication.objects.create(code_system=entry["code_system"], code=entry["code"], **values)
            counts["created"] += 1
        elif any(getattr(current, field) != value for field, value in values.items()):
            Medication.objects.filter(pk=current.pk).update(**values)
            counts["updated"] += 1
        else:
            counts["unchanged"] += 1
    return {"version": data.get("version", "unversioned"), **counts}
