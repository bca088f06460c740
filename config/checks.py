"""`manage.py check --deploy`: what Django's own deployment checks do not cover.

Settings already refuse to start without every secret (config/settings.py); these catch the
values that are present but unsafe: the repository's public simulator secrets, plain-HTTP
partners, a per-process cache under the rate limits, malformed patient-data keys.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from cryptography.fernet import Fernet
from django.conf import settings
from django.core.checks import Error, Tags, register

PER_PROCESS_CACHES = (
    "django.core.cache.backends.locmem.LocMemCache",
    "django.core.cache.backends.dummy.DummyCache",
    "django.core.cache.backends.filebased.FileBasedCache",
)
# Email backends that write messages (patients' names and addresses) to a console or disk.
UNSAFE_EMAIL_BACKENDS = (
    "django.core.mail.backends.console.EmailBackend",
    "django.core.mail.backends.filebased.EmailBackend",
)
HTTPS_URLS = ("GATEWAY_URL", "STRIPE_API_BASE", "PUBLIC_BASE_URL")
MINIMUM_KEY_LENGTH = 32


@register(Tags.security, deploy=True)
def public_local_values_check(**kwargs: Any) -> list[Error]:
    """A secret or server still at the repository's public local value."""
    return [
        Error(
            f"{name} is the repository's public local value.",
            hint=f"Set {name} to this deployment's own value.",
            id="scriptline.E001",
        )
        for name, public in settings.PUBLIC_LOCAL_VALUES.items()
        if _current(name) == public
    ]


@register(Tags.security, deploy=True)
def partner_urls_check(**kwargs: Any) -> list[Error]:
    return [
        Error(
            f"{name} is not an https:// URL with a host.",
            hint="Partners and status links are reached over TLS only.",
            id="scriptline.E002",
        )
        for name in HTTPS_URLS
        if urlsplit(getattr(settings, name)).scheme != "https"
        or not urlsplit(getattr(settings, name)).hostname
    ]


@register(Tags.security, deploy=True)
def shared_cache_check(**kwargs: Any) -> list[Error]:
    backend = settings.CACHES["default"]["BACKEND"]
    if backend in PER_PROCESS_CACHES:
        return [
            Error(
                f"The cache ({backend}) is not shared between processes.",
                hint="Set CACHE_URL to a Redis server (redis://...): rate limits and lockouts live there.",
                id="scriptline.E003",
            )
        ]
    return []


@register(Tags.security, deploy=True)
def patient_data_keys_check(**kwargs: Any) -> list[Error]:
    errors = []
    for position, key in enumerate(settings.PHI_ENCRYPTION_KEYS):
        try:
            Fernet(key)
        except ValueError:
            errors.append(
                Error(
                    f"PHI_ENCRYPTION_KEYS entry {position + 1} is not a Fernet key.",
                    hint="Generate one with: python -c 'from cryptography.fernet import Fernet; "
                    "print(Fernet.generate_key().decode())'",
                    id="scriptline.E004",
                )
            )
    secrets = {settings.SECRET_KEY, *settings.SECRET_KEY_FALLBACKS}
    if set(settings.PHI_ENCRYPTION_KEYS) & secrets or settings.BLIND_INDEX_KEY in secrets:
        errors.append(
            Error(
                "A patient-data key is also a SECRET_KEY: rotating one would cut access to patient data.",
                id="scriptline.E005",
            )
        )
    if len(settings.BLIND_INDEX_KEY) < MINIMUM_KEY_LENGTH:
        errors.append(
            Error(
                f"BLIND_INDEX_KEY is shorter than {MINIMUM_KEY_LENGTH} characters.",
                hint="Use a long random value; it keys the HMACs patients are searched by.",
                id="scriptline.E006",
            )
        )
    return errors


@register(Tags.security, deploy=True)
def servers_check(**kwargs: Any) -> list[Error]:
    errors = []
    if settings.CELERY_BROKER_URL.split(":", 1)[0] in ("memory", "cache+memory"):
        errors.append(Error("CELERY_BROKER_URL is an in-process broker.", id="scriptline.E007"))
    system_role = settings.DATABASES["default"].get("USER") or "postgres"
    if (settings.DATABASE_API.get("USER") or "") in ("", system_role):
        errors.append(
            Error(
                "DATABASE_API_URL logs in as the system role (or as nobody).",
                hint="Give the clinic API its own login role (accounts.database_roles creates it).",
                id="scriptline.E009",
            )
        )
    if settings.EMAIL_BACKEND in UNSAFE_EMAIL_BACKENDS:
        errors.append(
            Error(
                f"EMAIL_BACKEND {settings.EMAIL_BACKEND} writes patients' messages to a console or disk.",
                id="scriptline.E008",
            )
        )
    return errors


def _current(name: str) -> str | None:
    value = getattr(settings, name, None)  # CACHE_URL is CACHES (E003)
    if isinstance(value, list):
        return ",".join(value)
    return value if value is None else str(value)
