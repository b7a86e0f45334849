"""How a report reads one version of the lake: a query's rows as dicts (none where a table came with a later
migration), the loop's iteration tags, and the tag before a version (reports/stats.py, evals.py,
keywords.py)."""

from __future__ import annotations

import re

from vlfactory.stores.lake import Lake, LakeError
from vlfactory.stores.sqltext import literal


def rows(lake: Lake, sql: str, params: list | None = None) -> list[dict]:
    """A query's rows as dicts; empty when a table it reads did not exist yet at that version."""
    try:
        rel = lake.query(sql, params)
    except LakeError as e:
        if "does not exist at version" in str(e):
            return []  # the table came with a later migration than the version
        raise
    return [dict(zip(rel.columns, r)) for r in rel.fetchall()]


def strings(values) -> str:
    """Strings as a DuckDB list literal, each quoted by `literal`: a query with a parameter bound makes DuckDB's
    Python module import pandas (0.5 s of a report), one with literals does not."""
    return "[" + ", ".join(literal(v) for v in values) + "]"


def iteration_tags(lake: Lake) -> list[tuple[str, int]]:
    """The loop's tags `iter1`, `iter2`, ... in order, with their snapshots."""
    tags = [(name, snap) for name, snap in lake.tags().items() if re.fullmatch(r"iter\d+", name)]
    return sorted(tags, key=lambda t: int(t[0][4:]))


def previous_tag(lake: Lake, snapshot: int) -> tuple[str, int] | None:
    """The latest tag strictly before a snapshot: what a version is compared against."""
    earlier = [(snap, name) for name, snap in lake.tags().items() if snap < snapshot]
    return (max(earlier)[1], max(earlier)[0]) if earlier else None
