"""PostgreSQL row-level security on every clinic-owned table (see patients/tenancy.py).

`scriptline_tenant` is the role clinic-API transactions switch to: not a superuser, no
BYPASSRLS, owns no table, so its policies always apply. FORCE ROW LEVEL SECURITY subjects
the table owner (the connection's own role) too; its policy admits rows only on the system
path (app.clinic_id = '*'). Superusers bypass RLS whatever we do: production must connect
as an ordinary role (see README).
"""

from django.db import migrations

TENANT_ROLE = "scriptline_tenant"

# table -> the tenant condition: owned directly through clinic_id, or through a parent row
# (whose own policy then decides, because a policy's subquery is itself subject to RLS).
CLINIC_OWNED = {
    "patients_clinic": "id = app_clinic_id()",
    "patients_clinicclient": "clinic_id = app_clinic_id()",
    "patients_patient": "clinic_id = app_clinic_id()",
    "patients_idempotencykey": "clinic_id = app_clinic_id()",
    "patients_allergy": "EXISTS (SELECT 1 FROM patients_patient p WHERE p.id = patient_id)",
    "patients_currentmedication": "EXISTS (SELECT 1 FROM patients_patient p WHERE p.id = patient_id)",
    "prescriptions_prescriber": "clinic_id = app_clinic_id()",
    "prescriptions_prescription": "clinic_id = app_clinic_id()",
    "prescriptions_prescriptionitem": (
        "EXISTS (SELECT 1 FROM prescriptions_prescription p WHERE p.id = prescription_id)"
    ),
    "prescriptions_pharmacistreview": (
        "EXISTS (SELECT 1 FROM prescriptions_prescription p WHERE p.id = prescription_id)"
    ),
    "pharmacy_dispatch": "EXISTS (SELECT 1 FROM prescriptions_prescription p WHERE p.id = prescription_id)",
    "pharmacy_deadletter": "EXISTS (SELECT 1 FROM pharmacy_dispatch d WHERE d.id = dispatch_id)",
    "events_event": "clinic_id = app_clinic_id()",
}

SETUP = f"""
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '{TENANT_ROLE}') THEN
        CREATE ROLE {TENANT_ROLE} NOLOGIN NOSUPERUSER NOBYPASSRLS NOCREATEDB NOCREATEROLE;
    END IF;
END
$$;
GRANT {TENANT_ROLE} TO CURRENT_USER;
GRANT USAGE ON SCHEMA public TO {TENANT_ROLE};
GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO {TENANT_ROLE};
GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO {TENANT_ROLE};
ALTER DEFAULT PRIVILEGES IN SCHEMA public
    GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO {TENANT_ROLE};
ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT USAGE, SELECT ON SEQUENCES TO {TENANT_ROLE};

CREATE OR REPLACE FUNCTION app_clinic_id() RETURNS bigint LANGUAGE sql STABLE AS $$
    SELECT CASE WHEN current_setting('app.clinic_id', true) ~ '^[0-9]{{1,18}}$'
                THEN current_setting('app.clinic_id', true)::bigint END
$$;
CREATE OR REPLACE FUNCTION app_scope_is_system() RETURNS boolean LANGUAGE sql STABLE AS $$
    SELECT coalesce(current_setting('app.clinic_id', true) = '*', false)
$$;
"""

TEARDOWN = f"""
DROP FUNCTION IF EXISTS app_scope_is_system();
DROP FUNCTION IF EXISTS app_clinic_id();
ALTER DEFAULT PRIVILEGES IN SCHEMA public REVOKE USAGE, SELECT ON SEQUENCES FROM {TENANT_ROLE};
ALTER DEFAULT PRIVILEGES IN SCHEMA public REVOKE SELECT, INSERT, UPDATE, DELETE ON TABLES FROM {TENANT_ROLE};
REVOKE ALL ON ALL SEQUENCES IN SCHEMA public FROM {TENANT_ROLE};
REVOKE ALL ON ALL TABLES IN SCHEMA public FROM {TENANT_ROLE};
REVOKE USAGE ON SCHEMA public FROM {TENANT_ROLE};
"""


def _enable(table: str, condition: str) -> str:
    return f"""
ALTER TABLE {table} ENABLE ROW LEVEL SECURITY;
ALTER TABLE {table} FORCE ROW LEVEL SECURITY;
CREATE POLICY system_access ON {table} TO CURRENT_USER
    USING (app_scope_is_system()) WITH CHECK (app_scope_is_system());
CREATE POLICY tenant_isolation ON {table} TO {TENANT_ROLE}
    USING ({condition}) WITH CHECK ({condition});
"""


def _disable(table: str) -> str:
    return f"""
DROP POLICY IF EXISTS tenant_isolation ON {table};
DROP POLICY IF EXISTS system_access ON {table};
ALTER TABLE {table} NO FORCE ROW LEVEL SECURITY;
ALTER TABLE {table} DISABLE ROW LEVEL SECURITY;
"""


class Migration(migrations.Migration):
    dependencies = [
        ("patients", "0003_patient_phi_encrypt_existing_rows"),
        ("prescriptions", "0001_initial"),
        ("pharmacy", "0001_initial"),
        ("events", "0002_event_append_only"),
    ]

    operations = [
        migrations.RunSQL(SETUP, TEARDOWN),
        *(migrations.RunSQL(_enable(table, condition), _disable(table)) for table, condition in CLINIC_OWNED.items()),
    ]
