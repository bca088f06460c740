"""FHIR R4 prescription-order messages for the pharmacy gateway, one profile per jurisdiction.

* GB prescriptions, NHS and private: the NHS England EPS prescription-order profile
  (pharmacy/fhir/eps), so that what we send is what NHS dispensing systems accept.
* US prescriptions: our own Scriptline profile (pharmacy/fhir/scriptline.py). The US network
  format is NCPDP SCRIPT; reaching it is a later partner adapter.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

from pharmacy.fhir import scriptline
from pharmacy.fhir.common import FhirEncodingError
from pharmacy.fhir.eps.encode import order_to_bundle
from pharmacy.fhir.eps.mapping import RepeatContext, entry_urls, order_from_prescription
from pharmacy.fhir.scriptline import validate_bundle

if TYPE_CHECKING:
    from prescriptions.models import Prescription, PrescriptionItem

__all__ = ["FhirEncodingError", "RepeatContext", "encode_prescription", "validate_bundle"]


def encode_prescription(
    prescription: Prescription,
    *,
    message_id: str,
    pharmacy_ods_code: str,
    timestamp: datetime,
    items: Sequence[PrescriptionItem] | None = None,
    repeat: RepeatContext | None = None,
) -> dict[str, Any]:
    """`prescription` as a prescription-order message Bundle (a JSON-ready dict).

    `items` replaces `prescription.items.all()` when given; `repeat` places a GB prescription
    in its repeat course. Raises FhirEncodingError (terminal).
    """
    items = list(prescription.items.all()) if items is None else list(items)
    if prescription.clinic.jurisdiction == "GB":
        order = order_from_prescription(
            prescription,
            items=items,
            message_id=message_id,
            pharmacy_ods_code=pharmacy_ods_code,
            timestamp=timestamp,
            repeat=repeat,
        )
        return order_to_bundle(order, urls=entry_urls(message_id))
    return scriptline.encode_prescription(
        prescription,
        message_id=message_id,
        pharmacy_ods_code=pharmacy_ods_code,
        timestamp=timestamp,
        items=items,
    )
