"""Every model of the project's apps has a factory-boy factory, and that factory builds a valid
row: tests make their data with factories, not with hand-built rows."""

from __future__ import annotations

import importlib

import factory
import pytest
from django.apps import apps
from django.db.models import Model

from tests.packages import PRODUCT_PACKAGES, ROOT

PROJECT_APPS = (*PRODUCT_PACKAGES, "sandbox")


def project_models() -> list[type[Model]]:
    """The project's own tables; a proxy (PharmacistQueue) is its concrete model's rows."""
    return sorted(
        (
            model
            for model in apps.get_models()
            if model._meta.app_label in PROJECT_APPS and not model._meta.proxy
        ),
        key=lambda model: model._meta.label,
    )


def _subclasses(cls: type) -> list[type]:
    found = []
    for subclass in cls.__subclasses__():
        found += [subclass, *_subclasses(subclass)]
    return found


def factories_by_model() -> dict[type[Model], type[factory.django.DjangoModelFactory]]:
    for path in sorted(ROOT.glob("tests/*/factories.py")):
        importlib.import_module(f"tests.{path.parent.name}.factories")
    found: dict[type[Model], type[factory.django.DjangoModelFactory]] = {}
    for candidate in _subclasses(factory.django.DjangoModelFactory):
        model = candidate._meta.get_model_class()
        if model is not None:
            found.setdefault(model, candidate)
    return found


def test_every_project_model_has_a_factory() -> None:
    covered = factories_by_model()

    missing = [model._meta.label for model in project_models() if model not in covered]

    assert len(project_models()) > 40
    assert missing == []


@pytest.mark.django_db
@pytest.mark.parametrize("label", [model._meta.label for model in project_models()])
def test_the_factory_builds_a_valid_saved_row(label: str) -> None:
    model = apps.get_model(label)
    model_factory = factories_by_model()[model]

    built = model_factory()

    stored = model._default_manager.get(pk=built.pk)
    # Every value the factory chose validates; a field left at its own default is what the
    # product writes too when it has nothing to say (a blank last_error, an empty payload).
    left_at_default = [
        field.name
        for field in model._meta.concrete_fields
        if getattr(stored, field.attname) == field.get_default()
    ]
    stored.full_clean(exclude=left_at_default)
