"""Loading the formulary file: idempotent, reports what changed, refuses a bad file whole."""

from __future__ import annotations

import json
import re
from io import StringIO

import pytest
from django.core.management import CommandError, call_command

from prescriptions.formulary import FormularyError, formulary_load
from prescriptions.models import AllergyClass, FormularyRelease, InteractionRule, Medication
from tests.conftest import FORMULARY_FILE

pytestmark = pytest.mark.django_db


def test_the_file_names_its_sources_and_says_it_is_for_demonstration():
    data = json.loads(FORMULARY_FILE.read_text())

    assert any("dm+d" in source for source in data["sources"])
    assert any("RxNorm" in source for source in data["sources"])
    assert "must be verified against dm+d, RxNorm, the BNF" in data["description"]
    adhd = {m["ingredients"][0] for m in data["medications"] if m["therapeutic_class"] == "cns_stimulant"}
    assert adhd == {
        "methylphenidate",
        "dexmethylphenidate",
        "amfetamine",
        "lisdexamfetamine",
        "dexamfetamine",
    }
    assert len(data["medications"]) >= 40


def test_loading_twice_creates_then_changes_nothing():
    first = formulary_load(path=FORMULARY_FILE)
    counts = (Medication.objects.count(), InteractionRule.objects.count(), AllergyClass.objects.count())

    second = formulary_load(path=FORMULARY_FILE)

    assert first["medications"]["created"] == counts[0] == 179
    assert second["medications"] == {"created": 0, "updated": 0, "unchanged": 179, "deactivated": 0}
    assert second["interactions"] == {"created": 0, "updated": 0, "unchanged": counts[1], "removed": 0}
    assert (
        Medication.objects.count(),
        InteractionRule.objects.count(),
        AllergyClass.objects.count(),
    ) == counts
    assert FormularyRelease.objects.count() == 2


def test_a_changed_entry_is_updated_and_a_dropped_one_deactivated(tmp_path):
    formulary_load(path=FORMULARY_FILE)
    data = json.loads(FORMULARY_FILE.read_text())
    data["medications"][0]["max_daily_dose"] = "3000"
    dropped = data["medications"].pop()
    data["interactions"].pop()
    path = tmp_path / "formulary.json"
    path.write_text(json.dumps(data))

    report = formulary_load(path=path)

    assert report["medications"] == {"created": 0, "updated": 1, "unchanged": 177, "deactivated": 1}
    assert report["interactions"]["removed"] == 1
    assert Medication.objects.get(code=data["medications"][0]["code"]).max_daily_dose == 3000
    assert Medication.objects.get(code=dropped["code"]).is_active is False


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda d: d["medications"][3].pop("ingredients"), "medications[3]: missing ingredients"),
        (lambda d: d["medications"][2].update(code_system="urn:x"), "unknown code system"),
        (lambda d: d["medications"][1].update(max_daily_dose="lots"), "is not a number"),
        (lambda d: d["interactions"][0].update(severity="bad"), "interactions[0]: severity"),
        (lambda d: d.pop("sources"), "must name its version and its sources"),
        (
            lambda d: d["medications"][0].pop("unit_of_measure_code"),
            "medications[0]: a dm+d product needs its unit_of_measure_code, a SNOMED CT code",
        ),
        (
            lambda d: d["medications"][0].update(unit_of_measure_code="tablet"),
            "medications[0]: a dm+d product needs its unit_of_measure_code, a SNOMED CT code",
        ),
    ],
)
def test_a_bad_file_is_refused_whole_and_changes_nothing(tmp_path, change, message):
    data = json.loads(FORMULARY_FILE.read_text())
    change(data)
    path = tmp_path / "formulary.json"
    path.write_text(json.dumps(data))

    with pytest.raises(FormularyError, match=re.escape(message)):
        formulary_load(path=path)

    assert Medication.objects.count() == 0
    assert FormularyRelease.objects.count() == 0


def test_the_command_shows_progress_and_reports_what_changed():
    out = StringIO()

    call_command("load_formulary", str(FORMULARY_FILE), stdout=out)

    lines = out.getvalue().splitlines()
    assert lines[1] == "  medications: 179 created, 0 updated, 0 unchanged, 0 deactivated"
    assert lines[-1] == "formulary 2026.11-3: 179 added, 0 updated, 0 unchanged, 0 deactivated"


def test_the_command_reports_a_missing_file_as_an_error(tmp_path):
    with pytest.raises(CommandError, match="cannot load the formulary"):
        call_command("load_formulary", str(tmp_path / "absent.json"), stdout=StringIO())
    assert Medication.objects.count() == 0


def test_every_gb_product_carries_the_dmd_unit_of_measure_of_its_unit():
    formulary_load(path=FORMULARY_FILE)

    units = set(
        Medication.objects.filter(code_system="http://snomed.info/sct").values_list(
            "unit", "unit_of_measure_code"
        )
    )
    us_units = set(
        Medication.objects.exclude(code_system="http://snomed.info/sct").values_list("unit_of_measure_code")
    )

    # dm+d units of measure as the EPS API's examples code them.
    assert units == {("tablet", "428673006"), ("capsule", "428641000"), ("ml", "258773002")}
    assert us_units == {("",)}
