"""The lake's guarantees under attack and accident (issue 12 items 1-4 and 8, issue 13's double open).

Read-only SQL the engine enforces, readers while a writer works, a lake folder that can be
copied, concurrent writers that never duplicate a key (real PostgreSQL, real processes), killed
runs marked interrupted, and `vlfactory gc` that never loses a tagged version.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import duckdb
import pyarrow as pa
import pytest

from conftest import cli_at, fresh_database

from vlfactory.stores import schema
from vlfactory.stores.lake import Lake, LakeError, load_extension


def _recipe(tmp_path: Path, n: int = 30, name: str = "sums") -> Path:
    rows = [{"id": str(i), "question": f"What is {i} + {i} ({name})?", "answer": str(2 * i)} for i in range(n)]
    (tmp_path / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    path = tmp_path / f"{name}.yaml"
    path.write_text(f"sources:\n  - {{name: {name}, format: jsonl, path: {tmp_path / f'{name}.jsonl'}}}\nbatch_rows: 50\n")
    return path


def _files(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.md5(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file() and p.name != ".writer.lock"
            and not p.name.endswith(("-wal", "-shm"))  # SQLite's own bookkeeping beside the catalog
            and p.parent.name != ".readers"}  # an open reader's lease (stores/maintenance.py), not data


@pytest.fixture(scope="module")
def _tagged_origin(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("tagged")
    lake_dir = root / "lake"
    cli_at(lake_dir, "ingest", _recipe(root, 30))
    cli_at(lake_dir, "tag", "v1")
    cli_at(lake_dir, "ingest", _recipe(root, 40))
    with Lake(lake_dir) as lake, lake.transaction("inline rows"):  # inlined data for flush_inlined_data
        lake.con.execute("INSERT INTO lake.tags (name, snapshot_id) VALUES ('scratch', 1)")
    return lake_dir


@pytest.fixture()
def tagged_lake(_tagged_origin, lake_dir):
    """30 problems tagged v1, 10 more after, and a few rows inlined in the catalog: the module's lake, copied
    (a copied lake reads and writes its own files, below), so each test changes its own."""
    shutil.copytree(_tagged_origin, lake_dir)
    return lake_dir


ATTACKS = [
    "SELECT * FROM ducklake_expire_snapshots('lake', older_than => now())",
    "SELECT * FROM ducklake_merge_adjacent_files('lake')",
    "SELECT * FROM ducklake_rewrite_data_files('lake', delete_threshold => 0)",
    "SELECT * FROM ducklake_flush_inlined_data('lake')",
    "SELECT * FROM ducklake_cleanup_old_files('lake', cleanup_all => true)",
    "SELECT * FROM ducklake_delete_orphaned_files('lake', cleanup_all => true)",
    "SELECT * FROM ducklake_set_commit_message('lake', 'a', 'b')",
    "SELECT * FROM ducklake_add_data_files('lake', 'problems', '{DATAFILE}')",
    "EXPLAIN ANALYZE COPY (SELECT 1) TO '{ROOT}/catalog.sqlite'",
    "EXPLAIN ANALYZE COPY (SELECT 1) TO '{ROOT}/data/main/problems/new.parquet'",
    "EXPLAIN ANALYZE INSERT INTO problems (problem_id) VALUES ('x')",
    "SET enable_external_access = true",
    "ATTACH '{ROOT}/other.db' AS other",
    "INSTALL httpfs",
]


@pytest.mark.parametrize("at", [None, "v1"])
def test_read_only_sql_cannot_change_the_lake(cli, tagged_lake, at):
    """Every write the SQL can express is refused, by the statement check and, underneath it, by
    the engine: the same statements through a read-only Lake's own connection change no file."""
    root = tagged_lake
    before = _files(root)
    datafile = next(str(root / p) for p in before if p.startswith("data/main/problems/"))
    v1 = cli("sql", "SELECT count(*) AS n FROM problems@v1", "--format", "jsonl").output
    for attack in ATTACKS:
        statement = attack.format(ROOT=root, DATAFILE=datafile)
        res = cli("sql", statement, *(["--at", at] if at else []), ok=False)
        # refused, or (a maintenance function with nothing it may do) done nothing
        assert (res.exit_code == 2 and res.output.startswith("error:")) or "0 rows" in res.output, res.output
        assert _files(root) == before, statement
    with Lake(root, read_only=True, at=at) as lake:  # no statement check: the engine alone
        for attack in ATTACKS:
            statement = attack.format(ROOT=root, DATAFILE=datafile)
            with contextlib.suppress(duckdb.Error):  # most fail, a few do nothing: no file may change
                lake.con.execute(statement).fetchall()
            assert _files(root) == before, statement
    # The one write DuckDB's file permissions cannot tell from a read, the lake's own data file
    # overwritten in place, is refused by the statement check (README).
    res = cli("sql", f"EXPLAIN ANALYZE COPY (SELECT 1) TO '{datafile}' (USE_TMP_FILE false)", ok=False)
    assert "refused: COPY" in res.output and _files(root) == before
    assert not (root / "other.db").exists()
    # history, tags and rows are all still there
    assert cli("sql", "SELECT count(*) AS n FROM problems@v1", "--format", "jsonl").output == v1 == '{"n": 30}\n'
    assert json.loads(cli("sql", "SELECT count(*) AS n FROM problems", "--format", "jsonl").output) == {"n": 40}


def test_read_only_sql_reads_only_the_lake(cli, tagged_lake, tmp_path):
    (tmp_path / "local.csv").write_text("a\n1\n")
    res = cli("sql", f"SELECT * FROM read_csv('{tmp_path / 'local.csv'}')", ok=False)
    assert res.exit_code == 2 and "disabled by configuration" in res.output
    # plain DuckDB reads the lake (README), local files beside it
    con = duckdb.connect()
    load_extension(con, "ducklake")
    load_extension(con, "sqlite")
    con.execute(f"ATTACH 'ducklake:sqlite:{tagged_lake}/catalog.sqlite' AS lake "
                f"(READ_ONLY, DATA_PATH '{tagged_lake}/data/', OVERRIDE_DATA_PATH true)")
    assert con.execute(f"SELECT count(*) FROM lake.problems, read_csv('{tmp_path / 'local.csv'}')").fetchone() == (40,)


def test_a_read_only_lake_loads_no_extension_after_its_own(tagged_lake, tmp_path):
    """A read-only Lake loads its extensions without DuckDB's signature check (allow_unsigned_extensions, for
    speed); before any query runs it forbids loading any other, signed or not, and turning the check back on."""
    (tmp_path / "evil.duckdb_extension").write_bytes(b"\0" * 1024)  # what an unsigned file would get past
    with Lake(tagged_lake, read_only=True) as lake:
        assert lake.con.execute("SELECT current_setting('allow_unsigned_extensions')").fetchone() == (True,)
        for statement in (f"LOAD '{tmp_path}/evil.duckdb_extension'", "LOAD httpfs", "FORCE INSTALL httpfs",
                          "SET enable_external_access = true", "RESET lock_configuration"):
            with pytest.raises(duckdb.Error, match="disabled|locked|Permission"):
                lake.con.execute(statement)
        assert lake.query("SELECT count(*) FROM problems").fetchone() == (40,)


WRITER = textwrap.dedent("""
    import sys, time
    import pyarrow as pa
    from vlfactory.stores import schema
    from vlfactory.stores.lake import Lake
    with Lake(sys.argv[1]) as lake:
        lake.start_run("writer")
        print("ready", flush=True)
        i = 0
        while True:  # commits as a distil run does, until killed
            rows = pa.Table.from_pylist([{"prompt_hash": f"w{i}-{j}", "name": "w", "text": "t", "run_id": lake.run_id}
                                         for j in range(50)], schema=schema.PROMPTS)
            lake.write(f"batch {i}", lambda: lake.insert("prompts", rows, key="prompt_hash"))
            i += 1
            time.sleep(0.1)
""")


def _start_writer(lake_dir: Path) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(lake_dir)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "ready"
    return proc


def test_readers_while_a_run_writes(cli, tagged_lake, tmp_path):
    writer = _start_writer(tagged_lake)
    try:
        counts = []
        for _ in range(3):
            counts.append(json.loads(cli("sql", "SELECT count(*) AS n FROM prompts", "--format", "jsonl").output)["n"])
            assert "writer" in cli("versions", "--last", "5").output
            cli("report", "--out", tmp_path / "report.html")
            cli("show", "v1", "--table", "problems", "--sample", "2")
        assert counts == sorted(counts) and counts[-1] > counts[0]  # the reader sees the writer's commits
        # two readers at once, in two processes, while the writer commits
        cmd = [sys.executable, "-m", "vlfactory.cli", "sql", "SELECT count(*) FROM problems", "--lake", str(tagged_lake),
               "--format", "csv"]
        readers = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
        for r in readers:
            out, err = r.communicate(timeout=120)
            assert r.returncode == 0 and out.splitlines()[-1] == "40", err
        # and plain DuckDB, read-only
        con = duckdb.connect()
        load_extension(con, "ducklake")
        load_extension(con, "sqlite")
        con.execute(f"ATTACH 'ducklake:sqlite:{tagged_lake}/catalog.sqlite' AS lake (READ_ONLY)")
        assert con.execute("SELECT count(*) FROM lake.problems").fetchone() == (40,)
        assert writer.poll() is None  # the writer never failed
    finally:
        writer.kill()
        writer.wait()


def test_sql_on_a_read_only_mount(tagged_lake, tmp_path):
    mount = tmp_path / "ro"
    mount.mkdir()
    made = subprocess.run(f"mount --bind {tagged_lake} {mount} && mount -o remount,bind,ro {mount}", shell=True,
                          capture_output=True)
    if made.returncode != 0:
        pytest.skip(f"cannot make a read-only bind mount here: {made.stderr.decode().strip()}")
    try:
        with pytest.raises(OSError):
            (mount / "probe").write_text("x")
        with Lake(mount, read_only=True) as lake:
            assert lake.query("SELECT count(*) FROM problems@v1").fetchone() == (30,)
    finally:
        subprocess.run(["umount", str(mount)], check=True)


def test_a_copied_lake_reads_and_writes_its_own_files(cli, tagged_lake, tmp_path):
    copy = tmp_path / "elsewhere" / "lake"
    shutil.copytree(tagged_lake, copy)
    shutil.rmtree(tagged_lake)  # the original is gone: everything must come from the copy
    out = cli("sql", "SELECT count(*) AS n, count(DISTINCT question) AS q FROM problems", "--lake", copy,
              "--format", "jsonl").output
    assert json.loads(out) == {"n": 40, "q": 40}
    assert json.loads(cli("sql", "SELECT count(*) AS n FROM problems", "--at", "v1", "--lake", copy,
                          "--format", "jsonl").output) == {"n": 30}
    cli("ingest", _recipe(tmp_path, 10, "more"), "--lake", copy)  # writes land in the copy
    assert not tagged_lake.exists()
    with Lake(copy, read_only=True) as lake:
        assert lake.count("problems") == 50
        files = lake._data_files()
        assert files and all(f.startswith(str(copy)) for f in files)


def test_an_older_duckdb_file_lake_keeps_working(cli, lake_dir, tmp_path):
    """A lake folder from before the SQLite default (catalog.ducklake) opens as it is."""
    lake_dir.mkdir()
    con = duckdb.connect()
    load_extension(con, "ducklake")
    con.execute(f"ATTACH 'ducklake:{lake_dir}/catalog.ducklake' AS lake (DATA_PATH '{lake_dir}/data/')")
    con.close()
    cli("ingest", _recipe(tmp_path, 12))
    assert not (lake_dir / "catalog.sqlite").exists()
    assert json.loads(cli("sql", "SELECT count(*) AS n FROM problems", "--format", "jsonl").output) == {"n": 12}


def test_the_same_lake_twice_in_one_process(tagged_lake):
    con = duckdb.connect()  # as the README's plain-DuckDB example
    load_extension(con, "ducklake")
    load_extension(con, "sqlite")
    con.execute(f"ATTACH 'ducklake:sqlite:{tagged_lake}/catalog.sqlite' AS lake (READ_ONLY)")
    with Lake(tagged_lake) as a, Lake(tagged_lake) as b, Lake(tagged_lake, read_only=True) as c:
        a.tag("from_a")
        assert b.tags()["from_a"] == a.tags()["from_a"]
        assert c.count("problems") == b.count("problems") == 40


# ---- concurrent writers on a shared catalog -----------------------------------------------------

RACE = textwrap.dedent("""
    import sys
    import pyarrow as pa
    from vlfactory.stores import schema
    from vlfactory.stores.lake import Lake
    spec, ready, go = sys.argv[1], sys.argv[2], sys.argv[3]
    keys = [f"k{i}" for i in range(100)]
    rows = pa.Table.from_pylist([{"prompt_hash": k, "name": "race", "text": "t", "run_id": None} for k in keys],
                                schema=schema.PROMPTS)
    attempts = []
    with Lake(spec) as lake:
        def body():
            attempts.append(1)
            n = lake.insert("prompts", rows, key="prompt_hash")  # both read the same snapshot...
            if len(attempts) == 1:
                open(ready, "a").write("x")
                while len(open(ready).read()) < 2:  # ...and commit only once both have inserted
                    pass
            return n
        print(lake.write("race", body), len(attempts))
""")


def test_concurrent_keyed_writers_on_postgres_keep_one_row_per_key(postgres, tmp_path):
    spec = _database(postgres, "keyed_race")
    data = str(tmp_path / "data") + "/"
    env = {**os.environ, "VLFACTORY_DATA_PATH": data}
    Lake(spec, data_path=data).close()
    ready = tmp_path / "ready"
    ready.write_text("")
    procs = [subprocess.Popen([sys.executable, "-c", RACE, spec, str(ready), "go"], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(2)]
    results = []
    for p in procs:
        out, err = p.communicate(timeout=300)
        assert p.returncode == 0, err
        results.append(tuple(int(x) for x in out.split()))
    # one commit wrote the 100 keys; the other conflicted, ran again on top of it and wrote none
    assert sorted(results) == [(0, 2), (100, 1)]
    with Lake(spec, data_path=data, read_only=True) as lake:
        assert lake.query("SELECT count(*), count(DISTINCT prompt_hash) FROM prompts").fetchone() == (100, 100)


def _database(postgres: str, name: str) -> str:
    """A fresh database on the test cluster: one DuckLake catalog per test."""
    return "ducklake:postgres:" + fresh_database(postgres, name)


def test_two_ingests_at_once_on_postgres_leave_one_row_per_problem(postgres, tmp_path):
    spec = _database(postgres, "ingest_race")
    recipe = tmp_path / "synthetic.yaml"
    recipe.write_text("sources:\n  - {name: synth, format: synthetic, n: 300, seed: 3}\nbatch_rows: 10\n")
    data = str(tmp_path / "data") + "/"
    Lake(spec, data_path=data).close()
    cmd = [sys.executable, "-m", "vlfactory.cli", "ingest", str(recipe), "--lake", spec, "--data-path", data]
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    for p in procs:
        out, err = p.communicate(timeout=600)
        assert p.returncode == 0, out + err
    with Lake(spec, data_path=data, read_only=True) as lake:
        n, distinct = lake.query("SELECT count(*), count(DISTINCT problem_id) FROM problems").fetchone()
        images, distinct_images = lake.query("SELECT count(*), count(DISTINCT image_id) FROM images").fetchone()
    assert n == distinct == 300 and images == distinct_images


def test_two_ingests_at_once_on_a_lake_folder(tmp_path, lake_dir):
    recipe = tmp_path / "synthetic.yaml"
    recipe.write_text("sources:\n  - {name: synth, format: synthetic, n: 200, seed: 4}\nbatch_rows: 10\n")
    cmd = [sys.executable, "-m", "vlfactory.cli", "ingest", str(recipe), "--lake", str(lake_dir)]
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    for p in procs:
        out, err = p.communicate(timeout=600)
        assert p.returncode == 0, out + err
    with Lake(lake_dir, read_only=True) as lake:
        assert lake.query("SELECT count(*), count(DISTINCT problem_id) FROM problems").fetchone() == (200, 200)


# ---- killed runs and maintenance ----------------------------------------------------------------

def test_a_killed_run_is_marked_interrupted_by_the_next(cli, tagged_lake, monkeypatch):
    writer = _start_writer(tagged_lake)
    with Lake(tagged_lake) as lake:  # alive: left alone
        assert lake.mark_interrupted() == []
    writer.send_signal(signal.SIGKILL)
    writer.wait()
    with Lake(tagged_lake) as lake:  # a run from another host, silent for two hours, and one still beating
        lake.con.execute("""INSERT INTO lake.runs (run_id, command, status, started_at, host, pid)
                            VALUES ('far', 'run', 'running', now() - INTERVAL 2 HOUR, 'other-host', 1),
                                   ('near', 'run', 'running', now() - INTERVAL 2 HOUR, 'other-host', 1)""")
        lake.con.execute("INSERT INTO lake.run_heartbeats VALUES ('near', now() - INTERVAL 5 MINUTE)")
    cli("ingest", _recipe(Path(tagged_lake).parent, 5, "next"))
    rows = dict(json.loads(line)["row"] for line in cli(
        "sql", "SELECT [command, status || ' ' || coalesce(error, '')] AS row FROM runs WHERE status <> 'ok'",
        "--format", "jsonl").output.splitlines())
    assert rows["writer"].startswith("interrupted") and "is gone" in rows["writer"]
    with Lake(tagged_lake, read_only=True) as lake:
        status = dict(lake.query("SELECT run_id, status FROM runs WHERE run_id IN ('far', 'near')").fetchall())
    assert status == {"far": "interrupted", "near": "running"}


def test_a_recorded_run_ends_ok_failed_with_its_error_or_interrupted(lake_dir):
    """`runs.recorded`, the lifecycle of `run`, `iterate` and `eval`: the block's counts on `ok`; an exception's
    `Type: message` on `failed` (the exception still reaches the caller); Ctrl-C is `interrupted`. The loop's
    form opens the lake to start and again to end (it holds none open while its trainings write)."""
    from vlfactory.stores import runs

    with Lake(lake_dir) as lake, runs.recorded(lake, "run ingest", "name: r\n", "r", "run r.yaml") as run:
        run.counts["ingest.written"] = 3
    with pytest.raises(ValueError), runs.recorded(lambda: Lake(lake_dir), "iterate", "name: r\n", "r") as run:
        run.counts["iterations"] = 1
        raise ValueError("no model at runs/iter1/sft")
    with pytest.raises(KeyboardInterrupt), Lake(lake_dir) as lake, runs.recorded(lake, "eval"):
        raise KeyboardInterrupt
    with Lake(lake_dir, read_only=True) as lake:
        rows = lake.query("SELECT command, status, error, counts, ended_at IS NOT NULL FROM runs "
                          "ORDER BY started_at").fetchall()
    assert rows == [("run ingest", "ok", None, {"ingest.written": 3}, True),
                    ("iterate", "failed", "ValueError: no model at runs/iter1/sft", {"iterations": 1}, True),
                    ("eval", "interrupted", None, {}, True)]


def test_gc_expires_history_but_never_a_tagged_version(cli, tagged_lake):
    root = tagged_lake
    with Lake(root, read_only=True) as lake:
        v1_rows = sorted(lake.query("SELECT * EXCLUDE (run_id) FROM problems@v1").fetchall())
        snapshots = len(lake.snapshots())
    orphan = root / "data" / "main" / "problems" / "ducklake-killed-batch.parquet"
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"problem_id": ["x"]}), orphan)
    old = time.time() - 3 * 3600
    os.utime(orphan, (old, old))
    before = _files(root)
    out = cli("gc", "--older-than", "0s", "--dry-run").output
    assert "would expire" in out and "1 orphan" in out
    assert _files(root) == before
    out = cli("gc", "--older-than", "0s").output
    assert "expired" in out and not orphan.exists()
    with Lake(root, read_only=True) as lake:
        assert sorted(lake.query("SELECT * EXCLUDE (run_id) FROM problems@v1").fetchall()) == v1_rows
        assert lake.count("problems") == 40
        kept = {s["snapshot_id"] for s in lake.snapshots()}
        assert len(kept) < snapshots and lake.tags()["v1"] in kept
    assert json.loads(cli("sql", "SELECT count(*) AS n FROM problems", "--at", "v1", "--format", "jsonl").output) == {"n": 30}
    res = cli("gc", "--older-than", "soon", ok=False)
    assert res.exit_code == 2 and "duration" in res.output


def test_a_killed_publish_dry_run_leaves_a_folder_the_rerun_accepts(tagged_lake, tmp_path, monkeypatch):
    from vlfactory.hub import publish

    out = tmp_path / "out"
    real = publish.dataset_card

    def killed(*args, **kwargs):  # the Parquet shards are written; the card is where the kill lands
        raise KeyboardInterrupt

    monkeypatch.setattr(publish, "dataset_card", killed)
    with Lake(tagged_lake, read_only=True) as lake, pytest.raises(KeyboardInterrupt):
        publish.publish(lake, "v1", "org/name", ["problems"], dry_run=out)
    assert not out.exists() and not list(tmp_path.glob(".out.partial-*"))
    monkeypatch.setattr(publish, "dataset_card", real)
    debris = tmp_path / ".out.partial-kill9"  # what kill -9 leaves: no cleanup ran
    (debris / "problems").mkdir(parents=True)
    (debris / "problems" / "problems-00000-of-00001.parquet").write_bytes(b"half")
    with Lake(tagged_lake, read_only=True) as lake:
        done = publish.publish(lake, "v1", "org/name", ["problems"], dry_run=out)
    assert done.folder == out and (out / "README.md").exists() and done.configs[0].rows == 30
    assert not debris.exists()
