"""Invoice counts per merchant and status, kept by the database itself.

The dashboard and the invoice list show how many invoices a merchant has in each status;
counting them means reading a history that only grows. Triggers on the invoice table keep
`InvoiceStatusCount` rows instead, on every insert, status change and delete, whatever wrote
the row (services, admin, bulk loads, psql), so they cannot drift from the invoices.

PostgreSQL: statement-level triggers over the transition tables (one upsert per merchant
and status a statement touches, so a bulk insert of 100,000 rows costs one), locking the
count rows in a fixed order so two transactions never wait on each other in a circle.
SQLite: row triggers. SQLite drops a table's triggers when a migration rebuilds the table,
so `install` runs again after every migrate (invoices.apps); it is idempotent.
"""

from typing import Any

POSTGRES = """
CREATE OR REPLACE FUNCTION stablebill_invoice_status_count() RETURNS trigger AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        INSERT INTO invoices_invoicestatuscount (merchant_id, status, n)
            SELECT merchant_id, status, COUNT(*) FROM new_rows
            GROUP BY merchant_id, status ORDER BY merchant_id, status
            ON CONFLICT (merchant_id, status)
            DO UPDATE SET n = invoices_invoicestatuscount.n + EXCLUDED.n;
    ELSIF TG_OP = 'UPDATE' THEN
        INSERT INTO invoices_invoicestatuscount (merchant_id, status, n)
            SELECT merchant_id, status, SUM(d) FROM (
                SELECT merchant_id, status, 1 AS d FROM new_rows
                UNION ALL
                SELECT merchant_id, status, -1 AS d FROM old_rows
            ) AS changes
            GROUP BY merchant_id, status HAVING SUM(d) <> 0 ORDER BY merchant_id, status
            ON CONFLICT (merchant_id, status)
            DO UPDATE SET n = invoices_invoicestatuscount.n + EXCLUDED.n;
    ELSE
        -- An UPDATE, never an insert: when a merchant is deleted its count rows may go
        -- first, and a new one would outlive the merchant.
        UPDATE invoices_invoicestatuscount AS c SET n = c.n - gone.n
            FROM (SELECT merchant_id, status, COUNT(*) AS n FROM old_rows
                  GROUP BY merchant_id, status) AS gone
            WHERE c.merchant_id = gone.merchant_id AND c.status = gone.status;
    END IF;
    RETURN NULL;
END;
$$ LANGUAGE plpgsql;

DROP TRIGGER IF EXISTS invoice_status_count_insert ON invoices_invoice;
DROP TRIGGER IF EXISTS invoice_status_count_update ON invoices_invoice;
DROP TRIGGER IF EXISTS invoice_status_count_delete ON invoices_invoice;
CREATE TRIGGER invoice_status_count_insert AFTER INSERT ON invoices_invoice
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION stablebill_invoice_status_count();
CREATE TRIGGER invoice_status_count_update AFTER UPDATE ON invoices_invoice
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION stablebill_invoice_status_count();
CREATE TRIGGER invoice_status_count_delete AFTER DELETE ON invoices_invoice
    REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION stablebill_invoice_status_count();
"""

POSTGRES_DROP = """
DROP TRIGGER IF EXISTS invoice_status_count_insert ON invoices_invoice;
DROP TRIGGER IF EXISTS invoice_status_count_update ON invoices_invoice;
DROP TRIGGER IF EXISTS invoice_status_count_delete ON invoices_invoice;
DROP FUNCTION IF EXISTS stablebill_invoice_status_count();
"""

SQLITE = (
    """
CREATE TRIGGER IF NOT EXISTS invoice_status_count_insert AFTER INSERT ON invoices_invoice
BEGIN
    INSERT INTO invoices_invoicestatuscount (merchant_id, status, n)
        VALUES (NEW.merchant_id, NEW.status, 1)
        ON CONFLICT (merchant_id, status) DO UPDATE SET n = n + 1;
END
""",
    """
CREATE TRIGGER IF NOT EXISTS invoice_status_count_update
AFTER UPDATE OF status, merchant_id ON invoices_invoice
WHEN OLD.status <> NEW.status OR OLD.merchant_id <> NEW.merchant_id
BEGIN
    UPDATE invoices_invoicestatuscount SET n = n - 1
        WHERE merchant_id = OLD.merchant_id AND status = OLD.status;
    INSERT INTO invoices_invoicestatuscount (merchant_id, status, n)
        VALUES (NEW.merchant_id, NEW.status, 1)
        ON CONFLICT (merchant_id, status) DO UPDATE SET n = n + 1;
END
""",
    """
CREATE TRIGGER IF NOT EXISTS invoice_status_count_delete AFTER DELETE ON invoices_invoice
BEGIN
    UPDATE invoices_invoicestatuscount SET n = n - 1
        WHERE merchant_id = OLD.merchant_id AND status = OLD.status;
END
""",
)

SQLITE_DROP = (
    "DROP TRIGGER IF EXISTS invoice_status_count_insert",
    "DROP TRIGGER IF EXISTS invoice_status_count_update",
    "DROP TRIGGER IF EXISTS invoice_status_count_delete",
)

# The list's search: the start of each of these, case-insensitively (Django's istartswith is
# UPPER(column) LIKE UPPER(%s)); text_pattern_ops so LIKE 'x%' uses them under any collation.
SEARCH_INDEXES = {
    "invoice_reference_search_idx": "reference",
    "invoice_foreign_search_idx": "foreign_id",
    "invoice_tracking_search_idx": "tracking_id",
}


def _execute(connection: Any, statements: list[str] | tuple[str, ...]) -> None:
    # A plain cursor without params, so nothing reads the SQL's % signs as placeholders.
    with connection.cursor() as cursor:
        for statement in statements:
            cursor.execute(statement)


def install(connection: Any) -> None:
    """The triggers (idempotent; PostgreSQL and SQLite)."""
    if connection.vendor == "postgresql":
        _execute(connection, [POSTGRES])
    elif connection.vendor == "sqlite":
        _execute(connection, SQLITE)


def uninstall(connection: Any) -> None:
    if connection.vendor == "postgresql":
        _execute(connection, [POSTGRES_DROP])
    elif connection.vendor == "sqlite":
        _execute(connection, SQLITE_DROP)


def recount(connection: Any) -> None:
    """Every count from the invoices themselves (the migration's backfill; a repair)."""
    _execute(
        connection,
        [
            "DELETE FROM invoices_invoicestatuscount",
            "INSERT INTO invoices_invoicestatuscount (merchant_id, status, n) "
            "SELECT merchant_id, status, COUNT(*) FROM invoices_invoice "
            "GROUP BY merchant_id, status",
        ],
    )


def create_search_indexes(connection: Any) -> None:
    if connection.vendor != "postgresql":
        return
    _execute(
        connection,
        [
            f"CREATE INDEX IF NOT EXISTS {name} ON invoices_invoice "
            f"(merchant_id, UPPER({column}) text_pattern_ops)"
            for name, column in SEARCH_INDEXES.items()
        ],
    )


def drop_search_indexes(connection: Any) -> None:
    if connection.vendor != "postgresql":
        return
    _execute(connection, [f"DROP INDEX IF EXISTS {name}" for name in SEARCH_INDEXES])
