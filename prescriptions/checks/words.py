"""Quantities in words, as a controlled-drug prescription must give them ("twenty eight")."""

from __future__ import annotations

import re

UNITS = [
    "zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten",
    "eleven", "twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen",
    "nineteen",
]  # fmt: skip
TENS = ["", "", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety"]
VALUES = {word: value for value, word in enumerate(UNITS)} | {
    word: value * 10 for value, word in enumerate(TENS) if word
}
# Words that may follow the number: the dosage unit ("twenty eight tablets").
UNIT_WORDS = re.compile(r"^(tablet|capsule|patch|sachet|ampoule|vial|ml|millilitre|dose|unit)s?$")


def words_to_number(text: str) -> int | None:
    """The whole number a phrase such as "one hundred and twelve" names, or None."""
    text = re.sub(r"\(\s*\d+\s*\)", " ", text)  # "fifty six (56)": the figures are checked apart
    tokens = [token for token in re.split(r"[\s,\-]+", text.strip().lower()) if token]
    while tokens and UNIT_WORDS.match(tokens[-1]):
        tokens.pop()
    if not tokens:
        return None
    if len(tokens) > 20:
        return None
    total = current = 0
    seen_number = False
    for token in tokens:
        if token == "and":
            continue
        if token in VALUES:
            current += VALUES[token]
            seen_number = True
        elif token == "hundred" and seen_number:
            current *= 100
        elif token == "thousand" and seen_number:
            total += current * 1000
            current = 0
        else:
            return None
    if not seen_number:
        return None
    number = total + current
    # Only the usual way of writing it counts: "five five" is not ten, "and" is optional.
    canonical = [token for token in number_to_words(number).split() if token != "and"]
    return number if [token for token in tokens if token != "and"] == canonical else None


def number_to_words(number: int) -> str:
    """British English words for 0 <= number < 1,000,000 ("one hundred and twelve")."""
    if number < 0 or number >= 1_000_000:
        raise ValueError("out of range")
    if number < 20:
        return UNITS[number]
    if number < 100:
        tens, units = divmod(number, 10)
        return TENS[tens] + (f" {UNITS[units]}" if units else "")
    if number < 1000:
        hundreds, rest = divmod(number, 100)
        return f"{UNITS[hundreds]} hundred" + (f" and {number_to_words(rest)}" if rest else "")
    thousands, rest = divmod(number, 1000)
    joiner = " and " if 0 < rest < 100 else " "
    return f"{number_to_words(thousands)} thousand" + (f"{joiner}{number_to_words(rest)}" if rest else "")
