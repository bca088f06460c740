from django.db import migrations

PHI_FIELDS = (
    "given_name",
    "family_name",
    "birth_date",
    "nhs_number",
    "address_line",
    "city",
    "region",
    "postal_code",
    "email",
    "phone",
)
INDEX_FIELDS = ("nhs_number_index", "email_index", "phone_index", "family_name_birth_date_index")


def encrypt_existing_rows(apps, schema_editor):
    """Rows written before 0002 hold plaintext; the encrypted fields read plaintext as-is
    (an undecryptable value is returned unchanged), so loading and re-saving encrypts them."""
    from patients import phi

    Patient = apps.get_model("patients", "Patient")
    for patient in Patient.objects.order_by("pk").iterator(chunk_size=500):
        for name, value in phi.blind_indexes(
            nhs_number=patient.nhs_number,
            email=patient.email,
            phone=patient.phone,
            family_name=patient.family_name,
            birth_date=patient.birth_date,
        ).items():
            setattr(patient, name, value)
        patient.save(update_fields=[*PHI_FIELDS, *INDEX_FIELDS])


class Migration(migrations.Migration):
    dependencies = [("patients", "0002_patient_phi_encrypted_and_blind_indexes")]

    operations = [migrations.RunPython(encrypt_existing_rows, migrations.RunPython.noop)]
