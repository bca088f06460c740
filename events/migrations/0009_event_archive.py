"""The event archive: where a finished prescription's journey moves once it is past retention.

`events_event_archive` has the event log's columns, is range-partitioned by month on
`created_at` (partitions are made by `manage.py events_archive` as it needs them), and is
append-only by its own trigger. The event log's trigger keeps refusing UPDATE, and now lets a
DELETE through only for a row whose identical copy is already in the archive: nothing can leave
the event log without having been archived first.
"""

from importlib import import_module

from django.db import migrations

rls = import_module("patients.migrations.0004_row_level_security")

ARCHIVE = """
CREATE TABLE events_event_archive (
    id bigint NOT NULL,
    aggregate_type varchar(40) NOT NULL,
    aggregate_id bigint NOT NULL,
    sequence integer NOT NULL,
    clinic_id bigint NULL,
    type varchar(80) NOT NULL,
    payload jsonb NOT NULL,
    actor varchar(120) NOT NULL,
    created_at timestamptz NOT NULL,
    archived_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (id, created_at)
) PARTITION BY RANGE (created_at);
CREATE INDEX events_event_archive_aggregate
    ON events_event_archive (aggregate_type, aggregate_id, sequence);

CREATE FUNCTION events_event_archive_append_only() RETURNS trigger AS $$
BEGIN
    RAISE EXCEPTION 'events_event_archive is append-only: % refused', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END;
$$ LANGUAGE plpgsql;
CREATE TRIGGER events_event_archive_append_only
    BEFORE UPDATE OR DELETE ON events_event_archive
    FOR EACH ROW EXECUTE FUNCTION events_event_archive_append_only();

CREATE OR REPLACE FUNCTION events_event_append_only() RETURNS trigger AS $$
BEGIN
    IF TG_OP = 'DELETE' AND EXISTS (
        SELECT 1 FROM events_event_archive a
         WHERE a.id = OLD.id AND a.created_at = OLD.created_at
           AND a.aggregate_type = OLD.aggregate_type AND a.aggregate_id = OLD.aggregate_id
           AND a.sequence = OLD.sequence AND a.clinic_id IS NOT DISTINCT FROM OLD.clinic_id
           AND a.type = OLD.type AND a.payload = OLD.payload AND a.actor = OLD.actor
    ) THEN
        RETURN OLD;
    END IF;
    RAISE EXCEPTION 'events_event is append-only: % refused', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END;
$$ LANGUAGE plpgsql;
"""

ARCHIVE_DROP = """
CREATE OR REPLACE FUNCTION events_event_append_only() RETURNS trigger AS $$
BEGIN
    RAISE EXCEPTION 'events_event is append-only: % refused', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END;
$$ LANGUAGE plpgsql;
DROP TABLE IF EXISTS events_event_archive;
DROP FUNCTION IF EXISTS events_event_archive_append_only();
"""


class Migration(migrations.Migration):
    dependencies = [("events", "0008_admin_indexes")]

    operations = [
        migrations.RunSQL(ARCHIVE, ARCHIVE_DROP),
        migrations.RunSQL(
            rls._enable("events_event_archive", "clinic_id = app_clinic_id()"),
            rls._disable("events_event_archive"),
        ),
    ]
