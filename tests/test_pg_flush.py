"""tests/pg_flush.py: the flush after a transactional test empties every table, ledger
included, while the ledger's guards keep refusing deletes everywhere else."""

import pytest
from django.core.management import call_command
from django.core.management.color import no_style
from django.db import IntegrityError, InternalError, connection, transaction

from tests.conftest import require_postgres
from tests.factories import MerchantFactory, make_invoice
from tests.wallets.test_ledger import pay
from wallets.models import LedgerEntry, LedgerTransaction


@pytest.mark.django_db(transaction=True)
def test_the_flush_empties_the_guarded_ledger_and_the_guard_stays(acme):
    require_postgres()
    make_invoice(acme, issue=True)
    pay(acme, "payment:1")
    assert LedgerEntry.objects.exists()

    tables = connection.introspection.django_table_names(only_existing=True)
    statements = connection.ops.sql_flush(no_style(), tables)
    assert statements[0] == "SET LOCAL session_replication_role = replica;"
    assert len(statements) == 1 + len(tables)

    call_command("flush", interactive=False, verbosity=0, inhibit_post_migrate=True)

    with connection.cursor() as cursor:
        for table in tables:
            cursor.execute(f'SELECT count(*) FROM "{table}"')
            assert cursor.fetchone()[0] == 0, table
        cursor.execute("SHOW session_replication_role")
        assert cursor.fetchone()[0] == "origin"

    # Outside the flush's own transaction, the database still refuses to delete entries.
    posting = pay(MerchantFactory(name="After the flush"), "payment:2")
    with (
        pytest.raises((IntegrityError, InternalError)),
        transaction.atomic(),
        connection.cursor() as cursor,
    ):
        cursor.execute(
            f"DELETE FROM {LedgerEntry._meta.db_table} WHERE transaction_id = %s", [posting.pk]
        )
    assert LedgerTransaction.objects.filter(pk=posting.pk).get().entries.count() == 5
