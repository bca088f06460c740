"""A journey through the API with marker values leaves none of them in any plaintext column.

Every text, varchar, json and jsonb column of every table is searched (information_schema),
so a new table or column that copies an identifier or a note in clear fails here.
"""

from __future__ import annotations

import pytest
from django.db import connection

from tests.conftest import prescription_body

pytestmark = pytest.mark.django_db

MARKERS = {
    "given_name": "Zqgivenmarker",
    "family_name": "Zqfamilymarker",
    "birth_date": "1957-03-14",
    "nhs_number": "7316240954",
    "address_line": "12 Zqaddressmarker Street",
    "city": "Zqcitymarker",
    "region": "Zqregionmarker",
    "postal_code": "ZQ9 9MK",
    "email": "zq.emailmarker@example.invalid",
    "phone": "+44 7700 900457",
}
NOTE = "Zqnotemarker: lives alone, carer visits Tuesdays"
JUSTIFICATION = "Zqjustificationmarker after Zqfamilymarker's review"
REACTION = "Zqreactionmarker swelling"
SEARCHED = [
    *MARKERS.values(),
    "7700900457",
    NOTE.split(":")[0],
    JUSTIFICATION.split(" ")[0],
    REACTION.split(" ")[0],
]


def _columns() -> list[tuple[str, str]]:
    with connection.cursor() as cursor:
        cursor.execute(
            """
            SELECT c.table_name, c.column_name
            FROM information_schema.columns c
            JOIN information_schema.tables t USING (table_schema, table_name)
            WHERE c.table_schema = current_schema() AND t.table_type = 'BASE TABLE'
              AND c.data_type IN ('text', 'character varying', 'json', 'jsonb', 'character')
            ORDER BY 1, 2
            """
        )
        return cursor.fetchall()


def _plaintext_hits() -> list[tuple[str, str, str]]:
    hits = []
    with connection.cursor() as cursor:
        for table, column in _columns():
            for marker in SEARCHED:
                cursor.execute(
                    f'SELECT 1 FROM "{table}" WHERE "{column}"::text ILIKE %s LIMIT 1',  # noqa: S608
                    [f"%{marker}%"],
                )
                if cursor.fetchone():
                    hits.append((table, column, marker))
    return hits


def test_a_journey_with_markers_leaves_no_identifier_or_note_in_any_plaintext_column(clinic_a, paracetamol):
    patient_body = {
        **MARKERS,
        "sex": "female",
        "allergies": [{"substance": "penicillin", "reaction": REACTION}],
        "current_medications": [{"name": "Sertraline 50mg tablets", "code": "321949006"}],
    }
    created = clinic_a.api.post("/api/v1/patients/", patient_body, format="json", HTTP_IDEMPOTENCY_KEY="zq-p")
    replayed = clinic_a.api.post(
        "/api/v1/patients/", patient_body, format="json", HTTP_IDEMPOTENCY_KEY="zq-p"
    )
    body = prescription_body(
        created.json()["id"],
        clinic_a.prescriber.pk,
        paracetamol,
        note=NOTE,
        clinical_justification=JUSTIFICATION,
    )
    prescribed = clinic_a.api.post(
        "/api/v1/prescriptions/", body, format="json", HTTP_IDEMPOTENCY_KEY="zq-rx"
    )
    prescribed_again = clinic_a.api.post(
        "/api/v1/prescriptions/", body, format="json", HTTP_IDEMPOTENCY_KEY="zq-rx"
    )
    read_back = clinic_a.api.get(f"/api/v1/prescriptions/{prescribed.json()['id']}/")

    assert (created.status_code, replayed.status_code) == (201, 201)
    assert replayed["Idempotent-Replayed"] == "true"
    assert replayed.json() == created.json()
    assert created.json()["family_name"] == MARKERS["family_name"]
    assert created.json()["allergies"][0]["reaction"] == REACTION
    assert (prescribed.status_code, prescribed_again.status_code) == (201, 201)
    assert prescribed_again.json() == prescribed.json()
    assert (read_back.json()["note"], read_back.json()["clinical_justification"]) == (NOTE, JUSTIFICATION)
    assert len(_columns()) > 100
    assert _plaintext_hits() == []


def test_the_search_finds_a_marker_written_in_clear(clinic_a):
    """The search itself works: a plaintext copy would be found."""
    with connection.cursor() as cursor:
        cursor.execute(
            "UPDATE patients_clinic SET name = %s WHERE id = %s", [MARKERS["city"], clinic_a.clinic.pk]
        )

    assert ("patients_clinic", "name", MARKERS["city"]) in _plaintext_hits()
