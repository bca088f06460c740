from django.db import migrations

FORBID = """
CREATE OR REPLACE FUNCTION prescriptions_pharmacistreview_immutable() RETURNS trigger AS $$
BEGIN
    RAISE EXCEPTION 'a pharmacist decision cannot be changed: % refused', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END;
$$ LANGUAGE plpgsql;

CREATE TRIGGER prescriptions_pharmacistreview_immutable
    BEFORE UPDATE OR DELETE ON prescriptions_pharmacistreview
    FOR EACH ROW EXECUTE FUNCTION prescriptions_pharmacistreview_immutable();
"""

ALLOW = """
DROP TRIGGER IF EXISTS prescriptions_pharmacistreview_immutable ON prescriptions_pharmacistreview;
DROP FUNCTION IF EXISTS prescriptions_pharmacistreview_immutable();
"""


class Migration(migrations.Migration):
    """Pharmacist decisions are append-only in the database itself: only a new one may be recorded."""

    dependencies = [("prescriptions", "0002_clinical_safety_formulary_prescriber_and_pharmacist")]

    operations = [migrations.RunSQL(FORBID, ALLOW)]
