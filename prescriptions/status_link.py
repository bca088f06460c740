"""The patient's status link: `/track/<token>/`, a signed token naming one prescription.

The token is signed with SECRET_KEY under STATUS_LINK_SALT and carries the prescription's
creation time as its timestamp, so it is the same wherever it is handed out (API, webhooks)
and stops working STATUS_LINK_MAX_AGE_DAYS after the prescription was created. It names the
prescription id only: no patient data is in the token.
"""

from __future__ import annotations

from datetime import timedelta

from django.conf import settings
from django.core import signing

from prescriptions.models import Prescription

# A real token is ~40 characters; anything much longer is not worth verifying.
TOKEN_MAX_LENGTH = 200


class _IssuedAtSigner(signing.TimestampSigner):
    def __init__(self, *, issued_at: int) -> None:
        super().__init__(salt=settings.STATUS_LINK_SALT)
        self.issued_at = issued_at

    def timestamp(self) -> str:
        return signing.b62_encode(self.issued_at)


def status_link_token(*, prescription: Prescription) -> str:
    signer = _IssuedAtSigner(issued_at=int(prescription.created_at.timestamp()))
    return signer.sign_object({"p": prescription.pk})


def status_link_url(*, prescription: Prescription) -> str:
    return f"{settings.PUBLIC_BASE_URL.rstrip('/')}/track/{status_link_token(prescription=prescription)}/"


def status_link_prescription_id(*, token: str) -> int | None:
    """The prescription a token names, or None when it is forged, altered or expired."""
    if not token or len(token) > TOKEN_MAX_LENGTH:
        return None
    signer = signing.TimestampSigner(salt=settings.STATUS_LINK_SALT)
    try:
        data = signer.unsign_object(token, max_age=timedelta(days=settings.STATUS_LINK_MAX_AGE_DAYS))
    except (signing.BadSignature, ValueError, UnicodeError):
        return None
    prescription_id = data.get("p") if isinstance(data, dict) else None
    return prescription_id if isinstance(prescription_id, int) else None
