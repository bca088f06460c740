"""What the MCP tools return: pydantic models, so every tool publishes an output schema and
answers with structured content. Only what an agent needs to follow a prescription: no patient
identifiers (name, date of birth, address, NHS number) ever leave through these tools."""

from __future__ import annotations

from datetime import date, datetime

from pydantic import BaseModel, Field

from prescriptions.models import Status


class Medicine(BaseModel):
    """A formulary entry."""

    id: int
    system: str = Field(description="The code system, e.g. dm+d (SNOMED CT) or RxNorm.")
    code: str
    name: str
    strength: str
    form: str
    controlled: bool = Field(description="A controlled drug in some jurisdiction.")
    schedule_gb: str = Field(description="GB controlled-drug schedule, blank if none.")
    schedule_us: str = Field(description="US controlled-drug schedule, blank if none.")
    price_minor: int = Field(description="Price per unit, in minor units of the clinic's currency.")


class FormularyPage(BaseModel):
    medicines: list[Medicine]
    total: int = Field(description="How many medicines match the search.")
    page: int
    next_page: int | None = Field(description="The next page number, or null on the last page.")


class Item(BaseModel):
    """One medicine on a prescription."""

    medicine: str = Field(description="Name, strength and form.")
    code: str
    dose: str
    quantity: str
    unit: str
    days_supply: int


class Finding(BaseModel):
    """One result of the clinical safety checks, in plain words."""

    severity: str = Field(description="'block', 'needs_pharmacist' or 'info'.")
    meaning: str = Field(description="What the severity means for this prescription.")
    message: str
    medicine: str | None = Field(description="The item it concerns, if one.")
    source: str = Field(description="The rule or reference it comes from.")


class Tracking(BaseModel):
    carrier: str
    number: str
    url: str


class PrescriptionSummary(BaseModel):
    id: int
    status: Status
    status_text: str = Field(description="The status in plain words, with when it began.")
    patient_id: int
    issued_on: date
    medicines: list[str]
    created_at: datetime


class PrescriptionDetail(BaseModel):
    id: int
    status: Status
    status_text: str = Field(description="The status in plain words, with when it began.")
    status_reason: str = Field(description="Why it is rejected, held or cancelled; blank otherwise.")
    patient_id: int
    prescriber: str
    issued_on: date
    funding: str
    items: list[Item]
    findings: list[Finding] = Field(description="The safety checks' findings (empty: none, or not run yet).")
    tracking: Tracking | None = Field(description="The parcel, once shipped.")
    created_at: datetime
    updated_at: datetime


class PrescriptionPage(BaseModel):
    prescriptions: list[PrescriptionSummary]
    total: int = Field(description="How many prescriptions match the filters.")
    page: int
    next_page: int | None = Field(description="The next page number, or null on the last page.")


class TimelineEntry(BaseModel):
    """One thing that happened to one of the patient's prescriptions."""

    at: datetime
    prescription_id: int
    event: str = Field(description="The event type, e.g. prescription.shipped.")
    text: str = Field(description="What happened, in plain words.")


class PatientTimeline(BaseModel):
    patient_id: int
    prescriptions: list[PrescriptionSummary] = Field(description="Newest first.")
    entries: list[TimelineEntry] = Field(description="Oldest first.")
    truncated: bool = Field(description="True when only the newest prescriptions are shown.")
