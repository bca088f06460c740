from django.db import migrations

FORBID = """
CREATE OR REPLACE FUNCTION events_event_append_only() RETURNS trigger AS $$
BEGIN
    RAISE EXCEPTION 'events_event is append-only: % refused', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END;
$$ LANGUAGE plpgsql;

CREATE TRIGGER events_event_append_only
    BEFORE UPDATE OR DELETE ON events_event
    FOR EACH ROW EXECUTE FUNCTION events_event_append_only();
"""

ALLOW = """
DROP TRIGGER IF EXISTS events_event_append_only ON events_event;
DROP FUNCTION IF EXISTS events_event_append_only();
"""


class Migration(migrations.Migration):
    """The event log refuses UPDATE and DELETE in the database itself, whatever the caller."""

    dependencies = [("events", "0001_initial")]

    operations = [migrations.RunSQL(FORBID, ALLOW)]
