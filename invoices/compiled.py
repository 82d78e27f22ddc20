"""Querysets compiled to SQL once per process, then run with each request's values.

Building and compiling a queryset cost Django far more than the database takes to run the
few-row queries of the merchant pages: of the dashboard's ~13.5 ms, its four figures'
querysets took ~6 ms to build and compile and ~1 ms to run. Their shape never changes,
only the merchant and the dates: a `Compiled` builds its queryset once with stand-in
values, keeps the SQL, finds the stand-ins among its parameters, and from then on runs
that SQL with the request's values and Django's own converters for its columns (SQLite
returns dates and amounts as text). The queryset stays the one source of the SQL, the
merchant's filter included: nothing here is written by hand.
"""

import datetime as dt
import threading
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from django.db import DEFAULT_DB_ALIAS, connections
from django.db.models import Model, QuerySet

# Stand-ins no real value equals: a merchant id past any sequence, dates before the project.
STAND_IN_ID = 918_273_645_546_372_819
STAND_IN_DATETIME = dt.datetime(1901, 2, 3, 4, 5, 6, 789_012, tzinfo=dt.UTC)
STAND_IN_DATE = dt.date(1902, 3, 4)


def _adapt(connection: Any, value: object) -> object:
    """A value as Django binds it for a column of its type (SQLite binds dates as text)."""
    if isinstance(value, dt.datetime):
        return connection.ops.adapt_datetimefield_value(value)
    if isinstance(value, dt.date):
        return connection.ops.adapt_datefield_value(value)
    return value


class Compiled:
    """`build(**stand_ins)` compiled once per database; `rows(**values)` runs it.

    `build` must use each of its arguments as a plain value (a filter's or an expression's
    parameter): one used otherwise is not found among the parameters, and the first run
    says so rather than running a query with a stand-in left in it."""

    def __init__(self, build: Callable[..., QuerySet], **stand_ins: object) -> None:
        self._build = build
        self._stand_ins = stand_ins
        self._compiled: dict[str, tuple[Any, str, list, dict[str, list[int]]]] = {}
        self._lock = threading.Lock()

    def _compile(self, alias: str) -> tuple[Any, str, list, dict[str, list[int]]]:
        connection = connections[alias]
        compiler = self._build(**self._stand_ins).query.get_compiler(using=alias)
        sql, params = compiler.as_sql()
        params = list(params)
        slots: dict[str, list[int]] = {}
        for name, stand_in in self._stand_ins.items():
            bound = _adapt(connection, stand_in)
            slots[name] = [i for i, p in enumerate(params) if type(p) is type(bound) and p == bound]
            if not slots[name]:
                raise ValueError(f"{name} is not a parameter of the compiled query")
        return compiler, sql, params, slots

    def rows(self, *, using: str = DEFAULT_DB_ALIAS, **values: object) -> list[Sequence[Any]]:
        compiled = self._compiled.get(using)
        if compiled is None:
            with self._lock:
                compiled = self._compiled.get(using) or self._compile(using)
                self._compiled[using] = compiled
        compiler, sql, params, slots = compiled
        connection = connections[using]
        bound = list(params)
        for name, positions in slots.items():
            value = _adapt(connection, values[name])
            for i in positions:
                bound[i] = value
        with connection.cursor() as cursor:
            cursor.execute(sql, bound)
            fetched = cursor.fetchall()
        return list(compiler.results_iter([fetched]))


def fields_of(model: type[Model], prefix: str = "") -> list[str]:
    """Every concrete column of `model`, as values_list() names them from where it is joined."""
    return [prefix + f.attname for f in model._meta.concrete_fields]


def instances(
    rows: Sequence[Sequence[Any]],
    model: type[Model],
    related: Sequence[tuple[str, type[Model]]] = (),
    using: str = DEFAULT_DB_ALIAS,
) -> Iterator[Model]:
    """Model instances from rows of `fields_of(model)` followed by `fields_of(related_model,
    name + "__")` for each (name, related_model), as select_related() would have built them:
    a row whose related primary key is NULL (an outer join) sets that relation to None."""
    names = [f.attname for f in model._meta.concrete_fields]
    widths = [len(names)] + [len(m._meta.concrete_fields) for _, m in related]
    related_names = [[f.attname for f in m._meta.concrete_fields] for _, m in related]
    pk_positions = [
        [f.primary_key for f in m._meta.concrete_fields].index(True) for _, m in related
    ]
    for row in rows:
        obj = model.from_db(using, names, row[: widths[0]])
        start = widths[0]
        for (name, related_model), width, rnames, pk_at in zip(
            related, widths[1:], related_names, pk_positions, strict=True
        ):
            values = row[start : start + width]
            start += width
            other = None if values[pk_at] is None else related_model.from_db(using, rnames, values)
            setattr(obj, name, other)
        yield obj
