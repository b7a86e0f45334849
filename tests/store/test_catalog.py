"""The catalog through the CLI: read-only SQL, versions, tags, diff, migrations, packaging."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from conftest import cli_at
from vlfactory.stores import schema
from vlfactory.stores.lake import Lake, LakeError

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def built_two_versions(tmp_path_factory) -> tuple[Path, list[dict]]:
    """A lake with two tagged ingests: v1 (20 rows) and v2 (+10 rows), built once for the module."""
    root = tmp_path_factory.mktemp("two-versions")
    rows = [{"id": str(i), "question": f"What is {i} + {i}?", "answer": str(2 * i)} for i in range(30)]
    for name, part in (("v1", rows[:20]), ("v2", rows)):
        (root / "rows.jsonl").write_text("".join(json.dumps(r) + "\n" for r in part))
        (root / "r.yaml").write_text(f"sources:\n  - {{name: sums, format: jsonl, path: {root / 'rows.jsonl'}}}\n")
        cli_at(root / "lake", "ingest", root / "r.yaml")
        cli_at(root / "lake", "tag", name, "--note", f"{len(part)} rows")
    return root / "lake", rows


@pytest.fixture()
def two_versions(built_two_versions, lake_dir):
    """The module's two-version lake, copied to this test's lake folder (a lake folder is portable:
    test_lake_safety's copied lake), so a test that writes changes only its own."""
    shutil.copytree(built_two_versions[0], lake_dir)
    return built_two_versions[1]


@pytest.mark.parametrize("statement", [
    "INSERT INTO problems (problem_id) VALUES ('x')",
    "DELETE FROM problems",
    "UPDATE problems SET answer = '0'",
    "DROP TABLE problems",
    "COPY problems TO 'out.csv'",
    "CREATE TABLE t AS SELECT 1",
    "ATTACH 'other.db'",
    "CALL lake.set_commit_message('a', 'b')",
])
def test_sql_refuses_writes(cli, two_versions, statement):
    res = cli("sql", statement, ok=False)
    assert res.exit_code == 2 and "refused" in res.output and "read-only" in res.output
    assert cli("sql", "SELECT count(*) AS n FROM problems", "--format", "jsonl").output.strip() == '{"n": 30}'


def test_sql_versions_and_formats(cli, two_versions, tmp_path):
    q = "SELECT count(*) AS n FROM problems@v1 p WHERE p.source = 'sums'"
    assert json.loads(cli("sql", q, "--format", "jsonl").output) == {"n": 20}
    # a join of two versions: the rows v2 added
    q = """SELECT count(*) AS n FROM problems@v2 AS new
           WHERE new.problem_id NOT IN (SELECT problem_id FROM problems@v1)"""
    assert json.loads(cli("sql", q, "--format", "jsonl").output) == {"n": 10}
    # '@' inside strings and comments is left alone
    out = cli("sql", "SELECT 'a@v1' AS s -- problems@nope\n", "--format", "csv").output
    assert out.splitlines() == ["s", "a@v1"]
    assert "unknown version 'nope'" in cli("sql", "SELECT * FROM problems@nope", ok=False).output
    table = cli("sql", "SELECT question, answer FROM problems ORDER BY question LIMIT 2").output
    assert "What is 0 + 0?" in table and "2 rows" in table
    cli("sql", "SELECT * FROM problems", "--format", "parquet", "-o", tmp_path / "p.parquet")
    assert pq.read_table(tmp_path / "p.parquet").num_rows == 30


def test_versions_tags_and_diff(cli, two_versions, lake_dir):
    out = cli("versions").output
    assert "v1" in out and "v2" in out and "run ingest" in out and "problems=20" in out and "problems=30" in out
    out = cli("diff", "v1", "v2").output
    assert "problems" in out and "+10" in out
    assert "-10" in cli("diff", "v2", "v1").output
    res = cli("tag", "v1", ok=False)  # v1 names an older snapshot
    assert res.exit_code == 2 and "already names snapshot" in res.output and "--force" in res.output
    cli("tag", "v1", "--force")
    assert "bad tag name" in cli("tag", "1abc", ok=False).output
    with Lake(lake_dir) as lake:
        tags = lake.tags()
        assert tags["v1"] == tags["v2"] and lake.resolve(str(tags["v2"])) == tags["v2"]
        with pytest.raises(LakeError, match="no snapshot 99999"):
            lake.resolve("99999")
        # lineage: every data snapshot names the run that wrote it, and the run holds the recipe
        rows = lake.query("""SELECT r.command, r.recipe, r.status, r.versions['duckdb'], r.counts['ingest.sums.ingested']
                             FROM runs r ORDER BY started_at""").fetchall()
    assert [r[0] for r in rows] == ["run ingest", "run ingest"]
    assert all("format: jsonl" in r[1] and r[2] == "ok" and r[3] for r in rows)
    assert [r[4] for r in rows] == [20, 10]


def test_a_new_lake_is_two_commits_with_its_table_options(tmp_path):
    """A new lake's schema is one snapshot and its table options a second (DuckLake sets options only on
    committed tables), not one snapshot per migration; every migration is recorded, every option applied."""
    with Lake(tmp_path / "lake") as lake:
        made = [s["commit_message"] for s in lake.snapshots() if s["commit_message"]]
        applied = [r[0] for r in lake.con.execute("SELECT version FROM lake.schema_migrations ORDER BY 1").fetchall()]
        options = {(r[0], r[1]) for r in lake.con.execute(
            "SELECT option_name, scope_entry FROM lake.options() WHERE scope = 'TABLE'").fetchall()}
    assert len(made) == 2 and made[1].startswith("migrations 2, 11:"), made
    assert applied == [v for v, _, _ in schema.MIGRATIONS]
    assert ("parquet_compression", "main.images") in options
    assert {t for o, t in options if o == "parquet_row_group_size"} == {f"main.{t}" for t in schema.POINT_READ}


def test_old_lake_gets_new_migrations(lake_dir, monkeypatch, two_versions):
    def m002(con, db):
        con.execute(f"ALTER TABLE {db}.problems ADD COLUMN difficulty DOUBLE")

    with Lake(lake_dir) as lake:
        before = lake.current_snapshot()
    monkeypatch.setattr(schema, "MIGRATIONS", schema.MIGRATIONS + [(99, "difficulty column", m002)])
    # reading never writes: an old lake read-only is refused with the way out, and left as it was
    with pytest.raises(LakeError, match="older vlfactory .*migration 99.*write command"):
        Lake(lake_dir, read_only=True)
    with Lake(lake_dir) as lake:  # any write command upgrades it
        assert lake.current_snapshot() == before + 1
    with Lake(lake_dir, read_only=True) as lake:
        applied = lake.query("SELECT version, name FROM schema_migrations ORDER BY version").fetchall()
        assert applied == [(v, n) for v, n, _ in schema.MIGRATIONS]
        assert applied[-1] == (99, "difficulty column")
        assert lake.count("problems") == 30
        assert "difficulty" in lake.query("SELECT * FROM problems LIMIT 0").columns
        # the old snapshot still reads with its old columns
        assert "difficulty" not in lake.query(f"SELECT * FROM problems@{before} LIMIT 0").columns
    with Lake(lake_dir) as lake:  # applied once
        assert lake.query("SELECT count(*) FROM schema_migrations").fetchone()[0] == len(schema.MIGRATIONS)


def test_rows_read_one_at_a_time_are_stored_in_small_row_groups(lake_dir):
    """A point read decodes the row group holding the row: large inserts, through DuckDB or pyarrow,
    write groups of at most schema.ROW_GROUP_ROWS rows for the tables the viewer opens row by row."""
    from datetime import datetime, timezone

    import pyarrow as pa

    n = 3 * schema.ROW_GROUP_ROWS + 5
    rows = pa.Table.from_pylist([{"trace_id": f"t{i:06d}", "problem_id": f"p{i % 97}", "request_key": f"k{i}",
                                  "completion": "x " * 50} for i in range(n)], schema=schema.TRACES)
    with Lake(lake_dir) as lake:
        with lake.transaction("large insert"):
            lake.insert("traces", rows)
        with lake.transaction("large append"):
            now = pa.array([datetime.now(timezone.utc)] * n, pa.timestamp("us", tz="UTC"))
            lake.append("traces", rows.set_column(0, "trace_id", pa.array([f"u{i:06d}" for i in range(n)]))
                        .append_column("created_at", now))
        files = [f for f in lake._data_files() if "/traces/" in f]
    groups = [pq.ParquetFile(f).metadata.row_group(i).num_rows for f in files
              for i in range(pq.ParquetFile(f).metadata.num_row_groups)]
    assert len(files) == 2 and sum(groups) == 2 * n
    assert max(groups) <= schema.ROW_GROUP_ROWS and len(groups) >= 8


def test_lake_location_precedence(tmp_path, monkeypatch, cli):
    from vlfactory.stores.lake import LakeSpec

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("VLFACTORY_LAKE", raising=False)
    assert LakeSpec.resolve().display == str(tmp_path / "lake")
    monkeypatch.setenv("VLFACTORY_LAKE", str(tmp_path / "env"))
    assert LakeSpec.resolve().display == str(tmp_path / "env")
    assert LakeSpec.resolve(tmp_path / "arg").display == str(tmp_path / "arg")
    spec = LakeSpec.resolve("ducklake:postgres:dbname=x password=hunter2", "s3://b/p/")
    assert "hunter2" not in spec.display and spec.data_path == "s3://b/p/"
    # reading a lake that does not exist is one clear line, and creates nothing
    monkeypatch.delenv("VLFACTORY_LAKE")
    from click.testing import CliRunner

    from vlfactory.cli import main

    res = CliRunner().invoke(main, ["sql", "SELECT 1", "--lake", str(tmp_path / "nowhere")])
    assert res.exit_code == 2 and "no lake at" in res.output and not (tmp_path / "nowhere").exists()


def test_every_command_has_an_example():
    from vlfactory.cli import main

    for name, command in main.commands.items():
        assert "Example" in (command.help or ""), name
        assert f"vlfactory {name}" in command.help, name


def test_wheel_contains_one_package_with_everything(tmp_path):
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q",
                    "-w", str(tmp_path), str(REPO)], check=True, capture_output=True)
    wheel = next(tmp_path.glob("vlfactory-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    for path in ("vlfactory/cli/__init__.py", "vlfactory/cli/catalog.py", "vlfactory/stages/ingest.py",
                 "vlfactory/verify/pool.py", "vlfactory/stores/lake.py",
                 "vlfactory/viewer/static/app.js", "vlfactory/sources/synthetic/shapes.py",
                 "vlfactory/stores/schema.py", "vlfactory/trainers/__init__.py", "vlfactory/reports/__init__.py",
                 "vlfactory/recipes/quickstart.yaml"):
        assert path in names, path
    assert not any(n.startswith(("tests/", "factory/", "stores/")) for n in names)
    entry = next(n for n in names if n.endswith("entry_points.txt"))
    assert "vlfactory = vlfactory.cli:main" in zipfile.ZipFile(wheel).read(entry).decode()
    meta = zipfile.ZipFile(wheel).read(next(n for n in names if n.endswith("METADATA"))).decode()
    core = [l for l in meta.splitlines() if l.startswith("Requires-Dist") and "extra ==" not in l]
    assert core and not any(heavy in l for l in core for heavy in ("torch", "transformers", "trl", "vllm"))


def test_core_import_pulls_no_heavy_modules():
    code = ("import sys, vlfactory.cli, vlfactory.stages.ingest, vlfactory.stores.lake; "
            "heavy = [m for m in ('torch', 'transformers', 'trl', 'vllm') if m in sys.modules]; print(heavy)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
