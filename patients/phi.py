"""Patient identifiers at rest: Fernet-encrypted fields and keyed blind indexes.

Encryption is django-fernet-encrypted-fields with the Fernet keys of
settings.PHI_ENCRYPTION_KEYS, independent of SECRET_KEY: the first key encrypts, every key
decrypts, so rotation is: put a new key first, run `manage.py rotate_keys`, then drop the old
one. Keys the library used to derive from SECRET_KEY and settings.SALT_KEY still decrypt
(never encrypt), until rotate_keys has re-encrypted the rows written under them. Exact-match search
uses an HMAC-SHA256 of the normalised value under settings.BLIND_INDEX_KEY, so the database
can find a patient by NHS number without ever holding the number in plaintext.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
from datetime import date
from typing import TYPE_CHECKING, Any

from cryptography.fernet import Fernet, MultiFernet
from django.conf import settings
from django.db.models import Model
from encrypted_fields.fields import EncryptedFieldMixin

if TYPE_CHECKING:
    # The library ships no types; its fields are these Django fields underneath, which is what
    # lets the Django plugin type a model's encrypted attributes as str and date.
    from django.db.models import CharField as EncryptedCharField
    from django.db.models import DateField as EncryptedDateField
    from django.db.models import EmailField as EncryptedEmailField
    from django.db.models import TextField as EncryptedTextField
else:
    from encrypted_fields.fields import (
        EncryptedCharField,
        EncryptedDateField,
        EncryptedEmailField,
        EncryptedTextField,
    )


def fernet() -> MultiFernet:
    """The PHI keys as one MultiFernet: the first PHI_ENCRYPTION_KEYS entry encrypts."""
    secrets = (settings.SECRET_KEY, *getattr(settings, "SECRET_KEY_FALLBACKS", []))
    return _fernet(tuple(settings.PHI_ENCRYPTION_KEYS), tuple(settings.SALT_KEY), secrets)


@functools.lru_cache(maxsize=8)
def _fernet(keys: tuple[str, ...], salts: tuple[str, ...], secrets: tuple[str, ...]) -> MultiFernet:
    """Cached per key set (the legacy derivation is 100,000 PBKDF2 rounds a key)."""
    if not keys:
        raise ValueError("PHI_ENCRYPTION_KEYS is empty: patient data cannot be encrypted.")
    current = [Fernet(key) for key in keys]
    # The library's own derivation from SECRET_KEY(s) and the salts, to read rows written
    # before PHI_ENCRYPTION_KEYS existed; it reads the same settings this cache is keyed on.
    legacy = EncryptedFieldMixin.keys.func(None) if salts else []
    return MultiFernet(current + [Fernet(key) for key in legacy])


class _IndependentKeys:
    """Encrypt with PHI_ENCRYPTION_KEYS, not the library's keys derived from SECRET_KEY."""

    @property
    def f(self) -> MultiFernet:
        return fernet()


class _BlankStaysBlank:
    """The library stores "" as NULL; keep "" so blank optional fields stay NOT NULL strings."""

    def get_prep_value(self, value: Any) -> Any:
        if value == "":
            return ""
        return super().get_prep_value(value)  # type: ignore[misc]  # a mixin: the field class after it has get_prep_value


class PhiCharField(_IndependentKeys, _BlankStaysBlank, EncryptedCharField):
    pass


class PhiEmailField(_IndependentKeys, _BlankStaysBlank, EncryptedEmailField):
    pass


class PhiDateField(_IndependentKeys, EncryptedDateField):
    pass


class PhiTextField(_IndependentKeys, _BlankStaysBlank, EncryptedTextField):
    """Free text that may name a patient or their health (support notes, reasons)."""


ENCRYPTED_FIELD_CLASSES = (PhiCharField, PhiEmailField, PhiDateField, PhiTextField)


def encrypted_field_names(model: type[Model]) -> list[str]:
    """The model's encrypted fields: what an audit log or an export must never copy in clear."""
    return [field.name for field in model._meta.fields if isinstance(field, ENCRYPTED_FIELD_CLASSES)]


PHI_FIELDS = (
    "given_name",
    "family_name",
    "birth_date",
    "nhs_number",
    "address_line",
    "city",
    "region",
    "postal_code",
    "email",
    "phone",
)


def phi_not_shown(relation: str = "", *, shown: tuple[str, ...] = ()) -> list[str]:
    """The identifier fields (of the patient at `relation`, e.g. "patient") other than `shown`:
    what a list leaves out (LargeTableAdminMixin.list_defer), each one a decryption per row."""
    prefix = f"{relation}__" if relation else ""
    return [f"{prefix}{name}" for name in PHI_FIELDS if name not in shown]


INDEX_FIELDS = (
    "nhs_number_index",
    "email_index",
    "phone_index",
    "family_name_birth_date_index",
    "name_birth_date_index",
)


def _digest(kind: str, normalised: str) -> str:
    if not normalised:
        return ""
    message = f"{kind}:{normalised}".encode()
    return hmac.new(settings.BLIND_INDEX_KEY.encode(), message, hashlib.sha256).hexdigest()


def nhs_number_index(value: str) -> str:
    return _digest("nhs_number", "".join(char for char in value if char.isdigit()))


def email_index(value: str) -> str:
    return _digest("email", value.strip().casefold())


def phone_index(value: str) -> str:
    digits = "".join(char for char in value if char.isdigit())
    return _digest("phone", digits)


def family_name_birth_date_index(family_name: str, birth_date: date | None) -> str:
    name = " ".join(family_name.casefold().split())
    if not name or birth_date is None:
        return ""
    return _digest("family_name_birth_date", f"{name}|{birth_date.isoformat()}")


def name_birth_date_index(given_name: str, family_name: str, birth_date: date | None) -> str:
    """Given name, family name and date of birth: how the same person is recognised without an
    NHS number (twins share a family name and a birthday, not usually a given name)."""
    given = " ".join(given_name.casefold().split())
    family = " ".join(family_name.casefold().split())
    if not given or not family or birth_date is None:
        return ""
    return _digest("name_birth_date", f"{given}|{family}|{birth_date.isoformat()}")


def blind_indexes(
    *,
    nhs_number: str,
    email: str,
    phone: str,
    family_name: str,
    birth_date: date | None,
    given_name: str = "",
) -> dict[str, str]:
    """The blind-index column values for a patient's identifiers."""
    return {
        "nhs_number_index": nhs_number_index(nhs_number),
        "email_index": email_index(email),
        "phone_index": phone_index(phone),
        "family_name_birth_date_index": family_name_birth_date_index(family_name, birth_date),
        "name_birth_date_index": name_birth_date_index(given_name, family_name, birth_date),
    }


def search_indexes(term: str) -> list[tuple[str, str]]:
    """(column, digest) pairs a support search term could match, exact match only.

    "Smith 1980-02-01" searches family name + date of birth; anything else is tried as an
    NHS number, an email and a phone number.
    """
    term = term.strip()
    pairs = []
    name, _, maybe_date = term.rpartition(" ")
    if name:
        try:
            birth_date = date.fromisoformat(maybe_date)
        except ValueError:
            birth_date = None
        if birth_date is not None:
            pairs.append(("family_name_birth_date_index", family_name_birth_date_index(name, birth_date)))
    pairs += [
        ("nhs_number_index", nhs_number_index(term)),
        ("email_index", email_index(term)),
        ("phone_index", phone_index(term)),
    ]
    return [(column, digest) for column, digest in pairs if digest]
