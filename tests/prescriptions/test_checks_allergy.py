"""Allergies as clinical data: coded substances, intolerance versus allergy, and
cross-sensitivity whose outcome depends on the recorded reaction. Each row names its source."""

from __future__ import annotations

import pytest

from patients.models import Allergy
from prescriptions.models import AllergyClass
from tests.prescriptions.factories import MedicationFactory, checked, scenario

pytestmark = pytest.mark.django_db

PARACETAMOL, AMOXICILLIN, FLUCLOXACILLIN, CEFALEXIN = "322236009", "323509004", "323548005", "323653004"
ANAPHYLAXIS = {"manifestation": "anaphylaxis", "code": "39579001", "severity": "severe"}
RASH = {"manifestation": "rash", "code": "271807003", "severity": "mild"}


def allergy_findings(prescription) -> dict[str, str]:  # type: ignore[no-untyped-def]
    return {code: severity for code, severity in checked(prescription).items() if code.startswith("allergy")}


def prescribe(code: str, *allergies: dict, **fields):  # type: ignore[no-untyped-def]
    unit = "tablet" if code == PARACETAMOL else "capsule"
    prescription = scenario(code=code, item={"dose_text": "One twice a day", "unit": unit}, **fields)
    for allergy in allergies:
        Allergy.objects.create(patient=prescription.patient, **allergy)
    return prescription


def test_a_severe_penicillin_allergy_blocks_a_cephalosporin(formulary):
    """BNF Penicillins: after immediate hypersensitivity to a penicillin, avoid cephalosporins."""
    prescription = prescribe(CEFALEXIN, {"substance": "penicillin", "reactions": [ANAPHYLAXIS]})

    assert allergy_findings(prescription) == {"allergy.cross_sensitivity": "block"}
    result = next(r for r in prescription.__class__.objects.get(pk=prescription.pk).check_results)
    assert result["message"].startswith(
        "The patient is allergic to penicillin (severe anaphylaxis); Cefalexin is one of the cephalosporins, "
        "which can cross-react with penicillins."
    )
    assert "not to supply it" in result["message"]
    assert result["source"].startswith("BNF: Penicillins, hypersensitivity")


@pytest.mark.parametrize(
    ("allergy", "expected"),
    [
        # BNF Penicillins / NICE CG183: anaphylaxis, angioedema, urticaria = immediate → avoid.
        ({"substance": "penicillin", "reactions": [ANAPHYLAXIS]}, "block"),
        ({"substance": "amoxicillin", "reaction": "hives within an hour"}, "block"),
        ({"substance": "penicillin", "criticality": "high"}, "block"),
        (
            {"substance": "flucloxacillin", "reactions": [{"manifestation": "swelling", "code": "41291007"}]},
            "block",
        ),
        # A milder reaction: use with caution → pharmacist.
        ({"substance": "penicillin", "reactions": [RASH]}, "needs_pharmacist"),
        ({"substance": "penicillin", "reaction": "rash"}, "needs_pharmacist"),
        # Reaction not recorded: fail towards the pharmacist.
        ({"substance": "penicillin"}, "needs_pharmacist"),
        # Coded (SNOMED CT 764146007 penicillin) with text the formulary does not know.
        ({"substance": "Pen V tabs", "code": "764146007", "reactions": [ANAPHYLAXIS]}, "block"),
        # An intolerance is not an allergy (NICE CG183 1.1): information only.
        ({"substance": "penicillin", "category": "intolerance", "reactions": [ANAPHYLAXIS]}, "info"),
    ],
)
def test_penicillin_to_cephalosporin_cross_sensitivity_follows_the_reaction(formulary, allergy, expected):
    """Source: BNF Penicillins, hypersensitivity; NICE CG183 recommendation 1.1."""
    prescription = prescribe(CEFALEXIN, allergy)

    assert allergy_findings(prescription) == {"allergy.cross_sensitivity": expected}


@pytest.mark.parametrize(
    ("ingredient", "allergy", "expected"),
    [
        # Meropenem SmPC 4.3: contraindicated after severe hypersensitivity to another beta-lactam.
        ("meropenem", {"substance": "penicillin", "reactions": [ANAPHYLAXIS]}, "block"),
        ("meropenem", {"substance": "cefalexin", "reactions": [ANAPHYLAXIS]}, "block"),
        ("meropenem", {"substance": "penicillin", "reactions": [RASH]}, "needs_pharmacist"),
        # Celecoxib SmPC 4.3: contraindicated with sulfonamide hypersensitivity, whatever the reaction.
        ("celecoxib", {"substance": "sulfa", "reactions": [RASH]}, "block"),
        ("celecoxib", {"substance": "Septrin", "code": "387406002"}, "block"),
        # Strom et al. NEJM 2003: no cross-reactivity shown with non-antibacterial sulfonamides.
        ("furosemide", {"substance": "sulfonamides", "reactions": [RASH]}, "info"),
        ("furosemide", {"substance": "sulfonamides", "reactions": [ANAPHYLAXIS]}, "needs_pharmacist"),
    ],
)
def test_cross_sensitivity_classes_from_the_formulary(formulary, ingredient, allergy, expected):
    """Sources: meropenem SmPC 4.3/4.4; celecoxib SmPC 4.3; Strom BL et al. NEJM 2003;349:1628."""
    medication = MedicationFactory(name=ingredient.capitalize(), ingredients=[ingredient])
    prescription = prescribe(medication.code, allergy)

    assert allergy_findings(prescription) == {"allergy.cross_sensitivity": expected}


@pytest.mark.parametrize(
    ("code", "allergy", "expected"),
    [
        (AMOXICILLIN, {"substance": "amoxicillin", "reactions": [RASH]}, {"allergy.ingredient": "block"}),
        (AMOXICILLIN, {"substance": "x", "code": "372687004"}, {"allergy.ingredient": "block"}),
        (FLUCLOXACILLIN, {"substance": "amoxicillin", "reactions": [RASH]}, {"allergy.class": "block"}),
        (
            AMOXICILLIN,
            {
                "substance": "amoxicillin",
                "category": "intolerance",
                "reactions": [{"manifestation": "diarrhoea"}],
            },
            {"allergy.intolerance": "needs_pharmacist"},
        ),
        (
            FLUCLOXACILLIN,
            {"substance": "amoxicillin", "category": "intolerance"},
            {"allergy.intolerance_class": "info"},
        ),
        (PARACETAMOL, {"substance": "penicillin", "reactions": [ANAPHYLAXIS]}, {}),
    ],
)
def test_the_ingredient_and_its_class_are_checked_by_code_or_text(formulary, code, allergy, expected):
    """Source: BNF hypersensitivity (allergic to one penicillin, allergic to all); NICE CG183 1.1."""
    assert allergy_findings(prescribe(code, allergy)) == expected


def test_unrecognised_allergy_text_goes_to_a_pharmacist_naming_the_text(formulary):
    """Source: Scriptline fails closed: an allergy it cannot check is checked by a pharmacist."""
    prescription = prescribe(PARACETAMOL, {"substance": "Elastoplast adhesive", "code": "999999999"})

    assert allergy_findings(prescription) == {"allergy.unrecognised": "needs_pharmacist"}
    result = prescription.__class__.objects.get(pk=prescription.pk).check_results[0]
    assert "'Elastoplast adhesive'" in result["message"]
    assert "Paracetamol" in result["message"]


def test_every_cross_sensitivity_in_the_formulary_names_a_source_and_an_outcome_per_reaction(formulary):
    crosses = [cross for row in AllergyClass.objects.all() for cross in row.cross_sensitivities]

    assert len(crosses) >= 6
    names = set(AllergyClass.objects.values_list("name", flat=True))
    for cross in crosses:
        assert cross["to"] in names
        assert {cross["severe"], cross["mild"], cross["unknown"]} <= {"block", "needs_pharmacist", "info"}
        assert cross["source"]
        assert cross["message"]
