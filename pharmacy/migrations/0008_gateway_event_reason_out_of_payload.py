"""A pharmacy's reason for refusing an order leaves the stored gateway events: it is kept
encrypted as the prescription's status reason."""

from django.db import migrations

FORWARD = """
UPDATE pharmacy_gatewaywebhookevent SET payload = jsonb_set(payload, '{data}', (payload->'data') - 'reason')
    WHERE jsonb_typeof(payload->'data') = 'object' AND payload->'data' ? 'reason';
"""


class Migration(migrations.Migration):
    dependencies = [("pharmacy", "0007_cancellation_reason_encrypted")]

    operations = [migrations.RunSQL(FORWARD, migrations.RunSQL.noop)]
