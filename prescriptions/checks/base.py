"""What every check shares: the result type, severities, the registry and the context.

A check is a small function `(context) -> Iterable[CheckResult]` registered with `@check`,
naming the rule family's code prefix, the jurisdictions it applies to and its source. The
context is built once per run (a fixed number of queries), so checks never query themselves.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from datetime import date
from decimal import Decimal
from typing import Any

from patients.models import Allergy, CurrentMedication, Diagnosis, Observation, Patient
from prescriptions.models import (
    AllergyClass,
    InteractionRule,
    Medication,
    OffFormularyItem,
    PaediatricDoseRule,
    Prescriber,
    Prescription,
    PrescriptionItem,
    StateValidityLimit,
)


class Severity:
    BLOCK = "block"
    NEEDS_PHARMACIST = "needs_pharmacist"
    INFO = "info"


@dataclass(frozen=True)
class CheckResult:
    code: str
    severity: str
    message: str
    source: str
    item: int | None = None
    # What the finding was computed from (age, weight, mg/kg ...), shown on the review screen.
    facts: dict[str, object] = field(default_factory=dict)

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


ALL = frozenset({"GB", "US"})
GB = frozenset({"GB"})
US = frozenset({"US"})
SCRIPTLINE_POLICY = "Scriptline dispensing policy"


@dataclass(frozen=True)
class Check:
    code: str
    function: Callable[[Context], Iterable[CheckResult]]
    jurisdictions: frozenset[str]
    source: str


REGISTRY: list[Check] = []


def check(code: str, *, source: str, jurisdictions: frozenset[str] = ALL) -> Callable:
    """Register a check; the code is its family prefix, used when it cannot run."""

    def register(function: Callable[[Context], Iterable[CheckResult]]) -> Callable:
        REGISTRY.append(Check(code=code, function=function, jurisdictions=jurisdictions, source=source))
        return function

    return register


def concepts_of(medication: Medication) -> frozenset[str]:
    """Ingredients and the class ("class:ssri"): what interaction and allergy rules name."""
    names = set(medication.ingredients)
    if medication.therapeutic_class:
        names.add(f"class:{medication.therapeutic_class}")
    return frozenset(names)


@dataclass(frozen=True)
class ResolvedMedicine:
    """A medicine the patient takes or was supplied, mapped onto formulary ingredients."""

    label: str
    concepts: frozenset[str]
    ingredients: frozenset[str]
    therapeutic_class: str
    # For a medicine the patient reports: when it stopped (None: still taken) and its daily dose.
    stopped_on: date | None = None
    daily_dose: Decimal | None = None
    daily_dose_unit: str = ""


@dataclass
class Formulary:
    loaded: bool
    interactions: list[InteractionRule]
    allergy_classes: list[AllergyClass]
    # ingredient -> therapeutic class, and code -> medication, for resolving free-text medicines
    class_of_ingredient: dict[str, str]
    medications_by_code: dict[str, Medication]
    paediatric_rules: list[PaediatricDoseRule] = field(default_factory=list)
    # (state, schedule or "rx") -> the state's limit on filling after issue
    state_limits: dict[tuple[str, str], StateValidityLimit] = field(default_factory=dict)
    # id -> medication: the items' medications, read with the formulary
    medications_by_id: dict[int, Medication] = field(default_factory=dict)

    def resolve(self, current: CurrentMedication) -> ResolvedMedicine | None:
        reported: dict[str, Any] = {
            "stopped_on": current.stopped_on,
            "daily_dose": current.daily_dose,
            "daily_dose_unit": current.daily_dose_unit,
        }
        medication = self.medications_by_code.get(current.code.strip()) if current.code else None
        if medication is not None:
            return ResolvedMedicine(
                current.name or str(medication),
                concepts_of(medication),
                frozenset(medication.ingredients),
                medication.therapeutic_class,
                **reported,
            )
        words = set(current.name.lower().replace("-", " ").replace("/", " ").split())
        found = {ingredient for ingredient in self.class_of_ingredient if ingredient in words}
        if not found:
            return None
        classes = {self.class_of_ingredient[ingredient] for ingredient in found} - {""}
        concepts = frozenset(found | {f"class:{name}" for name in classes})
        return ResolvedMedicine(current.name, concepts, frozenset(found), next(iter(classes), ""), **reported)


@dataclass
class Context:
    prescription: Prescription
    jurisdiction: str
    today: date
    items: list[PrescriptionItem]
    patient: Patient
    prescriber: Prescriber
    allergies: list[str]
    current_medications: list[CurrentMedication]
    diagnoses: list[Diagnosis]
    observations: list[Observation]
    # The patient's other prescriptions that were not rejected or cancelled, newest first.
    history: list[Prescription]
    formulary: Formulary
    extra: dict[str, object] = field(default_factory=dict)
    # Products the clinic sent that are not on the formulary (FHIR intake holds them).
    off_formulary_items: list[OffFormularyItem] = field(default_factory=list)
    # The patient's allergy records (coded substance, category, criticality, reactions).
    allergy_records: list[Allergy] = field(default_factory=list)

    def schedule(self, medication: Medication) -> str:
        return medication.schedule_in(self.jurisdiction)


def start_of_supply(prescription: Prescription) -> date:
    """The first day it may be supplied: the later of signing, start and earliest fill dates."""
    days = [prescription.issued_on, prescription.start_date, prescription.earliest_fill_date]
    return max(day for day in days if day is not None)


def daily_units(item: PrescriptionItem) -> Decimal:
    """Units a day: the stated dose if given, else what the quantity and days' supply imply."""
    if item.units_per_day:
        return Decimal(item.units_per_day)
    return Decimal(item.quantity) / Decimal(item.days_supply)


def daily_amount(item: PrescriptionItem) -> Decimal | None:
    """The daily dose in the medication's strength unit (e.g. mg), or None if it has no strength."""
    if item.medication.strength_value is None:
        return None
    return daily_units(item) * item.medication.strength_value


def describe_amount(amount: Decimal, unit: str) -> str:
    text = f"{amount.quantize(Decimal('0.01')).normalize():f}"
    return f"{text} {unit}"
