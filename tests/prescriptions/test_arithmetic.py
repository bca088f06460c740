"""Property tests for the dose, quantity, days' supply and quantity-in-words arithmetic."""

from __future__ import annotations

from decimal import Decimal
from types import SimpleNamespace

from hypothesis import given
from hypothesis import strategies as st

from prescriptions.checks.base import Severity, daily_amount, daily_units
from prescriptions.checks.cd_law_gb import quantity_words_match
from prescriptions.checks.cd_law_us import dea_number_is_valid, series_total_days
from prescriptions.checks.dose import dose_verdict
from prescriptions.checks.history import days_before_resupply
from prescriptions.checks.words import number_to_words, words_to_number

quantities = st.decimals(min_value=Decimal("0.01"), max_value=Decimal(100000), places=2)
days = st.integers(min_value=1, max_value=365)
strengths = st.decimals(min_value=Decimal("0.001"), max_value=Decimal(5000), places=3)


def item(quantity, days_supply, strength=Decimal(10), units_per_day=None):  # type: ignore[no-untyped-def]
    medication = SimpleNamespace(strength_value=strength)
    return SimpleNamespace(
        quantity=quantity, days_supply=days_supply, units_per_day=units_per_day, medication=medication
    )


@given(st.integers(min_value=0, max_value=999_999))
def test_every_number_written_in_words_reads_back_as_itself(number):
    assert words_to_number(number_to_words(number)) == number


@given(st.integers(min_value=1, max_value=99_999), st.integers(min_value=1, max_value=99_999))
def test_words_match_the_figures_only_when_they_are_the_same_number(words_number, figures):
    assert quantity_words_match(number_to_words(words_number), Decimal(figures)) is (words_number == figures)


@given(st.text(max_size=40))
def test_reading_any_text_as_words_never_raises(text):
    result = words_to_number(text)
    assert result is None or result >= 0


@given(quantities, days)
def test_daily_units_times_days_gives_back_the_quantity(quantity, days_supply):
    assert abs(daily_units(item(quantity, days_supply)) * days_supply - quantity) < Decimal("1e-20")


@given(quantities, days, st.decimals(min_value=Decimal("0.01"), max_value=Decimal(1000), places=2))
def test_a_stated_dose_wins_over_what_the_quantity_implies(quantity, days_supply, units_per_day):
    assert daily_units(item(quantity, days_supply, units_per_day=units_per_day)) == units_per_day


@given(quantities, days, strengths)
def test_the_daily_amount_is_units_a_day_times_strength(quantity, days_supply, strength):
    line = item(quantity, days_supply, strength)
    assert daily_amount(line) == daily_units(line) * strength


@given(strengths, strengths)
def test_the_dose_verdict_is_monotonic_in_the_daily_dose(daily, maximum):
    verdict = dose_verdict(daily, maximum)
    if daily <= maximum:
        assert verdict is None
    elif daily <= maximum * 2:
        assert verdict == Severity.NEEDS_PHARMACIST
    else:
        assert verdict == Severity.BLOCK


@given(days)
def test_a_resupply_is_early_before_three_quarters_of_the_days(days_supply):
    threshold = days_before_resupply(days_supply)
    assert threshold == Decimal("0.75") * days_supply
    assert 0 < threshold < days_supply


@given(st.lists(st.integers(min_value=1, max_value=90), min_size=1, max_size=4))
def test_a_schedule_ii_series_adds_up_its_days(supplies):
    assert series_total_days(supplies) == sum(supplies)


@given(st.from_regex(r"[A-Z][A-Z9][0-9]{6}", fullmatch=True))
def test_exactly_one_check_digit_makes_a_dea_number_valid(prefix):
    valid = [digit for digit in "0123456789" if dea_number_is_valid(prefix + digit)]
    assert len(valid) == 1
