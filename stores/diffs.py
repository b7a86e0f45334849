"""Row diffs between two versions of a table: rows added, removed and changed, by the table's natural key.

    vlfactory diff iter1 iter2 --table sft
    vlfactory.diff("iter1", "iter2", table="rl").changed[0].after   # the changed columns' new values
    vlfactory.diff("iter1", "iter2")                                 # per table: rows added, removed, changed

Rows compare as a whole (multisets, as `Lake.differs` compares sets): a row in
both versions is unchanged. Of the rest, a key found once on each side is a
*changed* row, with the columns that differ and their values before and after;
every other row is *added* or *removed*. `run_id` and `created_at` say when a
row was written, not what it holds, so they are left out of the comparison
(unless part of the key): a set rewritten with the same content is no change.
Binary columns (image bytes) are left out too: their row's key is the bytes'
hash.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import duckdb

from vlfactory.stores.lake import DB, Lake, LakeError
from vlfactory.stores.sqltext import ident, literal

# Each table's natural key: what stays the same when a row's content changes.
KEYS = {
    "images": ("image_id",),
    "problems": ("problem_id",),
    "captions": ("caption_id",),
    "traces": ("trace_id",),
    "rollouts": ("rollout_id",),
    "grades": ("ref_table", "ref_id"),        # one current grade per sample; a regrade changes it in place
    "rejected": ("stage", "source", "ref_id"),
    "sft": ("problem_id", "from_id"),         # an example is a problem's sample; its text may be recleaned
    "rl": ("problem_id",),
    "prompts": ("prompt_hash",),
    "runs": ("run_id",),
    "tags": ("name", "snapshot_id"),
    "trainings": ("training_id",),
    "evals": ("eval_id",),
    "models": ("model_key",),
}
WRITTEN = ("run_id", "created_at")  # when a row was written, not what it holds


@dataclass


class Change:
    key: dict
    before: dict  # the changed columns only
    after: dict


@dataclass


class TableDiff:
    """Rows of `table` added, removed and changed from version A to B. The lists hold at most the `limit` the diff
    was asked for (in key order); the counts are whole."""

    table: str
    a: str
    b: str
    snapshot_a: int
    snapshot_b: int
    key: tuple[str, ...]
    compared: list[str]                        # the columns compared
    added: list[dict] = field(default_factory=list)
    removed: list[dict] = field(default_factory=list)
    changed: list[Change] = field(default_factory=list)
    n_added: int = 0
    n_removed: int = 0
    n_changed: int = 0
    unchanged: int = 0
    by_column: dict[str, int] = field(default_factory=dict)  # changed rows per column, most first
    columns_added: list[str] = field(default_factory=list)   # schema changes between the versions
    columns_removed: list[str] = field(default_factory=list)

    def line(self) -> str:
        cols = ", ".join(f"{c} {n}" for c, n in self.by_column.items())
        schema = "".join([f"; columns added: {', '.join(self.columns_added)}" if self.columns_added else "",
                          f"; columns removed: {', '.join(self.columns_removed)}" if self.columns_removed else ""])
        return (f"{self.table}: {self.a} (snapshot {self.snapshot_a}) -> {self.b} (snapshot {self.snapshot_b}), "
                f"by ({', '.join(self.key)}): +{self.n_added} added, -{self.n_removed} removed, "
                f"~{self.n_changed} changed{f' ({cols})' if cols else ''}, {self.unchanged} unchanged{schema}")


def _columns(lake: Lake, table: str, snapshot: int) -> dict[str, str] | None:
    """Column name -> type of a table at a snapshot (None: it did not exist then)."""
    try:
        rel = lake.con.sql(f"SELECT * FROM {DB}.{table} AT (VERSION => {int(snapshot)}) LIMIT 0")
    except duckdb.Error:
        return None
    return {c: str(t) for c, t in zip(rel.columns, rel.types)}


def _plan(lake: Lake, table: str, a: str | int, b: str | int, sa: int, sb: int) -> tuple[TableDiff, dict | None,
                                                                                    dict | None, str]:
    """The diff to fill (key, compared columns, schema changes), both versions' columns and the compared columns'
    SELECT list."""
    cols_a, cols_b = _columns(lake, table, sa), _columns(lake, table, sb)
    base = cols_b or cols_a
    if base is None:
        raise LakeError(f"{table} exists at neither snapshot {sa} nor {sb}")
    key = KEYS.get(table, (next(iter(base)),))  # a table of ours not listed leads with its id
    both = [c for c in base if (cols_a is None or c in cols_a) and (cols_b is None or c in cols_b)]
    compared = [c for c in both if c in key or (c not in WRITTEN and base[c] != "BLOB")]
    if missing := [k for k in key if k not in compared]:
        raise LakeError(f"{table} has no key column {missing[0]!r} at one of the versions")
    sel = ", ".join(f'"{c}"' for c in compared)
    out = TableDiff(table, str(a), str(b), sa, sb, key, compared,
                    columns_added=[c for c in (cols_b or {}) if cols_a is not None and c not in cols_a],
                    columns_removed=[c for c in (cols_a or {}) if cols_b is not None and c not in cols_b])
    return out, cols_a, cols_b, sel


def row_diff(lake: Lake, table: str, a: str | int, b: str | int = "latest", limit: int | None = None) -> TableDiff:
    """Rows of `table` added, removed and changed by key from version A to version B (tags or snapshot ids)."""
    if table not in lake.tables():
        raise LakeError(f"unknown table {table!r}; tables: {', '.join(lake.tables())}")
    sa, sb = lake.resolve(a), lake.resolve(b)
    out, cols_a, cols_b, sel = _plan(lake, table, a, b, sa, sb)
    key, compared = out.key, out.compared
    con = lake.con
    k = ", ".join(f'"{c}"' for c in key)

    def same(x: str, y: str) -> str:
        return " AND ".join(f'{x}."{c}" IS NOT DISTINCT FROM {y}."{c}"' for c in key)

    try:
        # Rows only in A and only in B, then their keys found exactly once on each side: the changed rows.
        side_a, side_b = _sides(lake, table, sa, sb, cols_a, cols_b, sel)
        con.execute(f"CREATE OR REPLACE TEMP TABLE _only_a AS ({side_a}) EXCEPT ALL ({side_b})")
        con.execute(f"CREATE OR REPLACE TEMP TABLE _only_b AS ({side_b}) EXCEPT ALL ({side_a})")
        con.execute(f"""CREATE OR REPLACE TEMP TABLE _keys AS
            (SELECT {k} FROM _only_a GROUP BY ALL HAVING count(*) = 1)
            INTERSECT (SELECT {k} FROM _only_b GROUP BY ALL HAVING count(*) = 1)""")
        cut = f" LIMIT {int(limit)}" if limit is not None else ""
        for side, name in (("_only_b", "added"), ("_only_a", "removed")):
            kept = f"FROM {side} x WHERE NOT EXISTS (SELECT 1 FROM _keys y WHERE {same('x', 'y')})"
            setattr(out, f"n_{name}", con.execute(f"SELECT count(*) {kept}").fetchone()[0])
            setattr(out, name, _dicts(con.sql(f"SELECT * {kept} ORDER BY {k}{cut}")))
        others = [c for c in compared if c not in key]
        flags = ", ".join(f"""CASE WHEN x."{c}" IS DISTINCT FROM y."{c}" THEN '{c}' END""" for c in others) or "NULL"
        con.execute(f"""CREATE OR REPLACE TEMP TABLE _changed AS
            SELECT {', '.join(f'x."{c}" AS "{c}"' for c in key)},
                   list_filter([{flags}], f -> f IS NOT NULL) AS _columns,
                   {", ".join(f'x."{c}" AS "a.{c}", y."{c}" AS "b.{c}"' for c in others) or "NULL AS _none"}
            FROM _only_a x JOIN _only_b y ON {same('x', 'y')} SEMI JOIN _keys z ON {same('x', 'z')}""")
        out.n_changed = con.execute("SELECT count(*) FROM _changed").fetchone()[0]
        out.by_column = dict(con.execute("SELECT c, count(*) AS n FROM (SELECT unnest(_columns) AS c FROM _changed) "
                                         "GROUP BY c ORDER BY n DESC, c").fetchall())
        for r in _dicts(con.sql(f"SELECT * FROM _changed ORDER BY {k}{cut}")):
            out.changed.append(Change({c: r[c] for c in key}, {c: r[f"a.{c}"] for c in r["_columns"]},
                                      {c: r[f"b.{c}"] for c in r["_columns"]}))
        total_b = lake.count(table, sb) if cols_b is not None else 0
    finally:
        for t in ("_changes", "_only_a", "_only_b", "_keys", "_changed"):
            con.execute(f"DROP TABLE IF EXISTS temp.{t}")
    out.unchanged = total_b - out.n_added - out.n_changed
    return out


def _sides(lake: Lake, table: str, sa: int, sb: int, cols_a: dict | None, cols_b: dict | None, sel: str
           ) -> tuple[str, str]:
    """SQL for the rows of A and of B that can differ. A row no snapshot in between touched is the same row at
    both (DuckLake keeps a row's rowid until the row is deleted; an update keeps it too), so only the rows that
    `table_changes` lists need comparing: each touched row as it was at the older version (its first change a
    delete or an update's preimage) and as it is at the newer (its last change an insert or a postimage). Where
    that cannot tell (the table or its columns changed in between), and for a table that has rows inlined in the
    catalog (small inserts: `trainings`, `runs`, `tags`, ...), both versions whole: DuckLake 1.5's table_changes
    lists inlined rows with a wrong or missing snapshot id, and a fresh insert as an update (issue 18 item 16)."""
    def whole(snapshot: int, cols: dict | None) -> str:
        if cols is None:  # the table did not exist at that version
            return f"SELECT {sel} FROM {DB}.{table} WHERE false"
        return f"SELECT {sel} FROM {DB}.{table} AT (VERSION => {snapshot})"

    if sa == sb:
        return whole(sa, cols_a) + " WHERE false", whole(sb, cols_b) + " WHERE false"
    lo, hi = sorted((sa, sb))
    try:
        if cols_a != cols_b:
            raise LakeError("the columns changed in between")
        if _inlined(lake, table):  # asked first: table_changes is the costly part (30 ms a table here)
            raise LakeError("changes DuckLake cannot place")
        lake.con.execute(f"CREATE OR REPLACE TEMP TABLE _changes AS "
                         f"SELECT * FROM {DB}.table_changes({literal(table)}, {lo + 1}, {hi})")
        if lake.con.execute(
                f"SELECT count(*) FROM _changes WHERE snapshot_id IS NULL OR snapshot_id NOT BETWEEN {lo + 1} AND {hi}"
        ).fetchone()[0]:
            raise LakeError("changes DuckLake cannot place")
    except (duckdb.Error, LakeError):
        return whole(sa, cols_a), whole(sb, cols_b)
    gone = "change_type IN ('delete', 'update_preimage')"
    older = (f"SELECT {sel} FROM _changes QUALIFY row_number() OVER (PARTITION BY rowid "
             f"ORDER BY snapshot_id, NOT ({gone})) = 1 AND {gone}")
    newer = (f"SELECT {sel} FROM _changes QUALIFY row_number() OVER (PARTITION BY rowid "
             f"ORDER BY snapshot_id DESC, {gone}) = 1 AND NOT ({gone})")
    return (older, newer) if sa < sb else (newer, older)


def _inlined(lake: Lake, table: str) -> bool:
    """Whether the table has rows (now or in its history) inlined in the catalog rather than in Parquet files."""
    meta = f"__ducklake_metadata_{DB}"
    names = lake.con.execute(f"""SELECT DISTINCT i.table_name FROM {meta}.ducklake_inlined_data_tables i
                                 JOIN {meta}.ducklake_table t USING (table_id)
                                 WHERE t.table_name = {literal(table)}""").fetchall()  # bound, DuckDB imports pandas
    return any(lake.con.execute(f"SELECT count(*) > 0 FROM {meta}.{ident(n)}").fetchone()[0] for (n,) in names)


def counts(lake: Lake, a: str | int, b: str | int) -> dict[str, dict[str, int]]:
    """Per table, rows added, removed and changed (by key, as `row_diff` counts them) from version A to B. A table
    that no snapshot in between touched is not compared; one the snapshots in between only inserted into is
    counted from the catalog (no row is gone or changed, so the newer side's extra rows are all added); any
    other is counted in one query (`_tally`)."""
    sa, sb = lake.resolve(a), lake.resolve(b)
    lo, hi = sorted((sa, sb))
    if lo == 0 < hi:  # the empty lake (snapshot 0, before any table): every row at the other side, from the catalog
        side, rows = "added" if sa == 0 else "removed", lake.row_counts([hi])[hi]
        return {t: {"added": 0, "removed": 0, "changed": 0} | {side: rows.get(t, 0)} for t in lake.tables()}
    touched = _touched(lake, lo, hi)
    appended = {t for t, kinds in (touched or {}).items() if kinds <= INSERTS}
    rows = lake.row_counts([lo, hi]) if appended else {}
    out = {}
    for table in lake.tables():
        if table in appended:
            grown = rows[hi].get(table, 0) - rows[lo].get(table, 0)
            out[table] = {"added": grown if sa < sb else 0, "removed": 0 if sa < sb else grown, "changed": 0}
            continue
        if sa == sb:
            moved = False
        elif touched is not None:
            moved = table in touched
        else:
            try:
                moved = lake.con.execute(f"SELECT count(*) > 0 FROM {DB}.table_changes({literal(table)}, "
                                         f"{lo + 1}, {hi})").fetchone()[0]
            except duckdb.Error:  # created or dropped in between: compare what each version has
                moved = True
        try:
            out[table] = _tally(lake, table, sa, sb) if moved else {"added": 0, "removed": 0, "changed": 0}
        except LakeError:  # at neither version
            out[table] = {"added": 0, "removed": 0, "changed": 0}
    return out


# What a snapshot's `changes` lists by table id; any other change (a table created, dropped, renamed or
# altered, a schema) leaves the question to table_changes, table by table.
ROW_CHANGES = ("tables_inserted_into", "tables_deleted_from", "inlined_insert", "inlined_delete")
INSERTS = {"tables_inserted_into", "inlined_insert"}


def _touched(lake: Lake, lo: int, hi: int) -> dict[str, set[str]] | None:
    """The tables whose rows the snapshots after `lo` up to `hi` changed, each with the kinds of change, read
    from DuckLake's snapshot list in one query (None where a snapshot changed more than rows: then each table
    is asked)."""
    if lo == hi:
        return {}
    meta = f"__ducklake_metadata_{DB}"
    rows = lake.con.execute(f"""
        WITH c AS (SELECT unnest(map_keys(changes)) AS kind, unnest(map_values(changes)) AS ids
                   FROM {DB}.snapshots() WHERE snapshot_id BETWEEN {lo + 1} AND {hi})
        SELECT kind, t.table_name FROM (SELECT kind, unnest(ids) AS id FROM c) x
        LEFT JOIN (SELECT DISTINCT table_id::VARCHAR AS id, table_name FROM {meta}.ducklake_table) t USING (id)
    """).fetchall()
    if any(kind not in ROW_CHANGES or name is None for kind, name in rows):
        return None
    out: dict[str, set[str]] = {}
    for kind, name in rows:
        out.setdefault(name, set()).add(kind)
    return out


def _tally(lake: Lake, table: str, sa: int, sb: int) -> dict[str, int]:
    """Rows added, removed and changed as `row_diff` counts them, in one query: of the rows only in A and only in
    B, the keys found once on each side are the changed rows; every other row is removed or added."""
    out, cols_a, cols_b, sel = _plan(lake, table, sa, sb, sa, sb)
    k = ", ".join(f'"{c}"' for c in out.key)
    try:
        side_a, side_b = _sides(lake, table, sa, sb, cols_a, cols_b, sel)
        only_a, only_b, changed = lake.con.execute(f"""
            WITH a AS MATERIALIZED (({side_a}) EXCEPT ALL ({side_b})),
                 b AS MATERIALIZED (({side_b}) EXCEPT ALL ({side_a}))
            SELECT (SELECT count(*) FROM a), (SELECT count(*) FROM b),
                   (SELECT count(*) FROM ((SELECT {k} FROM a GROUP BY ALL HAVING count(*) = 1)
                                          INTERSECT (SELECT {k} FROM b GROUP BY ALL HAVING count(*) = 1)))
        """).fetchone()
    finally:
        lake.con.execute("DROP TABLE IF EXISTS temp._changes")
    return {"added": only_b - changed, "removed": only_a - changed, "changed": changed}


def _dicts(rel: duckdb.DuckDBPyRelation) -> list[dict]:
    return rel.to_arrow_table().to_pylist()


def around_change(before, after, context: int = 24) -> tuple[str, str]:
    """Two long texts cut to where they differ, with `context` characters either side: what a reader of a diff
    wants to see of a recleaned completion. Other values are returned as they are, as text."""
    if not (isinstance(before, str) and isinstance(after, str)):
        return str(before), str(after)
    start = len(os.path.commonprefix([before, after]))
    end = len(os.path.commonprefix([before[start:][::-1], after[start:][::-1]]))
    lo = max(0, start - context)

    def cut(s: str) -> str:
        hi = min(len(s), len(s) - end + context)
        return ("…" if lo else "") + s[lo:hi] + ("…" if hi < len(s) else "")
    return cut(before), cut(after)
