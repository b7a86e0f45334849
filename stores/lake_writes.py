"""Writing a lake, a part of `Lake` (stores/lake.py): keyed inserts that stay unique under concurrent writers,
appends of Parquet files the lake adopts, whole-table replacement, and the comparisons and key probes they use.
Each runs inside the caller's transaction (`Lake.transaction`) unless it says otherwise."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import TYPE_CHECKING

from vlfactory.stores.base import DB, _under

if TYPE_CHECKING:  # pyarrow is imported where rows are written: a read (`vlfactory sql`) starts without it
    import pyarrow as pa


class Writes:
    def insert(self, table: str, rows: pa.Table, key: str | None = None, guard_at: int | None = None) -> int:
        """Insert rows (inside the caller's transaction); with `key`, rows whose key exists are skipped.

        Keys stay unique with concurrent writers (two ingests, two distil runs on one shared
        catalog): the anti-join reads the table as of this transaction, and the insert also
        bumps the table's row in `write_guards`, so of two transactions that add keys to one
        table the second to commit conflicts with the first (DuckLake refuses two changes to
        one row) instead of adding the same keys again. `write` then redoes it on top of the
        first, whose keys its anti-join now sees.

        `guard_at`: the table's guard value (`guard_value`) as of a read that found none of these
        keys, advanced by the caller's own keyed inserts since. While the guard still has that
        value, no other keyed write has happened since that read, so there is nothing to collide
        with and the anti-join, which reads the whole key column, is skipped: a stage that commits
        batch after batch pays per batch, not per row already in the table.
        """
        if rows.num_rows == 0:
            return 0
        self.con.register("_batch", rows)
        try:
            cols = ", ".join(f'"{c}"' for c in rows.column_names)
            checked = guard_at is not None and self.guard_value(table) == guard_at
            where = f' WHERE "{key}" NOT IN (SELECT "{key}" FROM {DB}.{table})' if key and not checked else ""
            n = self.con.execute(f"INSERT INTO {DB}.{table} ({cols}) SELECT {cols} FROM _batch{where}").fetchone()[0]
        finally:
            self.con.unregister("_batch")
        if key and n:
            self.guard(table)
        return n

    def guard_value(self, table: str) -> int | None:
        """How many keyed writes the table has had (its `write_guards` count), as this transaction sees it."""
        row = self.con.execute(f"SELECT n FROM {DB}.write_guards WHERE name = ?", [table]).fetchone()
        return row[0] if row else None

    def guard(self, *tables: str) -> None:
        """Make this transaction conflict with any concurrent one that guards one of these tables.

        For a writer that checked its keys against the transaction's own snapshot (as a keyed
        `insert` does): of two such transactions, the second to commit raises WriteConflict.
        """
        self.con.execute(f"UPDATE {DB}.write_guards SET n = n + 1 WHERE list_contains(?, name)", [list(tables)])

    def append(self, table: str, rows: pa.Table, key: str | None = None) -> int:
        """Append rows (inside the caller's transaction) as one Parquet file that pyarrow writes and DuckLake adopts.

        The same rows as `insert(table, rows)` without a key, at a fraction of the cost
        when values are large (image bytes): INSERT copies every value through DuckDB's
        vectors and Parquet writer, pyarrow writes the Arrow buffers as they are. The file
        goes in the table's folder with the table's compression, and from
        `ducklake_add_data_files` on DuckLake owns it like its own files (snapshots, time
        travel, deletes, compaction, cleanup). A rolled-back transaction leaves it an
        orphan, which `vlfactory gc` removes. Object-store and encrypted lakes go through
        `insert`. With `key`, rows whose key the table holds are left out, as in `insert`.
        """
        import pyarrow as pa

        if key and rows.num_rows:
            held = self.existing(table, key, rows.column(key).to_pylist())
            if held:
                rows = rows.filter(pa.array([k not in held for k in rows.column(key).to_pylist()]))
        if rows.num_rows == 0:
            return 0
        import pyarrow.parquet as pq

        opts = dict(self.con.execute(f"""SELECT option_name, value FROM {DB}.options()
            WHERE option_name IN ('encrypted', 'parquet_compression', 'parquet_compression_level',
                                  'parquet_row_group_size')
              AND (scope = 'GLOBAL' OR scope_entry IN ('main', ?))
            ORDER BY CASE scope WHEN 'GLOBAL' THEN 0 WHEN 'SCHEMA' THEN 1 ELSE 2 END""",
                                     [f"main.{table}"]).fetchall())  # the narrowest scope wins
        data_path = self.data_path()  # not options()' data_path: a moved lake folder's is where it was made
        if opts.get("encrypted") == "true" or "://" in data_path:
            return self.insert(table, rows, key)
        schema_path, schema_rel, table_path, table_rel = self.con.execute(f"""
            SELECT s.path, s.path_is_relative, t.path, t.path_is_relative
            FROM __ducklake_metadata_{DB}.ducklake_table t JOIN __ducklake_metadata_{DB}.ducklake_schema s USING (schema_id)
            WHERE s.schema_name = 'main' AND t.table_name = ? AND s.end_snapshot IS NULL AND t.end_snapshot IS NULL""",
                                                                        [table]).fetchone()
        folder = Path(_under(_under(data_path, schema_path, schema_rel), table_path, table_rel))
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"ducklake-{uuid.uuid4()}.parquet"
        compression = opts.get("parquet_compression", "snappy")
        level = opts.get("parquet_compression_level")
        small = [f.name for f in rows.schema if not pa.types.is_binary(f.type)]  # no dictionary or min/max of blobs
        group = opts.get("parquet_row_group_size")
        pq.write_table(rows, path, compression={"uncompressed": "none", "lz4_raw": "lz4"}.get(compression, compression),
                       compression_level=int(level) if level else None, use_dictionary=small, write_statistics=small,
                       row_group_size=int(group) if group else None)
        self.con.execute(f"CALL ducklake_add_data_files('{DB}', ?, ?)", [table, str(path)])
        if key:
            self.guard(table)
        return rows.num_rows

    def replace(self, table: str, rows: pa.Table, message: str) -> bool:
        """Make `table` hold exactly these rows, in one snapshot; write nothing when it already does.

        Rows compare on every column but `run_id` (and the table's `created_at`),
        so rebuilding an unchanged set leaves the lake as it was.
        """
        self.con.register("_new", rows)
        try:
            differ = self.differs(table, "_new", rows.column_names)
        finally:
            self.con.unregister("_new")
        if not differ:
            return False
        with self.transaction(message):
            self.con.execute(f"DELETE FROM {DB}.{table}")
            self.insert(table, rows)
        return True

    def differs(self, table: str, other: str, columns: list[str] | None = None) -> bool:
        """Whether `table` and the relation `other` hold different rows (as multisets).

        Rows compare on `columns` (default: the table's) less `run_id` and `created_at`,
        which say when a row was written, not what it holds.
        """
        columns = columns or self.con.sql(f"SELECT * FROM {DB}.{table} LIMIT 0").columns
        cols = ", ".join(f'"{c}"' for c in columns if c not in ("run_id", "created_at"))
        return self.con.execute(f"""SELECT count(*) FROM (
            (SELECT {cols} FROM {DB}.{table} EXCEPT ALL SELECT {cols} FROM {other}) UNION ALL
            (SELECT {cols} FROM {other} EXCEPT ALL SELECT {cols} FROM {DB}.{table}))""").fetchone()[0] > 0

    def digest(self, table: str, snapshot: int | None = None) -> str:
        """A digest of what `table` holds (at a snapshot): its rows as a multiset, less `run_id` and
        `created_at`. The same rows rewritten in another snapshot have the same digest."""
        at = f" AT (VERSION => {int(snapshot)})" if snapshot is not None else ""
        columns = self.con.sql(f"SELECT * FROM {DB}.{table}{at} LIMIT 0").columns
        cols = ", ".join(f'"{c}"' for c in columns if c not in ("run_id", "created_at"))
        return self.con.execute(f"""SELECT md5(coalesce(string_agg(h, '' ORDER BY h), '')) FROM (
            SELECT md5(CAST(ROW({cols}) AS VARCHAR)) AS h FROM {DB}.{table}{at})""").fetchone()[0][:16]

    def existing(self, table: str, key: str, values: list[str]) -> set[str]:
        """Which of these key values the table already holds."""
        if not values:
            return set()
        import pyarrow as pa

        probe = pa.table({"v": pa.array(values, pa.string())})
        self.con.register("_probe", probe)
        try:
            rows = self.con.execute(f'SELECT DISTINCT "{key}" FROM {DB}.{table} WHERE "{key}" IN (SELECT v FROM _probe)').fetchall()
        finally:
            self.con.unregister("_probe")
        return {r[0] for r in rows}

    def missing(self, table: str, key: str, values: list[str]) -> set[str]:
        """Which of these key values the table lacks: one read of its key column, and only what is
        missing comes back (nothing, when a finished stage runs again)."""
        if not values:
            return set()
        import pyarrow as pa

        self.con.register("_probe", pa.table({"v": pa.array(values, pa.string())}))
        try:
            rows = self.con.execute(f'SELECT DISTINCT v FROM _probe WHERE v NOT IN (SELECT "{key}" FROM {DB}.{table} '
                                    f'WHERE "{key}" IS NOT NULL)').fetchall()
        finally:
            self.con.unregister("_probe")
        return {r[0] for r in rows}
