"""What both FHIR profiles share: the terminal encoding error and structural validation.

fhir.resources has no R4 package; its R4B models have the same elements for every resource
these messages use, so they check the structure (see tests/fixtures/fhir/README.md). They do
not check terminology bindings or profiles; each profile checks those itself.

Error messages never carry patient data: problems are reported as element paths and error
types only, because they end up in logs and dead-letter records.
"""

from __future__ import annotations

from typing import Any, TypeVar

from fhir.resources.R4B.resource import Resource
from pydantic import ValidationError


class FhirEncodingError(ValueError):
    """Terminal: the prescription cannot be encoded (retrying will not help)."""


_Model = TypeVar("_Model", bound=Resource)


def build(model: type[_Model], data: dict[str, Any]) -> _Model:
    """Validate `data` as `model`, turning library errors into a data-free FhirEncodingError."""
    resource_type = model.get_resource_type()
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(
            f"{path(resource_type, error['loc'])}: {error['type']}" for error in exc.errors()
        )
        # `from None`: the original error's text quotes the input values, i.e. patient data.
        raise FhirEncodingError(problems) from None
    except (KeyError, TypeError, ValueError) as exc:
        # fhir.resources raises KeyError for an unknown resourceType, outside pydantic.
        raise FhirEncodingError(f"{resource_type}: cannot be parsed ({type(exc).__name__})") from None


def path(resource_type: str, loc: tuple[int | str, ...]) -> str:
    text = resource_type
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else f".{part}"
    return text


def present(value: object) -> bool:
    if isinstance(value, str):
        return bool(value.strip())
    return value is not None


def require(value: Any, element: str) -> Any:
    if not present(value):
        raise FhirEncodingError(f"{element}: missing")
    return value
