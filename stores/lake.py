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
import os
from collections.abc import Callable
from pathlib import Path

import duckdb

# DB, INTERNAL, TAG_COMMIT and the errors live in base.py, error_line in sqltext.py; callers import them from here.
from vlfactory.stores.base import DB, INTERNAL, TAG_COMMIT, LakeError, WriteConflict, _under  # noqa: F401
from vlfactory.stores.connect import LakeSpec, _s3_secret, load_extension
from vlfactory.stores.lake_reads import Reads
from vlfactory.stores.lake_versions import Versions
from vlfactory.stores.lake_writes import Writes
from vlfactory.stores.sqltext import _first_line, error_line, literal  # noqa: F401


class Lake(Versions, Reads, Writes):
    """One open connection to a lake; use as a context manager. Opening and closing are here; the rest is in
    its parts: snapshots and tags (lake_versions.py), reading (lake_reads.py), writing (lake_writes.py);
    migrations, runs and maintenance delegate to schema.py, runs.py and maintenance.py."""

    def __init__(self, spec: str | os.PathLike | LakeSpec | None = None, *, data_path: str | None = None,
                 read_only: bool = False, at: int | str | None = None, create: bool = True,
                 check_schema: bool = True, threads: int | None = None):
        """`check_schema=False` (read-only only): the lake is not checked for schema migrations this vlfactory has
        and it lacks until a query fails, whose error then says so (`vlfactory sql`, which runs SQL as written on
        the tables as they are, as DuckDB would, and so starts without the schema module and its pyarrow).
        `threads`: DuckDB's worker threads (default: one per core). Many small queries (a report's hundred, the
        catalog reads of `versions`) take half the CPU time on one thread: splitting a query of a few
        milliseconds over threads costs more than it saves."""
        self.spec = spec if isinstance(spec, LakeSpec) else LakeSpec.resolve(spec, data_path)
        self.read_only = read_only or at is not None
        self.run_id: str | None = None
        self._locked = False
        self._one_read = False  # inside Lake.one_read (lake_reads.py)
        self._schema_checked = check_schema or not self.read_only
        self.pinned: int | None = None  # the snapshot a read-only Lake reads, whatever is committed meanwhile
        self._memo: dict[tuple, object] = {}  # lookups at the pinned snapshot (tables, tags): they cannot change
        catalog = self.spec.catalog_file
        if catalog is not None and not catalog.exists():
            if not create or self.read_only:
                raise LakeError(f"no lake at {self.spec.display} (run `vlfactory ingest RECIPE` first, or pass --lake)")
            catalog.parent.mkdir(parents=True, exist_ok=True)
        # DuckDB checks an extension file's signature at every LOAD: 0.15-0.3 s for each of the 35 MB ducklake and
        # sqlite files, most of what `vlfactory versions` or `sql` cost. A read-only Lake skips the check: its
        # extensions are the ones `load_extension` installed in DuckDB's own folder (from the registry packages,
        # as trusted as DuckDB's own library beside them), and `_open_read_only` then forbids any further LOAD
        # (enable_external_access off, configuration locked) before a query runs (tests/store/test_lake_safety.py).
        config = {"allow_unsigned_extensions": "true"} if self.read_only else {}
        self.con = duckdb.connect(config=config | ({"threads": threads} if threads else {}))
        # DuckDB draws its progress bar on stdout, even into a pipe: it would land in `vlfactory sql`'s output.
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
                if catalog is not None and not catalog.exists() and self.spec.catalog.startswith("ducklake:sqlite:"):
                    # Write-ahead logging (kept in the file): readers never wait for a writer, nor it for them.
                    # Switched under the lock: two processes switching one new file at once, one gets "locked".
                    import sqlite3

                    with contextlib.closing(sqlite3.connect(catalog)) as db:
                        db.execute("PRAGMA journal_mode=WAL")
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

    # ---- migrations: stores/schema.py, beside the migrations themselves ------------------------

    def migrate(self) -> list[str]:
        from vlfactory.stores import schema

        return schema.migrate(self)

    def _older(self) -> str | None:
        from vlfactory.stores import schema

        return schema.older(self)

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
