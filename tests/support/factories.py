from __future__ import annotations

import factory
from django.contrib.auth.models import Group, Permission, User
from django.test import Client
from django.utils import timezone
from django_otp import DEVICE_ID_SESSION_KEY
from django_otp.plugins.otp_totp.models import TOTPDevice

from prescriptions.models import PharmacistProfile
from support import roles

PASSWORD = "correct horse battery staple"


class StaffFactory(factory.django.DjangoModelFactory):
    """A staff user with a password and a TOTP device; `role=` puts them in that group."""

    class Meta:
        model = User
        skip_postgeneration_save = True

    username = factory.Sequence(lambda n: f"staff{n}")
    is_staff = True
    password = factory.PostGenerationMethodCall("set_password", PASSWORD)

    @factory.post_generation
    def role(self, create: bool, role: str | None, **kwargs: object) -> None:
        if role:
            self.groups.add(role_group(role))
        self.save()

    @factory.post_generation
    def registration(self, create: bool, registration: str | None, **kwargs: object) -> None:
        if registration is not None:
            PharmacistProfile.objects.create(
                user=self, registration_body="GPhC", registration_number=registration
            )

    @factory.post_generation
    def totp(self, create: bool, extracted: object, **kwargs: object) -> None:
        TOTPDevice.objects.create(user=self, name="phone", confirmed=True)


def role_group(role: str) -> Group:
    """The role's group from the migration; rebuilt after a transactional test's flush emptied it."""
    group, created = Group.objects.get_or_create(name=role)
    if created:
        for dotted in roles.ROLE_PERMISSIONS[role]:
            app_label, codename = dotted.split(".", 1)
            group.permissions.add(
                Permission.objects.get(content_type__app_label=app_label, codename=codename)
            )
    return group


def pharmacist_create(**kwargs: object) -> User:
    return StaffFactory(role=roles.PHARMACIST, registration="2087654", **kwargs)


def otp_verify(client: Client, user: User) -> None:
    """Mark a logged-in session as having passed the second factor, as the login form would."""
    device = TOTPDevice.objects.filter(user=user).first() or TOTPDevice.objects.create(
        user=user, name="test", confirmed=True
    )
    session = client.session
    session[DEVICE_ID_SESSION_KEY] = device.persistent_id
    session.save()


class StaffClient(Client):
    """force_login skips the password and, likewise, the second factor (the 2FA flow itself is
    tested through the real login form in tests/security/test_staff_login.py)."""

    def force_login(self, user, backend=None):  # type: ignore[no-untyped-def]
        super().force_login(user, backend)
        if user.is_staff:
            otp_verify(self, user)


# --- The back office: prescriptions at a given point of the journey, enquiries -----------------


def paid_prescription(**scenario_fields: object):  # type: ignore[no-untyped-def]
    """A paracetamol prescription, approved (the checks' own outcome is not the point here) and
    paid (the formulary must be loaded)."""
    from prescriptions import services
    from prescriptions.models import Status
    from tests.prescriptions.factories import scenario

    prescription = scenario(**scenario_fields)
    assert services.prescription_transition(
        prescription_id=prescription.pk,
        to=Status.APPROVED,
        from_statuses=frozenset({Status.RECEIVED}),
        event_type="prescription.approved",
        actor="test",
    )
    assert services.prescription_transition(
        prescription_id=prescription.pk,
        to=Status.PAID,
        from_statuses=frozenset({Status.APPROVED}),
        event_type="prescription.paid",
        actor="test",
    )
    prescription.refresh_from_db()
    return prescription


def shipped_prescription(*, tracking_number: str = "SIM0123456789", **scenario_fields: object):  # type: ignore[no-untyped-def]
    """Paid, acknowledged by the pharmacy and shipped with a tracking number; the patient was
    emailed about the shipping (a sent Notification)."""
    from events.models import Event
    from notifications.models import Notification
    from prescriptions import services

    prescription = paid_prescription(**scenario_fields)
    services.prescription_record_acknowledged(prescription_id=prescription.pk, order_id="ord_1")
    services.prescription_record_progress(
        prescription_id=prescription.pk, gateway_event_type="order.shipped", tracking_number=tracking_number
    )
    shipped = Event.objects.get(aggregate_id=prescription.pk, type="prescription.shipped")
    Notification.objects.create(
        event=shipped,
        patient_id=prescription.patient_id,
        prescription_id=prescription.pk,
        channel=Notification.Channel.EMAIL,
        kind="shipped",
        status=Notification.Status.SENT,
    )
    prescription.refresh_from_db()
    return prescription


def dead_lettered_prescription(**scenario_fields: object):  # type: ignore[no-untyped-def]
    """Paid, then its dispatch ran out of attempts: a DeadLetter waits for an operator."""
    from pharmacy import services as pharmacy
    from pharmacy.models import DeadLetter

    prescription = paid_prescription(**scenario_fields)
    dispatch = pharmacy.dispatch_create(prescription_id=prescription.pk)
    pharmacy.dispatch_dead_letter(dispatch_id=dispatch.pk, error="gateway unavailable: HTTP 503")
    prescription.refresh_from_db()
    return prescription, DeadLetter.objects.get(dispatch=dispatch)


class EnquiryFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = "support.Enquiry"

    patient = factory.SubFactory("tests.patients.factories.PatientFactory")
    clinic = factory.LazyAttribute(lambda enquiry: enquiry.patient.clinic)
    channel = "phone"
    category = "where_is_my_order"
    due_at = factory.LazyFunction(timezone.now)


class EnquiryNoteFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = "support.EnquiryNote"

    enquiry = factory.SubFactory(EnquiryFactory)
    author = factory.SubFactory(StaffFactory)
    body = "The patient asked where the order is."


class SupportActionFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = "support.SupportAction"

    patient = factory.SubFactory("tests.patients.factories.PatientFactory")
    clinic = factory.SelfAttribute("patient.clinic")
    staff_user = factory.SubFactory(StaffFactory)
    kind = "identity_check"
    reason = "The patient phoned about their order."


class TaskStatisticFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = "support.TaskStatistic"

    queue = "default"
    task = factory.Sequence(lambda n: f"tests.task_{n}")
    outcome = "succeeded"
