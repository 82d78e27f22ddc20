"""Every existing account gets allauth's email row, marked verified.

These people have signed in with this address all along (or were invited to it), so the
move to allauth must not ask them to confirm it again; their password hashes stay as they are.
"""

from django.db import migrations


def forwards(apps, schema_editor):
    User = apps.get_model("merchants", "User")
    EmailAddress = apps.get_model("account", "EmailAddress")
    have = set(EmailAddress.objects.values_list("user_id", flat=True))
    EmailAddress.objects.bulk_create(
        [
            EmailAddress(user_id=pk, email=email.lower(), primary=True, verified=True)
            for pk, email in User.objects.values_list("pk", "email").iterator()
            if pk not in have
        ],
        batch_size=500,
    )


class Migration(migrations.Migration):
    dependencies = [
        ("merchants", "0004_auth_security_log"),
        ("account", "0009_emailaddress_unique_primary_email"),
    ]

    operations = [migrations.RunPython(forwards, migrations.RunPython.noop)]
