"""Each invoice event carries its invoice's merchant, with an index over a merchant's latest
events: the dashboard's activity feed reads one index range, however long the history."""

import django.db.models.deletion
from django.db import migrations, models

BACKFILL = """
UPDATE invoices_invoiceevent SET merchant_id = (
    SELECT merchant_id FROM invoices_invoice WHERE invoices_invoice.id = invoices_invoiceevent.invoice_id
)
"""


class Migration(migrations.Migration):

    dependencies = [
        ('invoices', '0011_status_counts_and_search_indexes'),
        ('merchants', '0006_document_seller_details'),
    ]

    operations = [
        migrations.AddField(
            model_name='invoiceevent',
            name='merchant',
            field=models.ForeignKey(db_index=False, editable=False, null=True, on_delete=django.db.models.deletion.CASCADE, related_name='+', to='merchants.merchant'),
        ),
        migrations.RunSQL(BACKFILL, migrations.RunSQL.noop),
        migrations.AlterField(
            model_name='invoiceevent',
            name='merchant',
            field=models.ForeignKey(db_index=False, editable=False, on_delete=django.db.models.deletion.CASCADE, related_name='+', to='merchants.merchant'),
        ),
        migrations.AddIndex(
            model_name='invoiceevent',
            index=models.Index(fields=['merchant', '-created_at', '-id'], name='event_merchant_recent_idx'),
        ),
    ]
