"""The lake's tables as the factory's code reads and changes them: rows and dicts from SQL, an Arrow table
registered for the length of a block, deletes by key, the engine's threads for a block. The stages, the loop
and the trainers go through these (and `Lake`'s own methods), never through the DuckDB connection.

    from vlfactory.stores import tables
    rows = tables.dicts(lake, "SELECT problem_id, answer FROM lake.problems WHERE source = ?", ["tabmwp"])
    with tables.registered(lake, "_ids", pa.table({"v": ids})):
        n = tables.rows(lake, "SELECT count(*) FROM lake.images WHERE image_id IN (SELECT v FROM _ids)")[0][0]
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import TYPE_CHECKING

from vlfactory.stores.lake import DB, Lake

if TYPE_CHECKING:
    import pyarrow as pa


def rows(lake: Lake, sql: str, params: list | dict | None = None) -> list[tuple]:
    """The rows of one statement, as tuples (the factory's own SQL: no `table@version`, no read-only check)."""
    return lake.con.execute(sql, params).fetchall() if params else lake.con.execute(sql).fetchall()


def one(lake: Lake, sql: str, params: list | dict | None = None) -> tuple | None:
    """The first row of one statement, or None."""
    return lake.con.execute(sql, params).fetchone() if params else lake.con.execute(sql).fetchone()


def dicts(lake: Lake, sql: str, params: list | dict | None = None) -> list[dict]:
    """The rows of one statement, each a dict by column name."""
    cursor = lake.con.execute(sql, params) if params else lake.con.execute(sql)
    cols = [d[0] for d in cursor.description]
    return [dict(zip(cols, r)) for r in cursor.fetchall()]


@contextlib.contextmanager
def registered(lake: Lake, name: str, table: pa.Table) -> Iterator[str]:
    """`table` readable by SQL as `name` inside the block (ids to join against, a batch to insert from)."""
    lake.con.register(name, table)
    try:
        yield name
    finally:
        lake.con.unregister(name)


def delete_in(lake: Lake, table: str, key: str, values: list[str], where: str = "", params: list | None = None) -> int:
    """Delete the rows of `table` whose `key` is one of `values` (and `where`, with `params`), inside the
    caller's transaction; how many went."""
    if not values:
        return 0
    import pyarrow as pa

    with registered(lake, "_delete_keys", pa.table({"v": pa.array(values, pa.string())})):
        return lake.con.execute(f'DELETE FROM {DB}.{table} WHERE "{key}" IN (SELECT v FROM _delete_keys)'
                                f"{f' AND ({where})' if where else ''}", params or []).fetchone()[0]


@contextlib.contextmanager
def threads(lake: Lake, n: int) -> Iterator[None]:
    """DuckDB's worker threads set to `n` inside the block (small statements pay more in hand-offs than
    they gain), the setting before it restored after."""
    before = lake.con.execute("SELECT current_setting('threads')").fetchone()[0]
    lake.con.execute(f"SET threads = {int(n)}")
    try:
        yield
    finally:
        lake.con.execute(f"SET threads = {int(before)}")


def insert_row(lake: Lake, table: str, row: dict) -> None:
    """One row into `table` (inside the caller's transaction), its values bound, never spliced."""
    cols = ", ".join(f'"{c}"' for c in row)
    lake.con.execute(f"INSERT INTO {DB}.{table} ({cols}) VALUES ({', '.join('?' * len(row))})", list(row.values()))


def update(lake: Lake, table: str, key: str, value: str, changes: dict) -> int:
    """Set these columns of the row whose `key` is `value` (inside the caller's transaction); rows changed."""
    sets = ", ".join(f'"{c}" = ?' for c in changes)
    return lake.con.execute(f'UPDATE {DB}.{table} SET {sets} WHERE "{key}" = ?',
                            [*changes.values(), value]).fetchone()[0]


def columns(lake: Lake, sql: str) -> dict[str, str]:
    """The columns a query would return, by name, with their types (the query is planned, not run)."""
    rel = lake.con.sql(f"SELECT * FROM ({sql}) LIMIT 0")
    return dict(zip(rel.columns, (str(t) for t in rel.types)))


def keep(lake: Lake, name: str, sql: str, index: str | None = None) -> str:
    """A query's rows kept as the in-memory table `name` (`memory.main.x`: never in the lake), for paging and
    counting without reading the lake again; with `index`, an ART index on that column (point reads by it);
    returns `name`."""
    lake.con.execute(f"CREATE TABLE {name} AS {sql}")
    if index:
        lake.con.execute(f"CREATE INDEX {name.rsplit('.', 1)[-1]}_{index} ON {name} ({index})")
    return name


@contextlib.contextmanager
def own_cursor(lake: Lake, timeout_s: float | None = None) -> Iterator[Lake]:
    """This lake on a cursor of its own, closed after the block (DuckDB runs cursors side by side: one per
    request thread); with `timeout_s`, a query still running that long after the block starts is interrupted."""
    import copy
    import threading

    mine = copy.copy(lake)
    mine.con = lake.con.cursor()
    timer = threading.Timer(timeout_s, mine.con.interrupt) if timeout_s else None
    try:
        mine.con.execute(f"USE {DB}")
        if timer:
            timer.start()
        yield mine
    finally:
        if timer:
            timer.cancel()
        mine.con.close()
