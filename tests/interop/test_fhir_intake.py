"""FHIR R4 $process-message intake: NHS EPS's own example messages accepted or refused with a
precise OperationOutcome, idempotent replay, cancellation, clinic isolation, constant queries."""

from __future__ import annotations

import copy
import json
import uuid
from pathlib import Path

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from fhir.resources.R4B.bundle import Bundle
from fhir.resources.R4B.operationoutcome import OperationOutcome

from common.errors import Conflict
from events.models import Event
from interop.models import ReceivedOrder
from patients.models import IdempotencyKey, Patient
from patients.phi import nhs_number_index
from prescriptions.models import OffFormularyItem, Prescription, PrescriptionItem, Status
from prescriptions.services import prescription_review, prescription_run_checks
from tests.conftest import ClinicSetup, make_clinic_setup
from tests.patients.factories import PatientFactory
from tests.prescriptions.factories import PrescriberFactory
from tests.support.factories import pharmacist_create

pytestmark = pytest.mark.django_db

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "fhir-examples"
REPEAT_ORDER = "eps-api__spec_prescribing_prescription-order_repeat-primary-example-req.json"
ERD_ORDER = "eps-api__spec_prepare_eRD-primary-example-req.json"
CD_ORDER = (
    "eps-api__secondary-care_community_acute_nominated-pharmacy_clinical-practitioner_"
    "controlled-drugs_1-Prepare-Request-200_OK.json"
)
CANCEL = "eps-api__spec_prescribing_prescription-order-update_repeat-primary-example-req.json"
CANCEL_RESPONSE = "eps-api__spec_prescribing_prescription-order-update_repeat-primary-example-res.json"
ERROR_EXAMPLE = "eps-api__spec_errors_example-a-validation-error-missing-field_Response-FhirError.json"
DISPENSE_NOTIFICATION = "eps-api__spec_dispensing_dispense-notification_acute-primary-example-01-req.json"
RELEASE_REQUEST = "eps-api__spec_dispensing_release_acute-primary-example-req.json"
HL7_SEARCHSET = "hl7-r4-spec__Bundle-bundle-example.json"
HL7_OTHER_MESSAGE = "hl7-r4-spec__Bundle-10bb101f-a121-4264-a920-67be9cb82c74.json"

EXAMPLE_MESSAGE_ID = "46183abc-9fad-4673-85db-ce2cb6614732"
EXAMPLE_NHS_NUMBER = "9449304130"
EXAMPLE_PRESCRIPTION_ID = "24F5DA-A83008-7EFE6Z"
ITEM_NUMBER_SYSTEM = "https://fhir.nhs.uk/Id/prescription-order-item-number"
ORDER_NUMBER_SYSTEM = "https://fhir.nhs.uk/Id/prescription-order-number"
FHIR_JSON = "application/fhir+json"
URL = "/fhir/R4/$process-message"


def example(name: str) -> dict:
    return json.loads((FIXTURES / name).read_text())


def eps_clinic(name: str = "Example practice", ods_code: str = "A83008") -> ClinicSetup:
    """A clinic that is the examples' prescribing organisation, with their GMC prescriber."""
    setup = make_clinic_setup(name)
    setup.clinic.ods_code = ods_code
    setup.clinic.save()
    PrescriberFactory(clinic=setup.clinic, registration_body="GMC", registration_number="6095103")
    return setup


@pytest.fixture
def clinic(db) -> ClinicSetup:  # type: ignore[no-untyped-def]
    return eps_clinic()


def post(setup: ClinicSetup, body: object, content_type: str = FHIR_JSON):  # type: ignore[no-untyped-def]
    data = body if isinstance(body, bytes | str) else json.dumps(body)
    return setup.api.post(URL, data=data, content_type=content_type)


def issues(response) -> list[tuple[str, str, str]]:  # type: ignore[no-untyped-def]
    """(severity, code, expression) of each issue, after checking it is an OperationOutcome."""
    assert response["Content-Type"] == FHIR_JSON
    outcome = response.json()
    OperationOutcome.model_validate(outcome)
    return [(i["severity"], i["code"], (i.get("expression") or [""])[0]) for i in outcome["issue"]]


def resources_of(bundle: dict, resource_type: str) -> list[tuple[int, dict]]:
    return [
        (index, entry["resource"])
        for index, entry in enumerate(bundle["entry"])
        if entry["resource"]["resourceType"] == resource_type
    ]


def with_codes(bundle: dict, codes: list[str]) -> dict:
    """The message with its items' dm+d codes replaced (formulary products)."""
    bundle = copy.deepcopy(bundle)
    for (_index, request), code in zip(resources_of(bundle, "MedicationRequest"), codes, strict=False):
        request["medicationCodeableConcept"]["coding"][0]["code"] = code
    return bundle


def renamed(bundle: dict, message_id: str | None = None) -> dict:
    bundle = copy.deepcopy(bundle)
    bundle["identifier"]["value"] = message_id or str(uuid.uuid4())
    return bundle


def nothing_stored() -> bool:
    return (
        Prescription.objects.count() == 0
        and Patient.objects.count() == 0
        and ReceivedOrder.objects.count() == 0
        and IdempotencyKey.objects.count() == 0
        and not Event.objects.filter(aggregate_type="prescription").exists()
    )


# --- The public EPS examples ----------------------------------------------------------------------


def test_the_signed_repeat_order_example_is_accepted_and_answered_with_a_response_message(clinic):
    response = post(clinic, example(REPEAT_ORDER))

    assert response.status_code == 200, response.content
    assert response["Content-Type"] == FHIR_JSON
    message = response.json()
    Bundle.model_validate(message)
    header = message["entry"][0]["resource"]
    assert header["resourceType"] == "MessageHeader"
    assert header["eventCoding"]["code"] == "prescription-order-response"
    assert header["response"] == {"identifier": EXAMPLE_MESSAGE_ID, "code": "ok"}
    prescription = Prescription.objects.get()
    assert header["focus"] == [
        {"reference": f"MedicationRequest/{prescription.pk}-{line}"} for line in (1, 2, 3, 4)
    ]
    requests = [resource for _index, resource in resources_of(message, "MedicationRequest")]
    assert [request["identifier"][0]["value"] for request in requests] == [
        "a54219b8-f741-4c47-b662-e4f8dfa49ab6",
        "6989b7bd-8db6-428c-a593-4022e3044c00",
        "2868554c-5565-4d31-b92a-c5b8dab8b90a",
        "5cb17f5a-11ac-4e18-825f-6470467238b3",
    ]
    assert {request["status"] for request in requests} == {"active"}
    assert requests[0]["groupIdentifier"] == {"system": ORDER_NUMBER_SYSTEM, "value": EXAMPLE_PRESCRIPTION_ID}
    # The same intake service as the REST API: a received prescription and its event.
    assert prescription.clinic == clinic.clinic
    assert prescription.status == Status.RECEIVED
    assert prescription.prescriber.registration_number == "6095103"
    assert list(
        Event.objects.filter(aggregate_type="prescription", aggregate_id=prescription.pk).values_list(
            "type", flat=True
        )
    ) == ["prescription.received"]
    patient = prescription.patient
    example_patient = resources_of(example(REPEAT_ORDER), "Patient")[0][1]
    assert (patient.clinic, patient.nhs_number, patient.birth_date.isoformat(), patient.family_name) == (
        clinic.clinic,
        EXAMPLE_NHS_NUMBER,
        example_patient["birthDate"],
        example_patient["name"][0]["family"],
    )


def test_products_outside_the_formulary_are_held_for_a_pharmacist_with_a_finding_naming_each(
    clinic, formulary
):
    post(clinic, example(REPEAT_ORDER))
    prescription = Prescription.objects.get()

    assert PrescriptionItem.objects.count() == 0
    assert list(OffFormularyItem.objects.values_list("line", "code", "display")) == [
        (1, "39732311000001104", "Amoxicillin 250mg capsules"),
        (2, "322341003", "Co-codamol 30mg/500mg tablets"),
        (3, "321080004", "Pseudoephedrine hydrochloride 60mg tablets"),
        (4, "324252006", "Azithromycin 250mg capsules"),
    ]
    assert prescription_run_checks(prescription_id=prescription.pk) == Status.AWAITING_PHARMACIST
    prescription.refresh_from_db()
    findings = [r for r in prescription.check_results if r["code"] == "formulary.not_listed"]
    assert [f["severity"] for f in findings] == ["needs_pharmacist"] * 4
    assert (
        "Item 2: Co-codamol 30mg/500mg tablets (http://snomed.info/sct 322341003)" in findings[1]["message"]
    )


def test_a_pharmacist_cannot_approve_a_product_outside_the_formulary(clinic, formulary):
    post(clinic, example(REPEAT_ORDER))
    prescription = Prescription.objects.get()
    prescription_run_checks(prescription_id=prescription.pk)

    with pytest.raises(Conflict) as refused:
        prescription_review(
            prescription_id=prescription.pk, pharmacist=pharmacist_create(), decision="approved", reason="ok"
        )

    assert refused.value.code == "off-formulary-item"
    assert Prescription.objects.get().status == Status.AWAITING_PHARMACIST


def test_formulary_products_become_prescription_items_matched_by_dm_d_code(clinic, formulary):
    response = post(clinic, with_codes(example(REPEAT_ORDER), ["323509004", "322236009"]))

    assert response.status_code == 200, response.content
    items = list(PrescriptionItem.objects.select_related("medication").order_by("id"))
    assert [(item.medication.name, item.quantity, item.unit, item.days_supply) for item in items] == [
        ("Amoxicillin", 20, "tablet", 10),
        ("Paracetamol", 20, "tablet", 10),
    ]
    assert items[0].dose_text == "2 times a day for 10 days"
    assert list(OffFormularyItem.objects.values_list("line", flat=True)) == [3, 4]
    codes = [
        r["medicationCodeableConcept"]["coding"][0]["code"]
        for _i, r in resources_of(response.json(), "MedicationRequest")
    ]
    assert codes == ["323509004", "322236009", "321080004", "324252006"]


def test_the_electronic_repeat_dispensing_example_is_accepted(clinic):
    response = post(clinic, example(ERD_ORDER))

    assert response.status_code == 200, response.content
    assert ReceivedOrder.objects.get().short_form_id == EXAMPLE_PRESCRIPTION_ID


def test_the_controlled_drug_example_is_refused_for_each_item_without_a_days_supply(clinic):
    response = post(clinic, example(CD_ORDER))

    assert response.status_code == 400
    assert issues(response) == [
        ("error", "required", f"Bundle.entry[{index}].resource.dispenseRequest.expectedSupplyDuration")
        for index, _request in resources_of(example(CD_ORDER), "MedicationRequest")
    ]
    assert nothing_stored()


def test_eps_error_example_a_missing_entry_is_refused_the_same_way(clinic):
    """EPS's published error example: "ResourceType Bundle must contain 'entry' field"."""
    eps_error = example(ERROR_EXAMPLE)
    OperationOutcome.model_validate(eps_error)
    message = example(REPEAT_ORDER)
    del message["entry"]

    response = post(clinic, message)

    assert response.status_code == 400
    assert issues(response) == [("error", "required", "Bundle.entry")]
    assert eps_error["issue"][0]["severity"] == "error"
    assert nothing_stored()


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        (DISPENSE_NOTIFICATION, [("error", "not-supported", "Bundle.entry[0].resource.eventCoding")]),
        (RELEASE_REQUEST, [("error", "not-supported", "resourceType")]),
        (HL7_SEARCHSET, [("error", "value", "Bundle.type")]),
        (HL7_OTHER_MESSAGE, [("error", "not-supported", "Bundle.entry[0].resource.eventCoding")]),
    ],
)
def test_other_public_messages_are_refused_naming_what_is_wrong(clinic, name, expected):
    response = post(clinic, example(name))

    assert response.status_code == 400
    assert issues(response) == expected
    assert nothing_stored()


def test_the_cancellation_example_is_refused_because_it_reuses_the_order_message_identifier(clinic):
    post(clinic, example(REPEAT_ORDER))

    response = post(clinic, example(CANCEL))

    assert response.status_code == 422
    assert issues(response) == [("error", "duplicate", "")]
    assert Prescription.objects.get().status == Status.RECEIVED


def test_the_cancellation_example_of_one_item_is_refused_scriptline_cancels_whole_prescriptions(clinic):
    post(clinic, example(REPEAT_ORDER))

    response = post(clinic, renamed(example(CANCEL)))

    assert response.status_code == 400
    index = resources_of(example(CANCEL), "MedicationRequest")[0][0]
    assert issues(response) == [("error", "not-supported", f"Bundle.entry[{index}].resource.identifier")]
    assert "all 4 items" in response.json()["issue"][0]["diagnostics"]
    assert Prescription.objects.get().status == Status.RECEIVED


def cancel_all(order: dict) -> dict:
    """The EPS cancellation example's header and reason applied to every item of `order`."""
    update = renamed(example(CANCEL))
    reason = resources_of(update, "MedicationRequest")[0][1]["statusReason"]
    message = renamed(order)
    message["entry"][0]["resource"]["eventCoding"] = update["entry"][0]["resource"]["eventCoding"]
    for _index, request in resources_of(message, "MedicationRequest"):
        request["status"] = "cancelled"
        request["statusReason"] = reason
    return message


def test_an_update_cancelling_every_item_cancels_the_prescription_through_the_saga(clinic):
    post(clinic, example(REPEAT_ORDER))
    update = cancel_all(example(REPEAT_ORDER))

    response = post(clinic, update)

    assert response.status_code == 200, response.content
    header = response.json()["entry"][0]["resource"]
    assert header["response"] == {"identifier": update["identifier"]["value"], "code": "ok"}
    assert {r["status"] for _i, r in resources_of(response.json(), "MedicationRequest")} == {"cancelled"}
    prescription = Prescription.objects.get()
    assert prescription.status == Status.CANCELLED
    assert prescription.status_reason == "Cancelled by the prescriber: Clinical contra-indication"
    # Same response shape as EPS's own cancel response example.
    assert (
        header["eventCoding"]["code"]
        == example(CANCEL_RESPONSE)["entry"][0]["resource"]["eventCoding"]["code"]
    )


def test_cancelling_a_prescription_the_pharmacy_has_dispensed_is_a_conflict(clinic):
    post(clinic, example(REPEAT_ORDER))
    Prescription.objects.update(status=Status.DISPENSED)

    response = post(clinic, cancel_all(example(REPEAT_ORDER)))

    assert response.status_code == 409
    assert issues(response) == [("error", "business-rule", "")]
    assert Prescription.objects.get().status == Status.DISPENSED


# --- Refusals -------------------------------------------------------------------------------------


def test_every_bad_reference_is_its_own_issue_and_nothing_is_stored(clinic):
    message = example(REPEAT_ORDER)
    requests = resources_of(message, "MedicationRequest")
    for _index, request in requests:
        request["subject"] = {"reference": "urn:uuid:00000000-0000-0000-0000-000000000000"}
    message["entry"][0]["resource"]["focus"][0] = {"reference": "urn:uuid:nowhere"}

    response = post(clinic, message)

    assert response.status_code == 400
    assert issues(response) == [
        ("error", "invalid", "Bundle.entry[0].resource.focus[0]"),
        *[("error", "invalid", f"Bundle.entry[{index}].resource.subject") for index, _r in requests],
    ]
    assert nothing_stored()


def test_structural_errors_come_from_the_fhir_models_with_their_paths(clinic):
    message = example(REPEAT_ORDER)
    message["entry"][1]["resource"]["status"] = 5
    del message["entry"][2]["resource"]["intent"]
    message["entry"][3]["resource"]["colour"] = "blue"

    response = post(clinic, message)

    assert response.status_code == 400
    assert issues(response) == [
        ("error", "structure", "Bundle.entry[1].resource.status"),
        ("error", "required", "Bundle.entry[2].resource.intent"),
        ("error", "structure", "Bundle.entry[3].resource.colour"),
    ]
    assert nothing_stored()


@pytest.mark.parametrize(
    ("body", "content_type", "status", "code"),
    [
        (b"{not json", FHIR_JSON, 400, "structure"),
        (b"[1, 2]", FHIR_JSON, 400, "structure"),
        (b"\xff\xfe", FHIR_JSON, 400, "structure"),
        (b'{"resourceType": "Patient"}', FHIR_JSON, 400, "not-supported"),
        (
            b'{"resourceType": "Bundle", "type": "message", "entry": [{"resource": {"resourceType": "Nope"}}]}',
            FHIR_JSON,
            400,
            "not-supported",
        ),
        (b"[" * 5000 + b"]" * 5000, FHIR_JSON, 400, "structure"),
        (b'{"a":' * 40 + b"1" + b"}" * 40, FHIR_JSON, 400, "too-costly"),
        (b'{"resourceType": "Bundle", "id": "\\u0000"}', FHIR_JSON, 400, "invalid"),
        (b"{}", "application/json", 415, "not-supported"),
        (b"{}", "text/plain", 415, "not-supported"),
    ],
)
def test_malformed_bodies_are_refused_with_an_operation_outcome(clinic, body, content_type, status, code):
    response = post(clinic, body, content_type=content_type)

    assert response.status_code == status
    assert [issue[1] for issue in issues(response)] == [code]
    assert nothing_stored()


def test_a_body_over_the_size_limit_is_refused_413(clinic, settings):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 10_000

    response = post(clinic, example(REPEAT_ORDER))

    assert response.status_code == 413
    assert issues(response) == [("error", "too-costly", "")]
    assert nothing_stored()


def test_an_unknown_prescriber_and_a_foreign_organisation_are_both_reported(db):
    other = make_clinic_setup("Other practice")

    response = post(other, example(REPEAT_ORDER))

    assert response.status_code == 400
    practitioner = resources_of(example(REPEAT_ORDER), "Practitioner")[0][0]
    organisation = resources_of(example(REPEAT_ORDER), "Organization")[0][0]
    assert issues(response) == [
        ("error", "not-found", f"Bundle.entry[{practitioner}].resource.identifier"),
        ("error", "business-rule", f"Bundle.entry[{organisation}].resource.identifier"),
    ]
    assert nothing_stored()


def test_an_invalid_nhs_number_is_refused(clinic):
    message = example(REPEAT_ORDER)
    index, patient = resources_of(message, "Patient")[0]
    patient["identifier"][0]["value"] = "9449304131"

    response = post(clinic, message)

    assert issues(response) == [("error", "value", f"Bundle.entry[{index}].resource.identifier")]


def test_without_a_token_the_answer_is_401_and_with_a_read_only_token_403(clinic):
    clinic.api.credentials()
    assert issues(post(clinic, example(REPEAT_ORDER)))[0][1] == "login"
    reader = make_clinic_setup("Reader", scope="prescriptions:read")

    response = post(reader, example(REPEAT_ORDER))

    assert response.status_code == 403
    assert issues(response) == [("error", "forbidden", "")]


# --- Idempotency ----------------------------------------------------------------------------------


def test_a_re_sent_message_returns_the_first_response_and_creates_nothing_more(clinic):
    first = post(clinic, example(REPEAT_ORDER))

    again = post(clinic, example(REPEAT_ORDER))

    assert again.status_code == 200
    assert again.json() == first.json()
    assert again["Idempotent-Replayed"] == "true"
    assert Prescription.objects.count() == 1
    assert Event.objects.filter(type="prescription.received").count() == 1


def test_the_same_message_identifier_with_another_body_is_refused_422(clinic):
    post(clinic, example(REPEAT_ORDER))

    response = post(clinic, with_codes(example(REPEAT_ORDER), ["323509004"]))

    assert response.status_code == 422
    assert issues(response) == [("error", "duplicate", "")]
    assert Prescription.objects.count() == 1


def test_a_new_message_with_an_already_received_prescription_id_is_refused(clinic):
    post(clinic, example(REPEAT_ORDER))

    response = post(clinic, renamed(example(REPEAT_ORDER)))

    assert response.status_code == 400
    index = resources_of(example(REPEAT_ORDER), "MedicationRequest")[0][0]
    assert issues(response) == [
        ("error", "duplicate", f"Bundle.entry[{index}].resource.groupIdentifier.value")
    ]
    assert Prescription.objects.count() == 1


# --- Clinic isolation -----------------------------------------------------------------------------


def test_the_patient_is_matched_by_nhs_number_within_the_clinic_only(clinic):
    existing = PatientFactory(clinic=clinic.clinic, nhs_number=EXAMPLE_NHS_NUMBER)
    existing.nhs_number_index = nhs_number_index(EXAMPLE_NHS_NUMBER)
    existing.save()
    elsewhere = eps_clinic("Same ODS elsewhere")
    theirs = PatientFactory(clinic=elsewhere.clinic, nhs_number=EXAMPLE_NHS_NUMBER)
    theirs.nhs_number_index = nhs_number_index(EXAMPLE_NHS_NUMBER)
    theirs.save()

    post(clinic, example(REPEAT_ORDER))
    post(elsewhere, example(REPEAT_ORDER))

    mine, other = Prescription.objects.order_by("pk")
    assert mine.patient == existing
    assert other.patient == theirs
    assert Patient.objects.count() == 2


def test_a_clinic_cannot_reference_another_clinics_patient(clinic):
    elsewhere = eps_clinic("Another practice", ods_code="B12345")
    theirs = PatientFactory(clinic=elsewhere.clinic)
    message = example(REPEAT_ORDER)
    for _index, request in resources_of(message, "MedicationRequest"):
        request["subject"] = {"reference": f"Patient/{theirs.pk}"}

    response = post(clinic, message)

    assert response.status_code == 400
    assert {issue[2].rsplit(".", 1)[1] for issue in issues(response)} == {"subject"}
    assert Prescription.objects.count() == 0


def test_a_clinic_cannot_cancel_another_clinics_prescription(clinic):
    post(clinic, example(REPEAT_ORDER))
    elsewhere = eps_clinic("Another practice", ods_code="B12345")

    response = post(elsewhere, cancel_all(example(REPEAT_ORDER)))

    assert response.status_code == 404
    assert issues(response) == [("error", "not-found", "")]
    assert Prescription.objects.get().status == Status.RECEIVED


# --- Queries --------------------------------------------------------------------------------------


def _queries_to_accept(setup: ClinicSetup, message: dict) -> int:
    with CaptureQueriesContext(connection) as captured:
        response = post(setup, message)
    assert response.status_code == 200, response.content
    return len(captured)


def only_items(message: dict, keep: int) -> dict:
    """The message with only its first `keep` MedicationRequests (and a new identifier)."""
    message = renamed(message)
    dropped = {
        e["fullUrl"]
        for _i, e in [(i, message["entry"][i]) for i, _r in resources_of(message, "MedicationRequest")][keep:]
    }
    message["entry"] = [e for e in message["entry"] if e["fullUrl"] not in dropped]
    header = message["entry"][0]["resource"]
    header["focus"] = [f for f in header["focus"] if f["reference"] not in dropped]
    return message


def test_intake_runs_the_same_number_of_queries_for_two_items_or_four(clinic, formulary):
    two_items = only_items(with_codes(example(REPEAT_ORDER), ["323509004"]), 2)
    four_items = with_codes(example(REPEAT_ORDER), ["323509004", "322236009"])
    other = eps_clinic("Second practice", ods_code="A83008")

    assert _queries_to_accept(clinic, two_items) == _queries_to_accept(other, four_items)


def test_the_demo_order_message_is_accepted_and_approved_by_the_checks(formulary):
    """`make demo` posts this message (scripts/demo.py) for the demo GB clinic."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "demo", Path(__file__).resolve().parents[2] / "scripts" / "demo.py"
    )
    demo = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(demo)
    setup = eps_clinic("Riverside Neurodevelopmental Clinic", ods_code="Y12345")
    PrescriberFactory(clinic=setup.clinic, registration_body="GMC", registration_number="7000001")

    response = post(setup, demo.eps_order_message(demo.test_range_nhs_number()))

    assert response.status_code == 200, response.content
    prescription = Prescription.objects.get()
    assert [item.medication.code for item in prescription.items.all()] == ["322236009"]
    assert prescription_run_checks(prescription_id=prescription.pk) == Status.APPROVED
