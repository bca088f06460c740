"""Write the formulary file in its house layout: one entry a line, so reviews read as diffs.

Usage: python scripts/formulary_format.py prescriptions/data/formulary.json
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def formulary_dumps(data: dict) -> str:
    lines = ["{"]
    keys = list(data)
    for position, key in enumerate(keys):
        value = data[key]
        comma = "," if position < len(keys) - 1 else ""
        if isinstance(value, list):
            lines.append(f" {json.dumps(key)}: [")
            for index, entry in enumerate(value):
                tail = "," if index < len(value) - 1 else ""
                lines.append(f"  {json.dumps(entry, ensure_ascii=False)}{tail}")
            lines.append(f" ]{comma}")
        else:
            lines.append(f" {json.dumps(key)}: {json.dumps(value, ensure_ascii=False)}{comma}")
    lines.append("}")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    path = Path(sys.argv[1])
    path.write_text(formulary_dumps(json.loads(path.read_text())))
