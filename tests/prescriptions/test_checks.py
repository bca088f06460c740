"""The clinical check engine, rule by rule: each table has passing and failing cases and the
rule's source in the docstring. Prescriptions are made through the services, as the API does,
against the real formulary file."""

from __future__ import annotations

import datetime

import pytest
from django.utils import timezone

from patients.serializers import nhs_number_is_valid as valid_nhs_number
from prescriptions import checks
from prescriptions.models import FormularyRelease, Prescription, Status
from tests.patients.factories import AllergyFactory, ClinicFactory, CurrentMedicationFactory, PatientFactory
from tests.prescriptions.factories import PrescriberFactory, adhd_context, checked, scenario

pytestmark = pytest.mark.django_db

TODAY = timezone.localdate
PARACETAMOL, AMOXICILLIN, FLUCLOXACILLIN = "322236009", "323509004", "323548005"
METHYLPHENIDATE_10, METHYLPHENIDATE_18 = "324907005", "9211711000001107"
LISDEXAMFETAMINE_30, ATOMOXETINE_40, PHENELZINE = "21640111000001103", "39112111000001107", "321886008"
US_METHYLPHENIDATE, US_DIAZEPAM, US_PARACETAMOL = "1091170", "197591", "313782"
CD_ITEM = {
    "dose_text": "One tablet twice a day",
    "quantity": 56,
    "quantity_words": "fifty six",
    "days_supply": 28,
}


def cd_scenario(**overrides):  # type: ignore[no-untyped-def]
    """A complete, lawful GB Schedule 2 prescription for an eligible patient, changed by overrides."""
    item = {**CD_ITEM, **overrides.pop("item", {})}
    return scenario(
        code=overrides.pop("code", METHYLPHENIDATE_10), item=item, **{**adhd_context(), **overrides}
    )


def test_a_clean_non_controlled_prescription_is_approved_with_no_findings(formulary):
    prescription = scenario()

    assert checked(prescription) == {}
    assert Prescription.objects.get(pk=prescription.pk).status == Status.APPROVED


def test_a_complete_schedule_2_prescription_waits_only_for_the_pharmacist(formulary):
    """Misuse of Drugs Regulations 2001; every controlled drug is approved by a pharmacist."""
    prescription = cd_scenario()

    assert checked(prescription) == {"controlled_drug.pharmacist_approval": "needs_pharmacist"}
    assert Prescription.objects.get(pk=prescription.pk).status == Status.AWAITING_PHARMACIST


@pytest.mark.parametrize(
    ("allergy", "code", "expected"),
    [
        ("paracetamol", PARACETAMOL, {"allergy.ingredient": "block"}),
        ("penicillin", AMOXICILLIN, {"allergy.class": "block"}),
        ("amoxicillin", FLUCLOXACILLIN, {"allergy.class": "block"}),
        ("penicillin", PARACETAMOL, {}),
        ("ibuprofen", PARACETAMOL, {}),
        ("latex", PARACETAMOL, {"allergy.unrecognised": "needs_pharmacist"}),
    ],
)
def test_allergies_are_checked_against_ingredient_and_class(formulary, allergy, code, expected):
    """Source: BNF hypersensitivity and cross-sensitivity (formulary allergy classes)."""
    prescription = scenario(
        code=code,
        item={"dose_text": "One capsule twice a day", "unit": code == PARACETAMOL and "tablet" or "capsule"},
    )
    AllergyFactory(patient=prescription.patient, substance=allergy)

    assert {k: v for k, v in checked(prescription).items() if k.startswith("allergy")} == expected


@pytest.mark.parametrize(
    ("current", "code", "expected"),
    [
        ("Phenelzine 15mg tablets", METHYLPHENIDATE_10, ("interaction.contraindicated", "block")),
        ("Fluoxetine 20mg capsules", ATOMOXETINE_40, ("interaction.major", "needs_pharmacist")),
        ("Clonidine 100 microgram tablets", METHYLPHENIDATE_10, ("interaction.major", "needs_pharmacist")),
        ("Ramipril 5mg capsules", METHYLPHENIDATE_10, ("interaction.moderate", "info")),
        ("Omeprazole 20mg", ATOMOXETINE_40, None),
        ("Mystery tonic", PARACETAMOL, ("interaction.unrecognised_medicine", "needs_pharmacist")),
    ],
)
def test_interactions_with_current_medicines(formulary, current, code, expected):
    """Source: formulary interaction table (BNF Appendix 1; SmPC section 4.5; MHRA)."""
    unit = "capsule" if code == ATOMOXETINE_40 else "tablet"
    prescription = scenario(code=code, item={**CD_ITEM, "unit": unit}, **adhd_context())
    CurrentMedicationFactory(patient=prescription.patient, name=current)

    found = {(k, v) for k, v in checked(prescription).items() if k.startswith("interaction")}

    assert found == ({expected} if expected else set())


def test_a_contraindicated_pair_on_one_prescription_is_rejected_with_the_reason(formulary):
    """Source: MAOI + SSRI, BNF Appendix 1 (serotonin syndrome)."""
    prescription = scenario(
        code=PHENELZINE, item={"dose_text": "One tablet three times a day", "quantity": 42}
    )
    from prescriptions.models import Medication, PrescriptionItem

    PrescriptionItem.objects.create(
        prescription=prescription,
        medication=Medication.objects.get(code="321987003"),
        dose_text="One tablet a day",
        quantity=14,
        unit="tablet",
        days_supply=14,
    )

    assert checked(prescription)["interaction.contraindicated"] == "block"
    prescription.refresh_from_db()
    assert prescription.status == Status.REJECTED
    assert "serotonin syndrome" in prescription.status_reason


def test_a_recent_supply_in_scriptline_counts_as_a_current_medicine(formulary):
    """Source: MAOI washout of 14 days (stimulant SmPCs section 4.3)."""
    first = scenario(code=PHENELZINE, item={"dose_text": "One tablet three times a day", "quantity": 42})
    checked(first)
    second = cd_scenario(patient_object=first.patient, clinic=first.clinic)

    assert checked(second)["interaction.contraindicated"] == "block"


@pytest.mark.parametrize(
    ("item", "expected"),
    [
        ({"quantity": 28, "days_supply": 14}, {}),
        (
            {"quantity": 120, "quantity_words": "", "days_supply": 10},
            {"dose.above_maximum": "needs_pharmacist"},
        ),
        ({"quantity": 200, "days_supply": 10}, {"dose.far_above_maximum": "block"}),
        ({"quantity": 28, "days_supply": 14, "units_per_day": 9}, {"dose.above_maximum": "needs_pharmacist"}),
        ({"quantity": 28, "days_supply": 14, "units_per_day": 17}, {"dose.far_above_maximum": "block"}),
    ],
)
def test_the_maximum_daily_dose_comes_from_the_dose_and_quantity(formulary, item, expected):
    """Source: BNF maximum adult daily dose (paracetamol 4 g a day)."""
    found = checked(scenario(item=item))

    assert {k: v for k, v in found.items() if k.startswith("dose")} == expected


def test_a_dose_over_the_maximum_says_by_how_much_and_shows_its_working(formulary):
    """Source: BNF maximum adult daily dose (paracetamol 4 g a day)."""
    prescription = scenario(item={"quantity": 120, "quantity_words": "", "days_supply": 10})
    checked(prescription)

    finding = next(
        r
        for r in Prescription.objects.get(pk=prescription.pk).check_results
        if r["code"] == "dose.above_maximum"
    )

    assert finding["message"] == (
        "6000 mg of Paracetamol a day is more than the maximum of 4000 mg a day, by 2000 mg. "
        "Check the dose with the prescriber."
    )
    assert finding["facts"] == {
        "daily dose": "6000 mg",
        "from": "12 tablets a day (120 tablets over 10 days)",
        "maximum": "4000 mg a day (adult)",
    }


@pytest.mark.parametrize(
    ("item", "expected"),
    [
        ({"quantity": 28, "days_supply": 14}, {}),
        ({"quantity": 28, "days_supply": 120}, {"supply.days_too_long": "needs_pharmacist"}),
        (
            {"quantity": 28, "days_supply": 14, "units_per_day": 1},
            {"supply.quantity_exceeds_dose": "needs_pharmacist"},
        ),
        ({"quantity": 20, "days_supply": 14, "units_per_day": 2}, {"supply.quantity_short_of_dose": "info"}),
        ({"quantity": 28, "days_supply": 14, "unit": "ml"}, {"supply.unit_mismatch": "needs_pharmacist"}),
    ],
)
def test_days_supply_and_quantity_agree(formulary, item, expected):
    """Source: Scriptline dispensing policy."""
    found = checked(scenario(item=item))

    assert {k: v for k, v in found.items() if k.startswith("supply")} == expected


@pytest.mark.parametrize(
    ("nhs_number", "expected"),
    [
        ("9434765919", {}),
        ("9434765918", {"identity.nhs_number_invalid": "block"}),
        ("", {"identity.no_nhs_number": "info"}),
    ],
)
def test_gb_patient_identity_uses_the_nhs_number_check_digit(formulary, nhs_number, expected):
    """Source: NHS Data Dictionary, NHS number (Modulus 11)."""
    found = checked(scenario(patient={"nhs_number": nhs_number}))

    assert {k: v for k, v in found.items() if k.startswith("identity")} == expected


@pytest.mark.parametrize(
    ("jurisdiction", "prescriber", "patient", "expected"),
    [
        ("GB", {"registration_number": "1234567"}, {}, {}),
        ("GB", {"registration_number": "12345"}, {}, {"prescriber.registration_invalid": "block"}),
        (
            "GB",
            {"registration_body": "NPI", "registration_number": "1234567893"},
            {},
            {"prescriber.wrong_jurisdiction": "block"},
        ),
        ("GB", {"registration_body": "NMC", "registration_number": "12A3456E"}, {}, {}),
        ("US", {}, {}, {}),
        ("US", {"registration_number": "1234567890"}, {}, {"prescriber.registration_invalid": "block"}),
        ("US", {}, {"region": "CA"}, {"prescriber.not_licensed_in_state": "block"}),
        ("US", {}, {"region": ""}, {"prescriber.patient_state_unknown": "needs_pharmacist"}),
    ],
)
def test_the_prescriber_is_registered_and_licensed_where_the_patient_is(
    formulary, jurisdiction, prescriber, patient, expected
):
    """Source: GMC/NMC register formats; CMS NPI standard (Luhn); US state licensure."""
    code = PARACETAMOL if jurisdiction == "GB" else US_PARACETAMOL
    found = checked(scenario(code=code, jurisdiction=jurisdiction, prescriber=prescriber, patient=patient))

    assert {k: v for k, v in found.items() if k.startswith("prescriber")} == expected


def test_a_prescriber_not_authorised_for_controlled_drugs_is_refused(formulary):
    """Source: Scriptline prescriber record (controlled-drug authorisation)."""
    found = checked(cd_scenario(prescriber={"controlled_drugs_authorised": False}))

    assert found["prescriber.not_authorised_for_controlled_drugs"] == "block"


@pytest.mark.parametrize(
    ("context", "birth_date", "expected"),
    [
        ("complete", datetime.date(1995, 1, 1), set()),
        (
            "none",
            datetime.date(1995, 1, 1),
            {
                "eligibility.no_adhd_diagnosis",
                "eligibility.blood_pressure_not_recent",
                "eligibility.pulse_not_recent",
                "eligibility.weight_not_recent",
            },
        ),
        (
            "old",
            datetime.date(1995, 1, 1),
            {
                "eligibility.blood_pressure_not_recent",
                "eligibility.pulse_not_recent",
                "eligibility.weight_not_recent",
            },
        ),
        ("complete", None, {"eligibility.age"}),
        ("high", datetime.date(1995, 1, 1), {"eligibility.blood_pressure_high"}),
    ],
)
def test_adhd_medicines_need_a_diagnosis_age_and_recent_monitoring(formulary, context, birth_date, expected):
    """Source: NICE NG87 (diagnosis before medication; BP, pulse, weight before and 6-monthly);
    SmPCs (licensed from age 6)."""
    high = adhd_context()
    high["observations"][0] = {**high["observations"][0], "value": 165, "diastolic": 100}
    contexts = {
        "complete": adhd_context(),
        "none": {},
        "old": adhd_context(TODAY() - datetime.timedelta(days=200)),
        "high": high,
    }
    born = birth_date or TODAY() - datetime.timedelta(days=4 * 365 + 30)
    prescription = scenario(
        code=ATOMOXETINE_40,
        item={**CD_ITEM, "unit": "capsule", "dose_text": "One capsule twice a day"},
        patient={"birth_date": born},
        **contexts[context],
    )

    found = checked(prescription)

    assert {
        k for k, v in found.items() if k.startswith("eligibility") and v == "needs_pharmacist"
    } == expected


@pytest.mark.parametrize(
    ("days_later", "expected"),
    [(10, "needs_pharmacist"), (20, "needs_pharmacist"), (21, None), (28, None)],
)
def test_an_early_resupply_is_flagged_before_75_percent_of_the_days(formulary, days_later, expected):
    """Source: Scriptline dispensing policy (guidance, not law): 75% of the previous days' supply."""
    start = TODAY() - datetime.timedelta(days=days_later)
    first = cd_scenario(issued_on=start)
    Prescription.objects.filter(pk=first.pk).update(status=Status.DELIVERED)
    second = cd_scenario(
        clinic=first.clinic, patient_object=first.patient, prescriber_object=first.prescriber
    )

    assert checked(second).get("history.early_resupply") == expected


def test_a_new_dose_of_the_same_adhd_medicine_is_a_titration_step_with_the_previous_dose(formulary):
    """Source: NICE NG87 section 1.7 (titration)."""
    first = cd_scenario(issued_on=TODAY() - datetime.timedelta(days=28))
    Prescription.objects.filter(pk=first.pk).update(status=Status.DELIVERED)
    second = cd_scenario(
        code=METHYLPHENIDATE_18,
        item={
            "dose_text": "Two tablets each morning",
            "quantity": 56,
            "quantity_words": "fifty six",
            "days_supply": 28,
        },
        clinic=first.clinic,
        patient_object=first.patient,
        prescriber_object=first.prescriber,
    )

    assert checked(second)["titration.step"] == "info"
    message = next(
        r["message"]
        for r in Prescription.objects.get(pk=second.pk).check_results
        if r["code"] == "titration.step"
    )
    assert message.startswith("Titration step up: Methylphenidate 36 mg a day")
    assert "previous dose 20 mg a day (10mg tablet)" in message


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ({}, {}),
        ({"item": {"quantity_words": ""}}, {"cd_gb.quantity_words_missing": "block"}),
        ({"item": {"quantity_words": "twenty eight"}}, {"cd_gb.quantity_words_mismatch": "block"}),
        ({"item": {"quantity_words": "fifty-six tablets"}}, {}),
        ({"item": {"dose_text": "As directed"}}, {"cd_gb.dose_not_specific": "block"}),
        ({"prescriber": {"address": ""}}, {"cd_gb.prescriber_address": "block"}),
        ({"patient": {"address_line": ""}}, {"cd_gb.patient_name_address": "block"}),
        ({"repeats": 1}, {"cd_gb.repeats_not_allowed": "block"}),
        ({"issued_on": TODAY() - datetime.timedelta(days=29)}, {"cd_gb.expired": "block"}),
        ({"start_date": TODAY() + datetime.timedelta(days=3)}, {"dates.supply_held": "needs_pharmacist"}),
        # 28 days run from the appropriate date: the later of signing and the start date.
        (
            {
                "issued_on": TODAY() - datetime.timedelta(days=40),
                "start_date": TODAY() - datetime.timedelta(days=10),
            },
            {},
        ),
        (
            {
                "issued_on": TODAY() - datetime.timedelta(days=60),
                "start_date": TODAY() - datetime.timedelta(days=29),
            },
            {"cd_gb.expired": "block"},
        ),
        (
            {"item": {"days_supply": 35, "quantity": 70, "quantity_words": "seventy"}},
            {"cd_gb.over_30_days": "block"},
        ),
        (
            {
                "item": {"days_supply": 35, "quantity": 70, "quantity_words": "seventy"},
                "clinical_justification": "Travelling abroad",
            },
            {"cd_gb.over_30_days": "needs_pharmacist"},
        ),
    ],
)
def test_gb_controlled_drug_law(formulary, overrides, expected):
    """Source: Misuse of Drugs Regulations 2001, regulations 15 (form) and 16 (supply);
    DHSC guidance on 30 days' supply (guidance, not law)."""
    found = checked(cd_scenario(**overrides))

    assert {k: v for k, v in found.items() if k.startswith(("cd_gb", "dates"))} == expected


def us_cd(**overrides):  # type: ignore[no-untyped-def]
    fields = {"two_factor_signed_at": timezone.now(), **adhd_context(), **overrides}
    return scenario(
        code=fields.pop("code", US_METHYLPHENIDATE),
        jurisdiction="US",
        item={**CD_ITEM, **fields.pop("item", {})},
        **fields,
    )


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ({}, {}),
        ({"repeats": 1}, {"cd_us.schedule_ii_refills": "block"}),
        ({"two_factor_signed_at": None}, {"cd_us.two_factor_signature_missing": "block"}),
        ({"prescriber": {"dea_number": ""}}, {"cd_us.dea_missing": "block"}),
        ({"prescriber": {"dea_number": "AB1234567"}}, {"cd_us.dea_invalid": "block"}),
        (
            {"code": US_DIAZEPAM, "repeats": 5, "item": {"days_supply": 31, "quantity": 62}},
            {"cd_us.refills_beyond_six_months": "info"},
        ),
        ({"code": US_DIAZEPAM, "repeats": 5, "item": {"days_supply": 30, "quantity": 60}}, {}),
        (
            {"code": US_DIAZEPAM, "repeats": 6, "item": {"days_supply": 10, "quantity": 20}},
            {"cd_us.too_many_refills": "block"},
        ),
        ({"code": US_DIAZEPAM, "repeats": 2, "item": {"days_supply": 30, "quantity": 60}}, {}),
        (
            {"earliest_fill_date": TODAY() + datetime.timedelta(days=5)},
            {"dates.supply_held": "needs_pharmacist"},
        ),
    ],
)
def test_us_controlled_substance_law(formulary, overrides, expected):
    """Source: 21 CFR 1306.05(a), 1306.12, 1306.22(a); 21 CFR 1311.120 and 1311.140 (EPCS)."""
    found = checked(us_cd(**overrides))

    assert {k: v for k, v in found.items() if k.startswith(("cd_us", "dates"))} == expected


@pytest.mark.parametrize(
    ("second", "expected"),
    [
        ({"earliest_fill_date": None}, {"cd_us.series_earliest_fill_date_missing": "block"}),
        ({"earliest_fill_date": "+28"}, {"dates.supply_held": "needs_pharmacist"}),
        (
            {"earliest_fill_date": "+28", "item": {"days_supply": 70, "quantity": 140}},
            {"cd_us.series_over_90_days": "block", "dates.supply_held": "needs_pharmacist"},
        ),
    ],
)
def test_us_schedule_ii_series_of_prescriptions(formulary, second, expected):
    """Source: 21 CFR 1306.12(b): multiple Schedule II prescriptions up to a 90-day supply, each
    after the first with the earliest date it may be filled."""
    first = us_cd()
    checked(first)
    if second.get("earliest_fill_date") == "+28":
        second = {**second, "earliest_fill_date": TODAY() + datetime.timedelta(days=28)}
    follow_up = us_cd(
        clinic=first.clinic, patient_object=first.patient, prescriber_object=first.prescriber, **second
    )

    found = checked(follow_up)

    assert {k: v for k, v in found.items() if k.startswith(("cd_us", "dates"))} == expected


def test_a_check_that_raises_sends_the_prescription_to_a_pharmacist(formulary, monkeypatch):
    """Fail closed: a check that cannot run is a finding for the pharmacist, never a pass."""
    from prescriptions.checks import base

    def broken(context):  # type: ignore[no-untyped-def]
        raise KeyError("boom")

    monkeypatch.setattr(base, "REGISTRY", [base.Check("dose", broken, base.ALL, "test source")])
    monkeypatch.setattr(checks, "REGISTRY", base.REGISTRY)

    found = checked(scenario())

    assert found == {"dose.could_not_run": "needs_pharmacist"}


def test_without_a_loaded_formulary_release_nothing_passes_silently(formulary):
    """Fail closed: interactions and allergy classes come from the formulary file."""
    FormularyRelease.objects.all().delete()

    found = checked(scenario())

    assert found == {"formulary.not_loaded": "needs_pharmacist"}


def test_a_product_coded_for_another_jurisdiction_is_refused(formulary):
    """Source: Scriptline formulary: GB clinics prescribe dm+d products, US clinics RxNorm."""
    found = checked(scenario(code=US_PARACETAMOL, item={"quantity": 28}))

    assert found["formulary.wrong_jurisdiction"] == "block"


def test_duplicate_therapy_with_a_current_medicine_of_the_same_class(formulary):
    """Source: Scriptline policy; BNF guidance on therapeutic duplication."""
    prescription = cd_scenario(
        code=LISDEXAMFETAMINE_30,
        item={
            "unit": "capsule",
            "dose_text": "One capsule each morning",
            "quantity": 28,
            "quantity_words": "twenty eight",
        },
    )
    CurrentMedicationFactory(patient=prescription.patient, name="Dexamfetamine 5mg tablets")

    assert checked(prescription)["duplicate.with_current"] == "needs_pharmacist"


def test_the_check_results_travel_in_the_event_payload(formulary):
    prescription = scenario(patient={"nhs_number": "9434765918"})
    checked(prescription)
    from events.models import Event

    event = Event.objects.get(aggregate_id=prescription.pk, type="prescription.rejected")

    assert event.payload["checks"] == [
        {
            "code": "identity.nhs_number_invalid",
            "severity": "block",
            "message": "The patient's NHS number fails its Modulus 11 check digit; correct the patient record.",
            "source": "NHS Data Dictionary: NHS number (Modulus 11 check digit)",
            "item": None,
            "facts": {},
        }
    ]
    assert "9434765918" not in str(event.payload)


def test_the_engine_reads_everything_in_a_constant_number_of_queries(formulary, django_assert_num_queries):
    small = cd_scenario()
    big = cd_scenario()
    for prescription, count in ((small, 1), (big, 6)):
        for _ in range(count):
            past = cd_scenario(
                clinic=prescription.clinic,
                patient_object=prescription.patient,
                prescriber_object=prescription.prescriber,
                issued_on=TODAY() - datetime.timedelta(days=60),
            )
            Prescription.objects.filter(pk=past.pk).update(status=Status.DELIVERED)
            CurrentMedicationFactory(patient=prescription.patient, name="Ramipril 5mg")

    def load(p):
        return (
            Prescription.objects.select_related("clinic", "patient", "prescriber")
            .prefetch_related("items__medication", "off_formulary_items")  # as prescription_run_checks
            .get(pk=p.pk)
        )

    small, big = load(small), load(big)

    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    with CaptureQueriesContext(connection) as first:
        checks.run_checks(small)
    with CaptureQueriesContext(connection) as few:
        checks.run_checks(small)
    with CaptureQueriesContext(connection) as many:
        checks.run_checks(big)

    assert len(many) == len(few)
    # The formulary's fingerprint, then the patient's records and context, the history and the
    # items in one statement. The first run also read the formulary's medications,
    # interactions, allergy classes, children's doses and state limits, which later runs keep
    # while it is unchanged.
    assert len(few) == 2
    assert len(first) == len(few) + 6


def test_one_check_run_reads_in_two_statements_then_moves_the_prescription(formulary):
    """prescription_run_checks: the prescription with its clinic, patient, prescriber and the
    formulary's fingerprint in one statement, every record the checks read in a second, then
    the guarded transition."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from prescriptions import services

    past = cd_scenario(issued_on=TODAY() - datetime.timedelta(days=60))
    Prescription.objects.filter(pk=past.pk).update(status=Status.DELIVERED)
    prescription = cd_scenario(
        clinic=past.clinic, patient_object=past.patient, prescriber_object=past.prescriber
    )
    AllergyFactory(patient=prescription.patient, substance="latex")
    CurrentMedicationFactory(patient=prescription.patient, name="Ramipril 5mg")
    other = cd_scenario(clinic=past.clinic, patient_object=past.patient, prescriber_object=past.prescriber)
    checks._formulary()

    with CaptureQueriesContext(connection) as transition:
        services.prescription_transition(
            prescription_id=other.pk,
            to=Status.AWAITING_PHARMACIST,
            from_statuses=frozenset({Status.RECEIVED}),
            event_type="prescription.awaiting_pharmacist",
            payload={"checks": []},
            check_results=[],
            status_reason="",
            actor="checks",
        )
    with CaptureQueriesContext(connection) as run:
        assert services.prescription_run_checks(prescription_id=prescription.pk) == Status.AWAITING_PHARMACIST

    assert len(run) == 2 + len(transition)
    assert checked(prescription)  # stored results (a second run is a no-op: not received)
    assert services.prescription_run_checks(prescription_id=prescription.pk) is None


def test_clinic_and_patient_fixtures_are_unaffected(formulary):
    # A sanity check that the GB defaults used above are themselves lawful and valid.
    clinic = ClinicFactory()
    assert PrescriberFactory(clinic=clinic).controlled_drugs_authorised is True
    first, second = PatientFactory(clinic=clinic), PatientFactory(clinic=clinic)
    assert first.nhs_number != second.nhs_number
    assert all(valid_nhs_number(patient.nhs_number) for patient in (first, second))
