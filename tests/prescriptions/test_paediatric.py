"""Children's doses by age band and body weight: a rule table with the source of each row,
property tests on the age and mg/kg arithmetic, and one case through the API.

Source of the limits: BNF for Children (BNFc) dose tables per drug, the products' SmPCs and FDA
labels, and MHRA Drug Safety Updates, as held in the formulary file's paediatric_doses."""

from __future__ import annotations

import datetime
import json
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from patients.models import Observation
from prescriptions import services
from prescriptions.checks.eligibility import age_on
from prescriptions.checks.paediatric import (
    Weight,
    age_in_months,
    describe_age,
    excesses,
    number,
)
from prescriptions.formulary import FormularyError, formulary_load
from prescriptions.models import Medication, PaediatricDoseRule, Prescription, Status
from tests.conftest import FORMULARY_FILE, prescription_body
from tests.patients.factories import PatientFactory
from tests.prescriptions.factories import checked, scenario

TODAY = datetime.date.today()
ATOMOXETINE_18, ATOMOXETINE_40 = "39111911000001103", "39112111000001107"
PARACETAMOL, IBUPROFEN, CETIRIZINE = "322236009", "329652003", "324611001"
CODEINE, DIAZEPAM, GUANFACINE_2 = "322280009", "321226002", "24441511000001100"
METHYLPHENIDATE_10, US_ATOMOXETINE_40 = "324907005", "349593"


def born(years: int, months: int = 0) -> datetime.date:
    """A birth date making the patient exactly that old today (plus a few days)."""
    total = years * 12 + months
    year, month = divmod(TODAY.year * 12 + TODAY.month - 1 - total, 12)
    return datetime.date(year, month + 1, min(TODAY.day, 28))


def weighed(kilograms: float | None, days_ago: int = 10) -> dict:
    if kilograms is None:
        return {}
    day = TODAY - datetime.timedelta(days=days_ago)
    return {"observations": [{"kind": "weight", "value": Decimal(str(kilograms)), "observed_on": day}]}


def child_prescription(
    code: str, age: int, kilograms: float | None, *, per_day: int, days_ago: int = 10, **kw
):  # type: ignore[no-untyped-def]
    medication = Medication.objects.get(code=code)
    return scenario(
        code=code,
        jurisdiction=kw.pop("jurisdiction", "GB"),
        patient={"birth_date": born(age)},
        item={
            "dose_text": f"One {medication.unit} {per_day} times a day",
            "unit": medication.unit,
            "quantity": per_day * 14,
            "days_supply": 14,
            "units_per_day": per_day,
            **kw.pop("item", {}),
        },
        **weighed(kilograms, days_ago),
    )


def paediatric_findings(prescription) -> dict[str, str]:  # type: ignore[no-untyped-def]
    return {
        code: severity for code, severity in checked(prescription).items() if code.startswith("paediatric")
    }


ROWS = [
    # (medicine, age, weight kg, units a day, expected paediatric findings, source)
    (
        ATOMOXETINE_40,
        8,
        22.2,
        2,
        {"paediatric.daily_per_kg_above_maximum": "needs_pharmacist"},
        "BNFc atomoxetine: max 1.8 mg/kg/day under 70 kg",
    ),
    (
        ATOMOXETINE_40,
        8,
        10,
        2,
        {"paediatric.daily_per_kg_above_maximum": "block"},
        "BNFc atomoxetine; over twice the limit",
    ),
    (ATOMOXETINE_18, 8, 22.2, 1, {}, "BNFc atomoxetine: 0.81 mg/kg/day is within 1.8"),
    (
        ATOMOXETINE_40,
        8,
        None,
        1,
        {"paediatric.weight_needed": "needs_pharmacist"},
        "BNFc: atomoxetine dosed by weight",
    ),
    (ATOMOXETINE_40, 15, 75, 2, {}, "BNFc atomoxetine 70 kg and over: max 120 mg a day"),
    (PARACETAMOL, 10, None, 4, {}, "BNFc paracetamol 10-11 years: 500 mg, 4 doses a day"),
    (
        PARACETAMOL,
        8,
        None,
        4,
        {
            "paediatric.dose_above_maximum": "needs_pharmacist",
            "paediatric.daily_above_maximum": "needs_pharmacist",
        },
        "BNFc paracetamol 8-9 years: 375 mg a dose, 1.5 g a day",
    ),
    (
        IBUPROFEN,
        5,
        None,
        3,
        {"paediatric.dose_above_maximum": "block", "paediatric.daily_above_maximum": "block"},
        "BNFc ibuprofen 4-6 years: 150 mg 3 times a day",
    ),
    (IBUPROFEN, 13, None, 3, {}, "BNFc ibuprofen 12-17 years: up to 2.4 g a day"),
    (CETIRIZINE, 13, None, 1, {}, "BNFc cetirizine 12-17 years: 10 mg once a day"),
    (
        CETIRIZINE,
        7,
        None,
        1,
        {"paediatric.dose_above_maximum": "needs_pharmacist"},
        "BNFc cetirizine 6-11 years: 5 mg twice a day, so a whole 10 mg tablet at once is over",
    ),
    (
        CETIRIZINE,
        4,
        None,
        1,
        {"paediatric.dose_above_maximum": "block", "paediatric.daily_above_maximum": "needs_pharmacist"},
        "BNFc cetirizine 2-5 years: 2.5 mg twice a day",
    ),
    (
        CODEINE,
        10,
        None,
        4,
        {"paediatric.contraindicated_for_age": "block"},
        "MHRA 2013/2015: codeine under 12",
    ),
    (CODEINE, 14, None, 4, {}, "BNFc codeine 12-17 years: max 240 mg a day"),
    (
        DIAZEPAM,
        10,
        30,
        1,
        {"paediatric.no_childrens_dose": "needs_pharmacist"},
        "no children's dose in the formulary",
    ),
    (
        GUANFACINE_2,
        15,
        45,
        3,
        {"paediatric.daily_above_maximum": "needs_pharmacist"},
        "Intuniv SmPC: 41.5-49.4 kg, max 5 mg",
    ),
    (
        GUANFACINE_2,
        15,
        30,
        1,
        {"paediatric.no_dose_for_age": "needs_pharmacist"},
        "Intuniv SmPC: 13-17 years from 34 kg",
    ),
    (
        METHYLPHENIDATE_10,
        10,
        25,
        6,
        {"paediatric.daily_per_kg_above_maximum": "needs_pharmacist"},
        "BNFc methylphenidate: 2.1 mg/kg/day",
    ),
    (METHYLPHENIDATE_10, 10, 25, 4, {}, "BNFc methylphenidate: 1.6 mg/kg/day is within 2.1"),
    (PARACETAMOL, 30, None, 8, {}, "adults are not children: the adult dose check applies"),
]


@pytest.mark.django_db
@pytest.mark.parametrize(("code", "age", "kilograms", "per_day", "expected", "source"), ROWS)
def test_childrens_dose_limits(formulary, code, age, kilograms, per_day, expected, source):
    assert paediatric_findings(child_prescription(code, age, kilograms, per_day=per_day)) == expected, source


@pytest.mark.django_db
def test_the_finding_says_by_how_much_and_cites_bnfc_as_guidance(formulary):
    """BNFc atomoxetine: child under 70 kg, max 1.8 mg/kg/day."""
    prescription = child_prescription(ATOMOXETINE_40, 8, 22.2, per_day=2)
    services.prescription_run_checks(prescription_id=prescription.pk)

    result = next(
        r
        for r in Prescription.objects.get(pk=prescription.pk).check_results
        if r["code"] == "paediatric.daily_per_kg_above_maximum"
    )

    assert "3.6 mg/kg/day, maximum 1.8 for this child; 1.8 mg/kg/day over" in result["message"]
    assert "guidance (BNFc or the product's label), not law" in result["message"]
    assert "BNF for Children (BNFc), Atomoxetine" in result["source"]
    assert result["facts"]["age"] == "8 years"
    assert result["facts"]["weight"].startswith("22.2 kg, measured ")
    assert result["facts"]["per kg"] == "3.6 mg/kg/day"
    assert result["facts"]["daily dose"] == "80 mg"
    assert result["facts"]["rule"] == "atomoxetine-6y-18y-under-70kg-gb"


@pytest.mark.django_db
def test_a_weight_older_than_three_months_does_not_count(formulary):
    """Scriptline policy: a child's weight for a weight-banded medicine is at most 3 months old."""
    prescription = child_prescription(ATOMOXETINE_40, 8, 22, per_day=1, days_ago=100)
    services.prescription_run_checks(prescription_id=prescription.pk)
    stored = Prescription.objects.get(pk=prescription.pk)

    finding = next(r for r in stored.check_results if r["code"] == "paediatric.weight_needed")
    assert "no weight from the last 90 days (the last was measured on" in finding["message"]
    assert stored.status == Status.AWAITING_PHARMACIST


@pytest.mark.django_db
def test_the_age_is_taken_on_the_date_of_issue(formulary):
    """BNFc codeine: contraindicated under 12. A child who turns 12 after the issue date is 11."""
    issued = TODAY - datetime.timedelta(days=40)
    twelfth_birthday = issued + datetime.timedelta(days=20)
    birth = twelfth_birthday.replace(year=twelfth_birthday.year - 12, day=min(twelfth_birthday.day, 28))
    prescription = scenario(
        code=CODEINE,
        patient={"birth_date": birth},
        issued_on=issued,
        item={"dose_text": "One tablet four times a day", "quantity": 12, "days_supply": 3},
    )

    assert paediatric_findings(prescription) == {"paediatric.contraindicated_for_age": "block"}


@pytest.mark.django_db
def test_us_rules_follow_the_fda_label(formulary):
    """FDA label (Strattera): at most 1.4 mg/kg/day for a child up to 70 kg."""
    prescription = child_prescription(US_ATOMOXETINE_40, 9, 25, per_day=1, jurisdiction="US")

    found = paediatric_findings(prescription)

    assert found == {"paediatric.daily_per_kg_above_maximum": "needs_pharmacist"}


def test_every_paediatric_rule_names_its_source_and_says_guidance_or_law():
    data = json.loads(FORMULARY_FILE.read_text())
    rules = data["paediatric_doses"]
    covered = {rule["ingredient"] for rule in rules}

    assert all("guidance" in rule["source"] or "contraindication" in rule["source"] for rule in rules)
    assert {
        "paracetamol",
        "ibuprofen",
        "cetirizine",
        "methylphenidate",
        "lisdexamfetamine",
        "dexamfetamine",
        "atomoxetine",
        "guanfacine",
        "amoxicillin",
    } <= covered


@pytest.mark.django_db
def test_a_rule_without_a_limit_or_source_refuses_the_whole_file(tmp_path):
    data = json.loads(FORMULARY_FILE.read_text())
    data["paediatric_doses"].append({**data["paediatric_doses"][0], "name": "broken", "source": ""})
    path = tmp_path / "formulary.json"
    path.write_text(json.dumps(data))

    with pytest.raises(FormularyError, match="missing source"):
        formulary_load(path=path)
    assert PaediatricDoseRule.objects.count() == 0


# --- Arithmetic -----------------------------------------------------------------------------------
dates = st.dates(min_value=datetime.date(1996, 1, 1), max_value=datetime.date(2040, 12, 31))


@given(birth=dates, on=dates)
def test_age_in_months_agrees_with_age_in_years_across_month_ends_and_leap_days(birth, on):
    if on < birth:
        return
    months = age_in_months(birth, on)

    assert months >= 0
    assert months // 12 == age_on(birth, on)
    # A month is complete exactly when the calendar day is reached again.
    assert ((on.year * 12 + on.month) - (birth.year * 12 + birth.month), on.day) >= (months, birth.day)


@given(birth=dates, on=dates)
def test_age_grows_by_at_most_one_month_a_day(birth, on):
    if on < birth or on >= datetime.date(2040, 12, 31):
        return
    tomorrow = on + datetime.timedelta(days=1)

    assert age_in_months(birth, tomorrow) - age_in_months(birth, on) in (0, 1)


def test_a_leap_day_baby_is_a_year_old_on_the_first_of_march():
    assert age_in_months(datetime.date(2024, 2, 29), datetime.date(2025, 2, 28)) == 11
    assert age_in_months(datetime.date(2024, 2, 29), datetime.date(2025, 3, 1)) == 12
    assert describe_age(12) == "1 year"
    assert describe_age(98) == "8 years 2 months"


limit_rule = PaediatricDoseRule(name="t", ingredient="x", dose_unit="mg", max_daily_per_kg=Decimal("1.8"))


@given(
    daily=st.decimals(min_value=Decimal("0.5"), max_value=Decimal(500), places=2),
    kilograms=st.decimals(min_value=Decimal(2), max_value=Decimal(150), places=1),
)
def test_mg_per_kg_is_reported_exactly_when_it_is_over_the_limit(daily, kilograms):
    weight = Weight(kilograms, datetime.date(2026, 1, 1))

    found = excesses(limit_rule, daily, None, weight)

    shown = Decimal(number(daily / kilograms))
    if shown > Decimal("1.8"):
        assert [(e.code, e.actual, e.maximum) for e in found] == [
            ("paediatric.daily_per_kg_above_maximum", shown, Decimal("1.8"))
        ]
        assert found[0].severity == ("block" if shown > Decimal("3.6") else "needs_pharmacist")
    else:
        assert found == []


@given(
    daily=st.decimals(min_value=Decimal("0.5"), max_value=Decimal(500), places=2),
    more=st.decimals(min_value=Decimal(0), max_value=Decimal(100), places=2),
    kilograms=st.decimals(min_value=Decimal(2), max_value=Decimal(150), places=1),
)
def test_a_higher_dose_never_clears_a_finding(daily, more, kilograms):
    weight = Weight(kilograms, datetime.date(2026, 1, 1))

    if excesses(limit_rule, daily, None, weight):
        assert excesses(limit_rule, daily + more, None, weight)


# --- Through the API ------------------------------------------------------------------------------
@pytest.mark.django_db
def test_a_childs_weight_and_dose_go_through_the_api_and_the_finding_comes_back(clinic_a, formulary):
    """BNFc atomoxetine: max 1.8 mg/kg/day for a child under 70 kg."""
    child = PatientFactory(clinic=clinic_a.clinic, birth_date=born(8))
    medication = Medication.objects.get(code=ATOMOXETINE_40)
    body = prescription_body(
        child.pk,
        clinic_a.prescriber.pk,
        medication,
        item={"dose_text": "One capsule twice a day", "unit": "capsule", "quantity": "28", "days_supply": 14,
              "units_per_day": "2", "units_per_dose": "1"},
        observations=[{"kind": "weight", "value": "22.2", "observed_on": TODAY.isoformat()}],
    )  # fmt: skip

    created = clinic_a.api.post("/api/v1/prescriptions/", body, format="json", HTTP_IDEMPOTENCY_KEY="child-1")
    assert created.status_code == 201, created.content
    services.prescription_run_checks(prescription_id=created.json()["id"])
    detail = clinic_a.api.get(f"/api/v1/prescriptions/{created.json()['id']}/").json()

    assert detail["status"] == "awaiting_pharmacist"
    assert detail["items"][0]["units_per_dose"] == "1.00"
    finding = next(r for r in detail["check_results"] if r["code"] == "paediatric.daily_per_kg_above_maximum")
    assert "3.6 mg/kg/day, maximum 1.8" in finding["message"]
    assert finding["facts"]["weight"] == f"22.2 kg, measured {TODAY:%Y-%m-%d}"
    assert Observation.objects.filter(patient=child, kind="weight").count() == 1


@pytest.mark.django_db
def test_a_bad_weight_is_refused_with_a_pointer_and_nothing_is_stored(clinic_a, formulary):
    child = PatientFactory(clinic=clinic_a.clinic, birth_date=born(8))
    body = prescription_body(
        child.pk,
        clinic_a.prescriber.pk,
        Medication.objects.get(code=ATOMOXETINE_40),
        observations=[{"kind": "weight", "value": "0.2", "observed_on": TODAY.isoformat()}],
        item={"units_per_dose": "0"},
    )

    response = clinic_a.api.post(
        "/api/v1/prescriptions/", body, format="json", HTTP_IDEMPOTENCY_KEY="child-2"
    )

    assert response.status_code == 400
    pointers = {error["pointer"] for error in response.json()["errors"]}
    assert {"#/observations/0/value", "#/items/0/units_per_dose"} <= pointers
    assert not Prescription.objects.exists()
    assert not Observation.objects.filter(patient=child).exists()
