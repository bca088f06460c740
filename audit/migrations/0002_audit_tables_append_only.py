"""The audit trail refuses UPDATE and DELETE in the database itself, whatever the caller.

Covers django-auditlog's log entries and our patient-access log. The access log is also
clinic-owned, so it gets the same forced row-level security as patients migration 0004:
an API transaction may append and read only its own clinic's rows.
"""

from importlib import import_module

from django.db import migrations

rls = import_module("patients.migrations.0004_row_level_security")

APPEND_ONLY_TABLES = ["auditlog_logentry", "audit_patientaccess"]

FUNCTION = """
CREATE OR REPLACE FUNCTION audit_append_only() RETURNS trigger AS $$
BEGIN
    RAISE EXCEPTION '% is append-only: % refused', TG_TABLE_NAME, TG_OP
        USING ERRCODE = 'insufficient_privilege';
END;
$$ LANGUAGE plpgsql;
"""


def _forbid(table: str) -> str:
    return f"""
CREATE TRIGGER {table}_append_only BEFORE UPDATE OR DELETE ON {table}
    FOR EACH ROW EXECUTE FUNCTION audit_append_only();
"""


def _allow(table: str) -> str:
    return f"DROP TRIGGER IF EXISTS {table}_append_only ON {table};"


# Appending and reading only: the tenant role gets no UPDATE or DELETE here at all.
GRANTS = """
REVOKE UPDATE, DELETE ON audit_patientaccess FROM scriptline_tenant;
GRANT SELECT, INSERT ON audit_patientaccess TO scriptline_tenant;
GRANT USAGE, SELECT ON SEQUENCE audit_patientaccess_id_seq TO scriptline_tenant;
"""


class Migration(migrations.Migration):
    dependencies = [
        ("audit", "0001_patient_access"),
        ("auditlog", "0017_add_actor_email"),
        ("patients", "0004_row_level_security"),
    ]

    operations = [
        migrations.RunSQL(FUNCTION, "DROP FUNCTION IF EXISTS audit_append_only();"),
        *(migrations.RunSQL(_forbid(table), _allow(table)) for table in APPEND_ONLY_TABLES),
        migrations.RunSQL(GRANTS, migrations.RunSQL.noop),
        migrations.RunSQL(
            rls._enable("audit_patientaccess", "clinic_id = app_clinic_id()"), rls._disable("audit_patientaccess")
        ),
    ]
