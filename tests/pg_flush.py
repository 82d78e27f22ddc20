"""After each transactional test, PostgreSQL's test database is emptied with DELETE, not
TRUNCATE.

Django's flush truncates every table at once, and PostgreSQL then makes new files for each of
some fifty tables and their indexes: about 0.2 s of the server's time after each of the
suite's ~80 transactional tests, on the two cores the suite has. By then the tables hold a
few rows; deleting them takes milliseconds. Row triggers would refuse or announce those
deletes (the ledger's append-only guard, the page-news NOTIFY) and foreign keys would want an
order, so the transaction runs with session_replication_role = replica, which fires neither.
That takes a superuser (the test databases here and in CI are the postgres user's); without
one, or for a flush that resets sequences or cascades, Django's TRUNCATE stays.
"""

from __future__ import annotations


def install() -> None:
    from django.db.backends.postgresql.operations import DatabaseOperations

    truncate = DatabaseOperations.sql_flush

    def sql_flush(self, style, tables, *, reset_sequences=False, allow_cascade=False):
        if not tables or reset_sequences or allow_cascade or not _superuser(self.connection):
            return truncate(
                self, style, tables, reset_sequences=reset_sequences, allow_cascade=allow_cascade
            )
        return ["SET LOCAL session_replication_role = replica;"] + [
            f"DELETE FROM {self.quote_name(table)};" for table in tables
        ]

    DatabaseOperations.sql_flush = sql_flush


def _superuser(connection) -> bool:
    known = getattr(connection, "_stablebill_superuser", None)
    if known is None:
        with connection.cursor() as cursor:
            cursor.execute("SELECT rolsuper FROM pg_roles WHERE rolname = current_user")
            row = cursor.fetchone()
        known = connection._stablebill_superuser = bool(row and row[0])
    return known
