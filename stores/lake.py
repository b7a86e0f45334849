"""The catalog: a DuckLake lake opened through DuckDB.

Every write is a snapshot and every snapshot stays readable, so a dataset
version is just a snapshot id, optionally named by a tag. The same code runs on
a local lake (a DuckDB catalog file plus a folder of Parquet files, the
default `./lake`) and on a shared one (a PostgreSQL catalog with data on an
object store):

    from vlfactory.stores.lake import Lake
    with Lake("./lake") as lake:
        print(lake.query("SELECT count(*) FROM problems@iter1").fetchall())

Lake spec resolution: explicit argument, else `$VLFACTORY_LAKE`, else
`./lake`. A spec is a folder (local lake) or a DuckLake URI
(`ducklake:postgres:dbname=... host=...`, `ducklake:sqlite:...`,
`ducklake:some.ducklake`); the data path of a new URI lake comes from
`data_path` / `$VLFACTORY_DATA_PATH`. Object-store credentials come from the
usual AWS variables, never from a recipe.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import re
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterator, TypeVar

import duckdb

from vlfactory.stores.connect import LakeSpec, _s3_secret, load_extension
from vlfactory.stores.sqltext import _code_spans, _first_line, _keywords, _statement_kind, error_line, ident, literal

if TYPE_CHECKING:  # pyarrow is imported where rows are written: a read (`vlfactory sql`) starts without it
    import pyarrow as pa

DB = "lake"
TAG_COMMIT = "tag "  # commit-message prefix of snapshots that only record a tag


INTERNAL = ("schema_migrations", "write_guards", "run_heartbeats")  # bookkeeping, not data
T = TypeVar("T")


class LakeError(Exception):
    """A problem the user can fix (bad spec, unknown version, refused SQL). A query's error also says where in
    the query DuckDB pointed: `sql` and `position` (a character offset), else None."""

    sql: str | None = None
    position: int | None = None


class WriteConflict(Exception):
    """Another writer committed a change this transaction conflicts with; nothing of it was written."""


class Lake:
    """One open connection to a lake; use as a context manager."""

    def __init__(self, spec: str | os.PathLike | LakeSpec | None = None, *, data_path: str | None = None,
                 read_only: bool = False, at: int | str | None = None, create: bool = True,
                 check_schema: bool = True):
        """`check_schema=False` (read-only only): the lake is not checked for schema migrations this vlfactory has
        and it lacks until a query fails, whose error then says so (`vlfactory sql`, which runs SQL as written on
        the tables as they are, as DuckDB would, and so starts without the schema module and its pyarrow)."""
        self.spec = spec if isinstance(spec, LakeSpec) else LakeSpec.resolve(spec, data_path)
        self.read_only = read_only or at is not None
        self.run_id: str | None = None
        self._locked = False
        self._schema_checked = check_schema or not self.read_only
        self.pinned: int | None = None  # the snapshot a read-only Lake reads, whatever is committed meanwhile
        self._memo: dict[tuple, object] = {}  # lookups at the pinned snapshot (tables, tags): they cannot change
        catalog = self.spec.catalog_file
        if catalog is not None and not catalog.exists():
            if not create or self.read_only:
                raise LakeError(f"no lake at {self.spec.display} (run `vlfactory ingest RECIPE` first, or pass --lake)")
            catalog.parent.mkdir(parents=True, exist_ok=True)
            if self.spec.catalog.startswith("ducklake:sqlite:"):
                # Write-ahead logging (kept in the file): readers never wait for a writer, nor it for them.
                import sqlite3

                with contextlib.closing(sqlite3.connect(catalog)) as db:
                    db.execute("PRAGMA journal_mode=WAL")
        # DuckDB draws its progress bar on stdout, even into a pipe: it would land in `vlfactory sql`'s output.
        self.con = duckdb.connect()
        self.con.execute("SET enable_progress_bar = false")
        load_extension(self.con, "ducklake")
        for name in ("postgres", "sqlite"):
            if self.spec.catalog.startswith(f"ducklake:{name}:"):
                load_extension(self.con, name)
        if "://" in (self.spec.data_path or "") or os.environ.get("AWS_ENDPOINT_URL"):
            load_extension(self.con, "httpfs")
            _s3_secret(self.con)
        if self.read_only:
            self._open_read_only(at)
        else:
            with self._writer_lock():  # two commands creating one new lake: one creates, the other finds it
                self._attach(None)
                self.migrate()  # an old lake opens with a newer vlfactory: a write command upgrades it

    def _open_read_only(self, at: int | str | None) -> None:
        """Attach read-only, pinned to one snapshot, with the engine refusing every file write.

        The catalog is attached READ_ONLY, so DuckDB refuses any change to it (DuckLake's
        maintenance functions called from a SELECT included). The connection then may touch
        no file but the data files of the lake's snapshots (`allowed_paths`, locked): no file
        is written, replaced or deleted, whatever the SQL says. Pinning the snapshot keeps
        that list complete while writers commit new files, and gives every query of this
        Lake the same version.
        """
        catalog = self.spec.catalog_file
        if self.spec.catalog.startswith("ducklake:sqlite:") and not os.access(catalog.parent, os.W_OK):
            # A read-only folder (a read-only mount): SQLite cannot open a write-ahead-logged file
            # there, and nothing can change it, so read a private copy of the catalog (small).
            import shutil
            import tempfile

            self._copy = tempfile.TemporaryDirectory(prefix="vlfactory-catalog-")
            for suffix in ("", "-wal"):
                if Path(f"{catalog}{suffix}").exists():
                    shutil.copyfile(f"{catalog}{suffix}", f"{self._copy.name}/catalog.sqlite{suffix}")
            self._catalog = f"ducklake:sqlite:{self._copy.name}/catalog.sqlite"
        latest = self._latest_snapshot_sqlite()
        # One attach, pinned from the start, where SQLite says which snapshot is the latest (a few ms);
        # otherwise (a DuckDB or PostgreSQL catalog) attach to find it, then again pinned to it.
        self._attach(latest)
        if self._schema_checked and (older := self._older()):
            raise LakeError(older)
        snapshot = self.resolve(at) if at is not None else self.current_snapshot()
        from vlfactory.stores import maintenance

        self._lease = maintenance.lease(self, snapshot)  # gc keeps what an open reader reads
        files = self._data_files()
        if snapshot != latest:
            self.con.execute("USE memory")
            self.con.execute(f"DETACH {DB}")
            self._attach(snapshot)
        self.pinned = snapshot
        remote = "://" in self.data_path()
        # Literals, not parameters: binding any parameter makes DuckDB's Python module import pandas (0.2 s
        # of a 0.5 s `vlfactory sql`). `literal` quotes each path (tests/store/test_quoting.py).
        paths = "[]" if remote else "[" + ", ".join(literal(f) for f in files) + "]"
        self.con.execute(f"SET allowed_paths = {paths}")
        if remote:  # object-store keys are not local paths: allow the lake's prefix
            self.con.execute(f"SET allowed_directories = [{literal(self.data_path())}]")
        self.con.execute("SET autoinstall_known_extensions = false")
        self.con.execute("SET enable_external_access = false")
        self.con.execute("SET lock_configuration = true")

    def _latest_snapshot_sqlite(self) -> int | None:
        """The latest snapshot of a SQLite catalog, read with Python's own sqlite3 (read-only); None for
        other catalogs, or when SQLite cannot say (DuckDB then finds it)."""
        catalog = getattr(self, "_catalog", self.spec.catalog)
        if not catalog.startswith("ducklake:sqlite:"):
            return None
        import sqlite3
        from urllib.parse import quote

        try:
            path = quote(catalog.removeprefix("ducklake:sqlite:"))
            with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as db:
                return db.execute("SELECT max(snapshot_id) FROM ducklake_snapshot").fetchone()[0]
        except sqlite3.Error:
            return None

    def _attach(self, snapshot: int | None) -> None:
        """ATTACH takes no parameters: the catalog and the data path go in as literals (`literal`), so a
        path holding a quote is that path, never SQL (tests/store/test_quoting.py)."""
        opts = ["READ_ONLY"] if self.read_only else []
        if self.spec.data_path:
            opts.append(f"DATA_PATH {literal(self.spec.data_path)}")
        if self.spec.root is not None:
            # A lake folder reads its own data/ wherever it was copied or moved to, never the
            # folder it was created in (the catalog keeps the absolute path it was made with).
            opts.append("OVERRIDE_DATA_PATH true")
        if snapshot is not None:
            opts.append(f"SNAPSHOT_VERSION {int(snapshot)}")
        catalog = getattr(self, "_catalog", self.spec.catalog)
        try:
            self.con.execute(f"ATTACH {literal(catalog)} AS {DB}" + (f" ({', '.join(opts)})" if opts else ""))
        except duckdb.Error as e:
            raise LakeError(f"cannot open the lake at {self.spec.display}: {_first_line(e)}") from None
        self.con.execute(f"USE {DB}")

    def data_path(self) -> str:
        """Where this lake's Parquet files are (a lake folder's own data/, else what the catalog says)."""
        if self.spec.root is not None:
            return self.spec.data_path
        meta = f"__ducklake_metadata_{DB}"
        return self.con.execute(f"SELECT value FROM {meta}.ducklake_metadata WHERE key = 'data_path'").fetchone()[0]

    def _data_files(self) -> list[str]:
        """The path of every data and delete file the catalog references, in any snapshot it keeps."""
        meta = f"__ducklake_metadata_{DB}"
        rows = self.con.execute(f"""
            WITH t AS (SELECT table_id, schema_id, path, path_is_relative FROM {meta}.ducklake_table
                       QUALIFY row_number() OVER (PARTITION BY table_id ORDER BY begin_snapshot DESC) = 1),
                 s AS (SELECT schema_id, path, path_is_relative FROM {meta}.ducklake_schema
                       QUALIFY row_number() OVER (PARTITION BY schema_id ORDER BY begin_snapshot DESC) = 1),
                 f AS (SELECT table_id, path, path_is_relative FROM {meta}.ducklake_data_file
                       UNION ALL SELECT table_id, path, path_is_relative FROM {meta}.ducklake_delete_file)
            SELECT f.path, f.path_is_relative, t.path, t.path_is_relative, s.path, s.path_is_relative
            FROM f JOIN t USING (table_id) JOIN s USING (schema_id)""").fetchall()
        root = self.data_path()
        return [_under(_under(_under(root, schema_path, schema_rel), table, table_rel), file, file_rel)
                for file, file_rel, table, table_rel, schema_path, schema_rel in rows]

    # ---- lifecycle ---------------------------------------------------------

    def __enter__(self) -> "Lake":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        if getattr(self, "_heartbeat", None):
            self._heartbeat.stop()
        with contextlib.suppress(Exception):
            self.con.close()
        if getattr(self, "_lease", None):
            from vlfactory.stores import maintenance

            maintenance.release(self._lease)
            self._lease = None
        if getattr(self, "_copy", None):
            self._copy.cleanup()

    # ---- migrations --------------------------------------------------------

    def _applied(self) -> set[int]:
        try:  # cheaper than looking it up in duckdb_tables(), which lists the catalog database's tables too
            return {r[0] for r in self.con.execute(f"SELECT version FROM {DB}.schema_migrations").fetchall()}
        except duckdb.CatalogException:  # a new lake
            return set()

    def _older(self) -> str | None:
        """What to do about a lake that lacks schema migrations this vlfactory has, or None."""
        pending = self._pending_migrations()
        if not pending:
            return None
        from vlfactory.stores import schema

        return (f"the lake at {self.spec.display} was written by an older vlfactory (schema migration "
                f"{pending[0][0]} of {schema.MIGRATIONS[-1][0]} missing): run any write command on it "
                "(e.g. `vlfactory gc --dry-run`) once to upgrade it, then read it")

    def _pending_migrations(self) -> list:
        from vlfactory.stores import schema

        applied = self._applied()
        return [m for m in schema.MIGRATIONS if m[0] not in applied]

    def migrate(self) -> list[str]:
        """Apply missing migrations, each in its own recorded snapshot."""
        done = []
        for version, name, fn in self._pending_migrations():
            with self.transaction(f"migration {version}: {name}"):
                self.con.execute(f"CREATE TABLE IF NOT EXISTS {DB}.schema_migrations "
                                 "(version INTEGER, name VARCHAR, applied_at TIMESTAMPTZ)")
                fn(self.con, DB)
                self.con.execute(f"INSERT INTO {DB}.schema_migrations VALUES (?, ?, now())", [version, name])
            done.append(name)
        return done

    # ---- snapshots and versions -------------------------------------------

    @contextlib.contextmanager
    def transaction(self, message: str) -> Iterator[duckdb.DuckDBPyConnection]:
        """One snapshot: everything inside commits together, with a commit message naming the run.

        A commit that conflicts with another writer's (two keyed inserts into one table, see
        `insert`) rolls back and raises WriteConflict; `write` runs a block again until it commits.
        """
        with self._writer_lock():
            yield from self._transaction(message)

    @contextlib.contextmanager
    def _writer_lock(self) -> Iterator[None]:
        """On a lake folder, one transaction at a time across processes (readers never wait).

        SQLite lets one writer commit at a time and fails a transaction whose snapshot another
        commit overtook ("database is locked"); taking turns before BEGIN avoids both.
        """
        if self.spec.root is None or self._locked:
            yield
            return
        import fcntl

        with open(self.spec.root / ".writer.lock", "a") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            self._locked = True
            try:
                yield
            finally:
                self._locked = False
                fcntl.flock(f, fcntl.LOCK_UN)

    def _transaction(self, message: str) -> Iterator[duckdb.DuckDBPyConnection]:
        self.con.execute("BEGIN")
        try:
            extra = json.dumps({"run_id": self.run_id}) if self.run_id else None
            self.con.execute(f"CALL {DB}.set_commit_message('vlfactory', ?, extra_info => ?)", [message, extra])
            yield self.con
            try:
                self.con.execute("COMMIT")
            except duckdb.TransactionException as e:
                if not any(w in str(e).lower() for w in ("conflict", "database is locked")):
                    raise
                raise WriteConflict(_first_line(e)) from None
        except BaseException:
            with contextlib.suppress(Exception):
                self.con.execute("ROLLBACK")
            raise

    def write(self, message: str, body: Callable[[], T], attempts: int = 20) -> T:
        """Run `body` in one transaction, from the start again while a concurrent commit conflicts with it.

        The body must read what it depends on inside the transaction (a keyed `insert` does),
        so its second run sees the rows the other writer committed.
        """
        for attempt in range(attempts):
            try:
                with self.transaction(message):
                    return body()
            except WriteConflict:
                if attempt == attempts - 1:
                    raise
                time.sleep(random.uniform(0.05, 0.2) * min(2 ** attempt, 20))
        raise AssertionError("unreachable")

    def current_snapshot(self) -> int:
        return self.con.execute(f"SELECT id FROM {DB}.current_snapshot()").fetchone()[0]

    def data_snapshot(self) -> int:
        """The latest snapshot, not counting the ones that only wrote tags."""
        row = self.con.execute(f"""SELECT max(snapshot_id) FROM {DB}.snapshots()
                                   WHERE commit_message IS NULL OR NOT starts_with(commit_message, ?)""",
                               [TAG_COMMIT]).fetchone()
        return row[0]

    def _cached(self, name: str, make: Callable[[], T]) -> T:
        """`make()`, kept per pinned snapshot: a read-only Lake reads one snapshot, which never changes, so a
        report's hundred queries look its tables and tags up once (each lookup is a catalog query). A
        writable Lake sees its own commits: nothing is kept."""
        if self.pinned is None:
            return make()
        key = (name, self.pinned)
        if key not in self._memo:
            self._memo[key] = make()
        return self._memo[key]

    def tags(self) -> dict[str, int]:
        return dict(self._cached("tags", lambda: dict(self.con.execute(
            f"SELECT name, arg_max(snapshot_id, created_at) FROM {DB}.tags GROUP BY name").fetchall())))

    def resolve(self, version: int | str) -> int:
        """A snapshot id from a tag name, a snapshot number, or `latest`."""
        v = str(version).strip()
        if v == "latest":
            return self.current_snapshot()
        if v.isascii() and v.isdigit():  # not '²', which isdigit() but int() refuses
            snap = int(v)
            if self.pinned is not None:  # looked up once per pinned Lake (a report resolves TABLE@N 80 times)
                known = snap in self._cached("snapshots", lambda: {r[0] for r in self.con.execute(
                    f"SELECT snapshot_id FROM {DB}.snapshots()").fetchall()})
            else:
                known = self.con.execute(f"SELECT count(*) FROM {DB}.snapshots() WHERE snapshot_id = {snap}"
                                         ).fetchone()[0]
            if not known:
                raise LakeError(f"no snapshot {snap} in {self.spec.display} (see `vlfactory versions`)")
            return snap
        tags = self.tags()
        if v not in tags:
            hint = f"; known tags: {', '.join(sorted(tags))}" if tags else "; no tags yet (`vlfactory tag NAME`)"
            raise LakeError(f"unknown version {v!r}: not a snapshot number or tag{hint}")
        return tags[v]

    def tag(self, name: str, version: int | str | None = None, note: str | None = None, force: bool = False) -> int:
        """Name a snapshot (the current one by default)."""
        if not re.fullmatch(r"[A-Za-z][\w.-]*", name) or name == "latest":
            raise LakeError(f"bad tag name {name!r}: use letters, digits, '_', '-', '.', starting with a letter")
        snap = self.resolve(version) if version is not None else self.data_snapshot()
        old = self.tags().get(name)
        if old is not None and old != snap and not force:
            raise LakeError(f"tag {name!r} already names snapshot {old}; pass --force to move it to {snap}")
        if old != snap:
            with self.transaction(f"{TAG_COMMIT}{name} -> {snap}"):
                self.con.execute(f"INSERT INTO {DB}.tags (name, snapshot_id, run_id, note) VALUES (?, ?, ?, ?)",
                                 [name, snap, self.run_id, note])
        return snap

    def tag_if_changed(self, name: str, table: str) -> tuple[int, bool]:
        """Tag the current snapshot `name` unless the tag already names the same rows of `table` (`differs`):
        (the snapshot it names, whether it moved). A set rewritten with the same rows keeps its tag where it
        was: a rerun of the loop moves no tag."""
        old = self.tags().get(name)
        if old is not None and not self.differs(table, f"{DB}.{table} AT (VERSION => {int(old)})"):
            return old, False
        return self.tag(name, force=True), True

    # ---- reading -----------------------------------------------------------

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

    def diff(self, a: int | str, b: int | str) -> dict[str, dict[str, int]]:
        """Rows added, removed and changed (by key: an updated row is changed) per table between two versions."""
        from vlfactory.stores import diffs

        return diffs.counts(self, a, b)

    # ---- writing -----------------------------------------------------------

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

    # ---- runs (lineage) and maintenance: stores/runs.py, stores/maintenance.py ----------------

    def start_run(self, command: str, recipe_text: str | None = None, recipe_name: str | None = None,
                  argv: str | None = None) -> str:
        from vlfactory.stores import runs

        return runs.start_run(self, command, recipe_text, recipe_name, argv)

    def end_run(self, status: str, counts: dict[str, int] | None = None, error: str | None = None) -> None:
        from vlfactory.stores import runs

        runs.end_run(self, status, counts, error)

    def mark_interrupted(self) -> list[str]:
        from vlfactory.stores import runs

        return runs.mark_interrupted(self)

    def gc(self, older_than_s: float, dry_run: bool = False, say: Callable[[str], None] = print) -> dict[str, int]:
        from vlfactory.stores import maintenance

        return maintenance.gc(self, older_than_s, dry_run, say)


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


def _under(base: str, path: str, relative: bool) -> str:
    """A DuckLake catalog path: relative to its parent's (a folder's paths end in '/'), or absolute."""
    return base.rstrip("/") + "/" + path if relative else path

