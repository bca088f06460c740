"""The NHS EPS prescription-order message as plain typed data, in both directions.

`PrescriptionOrder` is what `encode.order_to_bundle` writes and `decode.bundle_to_order`
reads: the prescription-order profile of the NHS England Electronic Prescription Service
(EPS) FHIR API, FHIR R4. Values that EPS requires to be identical on every MedicationRequest
of a message (prescription type, category, group identifier, course of therapy, nominated
pharmacy, dispensing-site preference, validity period, repeat information; EPS
``bundle-validator.ts`` ``verifyPrescriptionBundle``) are held once, on the order; values
per line item are on `LineItem`.

Sources, all from NHSDigital/electronic-prescription-service-api (MIT):

* the API specification's schemas,
  ``packages/specification/schemas/components/MedicationRequest/MedicationRequest.yaml``,
  ``.../_extensions/*.yaml`` and ``.../_fragments/*.yaml`` (element rules, extension URLs,
  code systems);
* the request validator, ``packages/coordinator/src/services/validation/bundle-validator.ts``;
* the FHIR-to-HL7v3 translation that Spine receives,
  ``packages/coordinator/src/services/translation/request/`` (what must be present);
* the published example messages, ``examples/`` (shapes and codes such as the dm+d unit of
  measure for tablets, 428673006, and capsules, 428641000).

Nothing here imports Django: the intake side can decode a message without a database.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal

# --- Identifier systems, extension URLs and code systems (EPS API specification) -------------

SNOMED = "http://snomed.info/sct"
UCUM = "http://unitsofmeasure.org"
MESSAGE_ID_SYSTEM = "https://tools.ietf.org/html/rfc4122"
MESSAGE_EVENT_SYSTEM = "https://fhir.nhs.uk/CodeSystem/message-event"
NHS_NUMBER_SYSTEM = "https://fhir.nhs.uk/Id/nhs-number"
ODS_SYSTEM = "https://fhir.nhs.uk/Id/ods-organization-code"
SDS_USER_ID_SYSTEM = "https://fhir.nhs.uk/Id/sds-user-id"
SDS_ROLE_PROFILE_ID_SYSTEM = "https://fhir.nhs.uk/Id/sds-role-profile-id"
SDS_JOB_ROLE_CODE_SYSTEM = "https://fhir.nhs.uk/CodeSystem/NHSDigital-SDS-JobRoleCode"
PRESCRIPTION_ORDER_NUMBER_SYSTEM = "https://fhir.nhs.uk/Id/prescription-order-number"
PRESCRIPTION_ORDER_ITEM_NUMBER_SYSTEM = "https://fhir.nhs.uk/Id/prescription-order-item-number"
PRESCRIPTION_LONG_FORM_ID_SYSTEM = "https://fhir.nhs.uk/Id/prescription"
PRESCRIPTION_TYPE_SYSTEM = "https://fhir.nhs.uk/CodeSystem/prescription-type"
DISPENSING_SITE_PREFERENCE_SYSTEM = "https://fhir.nhs.uk/CodeSystem/dispensing-site-preference"
CONTROLLED_DRUG_SYSTEM = "https://fhir.nhs.uk/CodeSystem/medicationrequest-controlled-drug"
CATEGORY_SYSTEM = "http://terminology.hl7.org/CodeSystem/medicationrequest-category"
# acute and continuous are HL7 codes; continuous-repeat-dispensing is NHS England's own
# (EPS packages/models/fhir/medication-request.ts, COURSE_OF_THERAPY_TYPE_*).
COURSE_OF_THERAPY_SYSTEM = "http://terminology.hl7.org/CodeSystem/medicationrequest-course-of-therapy"
NHS_COURSE_OF_THERAPY_SYSTEM = "https://fhir.nhs.uk/CodeSystem/medicationrequest-course-of-therapy"

PRESCRIPTION_TYPE_URL = "https://fhir.nhs.uk/StructureDefinition/Extension-DM-PrescriptionType"
PRESCRIPTION_ID_URL = "https://fhir.nhs.uk/StructureDefinition/Extension-DM-PrescriptionId"
PERFORMER_SITE_TYPE_URL = "https://fhir.nhs.uk/StructureDefinition/Extension-DM-PerformerSiteType"
CONTROLLED_DRUG_URL = "https://fhir.nhs.uk/StructureDefinition/Extension-DM-ControlledDrug"
REPEAT_INFORMATION_URL = (
    "https://fhir.hl7.org.uk/StructureDefinition/Extension-UKCore-MedicationRepeatInformation"
)
EPS_REPEAT_INFORMATION_URL = "https://fhir.nhs.uk/StructureDefinition/Extension-EPS-RepeatInformation"

# The professional codes EPS turns into the HL7v3 author identifier (translation/request/
# practitioner.ts, getAgentPersonPersonIdForAuthor): exactly one must be present.
PROFESSIONAL_CODE_SYSTEMS = {
    "GMC": "https://fhir.hl7.org.uk/Id/gmc-number",
    "NMC": "https://fhir.hl7.org.uk/Id/nmc-number",
    "GPhC": "https://fhir.hl7.org.uk/Id/gphc-number",
    "HCPC": "https://fhir.hl7.org.uk/Id/hcpc-number",
    "professional-code": "https://fhir.hl7.org.uk/Id/professional-code",
}


@dataclass(frozen=True)
class Coding:
    system: str
    code: str
    display: str | None = None


@dataclass(frozen=True)
class Identifier:
    system: str
    value: str


class CourseOfTherapy(enum.StrEnum):
    """EPS: acute, repeat prescribing (continuous) or electronic repeat dispensing (eRD)."""

    ACUTE = "acute"
    CONTINUOUS = "continuous"
    CONTINUOUS_REPEAT_DISPENSING = "continuous-repeat-dispensing"

    @property
    def coding(self) -> Coding:
        return COURSES_OF_THERAPY[self]


COURSES_OF_THERAPY = {
    CourseOfTherapy.ACUTE: Coding(COURSE_OF_THERAPY_SYSTEM, "acute", "Short course (acute) therapy"),
    CourseOfTherapy.CONTINUOUS: Coding(
        COURSE_OF_THERAPY_SYSTEM, "continuous", "Continuous long term therapy"
    ),
    CourseOfTherapy.CONTINUOUS_REPEAT_DISPENSING: Coding(
        NHS_COURSE_OF_THERAPY_SYSTEM,
        "continuous-repeat-dispensing",
        "Continuous long term (repeat dispensing)",
    ),
}


class Intent(enum.StrEnum):
    """EPS: 'order' for an acute prescription; for repeats and eRD 'original-order' on the first
    issue and 'instance-order' on each later one (MedicationRequest.yaml, intent)."""

    ORDER = "order"
    ORIGINAL_ORDER = "original-order"
    INSTANCE_ORDER = "instance-order"


# MedicationRequest.yaml: "community" for primary care.
COMMUNITY = Coding(CATEGORY_SYSTEM, "community", "Community")


@dataclass(frozen=True)
class ContactPoint:
    """EPS accepts telephone numbers only (telecom.yaml): `system` is "phone" and `use` is
    required (bundle-validator.ts validateTelecoms); anything else becomes ``tel:<value>``."""

    value: str
    use: str
    system: str = "phone"


@dataclass(frozen=True)
class Address:
    lines: tuple[str, ...] = ()
    city: str | None = None
    district: str | None = None
    postal_code: str | None = None
    use: str | None = None
    type: str | None = None


@dataclass(frozen=True)
class HumanName:
    family: str
    given: tuple[str, ...] = ()
    prefix: tuple[str, ...] = ()
    use: str | None = None


@dataclass(frozen=True)
class OrganisationReference:
    """An organisation named by its ODS code (EPS: partOf, the message sender and receiver)."""

    ods_code: str
    display: str | None = None


@dataclass(frozen=True)
class Patient:
    nhs_number: str
    name: HumanName
    gender: str
    birth_date: date
    address: Address
    telecom: tuple[ContactPoint, ...] = ()
    general_practitioner_ods: str | None = None


@dataclass(frozen=True)
class Practitioner:
    """The prescriber: identifiers are the SDS user ID, one professional code and any DIN."""

    identifiers: tuple[Identifier, ...]
    name: HumanName
    telecom: tuple[ContactPoint, ...] = ()

    def identifier(self, system: str) -> str | None:
        return next((i.value for i in self.identifiers if i.system == system), None)

    @property
    def sds_user_id(self) -> str | None:
        return self.identifier(SDS_USER_ID_SYSTEM)

    @property
    def professional_codes(self) -> tuple[Identifier, ...]:
        systems = set(PROFESSIONAL_CODE_SYSTEMS.values())
        return tuple(i for i in self.identifiers if i.system in systems)


@dataclass(frozen=True)
class PractitionerRole:
    """The prescriber in their role: SDS role profile ID, SDS job role code and telecom."""

    identifiers: tuple[Identifier, ...]
    job_role: tuple[Coding, ...]
    telecom: tuple[ContactPoint, ...]

    @property
    def sds_role_profile_id(self) -> str | None:
        return next((i.value for i in self.identifiers if i.system == SDS_ROLE_PROFILE_ID_SYSTEM), None)


@dataclass(frozen=True)
class Organisation:
    """The prescribing organisation (EPS Organization.yaml: name, address, telecom, partOf)."""

    ods_code: str
    name: str
    telecom: tuple[ContactPoint, ...]
    address: Address
    part_of: OrganisationReference | None = None
    types: tuple[Coding, ...] = ()


@dataclass(frozen=True)
class Quantity:
    """A quantity coded in dm+d units of measure (SNOMED CT), e.g. 28 tablet 428673006."""

    value: Decimal
    unit: str
    code: str | None = None
    system: str | None = SNOMED


@dataclass(frozen=True)
class Timing:
    """Dosage.timing.repeat: `frequency` times per `period` `period_unit` (UCUM: h, d, wk)."""

    frequency: int
    period: Decimal
    period_unit: str


@dataclass(frozen=True)
class Dosage:
    """One dosage instruction. `text` is always sent; the structure only where the text says
    exactly that (see dosage.py), and `route` only when a sender gave one."""

    text: str
    sequence: int | None = None
    timing: Timing | None = None
    dose: Quantity | None = None
    route: Coding | None = None


@dataclass(frozen=True)
class ControlledDrug:
    """Extension-DM-ControlledDrug: the schedule (CD1 to CD5) and the quantity in words, which a
    UK pharmacy needs before supplying a Schedule 2 or 3 drug (Misuse of Drugs Regulations
    2001, reg. 15)."""

    schedule: Coding | None
    quantity_words: str | None


@dataclass(frozen=True)
class RepeatInformation:
    """Extension-UKCore-MedicationRepeatInformation: issues so far and the review date."""

    number_of_prescriptions_issued: int | None = None
    authorisation_expiry_date: date | None = None


@dataclass(frozen=True)
class BasedOn:
    """MedicationRequest.basedOn with Extension-EPS-RepeatInformation (a later repeat issue)."""

    item_number: str
    number_of_repeats_allowed: int | None = None
    number_of_repeats_issued: int | None = None


@dataclass(frozen=True)
class LineItem:
    """One MedicationRequest: a medicine on the prescription."""

    item_number: str
    medication: Coding
    quantity: Quantity
    dosage: tuple[Dosage, ...]
    expected_supply_days: int | None = None
    controlled_drug: ControlledDrug | None = None
    note: str | None = None
    based_on: BasedOn | None = None


@dataclass(frozen=True)
class PrescriptionOrder:
    """A whole prescription-order message."""

    message_id: str
    short_form_id: str
    long_form_id: str
    prescription_type: Coding
    course_of_therapy: CourseOfTherapy
    intent: Intent
    category: Coding
    dispensing_site_preference: Coding
    patient: Patient
    practitioner: Practitioner
    role: PractitionerRole
    organisation: Organisation
    items: tuple[LineItem, ...]
    nominated_pharmacy: OrganisationReference | None = None
    validity_start: date | None = None
    validity_end: datetime | None = None
    number_of_repeats_allowed: int | None = None
    repeat_information: RepeatInformation | None = None
    timestamp: datetime | None = None
    bundle_id: str | None = None
    sender: OrganisationReference | None = None
    source_endpoint: str | None = None
    destination_endpoint: str | None = None
