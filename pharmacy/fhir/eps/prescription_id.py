"""EPS prescription identifiers: the short-form ID with its ISO/IEC 7064 MOD 37-2 check character.

A short-form prescription ID is ``XXXXXX-YYYYYY-ZZZZZC`` (NHS England EPS FHIR API,
``packages/specification/schemas/components/_fragments/groupIdentifier.yaml``):

* six hexadecimal characters generated locally;
* the prescribing organisation's ODS code, zero-padded at the front to six characters;
* five hexadecimal characters of a per-organisation sequence;
* one check character computed over the other seventeen with ISO/IEC 7064:2003 MOD 37-2,
  its alphabet ``0-9 A-Z +`` (EPS writes ``+`` where the standard has ``*``).

The algorithm follows the EPS API's own generator and validator
(NHSDigital/electronic-prescription-service-api,
``packages/tool/site/client/src/fhir/generatePrescriptionIds.ts``). Spine refuses an ID whose
check character is wrong (``INVALID_CHECKSUM``).

The long-form prescription ID is a UUID (``Extension-DM-PrescriptionId``, system
``https://fhir.nhs.uk/Id/prescription``).
"""

from __future__ import annotations

import re
import secrets

CHECK_CHARACTERS = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ+"
MODULUS = 37
ODS_WIDTH = 6
SEQUENCE_WIDTH = 5
SEQUENCE_MODULUS = 16**SEQUENCE_WIDTH
# EPS's published pattern allows only hexadecimal in the middle group, but the middle group is
# an ODS code (e.g. "Y12345", "FH542") and EPS's own tools write one there, so any upper-case
# letter or digit is accepted in it.
SHORT_FORM_PATTERN = re.compile(r"^[0-9A-F]{6}-[0-9A-Z]{6}-[0-9A-F]{5}[0-9A-Z+]$")
ODS_PATTERN = re.compile(r"^[0-9A-Z]{1,6}$")


class PrescriptionIdError(ValueError):
    """The ODS code cannot form part of a short-form prescription ID."""


def _running_total(characters: str) -> int:
    """ISO/IEC 7064 MOD 37-2: a pure system with radix 2 over the base-36 values."""
    total = 0
    for character in characters:
        total = ((total + int(character, 36)) * 2) % MODULUS
    return total


def check_character(body: str) -> str:
    """The MOD 37-2 check character of `body` (hyphens ignored)."""
    return CHECK_CHARACTERS[(MODULUS + 1 - _running_total(body.replace("-", ""))) % MODULUS]


def short_form_id_is_valid(value: str) -> bool:
    """True when `value` has the short-form layout and a correct check character."""
    if not SHORT_FORM_PATTERN.match(value):
        return False
    characters = value.replace("-", "")
    body, check = characters[:-1], characters[-1]
    return (_running_total(body) + CHECK_CHARACTERS.index(check)) % MODULUS == 1


def short_form_id(*, ods_code: str, sequence: int, random_part: str | None = None) -> str:
    """A new short-form ID for the organisation `ods_code`.

    `sequence` is taken modulo 16^5 (EPS: a per-organisation counter that wraps from FFFFF to
    00000); `random_part` (six hexadecimal characters) is drawn from `secrets` when not given.
    """
    ods = ods_code.strip().upper()
    if not ODS_PATTERN.match(ods):
        raise PrescriptionIdError("the ODS code must be 1 to 6 letters or digits")
    prefix = (random_part or secrets.token_hex(3)).upper()
    if not re.fullmatch(r"[0-9A-F]{6}", prefix):
        raise PrescriptionIdError("the random part must be six hexadecimal characters")
    body = f"{prefix}-{ods.rjust(ODS_WIDTH, '0')}-{sequence % SEQUENCE_MODULUS:05X}"
    return body + check_character(body)
