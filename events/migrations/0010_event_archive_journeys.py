"""Where each archived journey stopped: one row per aggregate moved by `manage.py events_archive`.

An event recorded for such an aggregate afterwards takes its sequence from here (one index
probe, only when the log has no event for it), not from the partitioned archive, whose planning
alone would cost every event insert milliseconds.
"""

from importlib import import_module

from django.db import migrations

rls = import_module("patients.migrations.0004_row_level_security")

JOURNEYS = """
CREATE TABLE events_event_archive_journey (
    aggregate_type varchar(40) NOT NULL,
    aggregate_id bigint NOT NULL,
    clinic_id bigint NULL,
    last_sequence integer NOT NULL,
    archived_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (aggregate_type, aggregate_id)
);
"""


class Migration(migrations.Migration):
    dependencies = [("events", "0009_event_archive")]

    operations = [
        migrations.RunSQL(JOURNEYS, "DROP TABLE IF EXISTS events_event_archive_journey;"),
        migrations.RunSQL(
            rls._enable("events_event_archive_journey", "clinic_id = app_clinic_id()"),
            rls._disable("events_event_archive_journey"),
        ),
    ]
