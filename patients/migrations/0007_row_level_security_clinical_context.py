"""Row-level security for the clinical context tables added with the check engine."""

from importlib import import_module

from django.db import migrations

rls = import_module("patients.migrations.0004_row_level_security")

CHILD_OF_PATIENT = "EXISTS (SELECT 1 FROM patients_patient p WHERE p.id = patient_id)"
TABLES = {"patients_diagnosis": CHILD_OF_PATIENT, "patients_observation": CHILD_OF_PATIENT}


class Migration(migrations.Migration):
    dependencies = [("patients", "0006_merge_security_and_clinical")]

    operations = [
        migrations.RunSQL(rls._enable(table, condition), rls._disable(table)) for table, condition in TABLES.items()
    ]
