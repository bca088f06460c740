"""Support's search by tracking number, indexed without locking writes."""

from django.contrib.postgres.operations import AddIndexConcurrently
from django.db import migrations, models


class Migration(migrations.Migration):
    atomic = False

    dependencies = [
        ('patients', '0013_merge_20261130_1250'),
        ('prescriptions', '0012_merge_20261130_1310'),
    ]

    operations = [
        AddIndexConcurrently(
            model_name='prescription',
            index=models.Index(fields=['tracking_number'], name='prescription_tracking_number'),
        ),
    ]
