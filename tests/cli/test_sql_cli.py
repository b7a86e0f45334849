"""`vlfactory sql` and `vlfactory versions` as duckdb and datasette users expect them: SQL from stdin (piped,
or `-`) or a file, json/jsonl/csv/tsv/markdown/table/parquet with lists and maps as JSON, streaming to -o,
full error hints with DuckDB's LINE and caret pointing into the SQL as typed (TABLE@VERSION included), a layout
that does not depend on the terminal, and row counts of every table in every format. All on a real lake
written by the real stages."""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from vlfactory.cli import main
from vlfactory.stores.lake import Lake
from workbench import build

QUESTIONS = "SELECT problem_id, question FROM problems@iter1 ORDER BY problem_id"


@pytest.fixture(scope="module")
def wb(tmp_path_factory):
    return build(tmp_path_factory.mktemp("sqlcli"))


def sql(wb, *args, input: str | None = None, ok: bool = True):
    res = CliRunner().invoke(main, ["sql", *map(str, args), "--lake", str(wb.lake)], input=input,
                             catch_exceptions=False)
    assert (res.exit_code == 0) == ok, res.output
    return res


def rows_of(wb, query: str) -> list[tuple]:
    with Lake(wb.lake, read_only=True) as lake:
        return lake.query(query).fetchall()


def test_sql_from_stdin_and_from_a_file(wb, tmp_path):
    expected = [{"n": rows_of(wb, "SELECT count(*) FROM sft@iter2")[0][0]}]
    assert expected[0]["n"] > 0
    query = "-- the sft set\nSELECT count(*) AS n\nFROM sft@iter2;\n"
    assert json.loads(sql(wb, "-", "--format", "json", input=query).output) == expected
    (tmp_path / "q.sql").write_text(query)
    assert json.loads(sql(wb, "--file", tmp_path / "q.sql", "--format", "json").output) == expected
    assert json.loads(sql(wb, "-f", "-", "--format", "json", input=query).output) == expected
    assert json.loads(sql(wb, "--format", "json", input=query).output) == expected  # piped, as `duckdb` reads it
    # bad input: one line each, exit 2
    for args, message in ((["--file", tmp_path / "nope.sql"], "cannot read"), ([], "no SQL"),
                          (["SELECT 1", "-f", tmp_path / "q.sql"], "one of them")):
        res = sql(wb, *args, ok=False)
        assert res.exit_code == 2 and message in res.output and len(res.output.strip().splitlines()) == 1
    # stdin SQL is as read-only as any
    res = sql(wb, "-", input="DELETE FROM problems", ok=False)
    assert "refused" in res.output and rows_of(wb, "SELECT count(*) FROM problems")[0][0] == len(wb.problems)


def test_formats_and_no_header(wb):
    expected = rows_of(wb, QUESTIONS)
    assert len(expected) > 2
    as_dicts = [{"problem_id": p, "question": q} for p, q in expected]
    assert json.loads(sql(wb, QUESTIONS, "--format", "json").output) == as_dicts  # one array, as duckdb -json
    assert json.loads(sql(wb, "SELECT 1 AS x WHERE false", "--format", "json").output) == []
    assert [json.loads(line) for line in sql(wb, QUESTIONS, "--format", "jsonl").output.splitlines()] == as_dicts
    for fmt, delimiter in (("csv", ","), ("tsv", "\t")):
        out = sql(wb, QUESTIONS, "--format", fmt).output
        assert list(csv.reader(io.StringIO(out), delimiter=delimiter)) == [["problem_id", "question"],
                                                                           *map(list, expected)]
        bare = sql(wb, QUESTIONS, "--format", fmt, "--no-header").output
        assert list(csv.reader(io.StringIO(bare), delimiter=delimiter)) == list(map(list, expected))
    md = sql(wb, QUESTIONS, "--format", "markdown", "--max-width", "0").output.splitlines()
    assert [c.strip() for c in md[0].strip("|").split("|")] == ["problem_id", "question"]
    assert set(md[1]) == {"|", "-", " "} and len(md[1]) == len(md[0])
    assert [tuple(c.strip() for c in line.strip("|").split("|")) for line in md[2:]] == expected
    assert "problem_id" not in sql(wb, QUESTIONS, "--format", "markdown", "--no-header").output
    table = sql(wb, QUESTIONS).output
    assert "problem_id" in table and f"{len(expected)} rows" in table
    assert "problem_id" not in sql(wb, QUESTIONS, "--no-header").output
    res = sql(wb, QUESTIONS, "--format", "jsonl", "--no-header", ok=False)
    assert res.exit_code == 2 and "--no-header applies to" in res.output


def test_lists_and_maps_are_json_in_every_format(wb):
    """Not Python's repr (['red', ...], {'loss': ...}), which no program reads back."""
    query = "SELECT ['red', NULL] AS l, {'loss': 0.5, 'ok': true} AS s, MAP {'k': 1.5} AS m, 'x' AS t"
    want = {"l": ["red", None], "s": {"loss": 0.5, "ok": True}, "m": {"k": 1.5}, "t": "x"}
    assert json.loads(sql(wb, query, "--format", "json").output) == [want]
    assert json.loads(sql(wb, query, "--format", "jsonl").output) == want
    for fmt, delimiter in (("csv", ","), ("tsv", "\t")):
        header, row = csv.reader(io.StringIO(sql(wb, query, "--format", fmt).output), delimiter=delimiter)
        assert dict(zip(header, [json.loads(v) if v[:1] in "[{" else v for v in row])) == want
    md = sql(wb, query, "--format", "markdown", "--max-width", "0").output.splitlines()[2]
    assert [c.strip() for c in md.strip("|").split("|")] == ['["red", null]', '{"loss": 0.5, "ok": true}',
                                                              '{"k": 1.5}', "x"]
    table = sql(wb, query, "--max-width", "0").output
    assert '["red", null]' in table and '{"loss": 0.5, "ok": true}' in table and "'red'" not in table


def test_max_width(wb):
    question = max((q for _, q in rows_of(wb, QUESTIONS)), key=len)
    assert len(question) > 60
    query = f"SELECT question FROM problems WHERE question = '{question.replace(chr(39), chr(39) * 2)}' LIMIT 1"
    full = sql(wb, query, "--max-width", "0", "--format", "markdown").output
    assert question in full and "…" not in full  # 0 cut the last character of every cell
    cut = sql(wb, query, "--max-width", "20", "--format", "markdown").output
    assert question[:19] + "…" in cut and question[:20] not in cut
    assert question[:59] + "…" in sql(wb, query, "--format", "markdown").output  # the default, 60
    assert sql(wb, query, "--max-width", "-1", ok=False).exit_code == 2


def test_output_files_by_suffix_and_complete_or_absent(wb, tmp_path, monkeypatch):
    expected = rows_of(wb, QUESTIONS)
    sql(wb, QUESTIONS, "-o", tmp_path / "q.parquet")
    assert [tuple(r.values()) for r in pq.read_table(tmp_path / "q.parquet").to_pylist()] == expected
    sql(wb, QUESTIONS, "-o", tmp_path / "q.jsonl")
    assert [tuple(json.loads(line).values()) for line in (tmp_path / "q.jsonl").read_text().splitlines()] == expected
    sql(wb, QUESTIONS, "-o", tmp_path / "q.json")
    assert [tuple(r.values()) for r in json.loads((tmp_path / "q.json").read_text())] == expected
    sql(wb, QUESTIONS, "-o", tmp_path / "q.csv")
    assert list(csv.reader((tmp_path / "q.csv").open()))[1:] == list(map(list, expected))
    sql(wb, QUESTIONS, "-o", tmp_path / "q.tsv", "--format", "jsonl")  # --format wins over the suffix
    assert json.loads((tmp_path / "q.tsv").read_text().splitlines()[0])["problem_id"] == expected[0][0]
    # Parquet is written in row groups as the rows arrive, not from the whole result
    monkeypatch.setattr("vlfactory.sqlout.ROW_GROUP_BYTES", 1 << 16)
    sql(wb, "SELECT i, repeat('x', 100) AS s FROM range(20000) t(i)", "-o", tmp_path / "big.parquet")
    meta = pq.ParquetFile(tmp_path / "big.parquet").metadata
    assert meta.num_rows == 20000 and meta.num_row_groups > 5
    # a query that fails halfway leaves the earlier file as it was and no partial one
    for name in ("old.parquet", "old.csv"):
        (tmp_path / name).write_text("earlier")
        res = sql(wb, "SELECT CAST(CASE WHEN i < 15000 THEN '1' ELSE 'x' END AS INT) AS v FROM range(20000) t(i)",
                  "-o", tmp_path / name, ok=False)
        assert res.exit_code == 2 and "Conversion Error" in res.output
        assert (tmp_path / name).read_text() == "earlier"
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []


PEAK = """import resource, sys
from vlfactory.cli import main
try:
    main(sys.argv[1:])
except SystemExit as e:
    assert not e.code, e.code
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
"""


def test_parquet_output_streams_in_bounded_memory(wb, tmp_path):
    """The process's peak memory grows far less than the result's size (the old code held all of it)."""
    n, width = 2_000_000, 300
    result_bytes = n * (width + 8 + 4)  # the strings, their offsets and the ids as Arrow holds them
    (tmp_path / "peak.py").write_text(PEAK)

    def peak(query: str) -> int:
        out = subprocess.run([sys.executable, tmp_path / "peak.py", "sql", query, "--lake", wb.lake,
                              "-o", tmp_path / "out.parquet"], capture_output=True, text=True, check=True)
        return int(out.stdout.split()[-1])
    baseline = peak("SELECT 1 AS i")
    big = peak(f"SELECT i, repeat('x', {width}) AS s FROM range({n}) t(i)")
    assert pq.ParquetFile(tmp_path / "out.parquet").metadata.num_rows == n
    assert big - baseline < result_bytes / 2, (big - baseline, result_bytes)


def test_errors_keep_duckdbs_hints_and_point_into_the_sql_as_typed(wb):
    """One error line with DuckDB's hints, then DuckDB's `LINE n:` and caret, under the word in the query the user
    wrote: positions are mapped back through the TABLE@VERSION rewrite (which makes the SQL DuckDB saw longer)."""
    multi = "SELECT count(*)\nFROM problems@iter1 p JOIN images@iter1 i USING (image_id)\nWHERE p.questoin = 'x'"
    for query, hint, at in (("SELECT problm_id FROM problems", 'Candidate bindings: "problem_id"', "problm_id"),
                            ("SELECT * FROM problemz", 'Did you mean "problems"', "problemz"),
                            ("SELECT lenght(question) FROM problems@iter1", 'Did you mean "length"', "lenght"),
                            ("SELECT p.question FROM problems@iter1 p WHERE x.y = 1", 'Candidate tables: "p"', "x.y"),
                            ("SELECT 'é€😀', problm_id FROM problems@iter2", "Candidate bindings", "problm_id"),
                            (multi, 'Candidate bindings: : "question"', "p.questoin")):
        res = sql(wb, query, ok=False)
        first, blank, line, caret = res.output.rstrip("\n").splitlines()
        assert res.exit_code == 2 and hint in first and first.startswith("error: ") and blank == "", res.output
        n = query[:query.index(at)].count("\n")
        source = query.splitlines()[n]
        assert line == f"LINE {n + 1}: {source}", res.output
        before = source[:source.index(at)]  # the caret's column counts wide characters twice, as DuckDB does
        assert caret == " " * (len(f"LINE {n + 1}: ") + sum(2 if c == "😀" else 1 for c in before)) + "^"
    res = sql(wb, "SELECT * FROM problems WHERE source = 1 +", ok=False)  # DuckDB points nowhere: one line
    assert res.exit_code == 2 and len(res.output.strip().splitlines()) == 1 and "syntax error" in res.output
    # an error while the rows stream (row 15,000 fails to cast) points into the SQL as well
    res = sql(wb, "SELECT CAST(CASE WHEN i < 15000 THEN '1' ELSE 'x' END AS INT) FROM range(20000) t(i)",
              "--format", "csv", ok=False)
    assert "Conversion Error" in res.output


def counts_by_brute_force(lake: Lake, snap: int) -> dict[str, int]:
    counts = {}
    for table in lake.tables():
        try:
            counts[table] = lake.count(table, snap)
        except Exception:  # not created yet at that snapshot
            pass
    return {t: n for t, n in counts.items() if n}


def versions_rows(lake_path: Path, *args: str, env: dict | None = None) -> tuple[str, dict[int, dict[str, int]]]:
    """`vlfactory versions` through a pipe (not a terminal): its text, and each snapshot's row counts."""
    res = subprocess.run([sys.executable, "-m", "vlfactory.cli", "versions", "--lake", str(lake_path), *args],
                         capture_output=True, text=True, env={**os.environ, **(env or {})})
    assert res.returncode == 0, res.stderr
    out = res.stdout
    counts = {}
    for line in out.splitlines():
        cells = [c.strip() for c in line.split("│")[1:-1]]
        if cells and cells[0].isdigit():
            counts[int(cells[0])] = dict((k, int(v)) for k, v in (w.split("=") for w in cells[-1].split()))
    return out, counts


def test_versions_counts_every_table(wb, tmp_path):
    # the last 12: the whole iteration-2 run (rollouts, regrades, the sft set rewritten, the rl set, a tag)
    out, counts = versions_rows(wb.lake, "--last", "12")
    with Lake(wb.lake, read_only=True) as lake:
        snaps = [s["snapshot_id"] for s in lake.snapshots()][-12:]
        assert sorted(counts) == snaps
        for snap in snaps:
            assert counts[snap] == counts_by_brute_force(lake, snap), snap
        latest = counts[snaps[-1]]
        assert latest["sft"] > 0 and latest["rl"] > 0 and latest["rollouts"] > 0 and latest["runs"] >= 3
    # expired snapshots leave gaps: the snapshot after one is counted whole
    copy = tmp_path / "lake"
    shutil.copytree(wb.lake, copy)
    subprocess.run([sys.executable, "-m", "vlfactory.cli", "gc", "--older-than", "0s", "--lake", str(copy)],
                   capture_output=True, check=True)
    _, counts = versions_rows(copy, "--last", "100")
    with Lake(copy, read_only=True) as lake:
        snaps = [s["snapshot_id"] for s in lake.snapshots()]
        assert any(b - a > 1 for a, b in zip(snaps, snaps[1:]))
        assert {s: counts[s] for s in snaps} == {s: counts_by_brute_force(lake, s) for s in snaps}


def test_versions_in_every_format(wb):
    _, counts = versions_rows(wb.lake, "--last", "5")
    res = subprocess.run([sys.executable, "-m", "vlfactory.cli", "versions", "--lake", str(wb.lake), "--last", "5",
                          "--format", "json"], capture_output=True, text=True, check=True)
    rows = json.loads(res.stdout)
    assert [r["snapshot"] for r in rows] == sorted(counts) and all(r["rows"] == counts[r["snapshot"]] for r in rows)
    tagged = {t for r in rows for t in r["tags"]}
    assert tagged <= {"iter1", "iter2"} and {"snapshot", "tags", "time", "command", "run_id", "message"} <= set(rows[0])
    res = subprocess.run([sys.executable, "-m", "vlfactory.cli", "versions", "--lake", str(wb.lake), "--last", "5",
                          "--format", "csv"], capture_output=True, text=True, check=True)
    found = list(csv.DictReader(io.StringIO(res.stdout)))
    assert [json.loads(r["rows"]) for r in found] == [r["rows"] for r in rows]


def test_layout_through_a_pipe_ignores_the_terminal_width(wb):
    narrow, counts = versions_rows(wb.lake, "--last", "100", env={"COLUMNS": "40"})
    wide, _ = versions_rows(wb.lake, "--last", "100", env={"COLUMNS": "300"})
    assert narrow == wide
    lines = narrow.splitlines()
    assert len(lines) == 4 + len(counts) + 1  # borders, header and one line per snapshot, then "N rows"
    assert all(f"rollouts={c['rollouts']}" in narrow for c in counts.values() if "rollouts" in c)
    # sql too, and a reader that stops early (`| head`) ends the command without a traceback
    cmd = [sys.executable, "-m", "vlfactory.cli", "sql", "--lake", str(wb.lake)]
    out = subprocess.run([*cmd, QUESTIONS, "--max-width", "0"], capture_output=True, text=True, check=True,
                         env={**os.environ, "COLUMNS": "40"}).stdout
    questions = [q for _, q in rows_of(wb, QUESTIONS)]
    assert questions and all(q in out for q in questions)
    proc = subprocess.Popen([*cmd, "SELECT i FROM range(5000000) t(i)", "--format", "csv"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout.readline() == b"i\n"
    proc.stdout.close()
    assert proc.wait(timeout=120) == 0 and b"Traceback" not in proc.stderr.read()


def test_lake_connections_draw_no_progress_bar(wb):
    """DuckDB draws it on stdout after two seconds, even into a pipe: it would land in the CSV."""
    with Lake(wb.lake, read_only=True) as lake:
        assert lake.con.sql("SELECT current_setting('enable_progress_bar')").fetchone()[0] is False


def test_sql_reads_an_old_lake_as_it_is_and_says_so_when_a_query_fails(wb, monkeypatch):
    """`vlfactory sql` runs SQL on the tables as they are, as DuckDB would, and checks the lake's schema
    migrations only when a query fails: its error then says the lake is older and how to upgrade it."""
    from vlfactory.stores import schema

    n = len(rows_of(wb, "SELECT problem_id FROM problems"))
    monkeypatch.setattr(schema, "MIGRATIONS", schema.MIGRATIONS + [(99, "difficulty column", lambda con, db: None)])
    assert json.loads(sql(wb, "SELECT count(*) AS n FROM problems", "--format", "json").output) == [{"n": n}]
    res = sql(wb, "SELECT difficulty FROM problems", ok=False)
    assert res.exit_code == 2 and "written by an older vlfactory (schema migration 99 of 99 missing)" in res.output
    assert 'Referenced column "difficulty" not found' in res.output


def test_sql_starts_light(wb):
    """What `vlfactory sql` imports to answer: no pyarrow or numpy (0.12 s of CPU), no pandas (what binding a
    parameter in DuckDB's Python module imports), no schema module, recipes or stages."""
    code = ("import sys\nfrom vlfactory.cli import main\ntry:\n    main(sys.argv[1:])\nexcept SystemExit:\n    pass\n"
            "print(sorted(m for m in ('pyarrow', 'numpy', 'pandas', 'vlfactory.stores.schema', 'vlfactory.recipe',"
            " 'vlfactory.stages') if m in sys.modules), file=sys.stderr)")
    res = subprocess.run([sys.executable, "-c", code, "sql", "SELECT count(*) FROM traces@iter1", "--lake",
                          str(wb.lake)], capture_output=True, text=True, timeout=120)
    assert "count_star()" in res.stdout and res.stdout.splitlines()[-1] == "1 row", res.stdout + res.stderr
    assert res.stderr.strip().splitlines()[-1] == "[]", res.stderr
