import datetime

import factory
from oauth2_provider.models import AccessToken, Application, set_token_value

from patients import phi
from patients.models import (
    Allergy,
    Clinic,
    ClinicClient,
    CurrentMedication,
    Diagnosis,
    IdempotencyKey,
    Observation,
    Patient,
)


class ClinicFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Clinic

    name = factory.Sequence(lambda n: f"Clinic {n}")
    jurisdiction = "GB"
    currency = "GBP"
    ods_code = factory.Sequence(lambda n: f"Y{n:05d}")
    # What an NHS EPS message needs of the prescribing organisation (invented values).
    phone = "0113 496 0000"
    address_line = "1 Synthetic Street"
    city = "Leeds"
    district = "West Yorkshire"
    postal_code = "LS1 1AA"
    managing_organisation_ods_code = "QWO"
    managing_organisation_name = "NHS West Yorkshire Integrated Care Board"


def test_range_nhs_number(n: int) -> str:
    """The n-th valid NHS number in the 999 range reserved for testing (Modulus 11 check digit).

    Every factory patient gets its own: one shared number would make them all one person to the
    pharmacy's cross-clinic history checks.
    """
    candidate = n
    while True:
        digits = f"999{candidate % 1_000_000:06d}"
        check = 11 - sum(int(d) * w for d, w in zip(digits, range(10, 1, -1), strict=True)) % 11
        if check != 10:
            return digits + str(0 if check == 11 else check)
        candidate += 1_000_000 // 7 + 1


class PatientFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Patient

    clinic = factory.SubFactory(ClinicFactory)
    given_name = factory.Faker("first_name")
    family_name = factory.Faker("last_name")
    birth_date = factory.Sequence(lambda n: datetime.date(1991, 3, 14) - datetime.timedelta(days=n % 9000))
    sex = "female"
    nhs_number = factory.Sequence(test_range_nhs_number)
    address_line = "1 Synthetic Street"
    city = "Leeds"
    postal_code = "LS1 1AA"
    email = ""
    phone = ""
    nhs_number_index = factory.LazyAttribute(lambda patient: phi.nhs_number_index(patient.nhs_number))
    email_index = factory.LazyAttribute(lambda patient: phi.email_index(patient.email))
    phone_index = factory.LazyAttribute(lambda patient: phi.phone_index(patient.phone))
    family_name_birth_date_index = factory.LazyAttribute(
        lambda patient: phi.family_name_birth_date_index(patient.family_name, patient.birth_date)
    )
    name_birth_date_index = factory.LazyAttribute(
        lambda patient: phi.name_birth_date_index(patient.given_name, patient.family_name, patient.birth_date)
    )


class AllergyFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Allergy

    patient = factory.SubFactory(PatientFactory)
    substance = "penicillin"


class ApplicationFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Application

    name = factory.Sequence(lambda n: f"integration {n}")
    client_type = Application.CLIENT_CONFIDENTIAL
    authorization_grant_type = Application.GRANT_CLIENT_CREDENTIALS


class ClinicClientFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = ClinicClient

    clinic = factory.SubFactory(ClinicFactory)
    application = factory.SubFactory(ApplicationFactory)


class AccessTokenFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = AccessToken

    application = factory.SubFactory(ApplicationFactory)
    token = factory.Sequence(lambda n: f"test-token-{n}-{'x' * 20}")
    scope = "patients:read patients:write prescriptions:read prescriptions:write"
    expires = factory.LazyFunction(lambda: datetime.datetime.now(datetime.UTC) + datetime.timedelta(hours=1))

    @classmethod
    def _create(cls, model_class: type[AccessToken], *args: object, **kwargs: object) -> AccessToken:
        """Stored as the token endpoint stores it (its checksum only); the returned object keeps
        the raw token in `.token` for the test to present."""
        raw = str(kwargs.pop("token"))
        token = model_class(**kwargs)
        set_token_value(token, raw)
        token.save()
        token.token = raw
        return token


_nhs_serial = iter(range(100_000_001, 999_999_999, 7))


def distinct_nhs_number() -> str:
    """A valid NHS number (modulus 11 check digit) not handed out before in this run: patients
    sharing one are one person to the checks (history, early re-supply)."""
    while True:
        digits = str(next(_nhs_serial))
        remainder = sum(int(digit) * (10 - position) for position, digit in enumerate(digits)) % 11
        check = (11 - remainder) % 11
        if check != 10:
            return f"{digits}{check}"


class CurrentMedicationFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = CurrentMedication

    patient = factory.SubFactory(PatientFactory)
    name = "Sertraline 50mg tablets"


class DiagnosisFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Diagnosis

    patient = factory.SubFactory(PatientFactory)
    code_system = "http://hl7.org/fhir/sid/icd-10"
    code = "F90.0"
    display = "Attention deficit hyperactivity disorder"
    recorded_on = datetime.date(2026, 1, 5)


class ObservationFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Observation

    patient = factory.SubFactory(PatientFactory)
    kind = Observation.Kind.WEIGHT
    value = 70
    observed_on = datetime.date(2026, 11, 1)


class IdempotencyKeyFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = IdempotencyKey

    clinic = factory.SubFactory(ClinicFactory)
    key = factory.Sequence(lambda n: f"key-{n}")
    method = "POST"
    path = "/api/v1/patients/"
    request_hash = "0" * 64
    response_status = 201
    response_body = "{}"
    expires_at = factory.LazyFunction(
        lambda: datetime.datetime.now(datetime.UTC) + datetime.timedelta(days=1)
    )
