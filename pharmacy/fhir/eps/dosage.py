"""Structured dosage from a dose text, only where the whole text says exactly that.

EPS sends ``Dosage.text`` to the dispenser and may use the structure beside it
(``packages/specification/schemas/components/_fragments/dosageInstruction.yaml``); a wrong
structure next to a right text would be a clinical hazard, so this reads a small, explicit
grammar and gives up (text only) on anything else: "one tablet twice a day", "take 2
capsules three times a day", "one tablet every 8 hours", "half a tablet once a week". A range
("one or two"), a maximum ("up to"), a condition ("when required") or more than one instruction
keeps the text alone.
"""

from __future__ import annotations

import re
from decimal import Decimal

from pharmacy.fhir.eps.model import SNOMED, Coding, Dosage, Quantity, Timing

NUMBER_WORDS = {
    "a": Decimal(1),
    "an": Decimal(1),
    "half a": Decimal("0.5"),
    "one": Decimal(1),
    "two": Decimal(2),
    "three": Decimal(3),
    "four": Decimal(4),
    "five": Decimal(5),
    "six": Decimal(6),
}
TIMES = {"once": 1, "twice": 2, "three times": 3, "four times": 4, "five times": 5, "six times": 6}
# dm+d route "Oral" (SNOMED CT 26643006), as in the EPS API's examples.
ORAL = Coding(SNOMED, "26643006", "Oral")

_DOSE = r"(?P<dose>half a|an?|one|two|three|four|five|six|\d+(?:\.\d+)?)"
_UNIT = r"(?P<unit>[a-z]+?)s?"
_ROUTE = r"(?P<route>\s+(?:by mouth|orally))?"
_FREQUENCY = (
    r"(?P<frequency>"
    r"(?P<times>once|twice|(?:three|four|five|six|\d+) times) (?:a|per|each) (?P<per>day|week)"
    r"|(?P<daily>daily|every day|each day|once daily|in the morning|at night|at bedtime)"
    r"|(?P<twice_daily>twice daily)"
    r"|every (?P<hours>\d+|one|two|three|four|six|eight|twelve) hours"
    r"|(?P<weekly>weekly|once weekly)"
    r")"
)
_GRAMMAR = re.compile(rf"^(?:take )?{_DOSE} {_UNIT}{_ROUTE} {_FREQUENCY}$")
_HOURS_WORDS = {"one": 1, "two": 2, "three": 3, "four": 4, "six": 6, "eight": 8, "twelve": 12}


def dosage_from_text(text: str, *, unit: str, unit_code: str | None) -> Dosage:
    """`text` as a Dosage, structured when the grammar reads all of it.

    `unit` is the item's dose unit (e.g. "tablet") and `unit_code` its dm+d unit-of-measure
    code; a text in another unit keeps no structure.
    """
    match = _GRAMMAR.match(" ".join(text.lower().strip().rstrip(".").split()))
    if match is None or match["unit"] != unit.lower().removesuffix("s"):
        return Dosage(text=text)
    timing = _timing(match)
    value = _dose(match["dose"])
    if timing is None or timing.frequency < 1 or timing.period <= 0 or value <= 0:
        return Dosage(text=text)
    dose = Quantity(value=value, unit=unit, code=unit_code, system=SNOMED if unit_code else None)
    return Dosage(text=text, timing=timing, dose=dose, route=ORAL if match["route"] else None)


def _dose(word: str) -> Decimal:
    return NUMBER_WORDS.get(word) or Decimal(word)


def _timing(match: re.Match[str]) -> Timing | None:
    if match["times"]:
        times = TIMES.get(match["times"]) or int(match["times"].split()[0])
        return Timing(frequency=times, period=Decimal(1), period_unit="d" if match["per"] == "day" else "wk")
    if match["daily"]:
        return Timing(frequency=1, period=Decimal(1), period_unit="d")
    if match["twice_daily"]:
        return Timing(frequency=2, period=Decimal(1), period_unit="d")
    if match["hours"]:
        hours = _HOURS_WORDS.get(match["hours"]) or int(match["hours"])
        return Timing(frequency=1, period=Decimal(hours), period_unit="h")
    if match["weekly"]:
        return Timing(frequency=1, period=Decimal(1), period_unit="wk")
    return None
