"""Exact amounts on every database.

SQLite has no exact numeric type: a `DecimalField` column there has NUMERIC affinity, so a value
that does not fit a 64-bit integer is stored as a float (12345678901234567891 wei comes back as
12345678901234600000) and 18-decimal ledger amounts keep 15 significant digits. `AmountField`
stays `numeric(p, s)` on PostgreSQL, where sums, constraints and comparisons are exact in the
database, and stores a fixed-width TEXT on SQLite whose string order is the numeric order:

    non-negative:  the digits zero-padded to (max_digits - decimal_places), then "." and the
                   decimals:                    5.25 at (8, 2) -> "000005.25"
    negative:      "-" and the nines' complement of the same digits, so a larger magnitude
                   sorts first and every negative sorts before every non-negative ("-" < "0"):
                                               -5.25 at (8, 2) -> "-999994.74"

Equality, `<`, `>=`, ORDER BY and the CHECK constraints therefore work on SQLite as they do on
PostgreSQL. Arithmetic in SQL does not: SQLite's SUM() over text is a float sum. Totals go
through `exact_sum` / `exact_totals`, which sum in the database on PostgreSQL and in Python
(exact Decimal) on SQLite, and a float reaching `from_db_value` (what SQLite's SUM returns)
raises instead of being rounded into the books.
"""

import decimal
import re
from collections.abc import Iterable, Sequence
from decimal import Decimal
from typing import Any

from django.db import connections, models
from django.db.models import Count, QuerySet, Sum

# Enough for 78-digit base units and 18-decimal amounts beside them, with room for sums:
# Python's default 28 significant digits would round them silently.
PRECISION = 160
decimal.DefaultContext.prec = PRECISION
decimal.getcontext().prec = PRECISION


class InexactAmount(TypeError):
    """A float reached an exact amount: an SQL aggregate on SQLite, or a row stored as REAL."""


def _sqlite(connection: Any) -> bool:
    return connection.vendor == "sqlite"


class AmountField(models.DecimalField):
    description = "Exact decimal amount (TEXT on SQLite, numeric elsewhere)"

    def get_internal_type(self) -> str:
        # Not "DecimalField": Django's SQLite layer would read the column through a float
        # (create_decimal_from_float) and CAST decimal expressions to NUMERIC, both lossy.
        return "AmountField"

    def db_type(self, connection: Any) -> str:
        if _sqlite(connection):
            return "text"
        data = self.db_type_parameters(connection)
        column_type = connection.data_types["DecimalField"]
        return column_type(data) if callable(column_type) else column_type % data

    def rel_db_type(self, connection: Any) -> str:
        return self.db_type(connection)

    def cast_db_type(self, connection: Any) -> str:
        return self.db_type(connection)

    @property
    def _int_digits(self) -> int:
        return int(self.max_digits) - int(self.decimal_places)

    def encode(self, value: Decimal) -> str:
        """The sortable TEXT form of `value` (see the module docstring)."""
        places = int(self.decimal_places)
        with decimal.localcontext(prec=PRECISION):
            # Rounded to the column's scale the way PostgreSQL's numeric(p, s) rounds.
            exact = value.quantize(Decimal(1).scaleb(-places), rounding=decimal.ROUND_HALF_UP)
        sign, digits, _ = exact.as_tuple()
        text = "".join(map(str, digits)).rjust(places + 1, "0")
        whole, fraction = text[: len(text) - places], text[len(text) - places :]
        if len(whole.lstrip("0")) > self._int_digits:
            raise ValueError(f"{value} does not fit {self.max_digits} digits.")
        body = whole.rjust(self._int_digits, "0") + ("." + fraction if places else "")
        if sign and exact != 0:
            return "-" + body.translate(_NINES)
        return body

    def decode(self, text: str) -> Decimal:
        if text.startswith("-") and _CANONICAL.fullmatch(text[1:]):
            return -Decimal(text[1:].translate(_NINES))
        return Decimal(text)

    def get_db_prep_value(self, value: Any, connection: Any, prepared: bool = False) -> Any:
        if not _sqlite(connection):
            return super().get_db_prep_value(value, connection, prepared)
        if not prepared:
            value = self.get_prep_value(value)
        if value is None or hasattr(value, "as_sql"):
            return value
        return self.encode(self.to_python(value))

    def from_db_value(self, value: Any, expression: Any, connection: Any) -> Decimal | None:
        if value is None or isinstance(value, Decimal):
            return value
        if isinstance(value, float):
            raise InexactAmount(
                f"{value!r} came back as a float: sum amounts with exact_sum/exact_totals."
            )
        if isinstance(value, int):
            return Decimal(value)
        return self.decode(str(value))


_NINES = str.maketrans("0123456789", "9876543210")
_CANONICAL = re.compile(r"^\d+(\.\d+)?$")


def is_canonical(field: AmountField, stored: object) -> bool:
    """Whether a raw SQLite value is the exact TEXT form `field` writes (ledger_check uses
    this to find rows rounded by an older schema or written around the model)."""
    if not isinstance(stored, str):
        return False
    try:
        return field.encode(field.decode(stored)) == stored
    except (ValueError, decimal.InvalidOperation):
        return False


def exact_sum(queryset: QuerySet, field: str) -> Decimal:
    """The exact total of `field` over `queryset`: in the database where it is exact."""
    if not _sqlite(connections[queryset.db]):
        return queryset.aggregate(total=Sum(field))["total"] or Decimal(0)
    with decimal.localcontext(prec=PRECISION):
        return sum(queryset.values_list(field, flat=True).iterator(), Decimal(0))


def exact_totals(queryset: QuerySet, by: Sequence[str], field: str) -> list[dict[str, Any]]:
    """Grouped totals: one dict per group with the `by` keys, "total" and "n" (row count),
    ordered by the keys."""
    rows = exact_totals_query(queryset, by, field)
    grouped = not _sqlite(connections[queryset.db])
    return exact_totals_from_rows(rows if grouped else rows.iterator(), by, grouped=grouped)


def exact_totals_query(queryset: QuerySet, by: Sequence[str], field: str) -> QuerySet:
    """What exact_totals reads: the groups' sums where the database sums exactly, else each
    row's keys and amount (SQLite sums text amounts as floats), for exact_totals_from_rows."""
    if not _sqlite(connections[queryset.db]):
        return (
            queryset.order_by()
            .values_list(*by)
            .annotate(total=Sum(field), n=Count("pk"))
            .order_by(*by)
        )
    return queryset.order_by().values_list(*by, field)


def exact_totals_from_rows(
    rows: Iterable[Sequence[Any]], by: Sequence[str], *, grouped: bool
) -> list[dict[str, Any]]:
    """exact_totals' dicts from the rows of exact_totals_query (`grouped`: the database's)."""
    if grouped:
        return [
            {**dict(zip(by, keys, strict=True)), "total": total, "n": n} for *keys, total, n in rows
        ]
    groups: dict[tuple, dict[str, Any]] = {}
    with decimal.localcontext(prec=PRECISION):
        for *keys, amount in rows:
            group = groups.setdefault(
                tuple(keys), {**dict(zip(by, keys, strict=True)), "total": Decimal(0), "n": 0}
            )
            group["total"] += amount or Decimal(0)
            group["n"] += 1
    return [groups[key] for key in sorted(groups, key=_sort_key)]


def _sort_key(keys: tuple) -> tuple:
    return tuple((value is None, value) for value in keys)


def canonicalize_sqlite(apps: Any, schema_editor: Any, fields: Sequence[tuple[str, str]]) -> None:
    """Rewrite the ("app_label.Model", field) values in their exact TEXT form after a
    column became an AmountField on SQLite (the table copy keeps whatever was there: integers
    as "5", floats as "1.2e+19"). Raw SQL: ledger rows are append-only for the ORM."""
    connection = schema_editor.connection
    if not _sqlite(connection):
        return
    for model_label, field_name in fields:
        model = apps.get_model(model_label)
        field = model._meta.get_field(field_name)
        table, column = model._meta.db_table, field.column
        encoder = AmountField(max_digits=field.max_digits, decimal_places=field.decimal_places)
        with connection.cursor() as cursor:
            cursor.execute(f'SELECT rowid, "{column}" FROM "{table}"')  # noqa: S608
            rows = cursor.fetchall()
            for rowid, raw in rows:
                if raw is None:
                    continue
                value = Decimal(repr(raw)) if isinstance(raw, float) else Decimal(str(raw))
                with decimal.localcontext(prec=PRECISION):
                    value = value.quantize(Decimal(1).scaleb(-int(field.decimal_places)))
                cursor.execute(
                    f'UPDATE "{table}" SET "{column}" = %s WHERE rowid = %s',  # noqa: S608
                    [encoder.encode(value), rowid],
                )


def amount_storage_faults(*, limit: int = 100) -> list[str]:
    """Amounts SQLite holds in another form than the exact TEXT the field writes: a row
    rounded by an older schema, or written around the ORM. Empty on PostgreSQL, whose
    numeric columns cannot hold anything else."""
    from django.apps import apps
    from django.db import connection

    if not _sqlite(connection):
        return []
    faults: list[str] = []
    for model in apps.get_models():
        for field in model._meta.concrete_fields:
            if not isinstance(field, AmountField):
                continue
            table, column = model._meta.db_table, field.column
            with connection.cursor() as cursor:
                cursor.execute(
                    f'SELECT rowid, "{column}" FROM "{table}" WHERE "{column}" IS NOT NULL'  # noqa: S608
                )
                for rowid, raw in cursor.fetchall():
                    if not is_canonical(field, raw):
                        faults.append(f"{table}.{column} row {rowid}: stored {raw!r}")
                        if len(faults) >= limit:
                            return faults
    return faults
