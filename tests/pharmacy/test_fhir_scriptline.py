"""The Scriptline (US) prescription-order profile, on unsaved model instances (no database)."""

from __future__ import annotations

import copy
import json
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from patients.models import Clinic, Patient
from pharmacy.fhir import FhirEncodingError, encode_prescription, validate_bundle
from prescriptions.models import Medication, Prescriber, Prescription, PrescriptionItem

EXAMPLES = Path(__file__).resolve().parents[1] / "fixtures" / "fhir-examples"
MESSAGE_ID = "3f1c0c56-2b7e-4c55-9d0e-6f1f7a0c9b21"
PHARMACY_ODS = "FCX41"
TIMESTAMP = datetime(2025, 3, 14, 9, 30, tzinfo=UTC)
RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"
NPI = "1234567893"  # the CMS example NPI


def make_order(**patient_fields: Any) -> tuple[Prescription, list[PrescriptionItem]]:
    clinic = Clinic(
        pk=1, name="Lakeshore Family Health", jurisdiction="US", ods_code="LFH01", address="10 Main St"
    )
    patient = Patient(
        pk=7,
        clinic=clinic,
        given_name="Stacey",
        family_name="Twitchett",
        birth_date=date(1948, 4, 30),
        sex="female",
        address_line="10 Heathfield Ave",
        city="Albany",
        region="NY",
        postal_code="12207",
        email="stacey@example.org",
        phone="518 555 0100",
    )
    for name, value in patient_fields.items():
        setattr(patient, name, value)
    prescriber = Prescriber(
        pk=3,
        clinic=clinic,
        given_name="Carla",
        family_name="Boin",
        registration_body="NPI",
        registration_number=NPI,
        dea_number="AB1234563",
        licensed_states=["NY", "CT"],
    )
    prescription = Prescription(
        pk=42,
        clinic=clinic,
        patient=patient,
        prescriber=prescriber,
        issued_on=date(2025, 3, 13),
        note="Patient is allergic to penicillin",
    )
    amoxicillin = Medication(
        pk=11,
        code_system=RXNORM,
        code="308191",
        name="Amoxicillin",
        strength="250mg",
        form="capsules",
        price_minor=12,
    )
    paracetamol = Medication(
        pk=12,
        code_system=RXNORM,
        code="313782",
        name="Acetaminophen",
        strength="500mg",
        form="tablets",
        price_minor=3,
    )
    items = [
        PrescriptionItem(
            pk=101,
            prescription=prescription,
            medication=amoxicillin,
            dose_text="One capsule three times a day",
            quantity=Decimal("21.00"),
            unit="capsule",
            days_supply=7,
        ),
        PrescriptionItem(
            pk=102,
            prescription=prescription,
            medication=paracetamol,
            dose_text="Two tablets up to four times a day",
            quantity=Decimal("56.50"),
            unit="tablet",
            days_supply=14,
        ),
    ]
    return prescription, items


def encode(
    prescription: Prescription, items: list[PrescriptionItem], message_id: str = MESSAGE_ID
) -> dict[str, Any]:
    return encode_prescription(
        prescription,
        message_id=message_id,
        pharmacy_ods_code=PHARMACY_ODS,
        timestamp=TIMESTAMP,
        items=items,
    )


def resources(bundle: dict[str, Any], resource_type: str) -> list[dict[str, Any]]:
    return [e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == resource_type]


def resolve(bundle: dict[str, Any], reference: dict[str, str]) -> dict[str, Any]:
    matches = [e["resource"] for e in bundle["entry"] if e["fullUrl"] == reference["reference"]]
    assert len(matches) == 1, reference
    return matches[0]


def load_example(name: str) -> dict[str, Any]:
    return json.loads((EXAMPLES / name).read_text())


# --- Bundle shape ----------------------------------------------------------------------------


def test_given_a_prescription_when_encoded_then_the_bundle_is_a_message_with_the_header_first() -> None:
    prescription, items = make_order()

    bundle = encode(prescription, items)

    assert bundle["resourceType"] == "Bundle"
    assert bundle["id"] == MESSAGE_ID
    assert bundle["type"] == "message"
    assert bundle["timestamp"] == "2025-03-14T09:30:00Z"
    assert bundle["identifier"] == {"system": "https://scriptline.example/Id/message", "value": MESSAGE_ID}
    assert [e["resource"]["resourceType"] for e in bundle["entry"]] == [
        "MessageHeader",
        "MedicationRequest",
        "MedicationRequest",
        "Patient",
        "Practitioner",
        "PractitionerRole",
        "Organization",
    ]
    assert all(e["fullUrl"] == f"urn:uuid:{e['resource']['id']}" for e in bundle["entry"])
    header = bundle["entry"][0]["resource"]
    assert header["eventCoding"] == {
        "system": "https://scriptline.example/CodeSystem/message-event",
        "code": "prescription-order",
        "display": "Prescription Order",
    }
    assert header["source"] == {"endpoint": "urn:scriptline:clinic:1", "name": "Lakeshore Family Health"}
    assert header["destination"] == [
        {
            "endpoint": "urn:scriptline:pharmacy:FCX41",
            "receiver": {
                "identifier": {"system": "https://scriptline.example/Id/pharmacy", "value": "FCX41"}
            },
        }
    ]


def test_given_two_items_when_encoded_then_each_has_a_request_with_code_quantity_and_supply() -> None:
    prescription, items = make_order()

    bundle = encode(prescription, items)

    requests = resources(bundle, "MedicationRequest")
    assert [r["medicationCodeableConcept"]["coding"] for r in requests] == [
        [{"system": RXNORM, "code": "308191", "display": "Amoxicillin 250mg capsules"}],
        [{"system": RXNORM, "code": "313782", "display": "Acetaminophen 500mg tablets"}],
    ]
    assert [r["dispenseRequest"]["quantity"] for r in requests] == [
        {"value": 21.0, "unit": "capsule"},
        {"value": 56.5, "unit": "tablet"},
    ]
    assert [r["dispenseRequest"]["expectedSupplyDuration"] for r in requests] == [
        {"value": 7, "unit": "day", "system": "http://unitsofmeasure.org", "code": "d"},
        {"value": 14, "unit": "day", "system": "http://unitsofmeasure.org", "code": "d"},
    ]
    assert [r["identifier"] for r in requests] == [
        [{"system": "https://scriptline.example/Id/prescription-item", "value": "42-101"}],
        [{"system": "https://scriptline.example/Id/prescription-item", "value": "42-102"}],
    ]
    first = requests[0]
    assert first["status"] == "active"
    assert first["intent"] == "order"
    assert first["groupIdentifier"] == {"system": "https://scriptline.example/Id/prescription", "value": "42"}
    assert first["authoredOn"] == "2025-03-13"
    assert first["dosageInstruction"] == [{"text": "One capsule three times a day"}]
    assert first["note"] == [{"text": "Patient is allergic to penicillin"}]


def test_given_an_encoded_bundle_when_following_references_then_each_resolves_to_an_entry() -> None:
    prescription, items = make_order()

    bundle = encode(prescription, items)

    header = bundle["entry"][0]["resource"]
    request_urls = [
        e["fullUrl"] for e in bundle["entry"] if e["resource"]["resourceType"] == "MedicationRequest"
    ]
    assert [ref["reference"] for ref in header["focus"]] == request_urls
    assert resolve(bundle, header["sender"])["resourceType"] == "Organization"
    for request in resources(bundle, "MedicationRequest"):
        assert resolve(bundle, request["subject"])["resourceType"] == "Patient"
        role = resolve(bundle, request["requester"])
        assert role["resourceType"] == "PractitionerRole"
        assert resolve(bundle, role["practitioner"])["identifier"] == [
            {"system": "http://hl7.org/fhir/sid/us-npi", "value": NPI},
            {"system": "http://terminology.hl7.org/NamingSystem/usdeanumber", "value": "AB1234563"},
        ]
        assert resolve(bundle, role["organization"])["identifier"] == [
            {"system": "https://scriptline.example/Id/organization", "value": "LFH01"}
        ]


def test_given_the_same_message_id_when_encoded_twice_then_the_output_is_identical() -> None:
    prescription, items = make_order()

    first = encode(prescription, items)
    second = encode(prescription, items)

    assert json.dumps(first, sort_keys=True) == json.dumps(second, sort_keys=True)
    assert first == second


def test_given_another_message_id_when_encoded_then_every_full_url_differs() -> None:
    prescription, items = make_order()

    first = encode(prescription, items)
    other = encode(prescription, items, message_id="another-message")

    assert not {e["fullUrl"] for e in first["entry"]} & {e["fullUrl"] for e in other["entry"]}


# --- Patient ---------------------------------------------------------------------------------


def test_given_a_us_patient_when_encoded_then_name_address_and_telecom_by_system_are_sent() -> None:
    prescription, items = make_order()

    patient = resources(encode(prescription, items), "Patient")[0]

    assert "identifier" not in patient  # no national patient number in this profile
    assert patient["name"] == [{"use": "official", "family": "Twitchett", "given": ["Stacey"]}]
    assert patient["gender"] == "female"
    assert patient["birthDate"] == "1948-04-30"
    assert patient["address"] == [
        {
            "line": ["10 Heathfield Ave"],
            "city": "Albany",
            "state": "NY",
            "postalCode": "12207",
            "country": "US",
        }
    ]
    assert patient["telecom"] == [
        {"system": "phone", "value": "518 555 0100"},
        {"system": "email", "value": "stacey@example.org"},
    ]


def test_given_a_patient_without_an_address_or_email_when_encoded_then_neither_is_sent() -> None:
    prescription, items = make_order(email="", address_line="", city="", region="", postal_code="")

    patient = resources(encode(prescription, items), "Patient")[0]

    assert "address" not in patient
    assert patient["telecom"] == [{"system": "phone", "value": "518 555 0100"}]


def test_given_a_prescriber_with_npi_dea_and_licences_when_encoded_then_all_three_are_sent() -> None:
    prescription, items = make_order()

    practitioner = resources(encode(prescription, items), "Practitioner")[0]

    assert practitioner["qualification"] == [
        {
            "code": {
                "coding": [
                    {
                        "system": "http://terminology.hl7.org/CodeSystem/v2-0203",
                        "code": "SL",
                        "display": "State license",
                    }
                ],
                "text": f"{state} state license",
            },
            "issuer": {"display": state},
        }
        for state in ("CT", "NY")
    ]


def test_given_a_gb_registration_body_when_encoded_then_the_us_profile_refuses_it() -> None:
    prescription, items = make_order()
    prescription.prescriber.registration_body = "GMC"

    with pytest.raises(FhirEncodingError) as raised:
        encode(prescription, items)

    assert str(raised.value) == (
        "Practitioner.identifier.system: registration body 'GMC' is not a US one (NPI or DEA)"
    )


def test_given_an_unknown_sex_when_encoded_then_the_error_names_the_element_but_no_patient_data() -> None:
    prescription, items = make_order(sex="F")

    with pytest.raises(FhirEncodingError) as raised:
        encode(prescription, items)

    message = str(raised.value)
    assert message == ("Patient.gender (Bundle.entry[3]): code is not in the administrative-gender value set")
    for personal in ("Stacey", "Twitchett", "1948", "04-30", "Heathfield", "12207"):
        assert personal not in message


def test_given_an_invalid_birth_date_when_encoded_then_the_error_gives_only_path_and_type() -> None:
    prescription, items = make_order(birth_date="1948-02-30")

    with pytest.raises(FhirEncodingError) as raised:
        encode(prescription, items)

    assert str(raised.value) == "Patient.birthDate: date_from_datetime_parsing"
    assert raised.value.__suppress_context__ is True


# --- Other encoding errors -------------------------------------------------------------------


def test_given_a_medication_with_an_unknown_code_system_when_encoded_then_it_raises() -> None:
    prescription, items = make_order()
    items[1].medication.code_system = "http://example.org/drugs"

    with pytest.raises(FhirEncodingError) as raised:
        encode(prescription, items)

    assert str(raised.value) == (
        "MedicationRequest.medicationCodeableConcept.coding[0].system (Bundle.entry[2]): "
        "'http://example.org/drugs' is not in the drug-code-systems value set"
    )


@pytest.mark.parametrize("code_system", ["http://snomed.info/sct", "https://dmd.nhs.uk"])
def test_given_a_gb_drug_code_when_encoded_in_the_us_profile_then_it_raises(code_system: str) -> None:
    prescription, items = make_order()
    items[0].medication.code_system = code_system

    with pytest.raises(FhirEncodingError) as raised:
        encode(prescription, items)

    assert str(raised.value) == (
        "MedicationRequest.medicationCodeableConcept.coding[0].system (Bundle.entry[1]): "
        f"{code_system!r} is not in the drug-code-systems value set"
    )


def test_given_a_blank_dose_text_when_encoded_then_it_raises_missing() -> None:
    prescription, items = make_order()
    items[0].dose_text = "   "

    with pytest.raises(FhirEncodingError) as raised:
        encode(prescription, items)

    assert str(raised.value) == "MedicationRequest.dosageInstruction.text: missing"


def test_given_a_naive_timestamp_when_encoded_then_it_raises_on_bundle_timestamp() -> None:
    prescription, items = make_order()

    with pytest.raises(FhirEncodingError) as raised:
        encode_prescription(
            prescription,
            message_id=MESSAGE_ID,
            pharmacy_ods_code=PHARMACY_ODS,
            timestamp=datetime(2025, 3, 14, 9, 30),
            items=items,
        )

    assert str(raised.value) == "Bundle.timestamp: value_error"


# --- validate_bundle -------------------------------------------------------------------------


def test_given_the_encoder_output_when_validated_then_it_is_accepted() -> None:
    prescription, items = make_order()

    assert validate_bundle(encode(prescription, items)) is None


def test_given_a_medication_request_with_status_recorded_when_validated_then_it_is_rejected() -> None:
    prescription, items = make_order()
    bundle = copy.deepcopy(encode(prescription, items))
    bundle["entry"][1]["resource"]["status"] = "recorded"

    with pytest.raises(FhirEncodingError) as raised:
        validate_bundle(bundle)

    assert str(raised.value) == (
        "MedicationRequest.status (Bundle.entry[1]): 'recorded' is not in the "
        "medicationrequest-status value set"
    )


def test_given_the_hl7_searchset_example_when_validated_then_it_is_accepted() -> None:
    assert validate_bundle(load_example("hl7-r4-spec__Bundle-bundle-example.json")) is None


def test_given_the_hl7_patient_link_message_when_validated_then_its_event_is_rejected() -> None:
    bundle = load_example("hl7-r4-spec__Bundle-10bb101f-a121-4264-a920-67be9cb82c74.json")

    with pytest.raises(FhirEncodingError) as raised:
        validate_bundle(bundle)

    assert str(raised.value) == (
        "MessageHeader.eventCoding.code (Bundle.entry[0]): 'patient-link' is not in the "
        "scriptline-message-events value set"
    )


def test_given_a_bundle_with_an_unknown_element_when_validated_then_the_error_gives_its_path() -> None:
    prescription, items = make_order()
    bundle = copy.deepcopy(encode(prescription, items))
    bundle["entry"][3]["resource"]["favouriteColour"] = "blue"

    with pytest.raises(FhirEncodingError) as raised:
        validate_bundle(bundle)

    assert str(raised.value) == "Bundle.entry[3].resource.favouriteColour: extra_forbidden"


# --- Property --------------------------------------------------------------------------------

# str.isprintable(): letters, marks, numbers, punctuation, symbols and the ASCII space.
PRINTABLE = st.characters(categories=("L", "M", "N", "P", "S"), include_characters=" ")
# Blank names and dose texts are refused on purpose (see the blank dose text test).
NAMES = st.text(PRINTABLE, min_size=1, max_size=100).filter(str.strip)
ITEMS = st.lists(
    st.tuples(
        st.decimals(min_value=Decimal("0.01"), max_value=Decimal("100000"), places=2),
        st.integers(min_value=1, max_value=365),
        st.text(PRINTABLE, min_size=1, max_size=200).filter(str.strip),
        NAMES,
    ),
    min_size=1,
    max_size=3,
)


@settings(max_examples=60, deadline=None)
@given(items=ITEMS, given_name=NAMES, family_name=NAMES, prescriber_name=NAMES)
def test_given_any_quantities_supplies_dose_texts_and_names_when_encoded_then_the_bundle_validates(
    items: list[tuple[Decimal, int, str, str]], given_name: str, family_name: str, prescriber_name: str
) -> None:
    prescription, (template, _) = make_order(given_name=given_name, family_name=family_name)
    prescription.prescriber.family_name = prescriber_name
    order_items = []
    for index, (quantity, days_supply, dose_text, medication_name) in enumerate(items):
        medication = Medication(
            pk=200 + index,
            code_system=RXNORM,
            code=f"31378{index}",
            name=medication_name,
            strength="500mg",
            form="tablets",
            price_minor=1,
        )
        order_items.append(
            PrescriptionItem(
                pk=300 + index,
                prescription=prescription,
                medication=medication,
                dose_text=dose_text,
                quantity=quantity,
                unit=template.unit,
                days_supply=days_supply,
            )
        )

    bundle = encode(prescription, order_items)

    validate_bundle(json.loads(json.dumps(bundle)))
    requests = resources(bundle, "MedicationRequest")
    assert [r["dispenseRequest"]["quantity"]["value"] for r in requests] == [float(q) for q, *_ in items]
    assert [r["dispenseRequest"]["expectedSupplyDuration"]["value"] for r in requests] == [
        d for _, d, *_ in items
    ]
    assert [r["dosageInstruction"][0]["text"] for r in requests] == [t for _, _, t, _ in items]
