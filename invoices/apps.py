from typing import Any

from django.apps import AppConfig
from django.db import connections
from django.db.models.signals import post_migrate


def _reinstall_status_count_triggers(using: str = "default", **kwargs: Any) -> None:
    # SQLite drops a table's triggers when a migration rebuilds it (most ALTERs there do):
    # put them back after every migrate. Nothing changed the rows in between, so the counts
    # still hold. PostgreSQL keeps its triggers through ALTER TABLE.
    connection = connections[using]
    if connection.vendor != "sqlite":
        return
    tables = set(connection.introspection.table_names())
    if {"invoices_invoice", "invoices_invoicestatuscount"} <= tables:
        from invoices import status_counts

        status_counts.install(connection)


class InvoicesConfig(AppConfig):
    name = "invoices"

    def ready(self) -> None:
        # Infrastructure, not domain flow: the schema's own upkeep after migrate.
        post_migrate.connect(_reinstall_status_count_triggers, sender=self)
