"""The NHS EPS prescription-order profile (pharmacy/fhir/eps), on unsaved model instances.

Each kind of GB prescription is encoded and read back element by element; the public EPS
examples (tests/fixtures/fhir-examples) are decoded and re-encoded; and every message is held
to the gateway simulator's independently written EPS rules (sandbox/eps_rules.py).
"""

from __future__ import annotations

import json
import uuid
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from patients.models import Clinic, Patient
from pharmacy.fhir import FhirEncodingError, RepeatContext, encode_prescription
from pharmacy.fhir.eps import model
from pharmacy.fhir.eps.decode import EpsDecodeError, bundle_to_order
from pharmacy.fhir.eps.encode import order_to_bundle
from pharmacy.fhir.eps.mapping import entry_urls
from pharmacy.fhir.eps.prescription_id import (
    CHECK_CHARACTERS,
    check_character,
    short_form_id,
    short_form_id_is_valid,
)
from prescriptions.models import Medication, Prescriber, Prescription, PrescriptionItem
from sandbox import eps_rules

EXAMPLES = Path(__file__).resolve().parents[1] / "fixtures" / "fhir-examples"
MESSAGE_ID = "3f1c0c56-2b7e-4c55-9d0e-6f1f7a0c9b21"
PHARMACY_ODS = "FCX41"
TIMESTAMP = datetime(2026, 11, 14, 9, 30, tzinfo=UTC)
SHORT_FORM_ID = short_form_id(ods_code="Y12345", sequence=42, random_part="A1B2C3")
LONG_FORM_ID = uuid.UUID("6f3f8a4e-8d0c-4e55-9a51-52f5d6a0c0de")
NHS_NUMBER = "9449304130"  # NHS test-data number, from the EPS API examples
SNOMED = "http://snomed.info/sct"
TABLET = "428673006"
CAPSULE = "428641000"
EPS_ORDER_EXAMPLES = [
    "eps-api__spec_prepare_eRD-primary-example-req.json",
    "eps-api__spec_prescribing_prescription-order_repeat-primary-example-req.json",
    "eps-api__secondary-care_community_acute_nominated-pharmacy_clinical-practitioner_controlled-drugs_1-Prepare-Request-200_OK.json",
]


def medication(
    pk: int, code: str, name: str, strength: str, form: str, unit: str, **fields: Any
) -> Medication:
    unit_code = {"tablet": TABLET, "capsule": CAPSULE}[unit]
    return Medication(
        pk=pk,
        code_system=SNOMED,
        code=code,
        name=name,
        strength=strength,
        form=form,
        unit=unit,
        unit_of_measure_code=unit_code,
        price_minor=1,
        **fields,
    )


AMOXICILLIN = medication(11, "323509004", "Amoxicillin", "500mg", "capsule", "capsule")
PARACETAMOL = medication(12, "322236009", "Paracetamol", "500mg", "tablet", "tablet")
METHYLPHENIDATE = medication(13, "324907005", "Methylphenidate", "10mg", "tablet", "tablet", schedule_gb="2")
DIAZEPAM = medication(14, "321226002", "Diazepam", "5mg", "tablet", "tablet", schedule_gb="4")


def make_prescription(**fields: Any) -> Prescription:
    clinic = Clinic(
        pk=1,
        name="Riverside Clinic",
        jurisdiction="GB",
        ods_code="Y12345",
        phone="0113 496 0000",
        address_line="1 Example Street",
        city="Leeds",
        district="West Yorkshire",
        postal_code="LS2 9JT",
        managing_organisation_ods_code="QWO",
        managing_organisation_name="NHS West Yorkshire Integrated Care Board",
    )
    patient = Patient(
        pk=7,
        clinic=clinic,
        given_name="Stacey",
        family_name="Twitchett",
        birth_date=date(1948, 4, 30),
        sex="female",
        nhs_number=NHS_NUMBER,
        address_line="10 Heathfield",
        city="Cobham",
        region="Surrey",
        postal_code="KT11 2QY",
        email="stacey@example.org",
        phone="07700 900123",
    )
    prescriber = Prescriber(
        pk=3,
        clinic=clinic,
        given_name="Carla",
        family_name="Boin",
        registration_body="GMC",
        registration_number="6095103",
        sds_user_id="555086689106",
        sds_role_profile_id="200102238987",
        sds_job_role_code="R8000",
    )
    values = {
        "pk": 42,
        "clinic": clinic,
        "patient": patient,
        "prescriber": prescriber,
        "issued_on": date(2026, 11, 13),
        "funding": "nhs",
        "eps_prescription_id": SHORT_FORM_ID,
        "eps_prescription_uuid": LONG_FORM_ID,
        **fields,
    }
    return Prescription(**values)


def item(prescription: Prescription, pk: int, product: Medication, **fields: Any) -> PrescriptionItem:
    values = {
        "dose_text": "One tablet twice a day",
        "quantity": Decimal("28.00"),
        "unit": product.unit,
        "days_supply": 14,
        **fields,
    }
    return PrescriptionItem(pk=pk, prescription=prescription, medication=product, **values)


def encode(
    prescription: Prescription, items: list[PrescriptionItem], *, repeat: RepeatContext | None = None
) -> dict[str, Any]:
    return encode_prescription(
        prescription,
        message_id=MESSAGE_ID,
        pharmacy_ods_code=PHARMACY_ODS,
        timestamp=TIMESTAMP,
        items=items,
        repeat=repeat,
    )


def resources(bundle: dict[str, Any], resource_type: str) -> list[dict[str, Any]]:
    return [e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == resource_type]


def requests_of(bundle: dict[str, Any]) -> list[dict[str, Any]]:
    return resources(bundle, "MedicationRequest")


def extension(element: dict[str, Any], url: str) -> dict[str, Any] | None:
    return next((e for e in element.get("extension", []) if e["url"] == url), None)


def load_example(name: str) -> dict[str, Any]:
    return json.loads((EXAMPLES / name).read_text())


def item_number(long_form_id: uuid.UUID, item_pk: int) -> str:
    namespace = uuid.uuid5(uuid.NAMESPACE_URL, "https://scriptline.example/eps/prescription-order-item")
    return str(uuid.uuid5(namespace, f"{long_form_id}:{item_pk}"))


PRESCRIPTION_TYPE = {
    "url": "https://fhir.nhs.uk/StructureDefinition/Extension-DM-PrescriptionType",
    "valueCoding": {
        "system": "https://fhir.nhs.uk/CodeSystem/prescription-type",
        "code": "0101",
        "display": "Primary Care Prescriber - Medical Prescriber",
    },
}
GROUP_IDENTIFIER = {
    "system": "https://fhir.nhs.uk/Id/prescription-order-number",
    "value": SHORT_FORM_ID,
    "extension": [
        {
            "url": "https://fhir.nhs.uk/StructureDefinition/Extension-DM-PrescriptionId",
            "valueIdentifier": {"system": "https://fhir.nhs.uk/Id/prescription", "value": str(LONG_FORM_ID)},
        }
    ],
}
ACUTE = {
    "coding": [
        {
            "system": "http://terminology.hl7.org/CodeSystem/medicationrequest-course-of-therapy",
            "code": "acute",
            "display": "Short course (acute) therapy",
        }
    ]
}
CONTINUOUS = {
    "coding": [
        {
            "system": "http://terminology.hl7.org/CodeSystem/medicationrequest-course-of-therapy",
            "code": "continuous",
            "display": "Continuous long term therapy",
        }
    ]
}
SITE_PREFERENCE = {
    "url": "https://fhir.nhs.uk/StructureDefinition/Extension-DM-PerformerSiteType",
    "valueCoding": {
        "system": "https://fhir.nhs.uk/CodeSystem/dispensing-site-preference",
        "code": "P1",
        "display": "Other (e.g. Community Pharmacy)",
    },
}
PERFORMER = {"identifier": {"system": "https://fhir.nhs.uk/Id/ods-organization-code", "value": PHARMACY_ODS}}


# --- Each kind, element by element -----------------------------------------------------------


def test_an_acute_nhs_prescription_is_an_eps_prescription_order_element_by_element() -> None:
    prescription = make_prescription(note="Patient is allergic to penicillin")
    items = [
        item(
            prescription,
            101,
            AMOXICILLIN,
            dose_text="One capsule three times a day",
            quantity=Decimal("21"),
            days_supply=7,
        )
    ]

    bundle = encode(prescription, items)

    urls = entry_urls(MESSAGE_ID)
    request_url = f"urn:uuid:{item_number(LONG_FORM_ID, 101)}"
    assert bundle["resourceType"] == "Bundle"
    assert bundle["id"] == MESSAGE_ID
    assert bundle["identifier"] == {"system": "https://tools.ietf.org/html/rfc4122", "value": MESSAGE_ID}
    assert bundle["type"] == "message"
    assert bundle["timestamp"] == "2026-11-14T09:30:00Z"
    assert [(e["fullUrl"], e["resource"]["resourceType"]) for e in bundle["entry"]] == [
        (urls.header, "MessageHeader"),
        (request_url, "MedicationRequest"),
        (urls.patient, "Patient"),
        (urls.role, "PractitionerRole"),
        (urls.practitioner, "Practitioner"),
        (urls.organisation, "Organization"),
    ]
    assert all(e["fullUrl"] == f"urn:uuid:{e['resource']['id']}" for e in bundle["entry"])
    header, request, patient, role, practitioner, organisation = (e["resource"] for e in bundle["entry"])
    assert {key: value for key, value in header.items() if key != "id"} == {
        "resourceType": "MessageHeader",
        "eventCoding": {
            "system": "https://fhir.nhs.uk/CodeSystem/message-event",
            "code": "prescription-order",
            "display": "Prescription Order",
        },
        "destination": [
            {
                "endpoint": f"https://directory.spineservices.nhs.uk/STU3/Organization/{PHARMACY_ODS}",
                "receiver": PERFORMER,
            }
        ],
        "sender": {
            "identifier": {"system": "https://fhir.nhs.uk/Id/ods-organization-code", "value": "Y12345"},
            "display": "Riverside Clinic",
        },
        "source": {"endpoint": "https://directory.spineservices.nhs.uk/STU3/Organization/Y12345"},
        "focus": [{"reference": request_url}, {"reference": urls.patient}, {"reference": urls.role}],
    }
    assert {key: value for key, value in request.items() if key != "id"} == {
        "resourceType": "MedicationRequest",
        "extension": [PRESCRIPTION_TYPE],
        "identifier": [
            {
                "system": "https://fhir.nhs.uk/Id/prescription-order-item-number",
                "value": item_number(LONG_FORM_ID, 101),
            }
        ],
        "status": "active",
        "intent": "order",
        "category": [
            {
                "coding": [
                    {
                        "system": "http://terminology.hl7.org/CodeSystem/medicationrequest-category",
                        "code": "community",
                        "display": "Community",
                    }
                ]
            }
        ],
        "medicationCodeableConcept": {
            "coding": [{"system": SNOMED, "code": "323509004", "display": "Amoxicillin 500mg capsule"}]
        },
        "subject": {"reference": urls.patient},
        "requester": {"reference": urls.role},
        "groupIdentifier": GROUP_IDENTIFIER,
        "courseOfTherapyType": ACUTE,
        "dosageInstruction": [
            {
                "text": "One capsule three times a day",
                "timing": {"repeat": {"frequency": 3, "period": 1, "periodUnit": "d"}},
                "doseAndRate": [
                    {"doseQuantity": {"value": 1, "unit": "capsule", "system": SNOMED, "code": CAPSULE}}
                ],
            }
        ],
        "dispenseRequest": {
            "extension": [SITE_PREFERENCE],
            "validityPeriod": {"start": "2026-11-13"},
            "quantity": {"value": 21, "unit": "capsule", "system": SNOMED, "code": CAPSULE},
            "expectedSupplyDuration": {
                "value": 7,
                "unit": "day",
                "system": "http://unitsofmeasure.org",
                "code": "d",
            },
            "performer": PERFORMER,
        },
        "substitution": {"allowedBoolean": False},
        "note": [{"text": "Patient is allergic to penicillin"}],
    }
    assert "authoredOn" not in request  # EPS: "reserved for future use ... do not use"
    assert {key: value for key, value in patient.items() if key != "id"} == {
        "resourceType": "Patient",
        "identifier": [{"system": "https://fhir.nhs.uk/Id/nhs-number", "value": NHS_NUMBER}],
        "name": [{"use": "usual", "family": "Twitchett", "given": ["Stacey"]}],
        "gender": "female",
        "birthDate": "1948-04-30",
        "address": [{"use": "home", "line": ["10 Heathfield", "Cobham", "Surrey"], "postalCode": "KT11 2QY"}],
        # EPS takes telephone numbers only: the email address is not sent (it would be tel:<email>).
        "telecom": [{"system": "phone", "use": "mobile", "value": "07700 900123"}],
    }
    assert {key: value for key, value in role.items() if key != "id"} == {
        "resourceType": "PractitionerRole",
        "identifier": [{"system": "https://fhir.nhs.uk/Id/sds-role-profile-id", "value": "200102238987"}],
        "practitioner": {"reference": urls.practitioner},
        "organization": {"reference": urls.organisation},
        "code": [
            {
                "coding": [
                    {
                        "system": "https://fhir.nhs.uk/CodeSystem/NHSDigital-SDS-JobRoleCode",
                        "code": "R8000",
                        "display": "Clinical Practitioner Access Role",
                    }
                ]
            }
        ],
        "telecom": [{"system": "phone", "use": "work", "value": "0113 496 0000"}],
    }
    assert {key: value for key, value in practitioner.items() if key != "id"} == {
        "resourceType": "Practitioner",
        "identifier": [
            {"system": "https://fhir.nhs.uk/Id/sds-user-id", "value": "555086689106"},
            {"system": "https://fhir.hl7.org.uk/Id/gmc-number", "value": "6095103"},
        ],
        "name": [{"family": "Boin", "given": ["Carla"]}],
    }
    assert {key: value for key, value in organisation.items() if key != "id"} == {
        "resourceType": "Organization",
        "identifier": [{"system": "https://fhir.nhs.uk/Id/ods-organization-code", "value": "Y12345"}],
        "name": "Riverside Clinic",
        "telecom": [{"system": "phone", "use": "work", "value": "0113 496 0000"}],
        "address": [
            {
                "use": "work",
                "type": "both",
                "line": ["1 Example Street"],
                "city": "Leeds",
                "district": "West Yorkshire",
                "postalCode": "LS2 9JT",
            }
        ],
        "partOf": {
            "identifier": {"system": "https://fhir.nhs.uk/Id/ods-organization-code", "value": "QWO"},
            "display": "NHS West Yorkshire Integrated Care Board",
        },
    }
    assert eps_rules.check_message(bundle) == []


def test_a_private_prescription_is_the_same_eps_message_as_an_nhs_one() -> None:
    nhs = make_prescription(funding="nhs")
    private = make_prescription(funding="private")

    nhs_bundle = encode(nhs, [item(nhs, 101, PARACETAMOL)])
    private_bundle = encode(private, [item(private, 101, PARACETAMOL)])

    # EPS has no element for who pays: a private prescription is written exactly as an NHS one.
    assert private_bundle == nhs_bundle
    assert eps_rules.check_message(private_bundle) == []


def test_a_patient_without_an_nhs_number_cannot_be_sent_and_the_error_carries_no_patient_data() -> None:
    prescription = make_prescription(funding="private")
    prescription.patient.nhs_number = ""

    with pytest.raises(FhirEncodingError) as raised:
        encode(prescription, [item(prescription, 101, PARACETAMOL)])

    assert (
        str(raised.value) == "Patient.identifier: an NHS number is required (EPS identifies patients by it)"
    )
    for personal in ("Stacey", "Twitchett", "1948", "Heathfield", "KT11", "07700"):
        assert personal not in str(raised.value)


def test_a_schedule_2_drug_carries_its_schedule_and_quantity_in_words() -> None:
    prescription = make_prescription()
    items = [
        item(
            prescription,
            101,
            METHYLPHENIDATE,
            quantity=Decimal("56"),
            quantity_words="fifty six",
            days_supply=28,
        )
    ]

    request = requests_of(encode(prescription, items))[0]

    assert request["extension"] == [
        PRESCRIPTION_TYPE,
        {
            "url": "https://fhir.nhs.uk/StructureDefinition/Extension-DM-ControlledDrug",
            "extension": [
                {"url": "quantityWords", "valueString": "fifty six"},
                {
                    "url": "schedule",
                    "valueCoding": {
                        "system": "https://fhir.nhs.uk/CodeSystem/medicationrequest-controlled-drug",
                        "code": "CD2",
                        "display": "Schedule 2",
                    },
                },
            ],
        },
    ]
    assert request["dispenseRequest"]["quantity"] == {
        "value": 56,
        "unit": "tablet",
        "system": SNOMED,
        "code": TABLET,
    }


def test_a_schedule_2_drug_without_its_quantity_in_words_is_not_sent() -> None:
    prescription = make_prescription()
    items = [item(prescription, 101, METHYLPHENIDATE, quantity_words="  ")]

    with pytest.raises(FhirEncodingError) as raised:
        encode(prescription, items)

    assert str(raised.value) == (
        "MedicationRequest.extension(ControlledDrug).quantityWords: missing for a Schedule 2 drug"
    )


def test_a_schedule_4_drug_carries_its_schedule_and_words_are_optional() -> None:
    prescription = make_prescription()

    request = requests_of(encode(prescription, [item(prescription, 101, DIAZEPAM)]))[0]

    assert extension(request, model.CONTROLLED_DRUG_URL) == {
        "url": "https://fhir.nhs.uk/StructureDefinition/Extension-DM-ControlledDrug",
        "extension": [
            {
                "url": "schedule",
                "valueCoding": {
                    "system": "https://fhir.nhs.uk/CodeSystem/medicationrequest-controlled-drug",
                    "code": "CD4",
                    "display": "Schedule 4",
                },
            }
        ],
    }


def test_the_first_issue_of_a_repeat_prescription_is_a_continuous_original_order() -> None:
    original = make_prescription(repeats=2)
    items = [item(original, 101, PARACETAMOL, days_supply=28)]
    course = RepeatContext.for_course(origin=original, origin_items=items, issue_number=1)

    request = requests_of(encode(original, items, repeat=course))[0]

    # Three issues of 28 days from 13 November: the authorisation runs to 5 February.
    assert course == RepeatContext(issue_number=1, authorisation_expires_on=date(2027, 2, 5))
    assert request["intent"] == "original-order"
    assert request["courseOfTherapyType"] == CONTINUOUS
    assert request["extension"] == [
        PRESCRIPTION_TYPE,
        {
            "url": "https://fhir.hl7.org.uk/StructureDefinition/Extension-UKCore-MedicationRepeatInformation",
            "extension": [
                {"url": "numberOfPrescriptionsIssued", "valueUnsignedInt": 1},
                {"url": "authorisationExpiryDate", "valueDateTime": "2027-02-05"},
            ],
        },
    ]
    assert "numberOfRepeatsAllowed" not in request["dispenseRequest"]  # eRD only


def test_a_later_repeat_issue_is_an_instance_order_with_its_issue_number() -> None:
    original = make_prescription(repeats=2, repeat_interval_days=30)
    repeat = make_prescription(
        pk=43,
        previous=original,
        link_kind="repeat",
        issued_on=date(2026, 12, 13),
        eps_prescription_id=short_form_id(ods_code="Y12345", sequence=43, random_part="0F0F0F"),
        eps_prescription_uuid=uuid.UUID(int=43),
    )
    course = RepeatContext.for_course(
        origin=original, origin_items=[item(original, 101, PARACETAMOL)], issue_number=2
    )

    bundle = encode(repeat, [item(repeat, 201, PARACETAMOL)], repeat=course)

    request = requests_of(bundle)[0]
    assert request["intent"] == "instance-order"
    assert request["courseOfTherapyType"] == CONTINUOUS
    assert extension(request, model.REPEAT_INFORMATION_URL)["extension"] == [
        {"url": "numberOfPrescriptionsIssued", "valueUnsignedInt": 2},
        {"url": "authorisationExpiryDate", "valueDateTime": "2027-02-11"},
    ]
    assert request["groupIdentifier"]["value"] != SHORT_FORM_ID  # each issue is its own prescription
    assert request["dispenseRequest"]["validityPeriod"] == {"start": "2026-12-13"}
    assert eps_rules.check_message(bundle) == []


def test_an_earliest_fill_date_starts_the_validity_period() -> None:
    prescription = make_prescription(earliest_fill_date=date(2026, 11, 20))

    request = requests_of(encode(prescription, [item(prescription, 101, PARACETAMOL)]))[0]

    assert request["dispenseRequest"]["validityPeriod"] == {"start": "2026-11-20"}


def test_several_items_share_the_prescription_values_and_have_their_own_item_numbers() -> None:
    prescription = make_prescription()
    items = [
        item(
            prescription, 101, AMOXICILLIN, dose_text="One capsule three times a day", quantity=Decimal("21")
        ),
        item(
            prescription,
            102,
            PARACETAMOL,
            dose_text="Two tablets up to four times a day",
            quantity=Decimal("56.5"),
        ),
        item(prescription, 103, METHYLPHENIDATE, quantity=Decimal("28"), quantity_words="twenty eight"),
    ]

    bundle = encode(prescription, items)

    requests = requests_of(bundle)
    assert [r["identifier"][0]["value"] for r in requests] == [
        item_number(LONG_FORM_ID, pk) for pk in (101, 102, 103)
    ]
    assert len({r["identifier"][0]["value"] for r in requests}) == 3
    assert [r["medicationCodeableConcept"]["coding"][0]["code"] for r in requests] == [
        "323509004",
        "322236009",
        "324907005",
    ]
    assert [r["dispenseRequest"]["quantity"]["value"] for r in requests] == [21, 56.5, 28]
    assert [r["dispenseRequest"]["quantity"]["code"] for r in requests] == [CAPSULE, TABLET, TABLET]
    for shared in ("groupIdentifier", "category", "courseOfTherapyType", "subject", "requester", "intent"):
        assert len({json.dumps(r[shared], sort_keys=True) for r in requests}) == 1, shared
    assert {json.dumps(r["dispenseRequest"]["performer"]) for r in requests} == {json.dumps(PERFORMER)}
    # The same supply for every item (14 days), so EPS's one expected supply duration is sent.
    assert {r["dispenseRequest"]["expectedSupplyDuration"]["value"] for r in requests} == {14}
    # A maximum ("up to") is not structure we can state: the text alone goes.
    assert requests[1]["dosageInstruction"] == [{"text": "Two tablets up to four times a day"}]
    assert [extension(r, model.CONTROLLED_DRUG_URL) is not None for r in requests] == [False, False, True]
    assert resources(bundle, "MessageHeader")[0]["focus"][:3] == [
        {"reference": f"urn:uuid:{item_number(LONG_FORM_ID, pk)}"} for pk in (101, 102, 103)
    ]
    assert eps_rules.check_message(bundle) == []


def test_items_with_different_supplies_leave_out_the_expected_supply_duration() -> None:
    prescription = make_prescription()
    items = [
        item(prescription, 101, PARACETAMOL, days_supply=7),
        item(prescription, 102, AMOXICILLIN, days_supply=14),
    ]

    bundle = encode(prescription, items)

    assert ["expectedSupplyDuration" in r["dispenseRequest"] for r in requests_of(bundle)] == [False, False]
    assert eps_rules.check_message(bundle) == []


def test_the_same_prescription_encodes_to_the_same_bytes_and_keeps_its_item_numbers() -> None:
    prescription = make_prescription()
    items = [item(prescription, 101, PARACETAMOL)]

    first = encode(prescription, items)
    second = encode(prescription, items)
    other = encode_prescription(
        prescription,
        message_id=str(uuid.uuid4()),
        pharmacy_ods_code=PHARMACY_ODS,
        timestamp=TIMESTAMP,
        items=items,
    )

    assert json.dumps(first, sort_keys=True) == json.dumps(second, sort_keys=True)
    assert requests_of(other)[0]["identifier"] == requests_of(first)[0]["identifier"]
    assert other["identifier"] != first["identifier"]


# --- What the profile refuses ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("code_system", "message"),
    [
        (
            "https://dmd.nhs.uk",
            "MedicationRequest.medicationCodeableConcept.coding.system: 'https://dmd.nhs.uk' is not "
            "http://snomed.info/sct (dm+d codes are SNOMED CT codes)",
        ),
        (
            "http://www.nlm.nih.gov/research/umls/rxnorm",
            "MedicationRequest.medicationCodeableConcept.coding.system: "
            "'http://www.nlm.nih.gov/research/umls/rxnorm' is not http://snomed.info/sct (dm+d codes are SNOMED CT codes)",
        ),
    ],
)
def test_a_medicine_coded_outside_snomed_ct_is_refused(code_system: str, message: str) -> None:
    prescription = make_prescription()
    product = medication(20, "322236009", "Paracetamol", "500mg", "tablet", "tablet")
    product.code_system = code_system

    with pytest.raises(FhirEncodingError) as raised:
        encode(prescription, [item(prescription, 101, product)])

    assert str(raised.value) == message


def test_a_quantity_in_another_unit_than_the_products_dmd_unit_is_refused() -> None:
    prescription = make_prescription()

    with pytest.raises(FhirEncodingError) as raised:
        encode(prescription, [item(prescription, 101, PARACETAMOL, unit="ml")])

    assert (
        str(raised.value)
        == "MedicationRequest.dispenseRequest.quantity.unit: 'ml' is not the product's dm+d unit 'tablet'"
    )


def test_a_plural_unit_is_the_products_dmd_unit() -> None:
    prescription = make_prescription()

    request = requests_of(encode(prescription, [item(prescription, 101, PARACETAMOL, unit="tablets")]))[0]

    assert request["dispenseRequest"]["quantity"] == {
        "value": 28,
        "unit": "tablet",
        "system": SNOMED,
        "code": TABLET,
    }


def test_a_product_without_its_dmd_unit_of_measure_is_refused() -> None:
    prescription = make_prescription()
    product = medication(21, "322236009", "Paracetamol", "500mg", "tablet", "tablet")
    product.unit_of_measure_code = ""

    with pytest.raises(FhirEncodingError) as raised:
        encode(prescription, [item(prescription, 101, product)])

    assert str(raised.value) == (
        "MedicationRequest.dispenseRequest.quantity.code (the product's dm+d unit of measure): missing"
    )


@pytest.mark.parametrize(
    ("owner", "field", "message"),
    [
        ("clinic", "phone", "Organization.telecom: missing"),
        ("clinic", "ods_code", "Organization.identifier (ODS code): missing"),
        ("clinic", "postal_code", "Organization.address: an address line and a postcode are required"),
        (
            "clinic",
            "managing_organisation_ods_code",
            "Organization.partOf: a primary-care prescriber's managing organisation is required",
        ),
        ("prescriber", "sds_user_id", "Practitioner.identifier (SDS user ID): missing"),
        ("prescriber", "sds_role_profile_id", "PractitionerRole.identifier (SDS role profile ID): missing"),
        ("prescriber", "sds_job_role_code", "PractitionerRole.code (SDS job role code): missing"),
        ("patient", "postal_code", "Patient.address: an address line and a postcode are required"),
    ],
)
def test_a_missing_detail_eps_needs_is_refused_by_name(owner: str, field: str, message: str) -> None:
    prescription = make_prescription()
    target = {
        "clinic": prescription.clinic,
        "prescriber": prescription.prescriber,
        "patient": prescription.patient,
    }
    setattr(target[owner], field, "")

    with pytest.raises(FhirEncodingError) as raised:
        encode(prescription, [item(prescription, 101, PARACETAMOL)])

    assert str(raised.value) == message


def test_a_prescriber_without_a_telephone_gives_the_clinics_on_their_role() -> None:
    prescription = make_prescription()
    prescription.prescriber.phone = ""
    prescription.clinic.phone = "0113 496 0999"

    role = resources(encode(prescription, [item(prescription, 101, PARACETAMOL)]), "PractitionerRole")[0]

    assert role["telecom"] == [{"system": "phone", "use": "work", "value": "0113 496 0999"}]


def test_a_us_registration_cannot_sign_an_eps_prescription() -> None:
    prescription = make_prescription()
    prescription.prescriber.registration_body = "NPI"

    with pytest.raises(FhirEncodingError) as raised:
        encode(prescription, [item(prescription, 101, PARACETAMOL)])

    assert str(raised.value) == (
        "MedicationRequest.extension(PrescriptionType): registration body 'NPI' is not a GB prescribing profession"
    )


def test_a_prescription_without_its_eps_identifiers_is_not_encoded() -> None:
    prescription = make_prescription(eps_prescription_id="", eps_prescription_uuid=None)

    with pytest.raises(FhirEncodingError) as raised:
        encode(prescription, [item(prescription, 101, PARACETAMOL)])

    assert str(raised.value) == "MedicationRequest.groupIdentifier.extension: missing"


# --- Short-form prescription IDs -------------------------------------------------------------


def test_the_check_characters_of_published_eps_prescription_ids_are_reproduced() -> None:
    for published in ("24F5DA-A83008-7EFE6Z", "DE1AF4-A99968-4C918K", "04F4C2-A99968-7F717P"):
        assert check_character(published[:-1]) == published[-1]
        assert short_form_id_is_valid(published)


ODS_CODES = st.text(alphabet="0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ", min_size=1, max_size=6)


@settings(max_examples=300, deadline=None)
@given(ods_code=ODS_CODES, sequence=st.integers(min_value=0, max_value=2**40))
def test_every_generated_short_form_id_has_a_valid_check_character(ods_code: str, sequence: int) -> None:
    value = short_form_id(ods_code=ods_code, sequence=sequence)

    assert short_form_id_is_valid(value)
    # The simulator's checker was written separately (EPS's other published formulation).
    assert eps_rules._check_character_matches(value)
    assert value[7:13] == ods_code.rjust(6, "0")
    assert value[14:19] == f"{sequence % 16**5:05X}"


@settings(max_examples=300, deadline=None)
@given(
    ods_code=ODS_CODES,
    sequence=st.integers(min_value=0, max_value=16**5 - 1),
    wrong=st.sampled_from(CHECK_CHARACTERS),
)
def test_a_short_form_id_with_any_other_check_character_is_refused(
    ods_code: str, sequence: int, wrong: str
) -> None:
    value = short_form_id(ods_code=ods_code, sequence=sequence)
    tampered = value[:-1] + wrong

    assert short_form_id_is_valid(tampered) is (wrong == value[-1])
    assert eps_rules._check_character_matches(tampered) is (wrong == value[-1])


@pytest.mark.parametrize("ods_code", ["", "TOOLONG1", "Y1-345"])
def test_an_ods_code_that_cannot_form_a_short_form_id_is_refused(ods_code: str) -> None:
    from pharmacy.fhir.eps.prescription_id import PrescriptionIdError

    with pytest.raises(PrescriptionIdError):
        short_form_id(ods_code=ods_code, sequence=1)


# --- The public EPS examples: decoded and re-encoded -----------------------------------------


def canonical(bundle: dict[str, Any]) -> dict[str, list[Any]]:
    """The message's meaning: resources by type, references replaced by what they point at,
    resource ids left out. Provenance (the prescriber's signature) is out of scope; the
    MessageHeader is compared on its own."""
    by_url = {entry["fullUrl"]: entry["resource"] for entry in bundle["entry"]}

    def walk(node: Any) -> Any:
        if isinstance(node, dict):
            return {
                key: by_url[value]["resourceType"] if key == "reference" and value in by_url else walk(value)
                for key, value in node.items()
                if key != "id"
            }
        if isinstance(node, list):
            return [walk(value) for value in node]
        return node

    result: dict[str, list[Any]] = {}
    for entry in bundle["entry"]:
        resource = entry["resource"]
        if resource["resourceType"] not in ("Provenance", "MessageHeader"):
            result.setdefault(resource["resourceType"], []).append(walk(resource))
    return result


def header_essentials(bundle: dict[str, Any]) -> dict[str, Any]:
    header = bundle["entry"][0]["resource"]
    by_url = {entry["fullUrl"]: entry["resource"]["resourceType"] for entry in bundle["entry"]}
    return {
        "eventCoding": header["eventCoding"],
        "destination": header.get("destination"),
        "sender": {key: value for key, value in header["sender"].items() if key != "reference"},
        "source": header["source"],
        "focused requests": [
            focus["reference"]
            for focus in header["focus"]
            if by_url.get(focus["reference"]) == "MedicationRequest"
        ],
    }


@pytest.mark.parametrize("name", EPS_ORDER_EXAMPLES)
def test_a_public_eps_prescription_order_is_read_and_written_back_to_an_equivalent_message(name: str) -> None:
    original = load_example(name)

    order = bundle_to_order(original)
    rewritten = order_to_bundle(order, urls=entry_urls(order.message_id))

    assert canonical(rewritten) == canonical(original)
    assert header_essentials(rewritten) == header_essentials(original)
    assert rewritten["identifier"] == original["identifier"]
    assert rewritten["id"] == original["id"]
    assert bundle_to_order(rewritten) == order
    assert eps_rules.check_message(original) == []
    assert eps_rules.check_message(rewritten) == []


def test_the_decoder_reads_the_eps_repeat_example_into_typed_values() -> None:
    order = bundle_to_order(
        load_example("eps-api__spec_prescribing_prescription-order_repeat-primary-example-req.json")
    )

    assert order.message_id == "46183abc-9fad-4673-85db-ce2cb6614732"
    assert (order.short_form_id, order.long_form_id) == (
        "24F5DA-A83008-7EFE6Z",
        "20ba5fb5-cb58-462c-923e-22d180b09356",
    )
    assert (order.course_of_therapy, order.intent) == (
        model.CourseOfTherapy.CONTINUOUS,
        model.Intent.INSTANCE_ORDER,
    )
    assert order.repeat_information == model.RepeatInformation(2, date(2023, 4, 7))
    assert order.nominated_pharmacy == model.OrganisationReference("VNE51", "The Simple Pharmacy")
    assert order.validity_start == date(2022, 10, 21)
    assert order.patient.nhs_number == "9449304130"
    assert order.patient.birth_date == date(1948, 4, 30)
    assert order.practitioner.sds_user_id == "555086689106"
    assert order.practitioner.professional_codes == (
        model.Identifier("https://fhir.hl7.org.uk/Id/gmc-number", "6095103"),
    )
    assert order.role.sds_role_profile_id == "200102238987"
    assert order.organisation.ods_code == "A83008"
    assert order.organisation.part_of == model.OrganisationReference("84H", "NHS COUNTY DURHAM CCG")
    assert [(i.medication.code, i.quantity.value, i.quantity.code) for i in order.items] == [
        ("39732311000001104", Decimal("20"), TABLET),
        ("322341003", Decimal("20"), TABLET),
        ("321080004", Decimal("30"), TABLET),
        ("324252006", Decimal("30"), TABLET),
    ]
    assert order.items[0].dosage[0] == model.Dosage(
        text="2 times a day for 10 days",
        timing=model.Timing(2, Decimal("1"), "d"),
        route=model.Coding(SNOMED, "26643006", "Oral"),
    )
    assert order.items[0].expected_supply_days == 10
    assert order.items[0].based_on == model.BasedOn(
        "299c610b-f4f1-4eac-a7d7-4fb6b0556e11", number_of_repeats_allowed=5
    )


def test_the_decoder_reads_a_controlled_drug_and_its_words() -> None:
    order = bundle_to_order(load_example(EPS_ORDER_EXAMPLES[2]))

    assert order.items[0].controlled_drug == model.ControlledDrug(
        schedule=model.Coding(
            "https://fhir.nhs.uk/CodeSystem/medicationrequest-controlled-drug", "CD2", "Schedule 2"
        ),
        quantity_words="twenty eight",
    )


def test_our_message_decodes_to_what_we_meant() -> None:
    prescription = make_prescription(earliest_fill_date=date(2026, 11, 20))
    items = [
        item(
            prescription,
            101,
            METHYLPHENIDATE,
            quantity=Decimal("56"),
            quantity_words="fifty six",
            days_supply=28,
        )
    ]

    order = bundle_to_order(encode(prescription, items))

    assert order.short_form_id == SHORT_FORM_ID
    assert order.long_form_id == str(LONG_FORM_ID)
    assert order.validity_start == date(2026, 11, 20)
    assert order.nominated_pharmacy == model.OrganisationReference(PHARMACY_ODS)
    assert order.patient.nhs_number == NHS_NUMBER
    assert order.items[0].controlled_drug.quantity_words == "fifty six"
    assert order.items[0].quantity == model.Quantity(Decimal("56"), "tablet", TABLET)
    assert order.items[0].dosage[0].timing == model.Timing(2, Decimal("1"), "d")


def test_the_decoder_refuses_medication_requests_that_disagree_without_quoting_them() -> None:
    bundle = load_example("eps-api__spec_prescribing_prescription-order_repeat-primary-example-req.json")
    bundle["entry"][2]["resource"]["groupIdentifier"]["value"] = "000000-A83008-00000X"

    with pytest.raises(EpsDecodeError) as raised:
        bundle_to_order(bundle)

    assert str(raised.value) == "MedicationRequest.groupIdentifier: differs between MedicationRequests"


def test_the_decoder_refuses_a_message_without_an_nhs_number() -> None:
    bundle = load_example(EPS_ORDER_EXAMPLES[0])
    patient = next(e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == "Patient")
    patient["identifier"] = []

    with pytest.raises(EpsDecodeError) as raised:
        bundle_to_order(bundle)

    assert (
        str(raised.value) == "Patient.identifier: no identifier with system https://fhir.nhs.uk/Id/nhs-number"
    )
