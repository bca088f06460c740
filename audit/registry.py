"""Which models django-auditlog tracks: every model holding patient, prescription or permission data.

Patient identifiers and free text (notes, reasons, reactions) are encrypted at rest, and the
audit log must not become a plaintext copy: every encrypted field's changes are recorded as
"[redacted]" (that the field changed, never its value), and the blind-index columns are left
out entirely.
"""

from __future__ import annotations

from auditlog.registry import auditlog
from django.contrib.auth.models import Group, User
from django.db.models import Model

from patients.phi import INDEX_FIELDS, PHI_FIELDS, encrypted_field_names

REDACTED = "[redacted]"

# The same lists the encryption uses: a field added there is masked here too.
PATIENT_PHI_FIELDS = list(PHI_FIELDS)
PATIENT_BLIND_INDEXES = list(INDEX_FIELDS)


def redacted(value: object) -> str:
    """AUDITLOG_MASK_CALLABLE: django-auditlog's default keeps half the value in clear."""
    return REDACTED


def reverse_one_to_ones(model: type[Model]) -> list[str]:
    """A model's reverse one-to-one accessors (a prescription's payment, dispatch ...): django-auditlog
    would read each with a query of its own on every create, and they are other models' rows,
    audited there."""
    return [
        field.name
        for field in model._meta.get_fields()
        if field.one_to_one and field.auto_created and not field.concrete
    ]


def audit_register() -> None:
    from django_otp.plugins.otp_totp.models import TOTPDevice
    from guardian.models import GroupObjectPermission, UserObjectPermission
    from oauth2_provider.models import Application

    from patients.models import Allergy, Clinic, ClinicClient, CurrentMedication, Patient
    from prescriptions.models import (
        PharmacistProfile,
        PharmacistReview,
        Prescriber,
        Prescription,
        PrescriptionItem,
    )

    auditlog.register(
        Patient,
        mask_fields=sorted({*PATIENT_PHI_FIELDS, *encrypted_field_names(Patient)}),
        exclude_fields=PATIENT_BLIND_INDEXES,
    )
    for model in (Allergy, CurrentMedication, Clinic, Prescriber, Prescription, PrescriptionItem):
        auditlog.register(
            model, mask_fields=encrypted_field_names(model), exclude_fields=reverse_one_to_ones(model)
        )
    auditlog.register(PharmacistReview, mask_fields=encrypted_field_names(PharmacistReview))
    # Permission data: accounts, roles, clinic assignments, API clients, second factors.
    auditlog.register(
        User, exclude_fields=["password", "last_login"], m2m_fields={"groups", "user_permissions"}
    )
    auditlog.register(Group, m2m_fields={"permissions"})
    auditlog.register(PharmacistProfile)
    auditlog.register(UserObjectPermission)
    auditlog.register(GroupObjectPermission)
    auditlog.register(ClinicClient)
    auditlog.register(Application, exclude_fields=["client_secret"])
    auditlog.register(
        TOTPDevice,
        exclude_fields=[
            "key",
            "last_t",
            "throttling_failure_count",
            "throttling_failure_timestamp",
            "last_used_at",
            "drift",
        ],
    )
