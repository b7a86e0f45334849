"""Row diffs: rows added, removed and changed by each table's key between two versions, with the changed
columns before and after; from Python and from `vlfactory diff --table`."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

import vlfactory
from vlfactory.stores import schema
from vlfactory.stores.lake import Lake, LakeError
from workbench import build


@pytest.fixture(scope="module")
def wb(tmp_path_factory):
    return build(tmp_path_factory.mktemp("diffs"))


def first_trace(lake: Lake, version: str) -> dict[str, tuple[str, str]]:
    """problem_id -> (from_id, completion) of the sft set at a version."""
    rows = lake.query(f"SELECT problem_id, from_id, completion FROM sft@{version}").fetchall()
    return {r[0]: (r[1], r[2]) for r in rows}


def test_sft_rows_added_removed_and_changed_by_key(wb):
    even = {p["problem_id"] for p in wb.problems if p["k"] % 2 == 0}
    odd = {p["problem_id"] for p in wb.problems} - even
    with Lake(wb.lake, read_only=True) as lake:
        one, two = first_trace(lake, "iter1"), first_trace(lake, "iter2")
        cleaned = dict(lake.query("SELECT ref_id, cleaned FROM grades@iter2").fetchall())
    d = vlfactory.diff("iter1", "iter2", table="sft", lake=wb.lake)
    assert d.key == ("problem_id", "from_id") and "run_id" not in d.compared and "created_at" not in d.compared
    # even problems: the set swapped to the new, shorter correct sample (a new key)
    assert (d.n_added, d.n_removed) == (len(even), len(even)) == (7, 7)
    assert {(r["problem_id"], r["from_id"]) for r in d.added} == {(p, two[p][0]) for p in even}
    assert {(r["problem_id"], r["from_id"]) for r in d.removed} == {(p, one[p][0]) for p in even}
    assert all(two[p][0] != one[p][0] for p in even)
    # odd problems: the same sample, recleaned under the new reflection keywords (changed in place)
    assert d.n_changed == len(odd) == 7 and d.unchanged == 0
    assert {c.key["problem_id"] for c in d.changed} == odd
    for c in d.changed:
        p = c.key["problem_id"]
        assert c.before["completion"] == one[p][1] and c.after["completion"] == two[p][1] == cleaned[c.key["from_id"]]
        assert "Wait, let me check again." in c.after["completion"] not in c.before["completion"]
        assert set(c.before) == set(c.after) and "problem_id" not in c.before
    assert d.by_column["completion"] == 7 and d.by_column["example_id"] == 7
    # the other way round
    back = vlfactory.diff("iter2", "iter1", table="sft", lake=wb.lake)
    assert (back.n_added, back.n_removed, back.n_changed) == (7, 7, 7)
    assert {c.key["problem_id"]: c.before["completion"] for c in back.changed} == \
           {c.key["problem_id"]: c.after["completion"] for c in d.changed}
    # lists cut at the limit, counts whole
    cut = vlfactory.diff("iter1", "iter2", table="sft", lake=wb.lake, limit=2)
    assert len(cut.added) == len(cut.changed) == 2 and cut.n_added == 7
    assert [r["problem_id"] for r in cut.added] == sorted(r["problem_id"] for r in d.added)[:2]


def test_grades_regraded_in_place_and_unchanged_tables(wb):
    d = vlfactory.diff("iter1", "iter2", table="grades", lake=wb.lake)
    n = len(wb.problems)
    # every iter1 grade was redone under new settings (same sample, other settings), plus the new samples' grades:
    # a third trace and two rollouts per problem
    assert (d.n_added, d.n_removed, d.n_changed, d.unchanged) == (3 * n, 0, 2 * n, 0)
    assert d.by_column["settings_hash"] == 2 * n and d.by_column["grade_id"] == 2 * n
    assert Counter(r["ref_table"] for r in d.added) == {"traces": n, "rollouts": 2 * n}
    rl = vlfactory.diff("iter1", "iter2", table="rl", lake=wb.lake)  # pass rate 1/2 where the policy was right
    assert {r["problem_id"] for r in rl.added} == {p["problem_id"] for p in wb.problems if p["policy_right"]}
    assert rl.n_removed == rl.n_changed == 0 and all(r["pass_rate"] == 0.5 for r in rl.added)
    problems = vlfactory.diff("iter1", "iter2", table="problems", lake=wb.lake)
    assert (problems.n_added, problems.n_removed, problems.n_changed, problems.unchanged) == (0, 0, 0, n)
    images = vlfactory.diff("iter1", "iter2", table="images", lake=wb.lake)
    assert "bytes" not in images.compared and images.unchanged == n  # blobs: keyed by their hash


def test_from_the_empty_lake_every_row_is_added_and_back_removed(wb):
    """Snapshot 0 holds no table: a diff from it adds every row a version has (as count(*) counts them), one back
    to it removes them, and no row is ever changed."""
    with Lake(wb.lake, read_only=True) as lake:
        at = lake.resolve("iter1")
        rows = {t: lake.count(t, at) for t in lake.tables()}
    assert sum(rows.values()) > 0
    forth, back = vlfactory.diff(0, "iter1", lake=wb.lake), vlfactory.diff("iter1", 0, lake=wb.lake)
    assert {t: c["added"] for t, c in forth.items()} == rows and {t: c["removed"] for t, c in back.items()} == rows
    assert not any(c["removed"] or c["changed"] for c in forth.values())
    assert not any(c["added"] or c["changed"] for c in back.values())


def test_tables_only_inserted_into_are_counted_from_the_catalog_with_the_same_answer(wb, trained, monkeypatch):
    """Between two versions, a table whose snapshots only inserted rows is counted from the catalog's row counts
    (no row compared): the counts are those of comparing its rows, both ways; tables with deletes or updates in
    between are still compared."""
    from vlfactory.stores import diffs

    pairs = [(wb.lake, a, b) for a, b in (("iter1", "iter2"), ("iter2", "iter1"))]
    pairs += [(trained, a, b) for a, b in (("iter1", "iter2"), ("iter2", "iter1"))]
    compared, tally = [], diffs._tally

    def counted(lake, table, *sides):
        compared.append(table)
        return tally(lake, table, *sides)

    monkeypatch.setattr(diffs, "_tally", counted)
    fast = {(str(lk), a, b): vlfactory.diff(a, b, lake=lk) for lk, a, b in pairs}
    skipped = {t for (lk, a, b), d in fast.items() for t in d} - set(compared)
    assert "traces" in skipped and "trainings" in compared  # traces only grew; trainings were updated in place
    monkeypatch.setattr(diffs, "INSERTS", set())
    for lk, a, b in pairs:
        assert fast[(str(lk), a, b)] == vlfactory.diff(a, b, lake=lk), (lk, a, b)


def test_a_table_created_between_the_versions(tmp_path, monkeypatch):
    """A lake an older vlfactory made (its first three migrations: no sft table, `rejected` without `reasons`),
    upgraded and written by today's stages: a diff from the old version lists every sft row as added and the
    columns `rejected` gained."""
    lake = tmp_path / "lake"
    with monkeypatch.context() as m:
        m.setattr(schema, "MIGRATIONS", schema.MIGRATIONS[:3])
        with Lake(lake) as old:
            first = old.snapshots()[-1]["snapshot_id"]
            cols_then = old.query("SELECT * FROM rejected LIMIT 0").columns
    recipe = tmp_path / "r.yaml"
    recipe.write_text("name: old\nsources:\n  - {name: shapes, format: synthetic, n: 6, seed: 2, kinds: [shapes]}\n"
                      "distil: {backend: rules, model: caption-reasoner}\nsft: {per_problem: 1}\n")
    vlfactory.run(recipe, ["ingest", "caption", "distil", "verify", "sft"], lake=lake, tag="iter1", say=None)
    with Lake(lake, read_only=True) as lk:
        cols_now = lk.query("SELECT * FROM rejected LIMIT 0").columns
        n_sft = lk.count("sft", lk.resolve("iter1"))
    assert n_sft and "reasons" not in cols_then
    sft = vlfactory.diff(first, "iter1", table="sft", lake=lake)
    assert (sft.n_added, sft.n_removed, sft.n_changed) == (n_sft, 0, 0)
    rejected = vlfactory.diff(first, "latest", table="rejected", lake=lake)
    assert rejected.columns_added == [c for c in cols_now if c not in cols_then] and "reasons" in rejected.columns_added
    with pytest.raises(LakeError, match="unknown table 'nope'"):
        vlfactory.diff(first, "iter1", table="nope", lake=lake)


def test_cli_diff_table_and_json(wb, cli):
    out = cli("diff", "iter1", "iter2", "--table", "sft", "--lake", wb.lake).output
    assert "+7 added, -7 removed, ~7 changed" in out and "changed: 7" in out and "completion" in out
    data = json.loads(cli("diff", "iter1", "iter2", "--table", "sft", "--format", "json", "--limit", "0",
                          "--lake", wb.lake).output)
    assert (data["n_added"], data["n_removed"], data["n_changed"]) == (7, 7, 7) and len(data["changed"]) == 7
    assert data["changed"][0]["after"]["completion"] != data["changed"][0]["before"]["completion"]
    # the per-table summary stays the default
    summary = cli("diff", "iter1", "iter2", "--lake", wb.lake).output
    assert "traces" in summary and "+14" in summary
    counts = json.loads(cli("diff", "iter1", "iter2", "--format", "json", "--lake", wb.lake).output)
    assert counts["tables"]["traces"] == {"added": 14, "removed": 0, "changed": 0}
    assert counts["tables"]["sft"] == {"added": 7, "removed": 7, "changed": 7}  # the same as by --table
    bad = cli("diff", "iter1", "iter9", "--table", "sft", "--lake", wb.lake, ok=False)
    assert bad.exit_code == 2 and "unknown version 'iter9'" in bad.output


def test_only_touched_rows_are_read_and_the_answer_is_the_same(wb, monkeypatch):
    """Rows no snapshot between A and B touched are not compared (DuckLake's table_changes lists the others);
    comparing both versions whole gives the same diff, inserts, deletes and in-place updates (runs) alike."""
    from vlfactory.stores import diffs

    tables = ("sft", "grades", "rejected", "runs")
    pairs = (("iter1", "iter2"), ("iter2", "iter1"), ("iter2", "iter2"))
    whole = diffs._sides

    def compare_whole(lake, table, sa, sb, cols_a, cols_b, sel):  # columns that differ: the whole-table path
        return whole(lake, table, sa, sb, cols_a, {**cols_b, "_": ""} if cols_b else cols_b, sel)

    with Lake(wb.lake, read_only=True) as lake:
        narrowed = {(t, a, b): vlfactory.diff(a, b, table=t, lake=lake) for t in tables for a, b in pairs}
        monkeypatch.setattr(diffs, "_sides", compare_whole)
        for (t, a, b), d in narrowed.items():
            assert d == vlfactory.diff(a, b, table=t, lake=lake), (t, a, b)
    runs = narrowed[("runs", "iter1", "iter2")]
    assert runs.n_added == 1 and runs.n_changed == 0  # started and ended (updated) between the tags
    assert narrowed[("sft", "iter2", "iter2")].unchanged == 14


def _train(lake: Lake, tid: str, out: Path, finish: bool = True) -> None:
    """A training row written as trainers/run.py writes it: inserted `running`, then updated with its status."""
    from datetime import datetime, timezone

    from vlfactory.trainers.run import Training, _finish, _insert

    record = Training(tid, "sft", "sft@iter1", "sft", 1, 8, "base", str(out / tid), "{}", {},
                      datetime.now(timezone.utc), iteration=1)
    _insert(lake, record)
    if finish:
        record.status = "ok"
        _finish(lake.spec, record)


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """iter1: trainings a, b done and c still running; iter2: c done, d and e started and finished."""
    root = tmp_path_factory.mktemp("trained")
    data = root / "rows.jsonl"
    data.write_text("".join(json.dumps({"id": str(i), "question": f"{i}?", "answer": str(i)}) + "\n" for i in range(3)))
    (root / "r.yaml").write_text(f"sources:\n  - {{name: s, format: jsonl, path: {data}}}\n")
    vlfactory.run(root / "r.yaml", ["ingest"], lake=root / "lake", say=None)
    with Lake(root / "lake") as lake:
        for tid in ("a", "b"):
            _train(lake, tid, root)
        _train(lake, "c", root, finish=False)
        lake.tag("iter1")
    with Lake(root / "lake") as lake:
        lake.run_id = None
        with lake.transaction("c finished"):
            lake.con.execute("UPDATE lake.trainings SET status = 'ok', ended_at = now() WHERE training_id = 'c'")
        for tid in ("d", "e"):
            _train(lake, tid, root)
        lake.tag("iter2")
    return root / "lake"


def test_updated_rows_are_changed_not_added_and_removed(trained, cli):
    """Issue 18 item 16: trainings inserted `running` then updated were "+0 added, 5 unchanged" by key and
    "+N/-N" per table; an update is a changed row, with its columns before and after."""
    d = vlfactory.diff("iter1", "iter2", table="trainings", lake=trained)
    assert (d.n_added, d.n_removed, d.n_changed, d.unchanged) == (2, 0, 1, 2), d.line()
    assert sorted(r["training_id"] for r in d.added) == ["d", "e"]
    (c,) = d.changed
    assert c.key == {"training_id": "c"} and (c.before["status"], c.after["status"]) == ("running", "ok")
    assert c.before["ended_at"] is None and c.after["ended_at"] is not None
    back = vlfactory.diff("iter2", "iter1", table="trainings", lake=trained)
    assert (back.n_added, back.n_removed, back.n_changed) == (0, 2, 1)
    counts = vlfactory.diff("iter1", "iter2", lake=trained)
    assert counts["trainings"] == {"added": 2, "removed": 0, "changed": 1}
    out = json.loads(cli("diff", "iter1", "iter2", "--format", "json", "--lake", trained).output)
    assert out["tables"]["trainings"] == {"added": 2, "removed": 0, "changed": 1}
    table = cli("diff", "iter1", "iter2", "--lake", trained).output
    assert "changed" in table and "~1" in table and "+2" in table
    line = cli("diff", "iter1", "iter2", "--table", "trainings", "--lake", trained).output
    assert "+2 added, -0 removed, ~1 changed (ended_at 1, status 1), 2 unchanged" in line


def test_the_reports_changes_section_counts_updates_as_changed(trained, tmp_path):
    from html.parser import HTMLParser

    from vlfactory.reports.html import report

    with Lake(trained, read_only=True) as lake:
        page = report(lake, "iter2")

    class Rows(HTMLParser):
        def __init__(self):
            super().__init__()
            self.section, self.cells, self.rows = None, None, []

        def handle_starttag(self, tag, attrs):
            if tag == "section":
                self.section = dict(attrs).get("id")
            elif tag == "tr" and self.section == "diff":
                self.cells = []

        def handle_endtag(self, tag):
            if tag == "tr" and self.cells is not None:
                self.rows.append(self.cells)
                self.cells = None

        def handle_data(self, data):
            if self.cells is not None:
                self.cells.append(data.strip())

    parsed = Rows()
    parsed.feed(page)
    assert ["table", "rows added", "rows removed", "rows changed"] in parsed.rows
    assert ["trainings", "2", "0", "1"] in parsed.rows, parsed.rows


@pytest.mark.parametrize("args", [("²",), ("iter1", "²"), ("iter1", "iter2", "--limit", "-1", "--table", "sft")])
def test_bad_diff_arguments_are_one_line(trained, cli, args):
    """Issue 18 item 15: `diff ²` and `diff --limit -1` were tracebacks."""
    res = cli("diff", *args, "--lake", trained, ok=False)
    assert res.exit_code == 2 and "Traceback" not in res.output, res.output
    assert res.output.strip().splitlines()[-1].startswith(("error: unknown version '²'",
                                                           "Error: Invalid value for '--limit'"))
