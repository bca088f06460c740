"""Patient identifiers are encrypted at rest and searchable only through blind indexes."""

from __future__ import annotations

import datetime

import pytest
from cryptography.fernet import Fernet
from django.core.management import call_command
from django.db import connection
from encrypted_fields.fields import EncryptedFieldMixin

from patients import phi
from patients.models import Patient
from patients.services import patient_create
from tests.patients.factories import ClinicFactory

pytestmark = pytest.mark.django_db

IDENTIFIERS = {
    "given_name": "Zebedee",
    "family_name": "Quixotica",
    "birth_date": datetime.date(1971, 6, 23),
    "nhs_number": "9434765919",
    "address_line": "77 Plaintext Avenue",
    "city": "Harrogate",
    "region": "North Yorkshire",
    "postal_code": "HG1 9ZZ",
    "email": "zebedee.quixotica@example.invalid",
    "phone": "+44 7700 900123",
}


def _create_patient() -> Patient:
    return patient_create(clinic=ClinicFactory(), actor="test", **IDENTIFIERS)


def _raw_row(patient_id: int) -> str:
    with connection.cursor() as cursor:
        cursor.execute("SELECT row_to_json(p)::text FROM patients_patient p WHERE id = %s", [patient_id])
        return cursor.fetchone()[0]


def test_the_raw_patient_row_holds_no_identifier_in_plaintext():
    patient = _create_patient()

    raw = _raw_row(patient.pk)

    for value in [*IDENTIFIERS.values(), "1971-06-23", "9434765919", "7700900123"]:
        assert str(value) not in raw
    assert raw.count('"gAAAAA') == 10


def test_identifiers_read_back_unchanged_and_birth_date_is_a_date():
    patient = _create_patient()

    loaded = Patient.objects.get(pk=patient.pk)

    assert {name: getattr(loaded, name) for name in IDENTIFIERS} == IDENTIFIERS
    assert isinstance(loaded.birth_date, datetime.date)


def test_blank_optional_identifiers_stay_blank_strings():
    patient = patient_create(
        clinic=ClinicFactory(),
        given_name="Ann",
        family_name="Other",
        birth_date=datetime.date(1980, 1, 1),
    )

    loaded = Patient.objects.get(pk=patient.pk)

    assert (loaded.nhs_number, loaded.email, loaded.phone) == ("", "", "")
    assert (loaded.nhs_number_index, loaded.email_index, loaded.phone_index) == ("", "", "")


def test_blind_indexes_find_a_patient_by_exact_identifier_however_it_is_written():
    patient = _create_patient()

    assert Patient.objects.get(nhs_number_index=phi.nhs_number_index("943 476 5919")) == patient
    assert Patient.objects.get(email_index=phi.email_index(" Zebedee.Quixotica@EXAMPLE.invalid")) == patient
    assert Patient.objects.get(phone_index=phi.phone_index("+44 (7700) 900-123")) == patient
    digest = phi.family_name_birth_date_index("QUIXOTICA", datetime.date(1971, 6, 23))
    assert Patient.objects.get(family_name_birth_date_index=digest) == patient
    wrong_date = phi.family_name_birth_date_index("Quixotica", datetime.date(1971, 6, 24))
    assert not Patient.objects.filter(family_name_birth_date_index=wrong_date).exists()


def test_a_blind_index_depends_on_the_key(settings):
    before = phi.nhs_number_index("9434765919")

    settings.BLIND_INDEX_KEY = "another-key"

    assert phi.nhs_number_index("9434765919") != before
    assert len(before) == 64


NEW_KEY = Fernet.generate_key().decode()


def test_rotate_keys_re_encrypts_under_the_new_key_and_old_data_stays_readable(settings):
    patient = _create_patient()
    raw_before = _raw_row(patient.pk)
    # A new key first: the old one still decrypts, new writes use the new one.
    old_keys = list(settings.PHI_ENCRYPTION_KEYS)
    settings.PHI_ENCRYPTION_KEYS = [NEW_KEY, *old_keys]
    assert Patient.objects.get(pk=patient.pk).family_name == "Quixotica"

    call_command("rotate_keys", stdout=open("/dev/null", "w"))  # noqa: SIM115

    raw_after = _raw_row(patient.pk)
    assert raw_after != raw_before
    settings.PHI_ENCRYPTION_KEYS = [NEW_KEY]
    settings.SALT_KEY = []
    loaded = Patient.objects.get(pk=patient.pk)
    assert {name: getattr(loaded, name) for name in IDENTIFIERS} == IDENTIFIERS


def test_data_written_under_a_dropped_key_does_not_decrypt(settings):
    patient = _create_patient()
    settings.PHI_ENCRYPTION_KEYS = [NEW_KEY]
    settings.SALT_KEY = []

    loaded = Patient.objects.only("family_name").get(pk=patient.pk)

    assert loaded.family_name.startswith("gAAAAA")
    assert "Quixotica" not in loaded.family_name


def test_patient_data_does_not_depend_on_the_secret_key(settings):
    patient = _create_patient()
    settings.SALT_KEY = []  # no key derived from SECRET_KEY is in play

    settings.SECRET_KEY = "a-freshly-rotated-secret-key-" + "x" * 40
    settings.SECRET_KEY_FALLBACKS = []

    loaded = Patient.objects.get(pk=patient.pk)
    assert {name: getattr(loaded, name) for name in IDENTIFIERS} == IDENTIFIERS


def test_rows_under_the_former_secret_key_derived_keys_are_read_and_rotate_keys_moves_them(settings):
    patient = _create_patient()
    # A row written the former way: the library's key derived from SECRET_KEY and a salt.
    legacy = Fernet(EncryptedFieldMixin.keys.func(None)[0])
    with connection.cursor() as cursor:
        cursor.execute(
            "UPDATE patients_patient SET family_name = %s WHERE id = %s",
            [legacy.encrypt(b"Formerly").decode(), patient.pk],
        )
    assert Patient.objects.get(pk=patient.pk).family_name == "Formerly"

    call_command("rotate_keys", stdout=open("/dev/null", "w"))  # noqa: SIM115

    settings.SALT_KEY = []
    assert Patient.objects.get(pk=patient.pk).family_name == "Formerly"


def test_admin_patient_search_finds_by_blind_index_only(admin_client):
    patient = _create_patient()
    other = patient_create(
        clinic=patient.clinic, given_name="Other", family_name="Person", birth_date=datetime.date(1980, 1, 1)
    )

    by_nhs = admin_client.get("/admin/patients/patient/", {"q": "943 476 5919"})
    by_name_and_dob = admin_client.get("/admin/patients/patient/", {"q": "quixotica 1971-06-23"})
    by_partial_name = admin_client.get("/admin/patients/patient/", {"q": "Quix"})

    assert [row.pk for row in by_nhs.context["cl"].result_list] == [patient.pk]
    assert [row.pk for row in by_name_and_dob.context["cl"].result_list] == [patient.pk]
    assert list(by_partial_name.context["cl"].result_list) == []
    assert other.pk not in [row.pk for row in by_nhs.context["cl"].result_list]
