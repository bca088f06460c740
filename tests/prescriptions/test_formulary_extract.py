"""The ADHD formulary with verified codes, and importing a pharmacy's catalogue from a dm+d-style
or RxNorm-style CSV extract.

Sources of the codes: dm+d VMP codes as published in the OpenSAFELY/OpenCodelists ADHD dm+d
codelists; RxNorm codes from the eCQM value set "ADHD Medications"
(OID 2.16.840.1.113883.3.464.1003.196.12.1171)."""

from __future__ import annotations

import json
import re
from io import StringIO
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command

from prescriptions.formulary import FormularyError, formulary_load
from prescriptions.formulary_extract import formulary_import_extract
from prescriptions.models import FormularyRelease, Medication
from tests.conftest import FORMULARY_FILE
from tests.prescriptions.factories import checked, scenario

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "formulary"
SNOMED, RXNORM = "http://snomed.info/sct", "http://www.nlm.nih.gov/research/umls/rxnorm"


def strengths(medications, system, ingredient, form):  # type: ignore[no-untyped-def]
    return sorted(
        float(m["strength"].rstrip("mg"))
        for m in medications
        if m["code_system"] == system
        and m["ingredients"] == [ingredient]
        and m["form"] == form
        # The sourced entries are named as dm+d and RxNorm name them, with their strength.
        and any(character.isdigit() for character in m["name"])
    )


def test_the_uk_adhd_products_come_in_every_strength_with_their_dmd_codes():
    medications = json.loads(FORMULARY_FILE.read_text())["medications"]
    by_code = {m["code"]: m for m in medications if m["code_system"] == SNOMED}

    assert strengths(medications, SNOMED, "methylphenidate", "modified-release tablet") == [18, 27, 36, 54]
    assert strengths(medications, SNOMED, "methylphenidate", "modified-release capsule") == [
        5,
        10,
        20,
        30,
        40,
        50,
        60,
    ]
    assert strengths(medications, SNOMED, "lisdexamfetamine", "capsule") == [20, 30, 40, 50, 60, 70]
    assert strengths(medications, SNOMED, "dexamfetamine", "tablet") == [5, 10, 20]
    assert strengths(medications, SNOMED, "atomoxetine", "capsule")[-7:] == [10, 18, 25, 40, 60, 80, 100]
    assert strengths(medications, SNOMED, "guanfacine", "modified-release tablet") == [1, 2, 3, 4]
    liquids = {m["name"] for m in medications if m["code_system"] == SNOMED and m["form"] == "oral solution"}
    assert {"Methylphenidate 2mg/ml oral solution sugar free", "Dexamfetamine 5mg/5ml oral solution sugar free",
            "Atomoxetine 4mg/ml oral solution sugar free"} <= liquids  # fmt: skip
    assert by_code["36123511000001103"]["name"] == "Methylphenidate 18mg modified-release tablets"
    assert by_code["42013811000001100"]["name"] == "Lisdexamfetamine 70mg capsules"
    assert by_code["31087911000001103"]["name"] == "Guanfacine 4mg modified-release tablets"


def test_the_us_adhd_products_carry_their_rxnorm_codes_and_names():
    medications = {
        m["code"]: m
        for m in json.loads(FORMULARY_FILE.read_text())["medications"]
        if m["code_system"] == RXNORM
    }

    assert (
        medications["1091170"]["name"]
        == "24 HR Methylphenidate hydrochloride 27 MG Extended Release Oral Tablet"
    )
    assert medications["854842"]["strength"] == "70mg"
    assert medications["899548"]["ingredients"] == ["dexmethylphenidate"]
    assert medications["861232"]["strength"] == "30mg"  # 4 x 7.5 mg of the four salts
    assert medications["861232"]["ingredients"] == ["amfetamine", "dexamfetamine"]
    assert {m["schedule_us"] for m in medications.values() if "amphetamine" in m["name"].lower()} == {"II"}
    assert strengths(medications.values(), RXNORM, "dexmethylphenidate", "extended-release capsule") == [
        5,
        10,
        15,
        20,
        25,
        30,
        35,
        40,
    ]


@pytest.mark.django_db
def test_a_dmd_extract_adds_products_and_a_second_import_changes_nothing(formulary):
    first = formulary_import_extract(path=FIXTURES / "dmd_extract.csv")
    second = formulary_import_extract(path=FIXTURES / "dmd_extract.csv")

    liquid = Medication.objects.get(code_system=SNOMED, code="12140011000001100")
    assert (liquid.strength, liquid.strength_value, liquid.unit, liquid.schedule_gb) == (
        "10mg/5ml",
        2,
        "ml",
        "2",
    )
    assert liquid.unit_of_measure_code == "258773002"
    assert first["extract"]["created"] == 1
    assert first["extract"]["updated"] + first["extract"]["unchanged"] == 2
    assert second["extract"] == {"created": 0, "updated": 0, "unchanged": 3, "skipped": 0}
    # The extract has no maximum for it: the formulary file's stays.
    assert Medication.objects.get(code="42008611000001109").max_daily_dose == 100


@pytest.mark.django_db
def test_an_rxnorm_extract_reads_strength_and_form_from_the_name_and_skips_other_term_types(formulary):
    report = formulary_import_extract(path=FIXTURES / "rxnorm_extract.csv")

    tablet = Medication.objects.get(code_system=RXNORM, code="899548")
    assert (tablet.strength_value, tablet.strength_unit, tablet.form, tablet.schedule_us) == (
        10,
        "mg",
        "tablet",
        "II",
    )
    solution = Medication.objects.get(code_system=RXNORM, code="1091341")
    assert (solution.unit, solution.strength, solution.strength_value) == ("ml", "1mg/ml", 1)
    assert report["extract"]["skipped"] == 1
    assert FormularyRelease.objects.filter(version="RxNorm extract rxnorm_extract.csv").exists()


@pytest.mark.django_db
def test_an_imported_product_without_a_maximum_goes_to_a_pharmacist(formulary):
    formulary_import_extract(path=FIXTURES / "dmd_extract.csv")
    Medication.objects.filter(code="42008611000001109").update(max_daily_dose=None)

    found = checked(
        scenario(code="42008611000001109", item={"unit": "capsule", "dose_text": "One capsule a day"})
    )

    assert found["dose.cannot_check"] == "needs_pharmacist"


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("header", "row", "message"),
    [
        ("RXCUI,STR,TTY", "899548,dexmethylphenidate hydrochloride Oral Tablet,SCD", "line 3.STR"),
        (
            "RXCUI,STR,TTY,DEA_SCHEDULE",
            "899548,dexmethylphenidate hydrochloride 10 MG Oral Tablet,SCD,C2",
            "DEA_SCHEDULE",
        ),
        ("NAME,CODE", "x,1", "neither a dm+d extract"),
        (
            "VPID,NM,INGREDIENT,STRNT_NMRTR_VAL,STRNT_NMRTR_UOM,DF,UNIT,UNIT_DOSE_UOMCD,CONTROL_DRUG_CATEGORY",
            "42008611000001109,Atomoxetine 25mg capsules,atomoxetine,25,mg,capsule,capsule,,",
            "UNIT_DOSE_UOMCD",
        ),
    ],
)
def test_a_bad_extract_is_refused_whole(formulary, tmp_path, header, row, message):
    path = tmp_path / "extract.csv"
    good = "349594,atomoxetine 40 MG Oral Capsule,SCD" + (",CII" if "DEA" in header else "")
    path.write_text(f"{header}\n{good if header.startswith('RXCUI') else row}\n{row}\n")
    before = Medication.objects.count()

    with pytest.raises(FormularyError, match=re.escape(message)):
        formulary_import_extract(path=path)

    assert Medication.objects.count() == before


@pytest.mark.django_db
def test_an_extract_needs_the_formulary_file_first(db):
    with pytest.raises(FormularyError, match="load the formulary file first"):
        formulary_import_extract(path=FIXTURES / "rxnorm_extract.csv")
    assert not Medication.objects.exists()


@pytest.mark.django_db
def test_the_command_imports_an_extract(formulary):
    out = StringIO()
    call_command("load_formulary", "--extract", str(FIXTURES / "rxnorm_extract.csv"), stdout=out)

    assert (
        out.getvalue().splitlines()[-1]
        == "RxNorm extract rxnorm_extract.csv: 0 added, 3 updated, 0 unchanged, 1 skipped"
    )
    with pytest.raises(CommandError, match="cannot import the extract"):
        call_command("load_formulary", "--extract", str(FIXTURES / "missing.csv"), stdout=StringIO())


@pytest.mark.django_db
def test_the_formulary_file_loads_with_the_adhd_products(db):
    report = formulary_load(path=FORMULARY_FILE)

    assert (
        report["medications"]["created"]
        == Medication.objects.count()
        == len(json.loads(FORMULARY_FILE.read_text())["medications"])
    )
