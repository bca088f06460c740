"""Synthetic volume for measuring Scriptline at scale: `manage.py bench_seed --prescriptions 1000000`.

Every name and number is invented (NHS numbers from the 999 range reserved for testing). Patients
are built in Python, so each has its own identifiers, encrypted with the patient-data keys and
blind-indexed exactly as patients.services would store them, and are loaded with COPY. The
prescriptions and everything that hangs off them (an item, the events of the path to their
status, a dispatch, a payment, the patient's emails on shipping and delivery, an API read in the
access log) are generated inside PostgreSQL with INSERT ... SELECT over generate_series, one
batch per transaction, so a million take minutes rather than hours. Each patient belongs to one clinic and its prescriptions, prescriber,
events and payments carry that clinic. The event log is only appended to (its trigger refuses
anything else). Meant for an empty or a bench database: it adds, never deletes.
"""

from __future__ import annotations

import random
import time
from collections.abc import Iterator
from datetime import date, timedelta
from typing import Any, cast

from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import connection, transaction
from django.db.models import Field
from tqdm import tqdm

from accounts.tenancy import system_scope
from patients import phi
from patients.models import Clinic, Jurisdiction, Patient
from prescriptions.models import Medication, Prescriber

BATCH = 50_000
CLINIC_COUNT = 20
API_CLIENT_ID = "bench-seed-client"
# Each patient gets its own NHS number from the 999 test range, which holds this many.
MAX_PATIENTS = 900_000

GIVEN_NAMES = ["Alex", "Sam", "Robin", "Jamie", "Morgan", "Casey", "Taylor", "Jordan", "Riley", "Avery"]
FAMILY_NAMES = ["Archer", "Bramley", "Cotton", "Dunmore", "Ellery", "Fenwick", "Garside", "Holloway"]
CITIES = ["Leeds", "York", "Bradford", "Harrogate", "Wakefield", "Albany", "Buffalo", "Ithaca"]

# The statuses a prescription ends in, per thousand, and the events on the way there.
PRIVATE_PATH = ["received", "approved", "awaiting_payment", "paid", "acknowledged", "dispensed", "shipped"]
NHS_PATH = ["received", "approved", "nhs_funded", "acknowledged", "dispensed", "shipped"]
OUTCOMES: list[tuple[int, str, list[str]]] = [
    (780, "delivered", [*PRIVATE_PATH, "delivered"]),
    (30, "shipped", PRIVATE_PATH),
    (20, "dispensed", PRIVATE_PATH[:-1]),
    (20, "acknowledged", PRIVATE_PATH[:-2]),
    (10, "paid", PRIVATE_PATH[:-3]),
    (10, "awaiting_payment", PRIVATE_PATH[:-4]),
    (5, "awaiting_pharmacist", ["received", "awaiting_pharmacist"]),
    (5, "received", ["received"]),
    (30, "rejected", ["received", "rejected"]),
    (50, "cancelled", ["received", "approved", "cancelled"]),
    (38, "delivered", [*NHS_PATH, "delivered"]),
    (2, "dead_lettered", [*NHS_PATH[:3], "dead_lettered"]),
]


class Command(BaseCommand):
    help = "Add synthetic patients and prescriptions (with events, dispatches, payments) for benchmarks."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--prescriptions", type=int, required=True)
        parser.add_argument("--patients", type=int, help="Default: one for every ten prescriptions.")
        parser.add_argument("--seed", type=int, default=7, help="Random seed for the synthetic values.")

    def handle(self, *args: Any, **options: Any) -> None:
        prescriptions: int = options["prescriptions"]
        patients: int = options["patients"] or max(1, prescriptions // 10)
        if prescriptions < 1 or not 1 <= patients <= MAX_PATIENTS:
            raise CommandError(f"--prescriptions must be at least 1, --patients 1 to {MAX_PATIENTS}")
        if not Medication.objects.exists():
            call_command("load_formulary", verbosity=0)
        started = time.monotonic()
        with system_scope(reason="bench_seed: synthetic benchmark data"):
            clinics, prescribers = _clinics_and_prescribers()
            first_patient = _patients_copy(
                count=patients, clinics=clinics, rng=random.Random(options["seed"])
            )
            _prescriptions_insert(
                count=prescriptions,
                first_patient=first_patient,
                patients=patients,
                clinics=clinics,
                prescribers=prescribers,
                medication_id=Medication.objects.order_by("pk").values_list("pk", flat=True)[0],
            )
            with connection.cursor() as cursor:
                cursor.execute("ANALYZE")
        self.stdout.write(
            f"{patients} patients and {prescriptions} prescriptions in {time.monotonic() - started:.0f} s"
        )


def _clinics_and_prescribers() -> tuple[list[int], list[int]]:
    clinics, prescribers = [], []
    for number in range(CLINIC_COUNT):
        jurisdiction = Jurisdiction.GB if number % 4 else Jurisdiction.US
        clinic, _ = Clinic.objects.get_or_create(
            name=f"Bench clinic {number + 1:02d}",
            defaults={"jurisdiction": jurisdiction, "currency": "GBP" if jurisdiction == "GB" else "USD"},
        )
        prescriber, _ = Prescriber.objects.get_or_create(
            clinic=clinic,
            registration_number=f"70{number:05d}",
            defaults={
                "given_name": "Bench",
                "family_name": f"Prescriber {number + 1}",
                "registration_body": "GMC" if jurisdiction == "GB" else "NPI",
            },
        )
        clinics.append(clinic.pk)
        prescribers.append(prescriber.pk)
    return clinics, prescribers


def _ids_reserve(table: str, count: int) -> int:
    """Take `count` consecutive ids from the table's sequence; returns the first."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT setval(pg_get_serial_sequence(%s, 'id'), nextval(pg_get_serial_sequence(%s, 'id')) + %s)",
            [table, table, count - 1],
        )
        return int(cursor.fetchone()[0]) - count + 1


def _nhs_numbers() -> Iterator[str]:
    """The valid NHS numbers of the 999 range reserved for testing, in order (Modulus 11)."""
    for n in range(1_000_000):
        digits = f"999{n:06d}"
        check = 11 - sum(int(d) * w for d, w in zip(digits, range(10, 1, -1), strict=True)) % 11
        if check != 10:
            yield digits + str(0 if check == 11 else check)


PATIENT_COLUMNS = [
    "id",
    "clinic_id",
    *phi.PHI_FIELDS,
    *phi.INDEX_FIELDS,
    "sex",
    "hepatic_impairment",
    "cardiac_history",
    "created_at",
]


def _patients_copy(*, count: int, clinics: list[int], rng: random.Random) -> int:
    """Patients with their own encrypted identifiers and blind indexes, by COPY; the first id."""
    first = _ids_reserve(Patient._meta.db_table, count)
    fields = {name: cast("Field[Any, Any]", Patient._meta.get_field(name)) for name in phi.PHI_FIELDS}
    nhs_numbers = _nhs_numbers()
    with tqdm(total=count, desc="patients", unit="row") as progress:
        for start in range(0, count, BATCH):
            rows = []
            for offset in range(start, min(start + BATCH, count)):
                values = _patient_values(offset, rng, next(nhs_numbers))
                encrypted = {
                    name: fields[name].get_db_prep_save(value, connection) for name, value in values.items()
                }
                indexes = phi.blind_indexes(
                    nhs_number=values["nhs_number"],
                    email=values["email"],
                    phone=values["phone"],
                    family_name=values["family_name"],
                    birth_date=values["birth_date"],
                    given_name=values["given_name"],
                )
                rows.append(
                    (
                        first + offset,
                        clinics[offset % len(clinics)],
                        *(encrypted[name] for name in phi.PHI_FIELDS),
                        *(indexes[name] for name in phi.INDEX_FIELDS),
                        "unknown",
                        "",
                        "{}",
                        "now",
                    )
                )
            with transaction.atomic(), connection.cursor() as cursor:
                copy_sql = f"COPY {Patient._meta.db_table} ({', '.join(PATIENT_COLUMNS)}) FROM STDIN"
                with cursor.cursor.copy(copy_sql) as copy:  # psycopg 3
                    for row in rows:
                        copy.write_row(row)
            progress.update(len(rows))
    return first


def _patient_values(offset: int, rng: random.Random, nhs_number: str) -> dict[str, Any]:
    return {
        "given_name": rng.choice(GIVEN_NAMES),
        "family_name": f"{rng.choice(FAMILY_NAMES)}-{offset}",
        "birth_date": date(1940, 1, 1) + timedelta(days=rng.randrange(0, 365 * 80)),
        "nhs_number": nhs_number,
        "address_line": f"{rng.randrange(1, 300)} Synthetic Street",
        "city": rng.choice(CITIES),
        "region": "",
        "postal_code": "",
        "email": f"patient-{offset}@example.org",
        "phone": f"07700 9{offset % 100_000:05d}",
    }


def _prescriptions_insert(
    *,
    count: int,
    first_patient: int,
    patients: int,
    clinics: list[int],
    prescribers: list[int],
    medication_id: int,
) -> None:
    first = _ids_reserve("prescriptions_prescription", count)
    with connection.cursor() as cursor:
        cursor.execute("DROP TABLE IF EXISTS bench_outcome")
        cursor.execute("CREATE TEMP TABLE bench_outcome (bucket int, status text, funding text, path text[])")
        bucket = 0
        for share, status, path in OUTCOMES:
            funding = "nhs" if "nhs_funded" in path else "private"
            cursor.execute(
                "INSERT INTO bench_outcome SELECT b, %s, %s, %s FROM generate_series(%s, %s) b",
                [status, funding, path, bucket, bucket + share - 1],
            )
            bucket += share
    assert bucket == 1000
    with tqdm(total=count, desc="prescriptions", unit="row") as progress:
        for start in range(0, count, BATCH):
            size = min(BATCH, count - start)
            with transaction.atomic(), connection.cursor() as cursor:
                parameters: dict[str, Any] = {
                    "low": first + start,
                    "high": first + start + size - 1,
                    "first": first,
                    "count": count,
                    "first_patient": first_patient,
                    "patients": patients,
                    "clinics": clinics,
                    "prescribers": prescribers,
                    "medication": medication_id,
                    "client": API_CLIENT_ID,
                }
                for statement in SEED_STATEMENTS:
                    cursor.execute(statement, parameters)
            progress.update(size)


# One batch: ids low..high. A prescription's patient is spread over all patients by a
# multiplicative hash; its clinic and prescriber follow the patient (clinic = patient % clinics);
# its age runs from two years ago (the first id) to now (the last); its outcome bucket is
# id * 7919 % 1000, a permutation of every 1000 consecutive ids, so that any run of ids, however
# short and wherever the sequence stands, mixes the outcomes in their proportions.
SEED_STATEMENTS = [
    """
    DROP TABLE IF EXISTS bench_batch;
    """,
    """
    CREATE TEMP TABLE bench_batch AS
    SELECT g AS id,
           patient_offset + %(first_patient)s AS patient_id,
           (%(clinics)s::bigint[])[1 + patient_offset %% cardinality(%(clinics)s::bigint[])] AS clinic_id,
           (%(prescribers)s::bigint[])[1 + patient_offset %% cardinality(%(prescribers)s::bigint[])]
               AS prescriber_id,
           now() - interval '730 days' * (%(first)s + %(count)s - g) / %(count)s AS created_at,
           o.status, o.funding, o.path
      FROM generate_series(%(low)s::bigint, %(high)s::bigint) g
      CROSS JOIN LATERAL (SELECT ((g * 2654435761) %% %(patients)s)::bigint AS patient_offset) p
      JOIN bench_outcome o ON o.bucket = (g * 7919) %% 1000;
    """,
    """
    INSERT INTO prescriptions_prescription (
        id, clinic_id, patient_id, prescriber_id, status, issued_on, note, check_results, repeats,
        clinical_justification, status_reason, tracking_number, funding, nhs_exemption_category,
        nhs_exemption_evidence, link_kind, eps_prescription_id, created_at, updated_at)
    SELECT id, clinic_id, patient_id, prescriber_id, status, created_at::date, '', '[]', 0,
           '', '', CASE WHEN status IN ('shipped', 'delivered') THEN 'TRK' || id ELSE '' END,
           funding, CASE WHEN funding = 'nhs' THEN 'age_60_or_over' ELSE '' END,
           '', '', '', created_at, created_at + interval '1 hour' * cardinality(path)
      FROM bench_batch;
    """,
    """
    INSERT INTO prescriptions_prescriptionitem (prescription_id, medication_id, dose_text, quantity, unit,
                                                days_supply, quantity_words)
    SELECT id, %(medication)s, 'One tablet twice a day', 28, 'tablet', 14, 'twenty eight' FROM bench_batch;
    """,
    """
    INSERT INTO events_event (aggregate_type, aggregate_id, sequence, clinic_id, type, payload, actor, created_at)
    SELECT 'prescription', b.id, n, b.clinic_id, 'prescription.' || b.path[n],
           CASE WHEN n = 1 THEN '{}'::jsonb
                ELSE jsonb_build_object('from', b.path[n - 1], 'to', b.path[n]) END,
           'bench_seed', b.created_at + interval '1 hour' * (n - 1)
      FROM bench_batch b CROSS JOIN LATERAL generate_subscripts(b.path, 1) n;
    """,
    """
    INSERT INTO pharmacy_dispatch (prescription_id, idempotency_key, status, attempts, last_error,
                                   gateway_order_id, created_at, updated_at, acknowledged_at,
                                   window_started_at, partner_id, partners_tried, routing)
    SELECT id, gen_random_uuid(),
           CASE WHEN status = 'dead_lettered' THEN 'dead_lettered' ELSE 'acknowledged' END,
           1, '', CASE WHEN status = 'dead_lettered' THEN '' ELSE 'ord_bench_' || id END,
           created_at + interval '3 hours', created_at + interval '4 hours',
           CASE WHEN status = 'dead_lettered' THEN NULL ELSE created_at + interval '4 hours' END,
           created_at + interval '3 hours',
           (SELECT id FROM pharmacy_partner WHERE code = 'gateway'), '[]'::jsonb, '{}'::jsonb
      FROM bench_batch WHERE 'acknowledged' = ANY(path) OR status = 'dead_lettered';
    """,
    """
    INSERT INTO billing_payment (prescription_id, clinic_id, amount_minor, currency, idempotency_key,
                                 stripe_payment_intent_id, client_secret, status, attempts, last_error,
                                 created_at, updated_at)
    SELECT id, clinic_id, 995, 'GBP', 'scriptline-payment-' || id, 'pi_bench_' || id, '',
           CASE WHEN status = 'awaiting_payment' THEN 'requires_payment' ELSE 'succeeded' END, 1, '',
           created_at + interval '2 hours', created_at + interval '3 hours'
      FROM bench_batch WHERE 'awaiting_payment' = ANY(path);
    """,
    """
    INSERT INTO notifications_notification (event_id, patient_id, prescription_id, channel, kind, status,
                                            error, created_at, sent_at, requested_by, claimed_at)
    SELECT e.id, b.patient_id, b.id, 'email', e.type, 'sent', '', e.created_at + interval '1 minute',
           e.created_at + interval '1 minute', '', e.created_at + interval '1 minute'
      FROM bench_batch b
      JOIN events_event e ON e.aggregate_type = 'prescription' AND e.aggregate_id = b.id
     WHERE e.type IN ('prescription.shipped', 'prescription.delivered');
    """,
    """
    INSERT INTO audit_patientaccess (patient_id, clinic_id, channel, action, client_id, request_id, accessed_at)
    SELECT patient_id, clinic_id, 'api', 'detail', %(client)s, '', created_at + interval '5 hours'
      FROM bench_batch;
    """,
]
