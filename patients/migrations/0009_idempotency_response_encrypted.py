import patients.phi
from django.db import migrations


def encrypt_stored_responses(apps, schema_editor):
    """Rows stored before: their JSON text is re-saved through the encrypted field."""
    IdempotencyKey = apps.get_model("patients", "IdempotencyKey")
    for stored in IdempotencyKey.objects.iterator():
        if not stored.response_body.startswith("gAAAAA"):
            stored.save(update_fields=["response_body"])


class Migration(migrations.Migration):
    dependencies = [
        ("patients", "0008_clinic_telephone_address_and_managing_organisation"),
    ]

    operations = [
        migrations.AlterField(
            model_name="idempotencykey",
            name="response_body",
            field=patients.phi.PhiTextField(),
        ),
        migrations.RunPython(encrypt_stored_responses, migrations.RunPython.noop),
    ]
