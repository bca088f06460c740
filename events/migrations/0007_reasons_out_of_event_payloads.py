"""Reasons (a pharmacist's, a clinic's cancellation, the pharmacy's refusal) leave the event
log and the stored webhook payloads: they live encrypted on the review, the prescription's
status reason or the cancellation, and a clinic webhook reads them from there when it is sent.
The event log is append-only; its trigger is lifted for this one rewrite, inside the
migration's transaction."""

from django.db import migrations

TYPES = (
    "prescription.pharmacist_approved",
    "prescription.pharmacist_rejected",
    "prescription.cancelled",
    "prescription.rejected_by_pharmacy",
    "prescription.cancellation_requested",
    "prescription.cancellation_refused",
)
_IN = ", ".join(f"'{name}'" for name in TYPES)

FORWARD = f"""
ALTER TABLE events_event DISABLE TRIGGER events_event_append_only;
UPDATE events_event SET payload = payload - 'reason' WHERE type IN ({_IN}) AND payload ? 'reason';
ALTER TABLE events_event ENABLE TRIGGER events_event_append_only;
UPDATE events_webhookdelivery SET payload = jsonb_set(payload, '{{prescription,reason}}', '""')
    WHERE payload->>'type' IN ({_IN}) AND payload->'prescription' ? 'reason';
"""


class Migration(migrations.Migration):
    dependencies = [("events", "0006_outbox_tasks_and_settled_events")]

    operations = [migrations.RunSQL(FORWARD, migrations.RunSQL.noop)]
