"""Triggers that announce, at commit, a change to what the payer's page shows
(checkout/page_news.py). PostgreSQL only: on SQLite every request reads the page's state.

A notice names the invoice whose page changed (`i:<id>`), a merchant (`m:<id>`), a customer
(`c:<id>`), or `*` for the asset catalogue and for a table emptied at once (TRUNCATE).
Notices of one transaction with the same text are sent once. The scanner's own bookkeeping on
a network row (its lease, the node's health) and a merchant's invoice counter change no page,
so they announce nothing.
"""

from django.db import migrations

TRIGGERED = (
    "invoices_invoice",
    "checkout_payment",
    "checkout_refundrequest",
    "wallets_transfer",
    "merchants_merchant",
    "customers_customer",
    "wallets_asset",
    "wallets_network",
)

FORWARD = r"""
CREATE OR REPLACE FUNCTION stablebill_page_news_invoice() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
  IF TG_OP = 'DELETE' THEN
    PERFORM pg_notify('stablebill_page', 'i:' || OLD.id);
  ELSE
    PERFORM pg_notify('stablebill_page', 'i:' || NEW.id);
  END IF;
  RETURN NULL;
END $$;

CREATE OR REPLACE FUNCTION stablebill_page_news_of_invoice() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
  IF TG_OP <> 'INSERT' THEN
    PERFORM pg_notify('stablebill_page', 'i:' || OLD.invoice_id);
  END IF;
  IF TG_OP <> 'DELETE' THEN
    PERFORM pg_notify('stablebill_page', 'i:' || NEW.invoice_id);
  END IF;
  RETURN NULL;
END $$;

CREATE OR REPLACE FUNCTION stablebill_page_news_transfer() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
  IF TG_OP <> 'INSERT' AND OLD.deposit_address_id IS NOT NULL THEN
    PERFORM pg_notify('stablebill_page', 'i:' || p.invoice_id)
      FROM checkout_payment p WHERE p.deposit_address_id = OLD.deposit_address_id;
  END IF;
  IF TG_OP <> 'DELETE' AND NEW.deposit_address_id IS NOT NULL THEN
    PERFORM pg_notify('stablebill_page', 'i:' || p.invoice_id)
      FROM checkout_payment p WHERE p.deposit_address_id = NEW.deposit_address_id;
  END IF;
  RETURN NULL;
END $$;

CREATE OR REPLACE FUNCTION stablebill_page_news_named() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
  -- TG_ARGV[0] is the prefix of the notice: m for a merchant, c for a customer.
  IF TG_OP = 'DELETE' THEN
    PERFORM pg_notify('stablebill_page', TG_ARGV[0] || ':' || OLD.id);
  ELSE
    PERFORM pg_notify('stablebill_page', TG_ARGV[0] || ':' || NEW.id);
  END IF;
  RETURN NULL;
END $$;

CREATE OR REPLACE FUNCTION stablebill_page_news_everything() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
  PERFORM pg_notify('stablebill_page', '*');
  RETURN NULL;
END $$;

CREATE TRIGGER page_news AFTER UPDATE OR DELETE ON invoices_invoice
  FOR EACH ROW EXECUTE FUNCTION stablebill_page_news_invoice();
CREATE TRIGGER page_news AFTER INSERT OR UPDATE OR DELETE ON checkout_payment
  FOR EACH ROW EXECUTE FUNCTION stablebill_page_news_of_invoice();
CREATE TRIGGER page_news AFTER INSERT OR UPDATE OR DELETE ON checkout_refundrequest
  FOR EACH ROW EXECUTE FUNCTION stablebill_page_news_of_invoice();
CREATE TRIGGER page_news AFTER INSERT OR UPDATE OR DELETE ON wallets_transfer
  FOR EACH ROW EXECUTE FUNCTION stablebill_page_news_transfer();
CREATE TRIGGER page_news AFTER UPDATE ON merchants_merchant
  FOR EACH ROW
  WHEN ((OLD.name, OLD.logo, OLD.brand_colour) IS DISTINCT FROM
        (NEW.name, NEW.logo, NEW.brand_colour))
  EXECUTE FUNCTION stablebill_page_news_named('m');
CREATE TRIGGER page_news AFTER UPDATE OR DELETE ON customers_customer
  FOR EACH ROW EXECUTE FUNCTION stablebill_page_news_named('c');
CREATE TRIGGER page_news AFTER INSERT OR UPDATE OR DELETE ON wallets_asset
  FOR EACH ROW EXECUTE FUNCTION stablebill_page_news_everything();
CREATE TRIGGER page_news AFTER INSERT OR DELETE ON wallets_network
  FOR EACH ROW EXECUTE FUNCTION stablebill_page_news_everything();
CREATE TRIGGER page_news_settings AFTER UPDATE ON wallets_network
  FOR EACH ROW
  WHEN ((to_jsonb(OLD) - ARRAY['rpc_ok', 'rpc_error', 'rpc_checked_at', 'watch_halted',
                               'round_token', 'round_lease_until', 'round_queued_until'])
        IS DISTINCT FROM
        (to_jsonb(NEW) - ARRAY['rpc_ok', 'rpc_error', 'rpc_checked_at', 'watch_halted',
                               'round_token', 'round_lease_until', 'round_queued_until']))
  EXECUTE FUNCTION stablebill_page_news_everything();
""" + "".join(
    f"CREATE TRIGGER page_news_truncate AFTER TRUNCATE ON {table}"
    " FOR EACH STATEMENT EXECUTE FUNCTION stablebill_page_news_everything();\n"
    for table in TRIGGERED
)

BACKWARD = (
    "".join(
        f"DROP TRIGGER IF EXISTS page_news ON {table};\n"
        f"DROP TRIGGER IF EXISTS page_news_truncate ON {table};\n"
        for table in TRIGGERED
    )
    + "DROP TRIGGER IF EXISTS page_news_settings ON wallets_network;\n"
    + "".join(
        f"DROP FUNCTION IF EXISTS stablebill_page_news_{name}();\n"
        for name in ("invoice", "of_invoice", "transfer", "named", "everything")
    )
)


def _run(schema_editor, sql: str) -> None:
    if schema_editor.connection.vendor == "postgresql":
        with schema_editor.connection.cursor() as cursor:
            cursor.execute(sql)


def forward(apps, schema_editor):
    _run(schema_editor, FORWARD)


def backward(apps, schema_editor):
    _run(schema_editor, BACKWARD)


class Migration(migrations.Migration):
    dependencies = [
        ("checkout", "0005_payment_holds"),
        ("invoices", "0012_event_merchant"),
        ("customers", "0003_document_billing_address"),
        ("merchants", "0006_document_seller_details"),
        ("wallets", "0011_forwarder_wallets_and_claims"),
    ]
    operations = [migrations.RunPython(forward, backward)]
