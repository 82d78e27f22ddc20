"""Invoice counts per merchant and status kept by triggers (invoices.status_counts), filled
from the invoices there are; the dashboard's paid-recently index; and on PostgreSQL the
search's prefix indexes."""

import django.db.models.deletion
from django.conf import settings
from django.db import migrations, models

from invoices import status_counts


def forward(apps, schema_editor):
    connection = schema_editor.connection
    status_counts.install(connection)
    status_counts.recount(connection)
    status_counts.create_search_indexes(connection)


def backward(apps, schema_editor):
    connection = schema_editor.connection
    status_counts.drop_search_indexes(connection)
    status_counts.uninstall(connection)


class Migration(migrations.Migration):

    dependencies = [
        ('customers', '0003_document_billing_address'),
        ('invoices', '0010_email_kind_refund_state'),
        ('merchants', '0006_document_seller_details'),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.CreateModel(
            name='InvoiceStatusCount',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('status', models.CharField(choices=[('draft', 'Draft'), ('open', 'Open'), ('processing', 'Processing'), ('paid', 'Paid'), ('unresolved', 'Unresolved'), ('failed', 'Failed'), ('closed', 'Closed'), ('void', 'Void')], max_length=16)),
                ('n', models.BigIntegerField(default=0)),
            ],
        ),
        migrations.AddIndex(
            model_name='invoice',
            index=models.Index(fields=['merchant', 'status', 'finalized_at'], name='invoice_paid_idx'),
        ),
        migrations.AddField(
            model_name='invoicestatuscount',
            name='merchant',
            field=models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name='+', to='merchants.merchant'),
        ),
        migrations.AddConstraint(
            model_name='invoicestatuscount',
            constraint=models.UniqueConstraint(fields=('merchant', 'status'), name='status_count_unique'),
        ),
        migrations.RunPython(forward, backward),
    ]
