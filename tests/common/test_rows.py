"""Instances read by hand-written SQL are the same as the ORM's, encrypted fields included."""

from __future__ import annotations

import pytest
from django.forms.models import model_to_dict

from accounts.authentication import ClinicOAuth2Validator
from patients.models import Patient
from prescriptions.models import Prescriber
from prescriptions.selectors import prescription_parties
from tests.conftest import make_clinic_setup
from tests.patients.factories import PatientFactory
from tests.prescriptions.factories import PrescriberFactory

pytestmark = pytest.mark.django_db


def fields(instance):  # type: ignore[no-untyped-def]
    return {field.attname: getattr(instance, field.attname) for field in type(instance)._meta.concrete_fields}


def test_the_parties_read_equal_the_orms_and_another_clinics_come_back_as_none(django_assert_num_queries):
    patient = PatientFactory(given_name="Zara", family_name="Okafor", email="zara@example.test")
    prescriber = PrescriberFactory(clinic=patient.clinic)
    stranger = PatientFactory()

    found_patient, found_prescriber = prescription_parties(
        clinic=patient.clinic, patient_id=patient.pk, prescriber_id=prescriber.pk
    )

    # The patient's identity is not read (nor decrypted) at intake: deferred, read if ever used.
    unread = {"given_name", "family_name", "nhs_number", "email", "phone", "nhs_number_index", "email_index"}
    assert unread <= found_patient.get_deferred_fields()
    assert "birth_date" not in found_patient.get_deferred_fields()  # an NHS exemption by age reads it
    attnames = [field.attname for field in Patient._meta.concrete_fields]
    read = [name for name in attnames if name not in found_patient.get_deferred_fields()]
    stored = Patient.objects.get(pk=patient.pk)
    assert {name: getattr(found_patient, name) for name in read} == {
        name: getattr(stored, name) for name in read
    }
    with django_assert_num_queries(1):
        assert found_patient.given_name == "Zara"
    assert fields(found_patient) == fields(stored)
    assert fields(found_prescriber) == fields(Prescriber.objects.get(pk=prescriber.pk))
    assert prescription_parties(clinic=patient.clinic, patient_id=stranger.pk, prescriber_id=None) == (
        None,
        None,
    )


def test_the_token_lookup_brings_its_application_clinic_link_and_clinic():
    from oauth2_provider.models import AccessToken

    setup = make_clinic_setup("Rows clinic")

    found = ClinicOAuth2Validator()._load_access_token(setup.token)

    stored = AccessToken.objects.get(token_checksum=found.token_checksum)
    assert model_to_dict(found) == model_to_dict(stored)
    assert found.application.clinic_client.clinic == setup.clinic
    assert found.user is None
    assert ClinicOAuth2Validator()._load_access_token("not-a-token") is None


def test_the_intake_s_medication_read_equals_the_orms_and_leaves_out_inactive_ones():
    from prescriptions.models import Medication
    from prescriptions.selectors import formulary_medications
    from tests.prescriptions.factories import MedicationFactory

    active = MedicationFactory(code="111111", name="Active thing")
    MedicationFactory(code="222222", is_active=False)

    found = formulary_medications(codes=["111111", "222222", "333333", "111111"])

    assert [fields(medication) for medication in found] == [fields(Medication.objects.get(pk=active.pk))]


@pytest.mark.django_db(transaction=True)
def test_the_token_lookup_is_planned_once_per_connection_unless_prepared_statements_are_off():
    from django.db import connection

    setup = make_clinic_setup("Planned clinic")
    validator = ClinicOAuth2Validator()
    expected = validator._load_access_token(setup.token).pk

    def prepared() -> list[str]:
        with connection.cursor() as cursor:
            cursor.execute("SELECT statement FROM pg_prepared_statements")
            return [row[0] for row in cursor.fetchall() if "token_checksum" in row[0]]

    connection.ensure_connection()
    assert connection.connection.prepare_threshold == 5  # settings: DATABASE_PREPARED_STATEMENTS
    assert [validator._load_access_token(setup.token).pk for _ in range(2)] == [expected] * 2
    assert prepared() == []  # psycopg prepares the fifth run
    assert [validator._load_access_token(setup.token).pk for _ in range(3)] == [expected] * 3
    assert len(prepared()) == 1
    assert validator._load_access_token("not-a-token") is None  # the same plan, another value

    connection.close()
    connection.ensure_connection()
    connection.connection.prepare_threshold = None  # DATABASE_PREPARED_STATEMENTS=false
    assert [validator._load_access_token(setup.token).pk for _ in range(8)] == [expected] * 8
    assert prepared() == []


def test_an_insert_by_hand_writes_the_row_the_orm_would_in_one_statement(django_assert_num_queries):  # type: ignore[no-untyped-def]
    from django.db import IntegrityError, transaction

    from common import rows
    from pharmacy.models import GatewayWebhookEvent

    by_orm = GatewayWebhookEvent.objects.create(
        event_id="evt_orm", type="order.shipped", order_id="ord_1", payload={"data": {"n": 1}}, applied=True
    )
    with django_assert_num_queries(1):
        by_hand = rows.insert(
            GatewayWebhookEvent(
                event_id="evt_hand",
                type="order.shipped",
                order_id="ord_1",
                payload={"data": {"n": 1}},
                applied=True,
            )
        )

    assert by_hand.pk is not None
    assert by_hand.pk != by_orm.pk
    assert by_hand.received_at is not None
    stored = {row.event_id: fields(row) for row in GatewayWebhookEvent.objects.all()}
    assert stored["evt_hand"] == fields(by_hand)
    expected = {
        **stored["evt_orm"],
        "id": by_hand.pk,
        "event_id": "evt_hand",
        "received_at": by_hand.received_at,
    }
    assert stored["evt_hand"] == expected
    # The unique event id still refuses a second row, as Django's IntegrityError.
    with pytest.raises(IntegrityError), transaction.atomic():
        rows.insert(
            GatewayWebhookEvent(event_id="evt_hand", type="order.shipped", order_id="ord_1", payload={})
        )
