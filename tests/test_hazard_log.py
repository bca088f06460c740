"""The hazard log's controls point at tests that exist: every `tests/<file>.py::<test>` named in
docs/clinical-safety/hazard-log.md is a test function in that file, and every hazard names at
least one, with its initial and residual risk."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LOG = ROOT / "docs" / "clinical-safety" / "hazard-log.md"
REFERENCE = re.compile(r"`(tests/[\w/]+\.py)::(test_\w+)`")


def hazards() -> dict[str, str]:
    sections = re.split(r"^## (H-\d+ .*)$", LOG.read_text(), flags=re.MULTILINE)
    return dict(zip(sections[1::2], sections[2::2], strict=True))


def test_every_test_the_hazard_log_names_exists():
    references = REFERENCE.findall(LOG.read_text())

    assert len(references) >= 40
    missing = [
        f"{path}::{name}"
        for path, name in references
        if not (ROOT / path).is_file()
        or not re.search(rf"^def {name}\(", (ROOT / path).read_text(), re.MULTILINE)
    ]
    assert missing == []


def test_every_hazard_has_cause_effect_controls_with_tests_and_both_risks():
    found = hazards()

    assert len(found) >= 15
    for title, text in found.items():
        for part in ("**Cause**", "**Effect**", "**Initial risk**", "**Controls", "**Residual risk**"):
            assert part in text, f"{title} has no {part}"
        assert REFERENCE.search(text), f"{title} names no test"
        assert re.search(r"Residual risk\*\*: severity \d, likelihood \d, rating \d", text), title
