"""The support tables are clinic-owned: forced row-level security as patients migration 0004.

The support-action log is append-only in the database: a trigger refuses DELETE, and any
UPDATE except of the encrypted reason (which `manage.py rotate_keys` re-encrypts). Then the
role groups are synchronised again, now that the support permissions exist.
"""

from importlib import import_module

from django.db import migrations

rls = import_module("patients.migrations.0004_row_level_security")
roles_migration = import_module("support.migrations.0002_staff_roles")

TABLES = {
    "support_enquiry": "clinic_id = app_clinic_id()",
    "support_enquirynote": "EXISTS (SELECT 1 FROM support_enquiry e WHERE e.id = enquiry_id)",
    "support_supportaction": "clinic_id = app_clinic_id()",
}

APPEND_ONLY = """
CREATE OR REPLACE FUNCTION support_action_append_only() RETURNS trigger AS $$
BEGIN
    IF TG_OP = 'DELETE' OR (
        NEW.id, NEW.clinic_id, NEW.patient_id, NEW.prescription_id, NEW.enquiry_id,
        NEW.staff_user_id, NEW.kind, NEW.outcome, NEW.created_at
    ) IS DISTINCT FROM (
        OLD.id, OLD.clinic_id, OLD.patient_id, OLD.prescription_id, OLD.enquiry_id,
        OLD.staff_user_id, OLD.kind, OLD.outcome, OLD.created_at
    ) THEN
        RAISE EXCEPTION 'support_supportaction is append-only: % refused', TG_OP
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    RETURN NEW;
END;
$$ LANGUAGE plpgsql;
CREATE TRIGGER support_supportaction_append_only BEFORE UPDATE OR DELETE ON support_supportaction
    FOR EACH ROW EXECUTE FUNCTION support_action_append_only();
"""

APPEND_ONLY_UNDO = """
DROP TRIGGER IF EXISTS support_supportaction_append_only ON support_supportaction;
DROP FUNCTION IF EXISTS support_action_append_only();
"""


class Migration(migrations.Migration):
    dependencies = [
        ("support", "0005_enquiries_support_actions_task_statistics"),
        ("notifications", "0003_notification_resends"),
        ("patients", "0004_row_level_security"),
    ]

    operations = [
        *(
            migrations.RunSQL(rls._enable(table, condition), rls._disable(table))
            for table, condition in TABLES.items()
        ),
        migrations.RunSQL(APPEND_ONLY, APPEND_ONLY_UNDO),
        migrations.RunPython(roles_migration.roles_synchronise, migrations.RunPython.noop),
    ]
