"""Light rows for hot read paths: Core selects into named tuples.

Loading a page of ORM entities (identity map, instance state, attribute
instrumentation) costs several times what the same columns cost as plain tuples. A
light row has the mapped attribute names of its model (`row.id`, `row.display_name`),
so the GraphQL types' `from_row` accept either; it is read-only and never belongs to a
session. Secrets (`users.password_hash`) are never selected into one.
"""
from __future__ import annotations

from collections import namedtuple
from collections.abc import Sequence
from functools import cache
from typing import Any

from sqlalchemy import FromClause

from db import models

_SECRET = {"password_hash"}


@cache
def keys(model: type[models.Base]) -> tuple[str, ...]:
    """The model's column attribute names, in table order, secrets left out."""
    return tuple(c.key for c in model.__table__.columns if c.key not in _SECRET)


@cache
def row_type(model: type[models.Base]) -> Any:
    """The named tuple standing for one row of `model`."""
    return namedtuple(f"{model.__name__}Row", keys(model))


def columns(model: type[models.Base], table: FromClause | None = None) -> list[Any]:
    """The columns of `row_type(model)` in its field order, from `table` (an alias of
    the model's table) or the table itself."""
    source = table if table is not None else model.__table__
    return [source.c[key] for key in keys(model)]


def split(row: Sequence[Any], *models_: type[models.Base]) -> list[Any]:
    """One joined result row cut into consecutive light rows of `models_` (None for an
    outer-joined model whose primary key came back NULL); the remaining values follow."""
    out: list[Any] = []
    start = 0
    for model in models_:
        end = start + len(keys(model))
        values = row[start:end]
        out.append(None if values[0] is None else row_type(model)._make(values))
        start = end
    out.extend(row[start:])
    return out
