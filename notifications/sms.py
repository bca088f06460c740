"""SMS backends: a small Protocol, chosen by settings.SMS_BACKEND (a dotted path)."""

from __future__ import annotations

import logging
from typing import Protocol

from django.conf import settings
from django.utils.module_loading import import_string

logger = logging.getLogger(__name__)


class SmsError(Exception):
    """The provider refused or could not take the message."""


class SmsBackend(Protocol):
    def send(self, *, to: str, body: str, patient_id: int) -> None: ...


class ConsoleSmsBackend:
    """The default: logs that an SMS was sent, never the number or the text (personal data)."""

    def send(self, *, to: str, body: str, patient_id: int) -> None:
        logger.info("SMS sent to patient #%s", patient_id)


def sms_backend() -> SmsBackend:
    return import_string(settings.SMS_BACKEND)()
