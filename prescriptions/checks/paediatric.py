"""Children's doses: limits by age band, by body weight (mg/kg) and an absolute cap, per
ingredient and product form (BNF for Children style), held as data in the formulary file.

The patient's age is taken on the date of issue; the weight is the most recent weight
observation. A medicine dosed by weight for a child with no recent weight goes to a
pharmacist, saying so. A dose over a limit says by how much; these limits are guidance (BNFc,
the product's label), not law, and each finding says so and cites its source.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, timedelta
from decimal import Decimal

from patients.models import Observation
from prescriptions.checks.base import CheckResult, Context, Severity, check, daily_amount
from prescriptions.models import PaediatricDoseRule, PrescriptionItem

SOURCE = "BNF for Children (BNFc) and product labels: children's doses in the formulary (guidance, not law)"
WEIGHT_POLICY = (
    "Scriptline dispensing policy: a child's weight for a weight-banded medicine is at most "
    "3 months old (BNFc: doses by body weight)"
)
ADULT_AGE_MONTHS = 216
WEIGHT_MAX_AGE = timedelta(days=90)
# Beyond twice a limit is treated as an error in the prescription (a decimal slip), not a choice.
BLOCK_FACTOR = Decimal(2)
IN_MILLIGRAMS = {"mg": Decimal(1), "microgram": Decimal("0.001"), "g": Decimal(1000)}
DOSE_WORDS = {
    "half": Decimal("0.5"),
    "one": Decimal(1),
    "two": Decimal(2),
    "three": Decimal(3),
    "four": Decimal(4),
    "five": Decimal(5),
    "six": Decimal(6),
    "ten": Decimal(10),
}
LEADING_DOSE = re.compile(
    r"^\s*(?:take\s+|give\s+)?(\d+(?:\.\d+)?|half|one|two|three|four|five|six|ten)\b", re.I
)


def age_in_months(birth_date: date, on: date) -> int:
    """Whole months of age on a date: a month is complete on the same day of a later month, or
    the day after its end when it has no such day (born 31 January: one month old on 1 March)."""
    months = (on.year - birth_date.year) * 12 + on.month - birth_date.month
    return months - 1 if on.day < birth_date.day else months


def describe_age(months: int) -> str:
    years, rest = divmod(months, 12)
    if years == 0:
        return f"{rest} month{'s' if rest != 1 else ''}"
    text = f"{years} year{'s' if years != 1 else ''}"
    return text + (f" {rest} month{'s' if rest != 1 else ''}" if rest else "")


def number(value: Decimal) -> str:
    """A dose for people to read: at most two decimals, no trailing zeros."""
    text = f"{value.quantize(Decimal('0.01')):f}"
    return text.rstrip("0").rstrip(".") if "." in text else text


def units_per_dose(item: PrescriptionItem) -> Decimal | None:
    """Dose units taken each time: as stated, else the leading number of the dose text."""
    if item.units_per_dose:
        return Decimal(item.units_per_dose)
    found = LEADING_DOSE.match(item.dose_text or "")
    if found is None:
        return None
    word = found.group(1).lower()
    return DOSE_WORDS.get(word) or Decimal(word)


@dataclass(frozen=True)
class Weight:
    kilograms: Decimal
    measured_on: date


def recent_weight(context: Context) -> tuple[Weight | None, date | None]:
    """The most recent weight if measured within WEIGHT_MAX_AGE, and the latest date of any."""
    latest = next((o for o in context.observations if o.kind == Observation.Kind.WEIGHT), None)
    if latest is None:
        return None, None
    if context.today - latest.observed_on > WEIGHT_MAX_AGE:
        return None, latest.observed_on
    return Weight(Decimal(latest.value), latest.observed_on), latest.observed_on


def _diagnosis_codes(context: Context) -> set[str]:
    return {diagnosis.code.strip().upper() for diagnosis in context.diagnoses}


def rules_for_product(context: Context, item: PrescriptionItem) -> list[PaediatricDoseRule]:
    medication = item.medication
    return [
        rule
        for rule in context.formulary.paediatric_rules
        if rule.ingredient in medication.ingredients
        and context.jurisdiction in rule.jurisdictions
        and (not rule.forms or medication.form in rule.forms)
    ]


def rules_for_age(rules: list[PaediatricDoseRule], months: int, codes: set[str]) -> list[PaediatricDoseRule]:
    """The rules for the age band; an indication's own rules replace the general ones when the
    patient has that diagnosis."""
    in_band = [rule for rule in rules if rule.min_age_months <= months < rule.max_age_months]
    specific = [
        rule
        for rule in in_band
        if rule.indication_codes
        and any(code.startswith(prefix) for code in codes for prefix in rule.indication_codes)
    ]
    return specific or [rule for rule in in_band if not rule.indication_codes]


def fits_weight(rule: PaediatricDoseRule, weight: Weight | None) -> bool:
    if rule.min_weight_kg is None and rule.max_weight_kg is None:
        return True
    if weight is None:
        return False
    low_ok = rule.min_weight_kg is None or weight.kilograms >= rule.min_weight_kg
    return low_ok and (rule.max_weight_kg is None or weight.kilograms < rule.max_weight_kg)


@dataclass(frozen=True)
class Excess:
    code: str
    what: str  # "a day", "mg/kg/day" ...
    actual: Decimal
    maximum: Decimal
    unit: str

    @property
    def severity(self) -> str:
        return Severity.BLOCK if self.actual > self.maximum * BLOCK_FACTOR else Severity.NEEDS_PHARMACIST


def excesses(
    rule: PaediatricDoseRule, daily: Decimal, per_dose: Decimal | None, weight: Weight | None
) -> list[Excess]:
    """Every limit of the rule the dose exceeds (amounts in the rule's unit)."""
    unit = rule.dose_unit
    pairs: list[tuple[str, str, Decimal | None, Decimal | None, str]] = [
        ("paediatric.daily_above_maximum", "a day", daily, rule.max_daily, unit),
        ("paediatric.dose_above_maximum", "a dose", per_dose, rule.max_dose, unit),
    ]
    if weight is not None:
        kilograms = weight.kilograms
        pairs += [
            (
                "paediatric.daily_per_kg_above_maximum",
                "",
                daily / kilograms,
                rule.max_daily_per_kg,
                f"{unit}/kg/day",
            ),
            (
                "paediatric.dose_per_kg_above_maximum",
                "",
                per_dose / kilograms if per_dose is not None else None,
                rule.max_dose_per_kg,
                f"{unit}/kg a dose",
            ),
        ]
    found = []
    for code, what, actual, maximum, label in pairs:
        # Compared as shown, so "1.8, maximum 1.8" is never a finding.
        if actual is not None and maximum is not None and Decimal(number(actual)) > maximum:
            found.append(Excess(code, what, Decimal(number(actual)), maximum, label))
    return found


def _facts(
    context: Context, months: int, weight: Weight | None, last_weighed: date | None
) -> dict[str, object]:
    facts: dict[str, object] = {
        "age": describe_age(months),
        "age on": f"{context.prescription.issued_on:%Y-%m-%d} (date of issue)",
    }
    if weight is not None:
        facts["weight"] = f"{number(weight.kilograms)} kg, measured {weight.measured_on:%Y-%m-%d}"
    else:
        facts["weight"] = f"none recent (last {last_weighed:%Y-%m-%d})" if last_weighed else "never recorded"
    return facts


def _amount_in(rule: PaediatricDoseRule, amount: Decimal | None, strength_unit: str) -> Decimal | None:
    if amount is None:
        return None
    return amount * IN_MILLIGRAMS[strength_unit] / IN_MILLIGRAMS[rule.dose_unit]


@check("paediatric", source=SOURCE)
def check_childrens_doses(context: Context) -> Iterable[CheckResult]:
    months = age_in_months(context.patient.birth_date, context.prescription.issued_on)
    if months >= ADULT_AGE_MONTHS:
        return
    weight, last_weighed = recent_weight(context)
    codes = _diagnosis_codes(context)
    for item in context.items:
        yield from _item(context, item, months, weight, last_weighed, codes)


def _item(  # noqa: PLR0913 - the context of one child's item
    context: Context,
    item: PrescriptionItem,
    months: int,
    weight: Weight | None,
    last_weighed: date | None,
    codes: set[str],
) -> Iterable[CheckResult]:
    medication = item.medication
    facts = _facts(context, months, weight, last_weighed)
    child = f"The patient is {describe_age(months)} old on the date of issue"
    product = rules_for_product(context, item)
    if not product:
        yield CheckResult(
            "paediatric.no_childrens_dose",
            Severity.NEEDS_PHARMACIST,
            f"{child}, and the formulary has no children's dose for {medication}. Check that it is "
            "suitable for a child and that the dose is right (BNFc or the product's label).",
            SOURCE,
            item.pk,
            facts,
        )
        return
    in_band = rules_for_age(product, months, codes)
    for rule in in_band:
        if rule.contraindicated:
            yield CheckResult(
                "paediatric.contraindicated_for_age",
                Severity.BLOCK,
                f"{child}: {medication.name} must not be given at this age. {rule.note}",
                rule.source,
                item.pk,
                {**facts, "rule": rule.name},
            )
            return
    if any(rule.weight_required for rule in in_band) and weight is None:
        when = f"the last was measured on {last_weighed:%Y-%m-%d}" if last_weighed else "none is recorded"
        yield CheckResult(
            "paediatric.weight_needed",
            Severity.NEEDS_PHARMACIST,
            f"{child}, and {medication.name} is dosed by body weight, but there is no weight from the "
            f"last {WEIGHT_MAX_AGE.days} days ({when}). Obtain the child's current weight and check "
            "the dose against it.",
            f"{WEIGHT_POLICY}; {in_band[0].source}",
            item.pk,
            facts,
        )
        return
    applicable = [rule for rule in in_band if fits_weight(rule, weight)]
    if not applicable:
        weighing = f" weighing {number(weight.kilograms)} kg" if weight else ""
        yield CheckResult(
            "paediatric.no_dose_for_age",
            Severity.NEEDS_PHARMACIST,
            f"{child}{weighing}: the formulary gives no dose of {medication.name} for this age"
            f"{' and weight' if weight else ''} (it may be unlicensed or specialist use). Check the "
            "indication and the dose with the prescriber.",
            product[0].source,
            item.pk,
            facts,
        )
        return
    yield from _limits(context, item, applicable, weight, facts, child)


def _limits(  # noqa: PLR0913
    context: Context,
    item: PrescriptionItem,
    rules: list[PaediatricDoseRule],
    weight: Weight | None,
    facts: dict[str, object],
    child: str,
) -> Iterable[CheckResult]:
    medication = item.medication
    if medication.strength_unit not in IN_MILLIGRAMS:
        return  # the adult dose check already sends an unmeasurable strength to a pharmacist
    daily_strength = daily_amount(item)
    units = units_per_dose(item)
    per_dose_strength = (
        units * medication.strength_value if units is not None and medication.strength_value else None
    )
    for rule in rules:
        if rule.dose_unit not in IN_MILLIGRAMS or daily_strength is None:
            continue
        daily = _amount_in(rule, daily_strength, medication.strength_unit)
        per_dose = _amount_in(rule, per_dose_strength, medication.strength_unit)
        assert daily is not None
        found = excesses(rule, daily, per_dose, weight)
        rule_facts: dict[str, object] = {
            **facts,
            "daily dose": f"{number(daily)} {rule.dose_unit}",
            **({"dose each time": f"{number(per_dose)} {rule.dose_unit}"} if per_dose is not None else {}),
            **({"per kg": f"{number(daily / weight.kilograms)} {rule.dose_unit}/kg/day"} if weight else {}),
            "limits": _describe_limits(rule),
            "rule": rule.name,
        }
        for excess in found:
            yield CheckResult(
                excess.code,
                excess.severity,
                _excess_message(medication.name, excess, child, weight, rule),
                rule.source,
                item.pk,
                rule_facts,
            )


def _describe_limits(rule: PaediatricDoseRule) -> str:
    parts = []
    for value, label in (
        (rule.max_dose, f"{rule.dose_unit} a dose"),
        (rule.max_daily, f"{rule.dose_unit} a day"),
        (rule.max_dose_per_kg, f"{rule.dose_unit}/kg a dose"),
        (rule.max_daily_per_kg, f"{rule.dose_unit}/kg/day"),
    ):
        if value is not None:
            parts.append(f"at most {number(value)} {label}")
    return ", ".join(parts)


def _excess_message(
    name: str, excess: Excess, child: str, weight: Weight | None, rule: PaediatricDoseRule
) -> str:
    shown = f"{number(excess.actual)} {excess.unit}" + (f" {excess.what}" if excess.what else "")
    maximum = f"{number(excess.maximum)}" + (f" {excess.unit} {excess.what}" if excess.what else "")
    over = excess.actual - excess.maximum
    weighing = f" and weighs {number(weight.kilograms)} kg" if weight else ""
    factor = (
        " (more than twice the maximum: check for a decimal or unit error)"
        if excess.severity == Severity.BLOCK
        else ""
    )
    note = f" {rule.note}" if rule.note else ""
    return (
        f"{name}: {shown}, maximum {maximum} for this child; {number(over)} {excess.unit} over{factor}. "
        f"{child}{weighing}.{note} This is guidance (BNFc or the product's label), not law: check the "
        "dose with the prescriber."
    )
