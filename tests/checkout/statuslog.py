"""Every status change of payments and invoices, as the database saw it.

Database triggers write each change of `status` on checkout_payment and invoices_invoice to a
log table, whoever made it (a service, a stray `.update()`, a `save()`). Tests then compare
the changes against the transition tables without trusting the code under test to report
its own moves.
"""

from dataclasses import dataclass

from django.db import connection

TABLE = "test_status_log"
WATCHED = {"payment": "checkout_payment", "invoice": "invoices_invoice"}


@dataclass(frozen=True)
class Move:
    model: str
    pk: int
    old: str
    new: str


def install() -> None:
    """Create the log table and the triggers (inside the caller's transaction if any)."""
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute(
                f"CREATE TABLE {TABLE} (seq serial PRIMARY KEY, model text, obj bigint, "
                "old text, new text)"
            )
            cursor.execute(
                f"""CREATE FUNCTION {TABLE}_write() RETURNS trigger AS $$
                BEGIN
                  IF OLD.status <> NEW.status THEN
                    INSERT INTO {TABLE} (model, obj, old, new)
                    VALUES (TG_ARGV[0], NEW.id, OLD.status, NEW.status);
                  END IF;
                  RETURN NEW;
                END $$ LANGUAGE plpgsql"""
            )
            for model, table in WATCHED.items():
                cursor.execute(
                    f"CREATE TRIGGER {TABLE}_{model} AFTER UPDATE ON {table} FOR EACH ROW "
                    f"EXECUTE FUNCTION {TABLE}_write('{model}')"
                )
        else:
            cursor.execute(
                f"CREATE TABLE {TABLE} (seq INTEGER PRIMARY KEY AUTOINCREMENT, model TEXT, "
                "obj INTEGER, old TEXT, new TEXT)"
            )
            for model, table in WATCHED.items():
                cursor.execute(
                    f"CREATE TRIGGER {TABLE}_{model} AFTER UPDATE OF status ON {table} "
                    f"WHEN OLD.status <> NEW.status BEGIN "
                    f"INSERT INTO {TABLE} (model, obj, old, new) "
                    f"VALUES ('{model}', NEW.id, OLD.status, NEW.status); END"
                )


def uninstall() -> None:
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            for model, table in WATCHED.items():
                cursor.execute(f"DROP TRIGGER IF EXISTS {TABLE}_{model} ON {table}")
            cursor.execute(f"DROP FUNCTION IF EXISTS {TABLE}_write()")
        else:
            for model in WATCHED:
                cursor.execute(f"DROP TRIGGER IF EXISTS {TABLE}_{model}")
        cursor.execute(f"DROP TABLE IF EXISTS {TABLE}")


def moves(model: str | None = None, pk: int | None = None, *, after: int = 0) -> list[Move]:
    """The logged changes in order, optionally of one model or one row, after sequence `after`."""
    sql = f"SELECT model, obj, old, new FROM {TABLE} WHERE seq > %s"
    params: list = [after]
    if model is not None:
        sql += " AND model = %s"
        params.append(model)
    if pk is not None:
        sql += " AND obj = %s"
        params.append(pk)
    with connection.cursor() as cursor:
        cursor.execute(sql + " ORDER BY seq", params)
        return [Move(m, int(o), old, new) for m, o, old, new in cursor.fetchall()]


def last_seq() -> int:
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT COALESCE(MAX(seq), 0) FROM {TABLE}")
        return int(cursor.fetchone()[0])


def path(model: str, pk: int) -> list[str]:
    """The statuses one row went through: its first logged status, then each new one."""
    changes = moves(model, pk)
    return [changes[0].old, *(m.new for m in changes)] if changes else []
