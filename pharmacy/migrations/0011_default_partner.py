"""The default partner: the FHIR R4 message gateway every prescription went to before routing,
licensed everywhere the service dispenses and for every controlled-drug schedule, so routing
keeps sending to it until operators add partners. Its URL and keys stay GATEWAY_*."""

from django.db import migrations

DEFAULT_PARTNER_CODE = "gateway"

US_STATES = (
    "AL AK AZ AR CA CO CT DE DC FL GA HI ID IL IN IA KS KY LA ME MD MA MI MN MS MO MT NE NV NH NJ NM "
    "NY NC ND OH OK OR PA RI SC SD TN TX UT VT VA WA WV WI WY"
).split()
SCHEDULES = [f"GB:{n}" for n in ("1", "2", "3", "4", "5")] + [
    f"US:{n}" for n in ("I", "II", "IIN", "III", "IIIN", "IV", "V")
]


def create(apps, schema_editor):
    Partner = apps.get_model("pharmacy", "Partner")
    partner, _ = Partner.objects.get_or_create(
        code=DEFAULT_PARTNER_CODE,
        defaults={
            "name": "Pharmacy gateway (FHIR R4 messaging)",
            "adapter": "fhir_gateway",
            "status_by": "webhook",
            "countries": ["GB", "US"],
            "us_states": US_STATES,
            "controlled_schedules": SCHEDULES,
            "cold_chain": True,
            "capacity": 1_000_000,
        },
    )
    # Every order so far went to the gateway.
    apps.get_model("pharmacy", "Dispatch").objects.filter(partner__isnull=True).exclude(
        status="awaiting_partner"
    ).update(partner=partner)


class Migration(migrations.Migration):
    dependencies = [('pharmacy', '0010_partners_routing_stock')]

    operations = [migrations.RunPython(create, migrations.RunPython.noop)]
