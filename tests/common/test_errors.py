"""The one rule for a refused request's side effects, outside the API's request transaction:
a DomainError with keeps_changes=True commits what was written before it; anything else rolls
back."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import Group

from common.errors import Conflict, DomainError, atomic_keeping_refusals

pytestmark = pytest.mark.django_db


def write_then_fail(error: Exception) -> None:
    with atomic_keeping_refusals():
        Group.objects.create(name="written before the refusal")
        raise error


@pytest.mark.parametrize(("keeps_changes", "kept"), [(False, 0), (True, 1)])
def test_a_refusal_keeps_what_was_written_before_it_only_when_it_says_so(keeps_changes, kept):
    refusal = Conflict("Too late.", code="not-cancellable", keeps_changes=keeps_changes)

    with pytest.raises(Conflict) as raised:
        write_then_fail(refusal)

    assert raised.value is refusal
    assert Group.objects.filter(name="written before the refusal").count() == kept


def test_any_other_error_rolls_back_what_was_written():
    with pytest.raises(ZeroDivisionError):
        write_then_fail(ZeroDivisionError())

    assert not Group.objects.filter(name="written before the refusal").exists()


def test_a_block_that_ends_normally_commits():
    with atomic_keeping_refusals():
        Group.objects.create(name="written")

    assert Group.objects.filter(name="written").count() == 1


def test_a_domain_error_carries_its_code_detail_and_fields():
    error = DomainError("Decide approved or rejected.", code="bad-decision", fields=["decision"])

    assert (error.code, error.detail, error.fields, error.keeps_changes) == (
        "bad-decision",
        "Decide approved or rejected.",
        ("decision",),
        False,
    )
    assert str(error) == "Decide approved or rejected."
