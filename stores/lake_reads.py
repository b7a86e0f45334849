"""Reading a lake, a part of `Lake` (stores/lake.py): its tables, `table@version` in SQL, the read-only `query`
with errors that point into the SQL as typed, row counts per snapshot, snapshots and per-table diffs."""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator

import duckdb

from vlfactory.stores.base import DB, INTERNAL, LakeError
from vlfactory.stores.sqltext import _code_spans, _keywords, _statement_kind, error_line, ident


class Reads:
    def tables(self) -> list[str]:
        def look() -> list[str]:
            if self.pinned is None:
                rows = self.con.execute(f"SELECT table_name FROM duckdb_tables() WHERE database_name = '{DB}' "
                                        "ORDER BY 1").fetchall()
            else:  # the catalog's own rows: duckdb_tables() loads every table's definition first (50 ms here)
                meta = f"__ducklake_metadata_{DB}"
                live = "{x}.begin_snapshot <= {p} AND ({x}.end_snapshot IS NULL OR {p} < {x}.end_snapshot)"
                rows = self.con.execute(f"""SELECT t.table_name FROM {meta}.ducklake_table t
                                            JOIN {meta}.ducklake_schema s USING (schema_id)
                                            WHERE s.schema_name = 'main' AND {live.format(x='t', p=self.pinned)}
                                              AND {live.format(x='s', p=self.pinned)} ORDER BY 1""").fetchall()
            return [r[0] for r in rows if r[0] not in INTERNAL]
        return list(self._cached("tables", look))

    def expand_versions(self, sql: str) -> str:
        """Rewrite `table@version` (a tag or snapshot id) into DuckLake's time travel."""
        return self._expand(sql)[0]

    def _expand(self, sql: str) -> tuple[str, list[tuple[int, int, int, int]]]:
        """`expand_versions`, and where each rewrite went: (start, end) in `sql` and (start, end) in the result,
        so a position DuckDB reports in the result maps back to the text the user wrote."""
        out, edits, size = [], [], 0
        for a, b, code in _code_spans(sql):
            piece, last = sql[a:b], 0
            for m in _VERSIONED.finditer(piece) if code and "@" in piece else ():
                out.append(piece[last:m.start()])
                size += m.start() - last
                new = self._at(m)
                edits.append((a + m.start(), a + m.end(), size, size + len(new)))
                out.append(new)
                size, last = size + len(new), m.end()
            out.append(piece[last:])
            size += len(piece) - last
        return "".join(out), edits

    def _at(self, m: re.Match) -> str:
        name, version, alias = m.group(1), m.group(2), m.group(3) or ""
        tables = self.tables()
        if name not in tables:
            raise LakeError(f"unknown table {name!r} in {name}@{version}; tables: {', '.join(sorted(tables))}")
        at = f" AT (VERSION => {self.resolve(version)})"
        word = alias.split()[-1] if alias else ""
        if word.upper() in _keywords(self.con):
            return f"{DB}.{name}{at}{alias}"  # the next word is SQL, not an alias
        # DuckDB wants a bare alias before AT: `lake.t x AT (...)`
        return f"{DB}.{name}{' ' + word if word else ''}{at}"

    def query(self, sql: str, params: list | None = None) -> duckdb.DuckDBPyRelation:
        """A read-only query, with `table@version` allowed. Refuses writes. An error is a LakeError on one line
        with DuckDB's hints, carrying where in `sql` DuckDB pointed (`error.position`, see `error`)."""
        text, edits = self._expand(sql)
        try:
            statements = self.con.extract_statements(text)
        except duckdb.Error as e:
            raise self._error(e, sql, text, edits) from None
        if len(statements) != 1:
            raise LakeError(f"expected one SQL statement, got {len(statements)}")
        kind = _statement_kind(text, statements[0].type)
        if kind != duckdb.StatementType.SELECT:
            raise LakeError(f"refused: {kind.name} statements change data; `vlfactory sql` is read-only "
                            "(the factory's commands write the lake)")
        try:
            return self.con.sql(text, params=params)
        except duckdb.Error as e:
            if "\nLINE " not in str(e) and isinstance(e, (duckdb.BinderException, duckdb.CatalogException)):
                try:  # a relation's binder drops the position; the same SQL bound by execute keeps it
                    self.con.execute(f"EXPLAIN {text}", params)  # plans, runs nothing (and fails binding again)
                except duckdb.Error as again:
                    if "\nLINE " in str(again):
                        e, text = again, f"EXPLAIN {text}"
                        edits = [(0, 0, 0, 8), *((a, b, x + 8, y + 8) for a, b, x, y in edits)]
            raise self._error(e, sql, text, edits) from None

    def error(self, e: duckdb.Error, sql: str) -> LakeError:
        """A DuckDB error raised while reading the result of `query(sql)` (a failed cast, say) as query's own."""
        text, edits = self._expand(sql)
        return self._error(e, sql, text, edits)

    def _error(self, e: duckdb.Error, sql: str, text: str, edits: list[tuple[int, int, int, int]]) -> LakeError:
        if not self._schema_checked:  # a failed query on an unchecked lake: an old lake is the likelier cause
            self._schema_checked = True
            if older := self._older():
                return LakeError(f"{error_line(e)}; {older}")
        error = LakeError(error_line(e))
        at = _position(str(e), text)
        if at is not None:
            for start, end, new_start, new_end in reversed(edits):  # back from the rewritten text to the user's
                if at >= new_start:
                    at = start if at < new_end else at - new_end + end  # inside a rewrite: its `table@version`
                    break
            error.sql, error.position = sql, min(at, len(sql))
        return error

    def count(self, table: str, snapshot: int | None = None) -> int:
        at = f" AT (VERSION => {int(snapshot)})" if snapshot is not None else ""
        return self.con.execute(f"SELECT count(*) FROM {DB}.{table}{at}").fetchone()[0]

    def row_counts(self, snapshots: list[int]) -> dict[int, dict[str, int]]:
        """Rows in every table at each of these snapshots, from DuckLake's catalog alone (no data file is read):
        the records of the data files live at a snapshot, less the rows their live delete files delete, plus
        the rows inlined in the catalog that were live then. A table with a file whose rows were written at
        several snapshots (`partial_max`) is counted with count(*).
        Checked against count(*) at every snapshot (tests/cli/test_sql_cli.py::test_versions_counts_every_table).
        """
        if not snapshots:
            return {}
        meta = f"__ducklake_metadata_{DB}"
        live = "{x}.begin_snapshot <= s.s AND ({x}.end_snapshot IS NULL OR s.s < {x}.end_snapshot)"
        snaps = "(VALUES " + ", ".join(f"({int(s)})" for s in snapshots) + ") s(s)"
        inlined = self.con.execute(f"SELECT table_id, table_name FROM {meta}.ducklake_inlined_data_tables").fetchall()
        parts = [f"""SELECT s.s, f.table_id, sum(f.record_count) AS n FROM {snaps}
                     JOIN {meta}.ducklake_data_file f ON {live.format(x='f')} GROUP BY ALL""",
                 f"""SELECT s.s, d.table_id, -sum(d.delete_count) FROM {snaps}
                     JOIN {meta}.ducklake_delete_file d ON {live.format(x='d')} GROUP BY ALL"""]
        parts += [f"""SELECT s.s, {int(table_id)}, count(*) FROM {snaps} JOIN {meta}.{ident(name)} r
                      ON {live.format(x='r')} GROUP BY ALL""" for table_id, name in inlined]
        rows = self.con.execute(f"""
            WITH n AS ({' UNION ALL '.join(parts)}),
                 t AS (SELECT s.s, t.table_id, t.table_name FROM {snaps} JOIN {meta}.ducklake_table t
                       ON {live.format(x='t')}),
                 partial AS (SELECT DISTINCT table_id FROM {meta}.ducklake_data_file WHERE partial_max IS NOT NULL)
            SELECT t.s, t.table_name, coalesce(sum(n.n), 0)::BIGINT, t.table_id IN (SELECT table_id FROM partial)
            FROM t LEFT JOIN n ON n.s = t.s AND n.table_id = t.table_id GROUP BY ALL""").fetchall()
        out: dict[int, dict[str, int]] = {int(s): {} for s in snapshots}
        for snap, name, n, partial in rows:
            if name not in INTERNAL:
                out[snap][name] = self.count(ident(name), snap) if partial else int(n)
        return out

    def snapshots(self) -> list[dict]:
        rel = self.con.sql(f"""SELECT snapshot_id, snapshot_time, changes, commit_message,
                                      commit_extra_info FROM {DB}.snapshots() ORDER BY snapshot_id""")
        return [dict(zip(rel.columns, r)) for r in rel.fetchall()]

    @contextlib.contextmanager
    def one_read(self) -> Iterator[None]:
        """The queries inside run in one read transaction. DuckLake loads its catalog (a hundred and fifty SQLite
        reads on the quickstart lake) at the first query of every transaction, and a report asks a hundred
        queries: in one transaction they load it once. Nothing is written, so it ends in a rollback."""
        self.con.begin()
        self._one_read = True
        try:
            yield
        finally:
            self._one_read = False
            with contextlib.suppress(duckdb.Error):  # a diff below may have left no transaction open
                self.con.rollback()

    def diff(self, a: int | str, b: int | str) -> dict[str, dict[str, int]]:
        """Rows added, removed and changed (by key: an updated row is changed) per table between two versions.

        Inside `one_read`, a query the diff fails and catches (asking DuckLake about a table made in between)
        may abort the shared transaction and so the diff's later queries: when it is aborted after the diff, it
        is rolled back and the diff runs again with each query in its own transaction."""
        from vlfactory.stores import diffs

        if not self._one_read:
            return diffs.counts(self, a, b)
        try:
            changes = diffs.counts(self, a, b)
            self.con.execute("SELECT 1")  # fails in an aborted transaction
            return changes
        except Exception:  # noqa: BLE001 (a genuine error raises again below)
            self.con.rollback()
        try:
            return diffs.counts(self, a, b)
        finally:
            self.con.begin()


_VERSIONED = re.compile(r"(?<![\w.\"])([A-Za-z_]\w*)@([A-Za-z0-9][\w.-]*)((?:\s+AS)?\s+[A-Za-z_]\w*)?", re.I)


def _position(message: str, text: str) -> int | None:
    """The character offset in `text` that DuckDB's message points at (`LINE n: <the line>` over a caret), or
    None. DuckDB may show a window of a long line between `...`, and counts the caret in display columns
    (a wide character is two)."""
    import unicodedata

    lines = message.splitlines()
    for i, line in enumerate(lines[:-1]):
        m = re.match(r"LINE (\d+): ", line)
        if not m or "^" not in lines[i + 1]:
            continue
        shown, caret = line[m.end():], len(lines[i + 1]) - len(lines[i + 1].lstrip(" ")) - m.end()
        if shown.startswith("..."):
            shown, caret = shown[3:], caret - 3
        shown = shown.removesuffix("...")
        source = text.split("\n")
        n = int(m.group(1)) - 1
        if n >= len(source) or shown not in source[n]:
            return None
        column, width = source[n].index(shown), 0
        for ch in shown:
            if width >= caret:
                break
            width += 2 if unicodedata.east_asian_width(ch) in "WF" else 1
            column += 1
        return sum(len(x) + 1 for x in source[:n]) + column
    return None
