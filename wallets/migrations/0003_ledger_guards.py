"""The ledger's invariants in PostgreSQL itself, so no code path (or psql session) can break them.

- Entries and transactions are append-only: UPDATE and DELETE raise.
- Within each transaction, every currency's legs sum to zero: a deferred constraint trigger
  checks at commit, after all legs of the posting are in.
SQLite has no such triggers; there the model guard and ledger_post's own check hold the line.
"""

from django.db import migrations

FORWARD = """
CREATE FUNCTION stablebill_ledger_append_only() RETURNS trigger AS $$
BEGIN
    RAISE EXCEPTION 'ledger rows are append-only (% on %)', TG_OP, TG_TABLE_NAME
        USING ERRCODE = 'integrity_constraint_violation';
END;
$$ LANGUAGE plpgsql;

CREATE TRIGGER ledgerentry_append_only BEFORE UPDATE OR DELETE ON wallets_ledgerentry
    FOR EACH ROW EXECUTE FUNCTION stablebill_ledger_append_only();
CREATE TRIGGER ledgertransaction_append_only BEFORE UPDATE OR DELETE ON wallets_ledgertransaction
    FOR EACH ROW EXECUTE FUNCTION stablebill_ledger_append_only();

CREATE FUNCTION stablebill_ledger_balanced() RETURNS trigger AS $$
DECLARE
    unbalanced text;
BEGIN
    SELECT currency INTO unbalanced FROM wallets_ledgerentry
        WHERE transaction_id = NEW.transaction_id
        GROUP BY currency HAVING SUM(amount) <> 0 LIMIT 1;
    IF unbalanced IS NOT NULL THEN
        RAISE EXCEPTION 'ledger transaction % does not sum to zero in %', NEW.transaction_id, unbalanced
            USING ERRCODE = 'integrity_constraint_violation';
    END IF;
    RETURN NULL;
END;
$$ LANGUAGE plpgsql;

CREATE CONSTRAINT TRIGGER ledgerentry_balanced AFTER INSERT ON wallets_ledgerentry
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION stablebill_ledger_balanced();
"""

BACKWARD = """
DROP TRIGGER IF EXISTS ledgerentry_balanced ON wallets_ledgerentry;
DROP TRIGGER IF EXISTS ledgerentry_append_only ON wallets_ledgerentry;
DROP TRIGGER IF EXISTS ledgertransaction_append_only ON wallets_ledgertransaction;
DROP FUNCTION IF EXISTS stablebill_ledger_balanced();
DROP FUNCTION IF EXISTS stablebill_ledger_append_only();
"""


def _run(schema_editor, sql: str) -> None:
    # A plain cursor without params, so psycopg leaves the % of RAISE formats alone.
    if schema_editor.connection.vendor == "postgresql":
        with schema_editor.connection.cursor() as cursor:
            cursor.execute(sql)


def forward(apps, schema_editor):
    _run(schema_editor, FORWARD)


def backward(apps, schema_editor):
    _run(schema_editor, BACKWARD)


class Migration(migrations.Migration):
    dependencies = [("wallets", "0002_seed_networks")]
    operations = [migrations.RunPython(forward, backward)]
