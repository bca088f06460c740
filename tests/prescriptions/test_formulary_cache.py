"""Checks read the formulary once per process and again as soon as any of its tables changes."""

from __future__ import annotations

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from prescriptions import checks
from prescriptions.models import InteractionRule, Medication
from tests.prescriptions.factories import InteractionRuleFactory, MedicationFactory

pytestmark = pytest.mark.django_db


def test_an_unchanged_formulary_is_read_once_and_then_costs_one_query():
    MedicationFactory(code="111")
    first = checks._formulary()

    with CaptureQueriesContext(connection) as captured:
        again = checks._formulary()

    assert again is first
    assert len(captured) == 1


def test_a_rule_added_changed_or_removed_is_seen_by_the_next_check():
    checks._formulary()
    rule = InteractionRuleFactory(left="clarithromycin", right="simvastatin")

    added = checks._formulary()
    assert [(r.left, r.right) for r in added.interactions] == [("clarithromycin", "simvastatin")]

    InteractionRule.objects.filter(pk=rule.pk).update(message="Stop the statin during the course.")
    changed = checks._formulary()
    assert changed.interactions[0].message == "Stop the statin during the course."

    InteractionRule.objects.filter(pk=rule.pk).delete()
    assert checks._formulary().interactions == []


def test_a_medication_edited_in_place_is_seen_by_the_next_check():
    medication = MedicationFactory(code="222", price_minor=100)
    assert checks._formulary().medications_by_code["222"].price_minor == 100

    Medication.objects.filter(pk=medication.pk).update(price_minor=250)

    assert checks._formulary().medications_by_code["222"].price_minor == 250
