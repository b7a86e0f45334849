"""Rows, names and folders that used to act as the user (issue 18): what `export` and `publish` write stays in the
folder named and deletes only what they wrote (items 2, 5), tables with MAP columns export (12), bad arguments and
unwritable folders are one line (15), `show`/`sql`/`diff` print no escape sequences from the data (10), the report
escapes what the catalog says and draws `$...$` answers as text (6, 13), `gc` keeps the snapshot an open reader
holds (11), ingest rejects 27 choices (7) and a PNG whose pixel stream ends early (8).

One small lake, written by `vlfactory ingest` from a JSONL source built here, serves most tests.

    .venv/bin/python -m pytest -q -p no:cacheprovider tests/cli/test_hostile_data.py
"""

from __future__ import annotations

import io
import json
import os
import re
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import pytest

import vlfactory
from test_reports import vlf
from vlfactory.stores.lake import Lake

ESC = "\x1b]52;c;cHduZWQ=\x07\x1b[2J\x9b31m"
CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def png(size=(24, 16), color=(200, 30, 30)) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.effect_noise(size, 60).convert("RGB").save(buf, "PNG")  # noise: a pixel stream of some length
    return buf.getvalue()


def short_png(fraction: float = 0.5, size=(40, 30)) -> bytes:
    """A PNG whose chunks all have valid CRCs and whose zlib stream ends cleanly, with fewer pixel rows than its
    header says: PIL's verify() passes it, and its load() zero-fills some such files without a word."""
    data = png(size)

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)

    pos, chunks = 8, []
    while pos < len(data):
        n = struct.unpack(">I", data[pos:pos + 4])[0]
        chunks.append((data[pos + 4:pos + 8], data[pos + 8:pos + 8 + n]))
        pos += 12 + n
    raw = zlib.decompress(b"".join(body for kind, body in chunks if kind == b"IDAT"))
    return (data[:8] + chunk(b"IHDR", chunks[0][1]) + chunk(b"IDAT", zlib.compress(raw[:int(len(raw) * fraction)]))
            + chunk(b"IEND", b""))


@pytest.fixture(scope="module")
def lake(tmp_path_factory) -> Path:
    """v1: four good rows (one with a `$\\frac12$` answer, one with escape sequences in its question), a row of
    27 choices and three short PNGs (rejected since item 8); then runs with an old lake's hostile recipe name and
    hash, and a training, as a lake written before those were checked would hold them."""
    root = tmp_path_factory.mktemp("hostile")
    img = root / "img"
    img.mkdir()
    rows = []
    for i, (q, a) in enumerate([("How many?", "3"), ("What fraction?", r"$\frac12$"), ("Q" + ESC, "2" + ESC),
                                ("Which?", "4")]):
        (img / f"ok{i}.png").write_bytes(png(color=(40 * i, 20, 30)))
        rows.append({"id": f"ok{i}", "q": q, "a": a, "img": f"ok{i}.png", "choices": None})
    rows.append({"id": "many", "q": "Pick one", "a": "1", "img": "ok0.png", "choices": [str(i) for i in range(27)]})
    rows.append({"id": "letters", "q": "Pick a letter", "a": "Z", "img": "ok1.png",
                 "choices": [chr(65 + i) for i in range(26)]})
    for k, fraction in enumerate((0.1, 0.33, 0.5)):
        (img / f"short{k}.png").write_bytes(short_png(fraction))
        rows.append({"id": f"short{k}", "q": f"Short image {k}?", "a": "1", "img": f"short{k}.png", "choices": None})
    (root / "rows.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (root / "r.yaml").write_text(f"""name: hostile
sources:
  - name: h
    format: jsonl
    path: {root / 'rows.jsonl'}
    images_root: {img}
    columns: {{question: q, answer: a, image: img, id: id, choices: choices}}
""")
    lake_dir = root / "lake"
    vlf("ingest", root / "r.yaml", "--lake", lake_dir)
    with Lake(lake_dir) as lk:
        lk.run_id = "old"  # its commit names it, so the version's lineage holds it
        with lk.transaction("an older lake's run"):
            lk.con.execute("""INSERT INTO lake.runs (run_id, command, recipe_name, recipe, recipe_hash, argv,
                                                     started_at, status, versions, counts)
                              VALUES ('old', 'run ingest', '../../../escaped', 'name: x', '<script>alert(1)</script>',
                                      'run x.yaml', now(), 'ok', MAP {'vlfactory': '0.0'}, MAP {'rows': 1})""")
            lk.con.execute("""INSERT INTO lake.trainings (training_id, kind, dataset, status, started_at, metrics)
                              VALUES ('t1', 'sft', 'sft@v1', 'ok', now(), MAP {'loss': 1.5})""")
        lk.run_id = None
        lk.tag("v1")
    return lake_dir


def run_cli(*args, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "vlfactory.cli", *map(str, args)], capture_output=True, text=True,
                          timeout=300, env=os.environ | (env or {}))


def files_under(root: Path) -> set[Path]:
    return {p for p in root.rglob("*") if p.is_file() or p.is_symlink()}


# ---- items 7 and 8: rows that fail later are rejected at ingest --------------------------------------------

def test_27_choices_and_short_pngs_are_rejected_at_ingest_with_a_reason(lake):
    with Lake(lake, read_only=True) as lk:
        kept = {r[0] for r in lk.query("SELECT source_id FROM problems").fetchall()}
        rejected = dict(lk.query("SELECT ref_id, reason || ': ' || detail FROM rejected").fetchall())
    assert kept == {"ok0", "ok1", "ok2", "ok3", "letters"}, kept  # 26 choices still have a letter each
    assert rejected["h:many"].startswith("bad_choices") and "27" in rejected["h:many"], rejected
    for k in range(3):
        assert rejected[f"h:short{k}"].startswith("bad_image") and "pixel" in rejected[f"h:short{k}"], rejected
    rows = [row for split in vlfactory.load("problems@v1", lake=lake).values() for row in split]  # a DatasetDict
    assert len(rows) == len(kept) and all(row["image"].convert("RGB").tobytes() for row in rows)  # decode in full


# ---- item 12: MAP columns ------------------------------------------------------------------------------

def test_tables_with_map_columns_export_load_and_publish(lake, tmp_path):
    for table in ("runs", "trainings"):
        ds = vlfactory.load(f"{table}@v1", lake=lake)
        assert len(ds) >= 1
        vlf("export", f"{table}@v1", "--to", tmp_path / "out", "--lake", lake)
    import datasets

    runs = datasets.load_dataset("parquet", data_dir=str(tmp_path / "out" / "runs"), split="train")
    old = next(r for r in runs if r["run_id"] == "old")
    assert old["versions"] == [{"key": "vlfactory", "value": "0.0"}] and old["counts"] == [{"key": "rows", "value": 1}]
    vlf("publish", "v1", "--repo", "org/set", "--table", "trainings", "--dry-run", tmp_path / "pub", "--lake", lake)
    assert datasets.load_dataset(str(tmp_path / "pub"), "trainings", split="train")[0]["metrics"] == [
        {"key": "loss", "value": 1.5}]


# ---- items 2 and 5: written only under the folder named; deleted only what was written ------------------

def test_export_deletes_only_its_own_files_and_stays_in_its_folder(lake, tmp_path):
    out = tmp_path / "out"
    mine = out / "problems" / "my-notes.parquet"
    mine.parent.mkdir(parents=True)
    mine.write_bytes(b"the user's own file")
    vlf("export", "problems@v1", "--to", out, "--shard-rows", "2", "--lake", lake)
    first = sorted(p.name for p in (out / "problems").glob("problems-*.parquet"))
    assert len(first) == 3 and mine.read_bytes() == b"the user's own file"
    vlf("export", "problems@v1", "--to", out, "--shard-rows", "5", "--lake", lake)  # fewer shards: its old ones go
    assert sorted(p.name for p in (out / "problems").glob("problems-*.parquet")) == ["problems-00000-of-00001.parquet"]
    assert mine.read_bytes() == b"the user's own file"
    # a file of the user's in the way of a shard is not overwritten: one line, nothing changed
    other = tmp_path / "other"
    (other / "problems").mkdir(parents=True)
    (other / "problems" / "problems-00000-of-00001.parquet").write_bytes(b"mine too")
    res = vlf("export", "problems@v1", "--to", other, "--lake", lake, ok=False)
    assert res.exit_code == 2 and "not written by vlfactory" in res.output
    assert (other / "problems" / "problems-00000-of-00001.parquet").read_bytes() == b"mine too"
    # a table folder that links elsewhere is not followed
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    linked = tmp_path / "linked"
    linked.mkdir()
    (linked / "problems").symlink_to(elsewhere, target_is_directory=True)
    res = vlf("export", "problems@v1", "--to", linked, "--lake", lake, ok=False)
    assert res.exit_code == 2 and not list(elsewhere.iterdir()), res.output


def test_export_and_publish_refuse_the_lakes_own_folder(lake):
    before = files_under(lake)
    for args in (("export", "problems@v1", "--to", lake / "data" / "main"),
                 ("export", "problems@v1", "--to", lake),
                 ("publish", "v1", "--repo", "org/set", "--table", "problems", "--dry-run", lake / "data" / "pub")):
        res = vlf(*args, "--lake", lake, ok=False)
        assert res.exit_code == 2 and "inside the lake" in res.output, (args, res.output)
    assert files_under(lake) - before <= {p for p in files_under(lake) if p.name.endswith(("-wal", "-shm", ".lock"))}
    with Lake(lake, read_only=True) as lk:
        assert lk.count("problems") == 5


def test_publish_writes_recipe_copies_inside_its_folder(lake, tmp_path):
    out = tmp_path / "deep" / "pub"
    vlf("publish", "v1", "--repo", "org/set", "--table", "problems", "--dry-run", out, "--lake", lake)
    written = files_under(tmp_path)
    assert written and all(out in p.parents for p in written), sorted(map(str, written))
    recipes = sorted(p.name for p in (out / "recipes").iterdir())
    assert "escaped-script-alert-1-script.yaml" in recipes, recipes


# ---- item 15: bad arguments and unwritable folders are one line -----------------------------------------

def test_export_with_two_tables_is_one_line(lake, tmp_path):
    res = vlf("export", "problems@v1", "--table", "runs", "--to", tmp_path / "x", "--lake", lake, ok=False)
    assert res.exit_code == 2 and "problems" in res.output and "runs" in res.output
    assert len(res.output.strip().splitlines()) == 1 and not (tmp_path / "x").exists()


@pytest.mark.parametrize("args", [
    ("report", "v1", "--out", "/dev/full"),                      # disk full
    ("report", "v1", "--out", "/sys/report.html"),               # a folder nobody may write, root included
    ("export", "problems@v1", "--to", "/sys/vlfactory-export"),
    ("publish", "v1", "--repo", "org/set", "--table", "problems", "--dry-run", "/sys/vlfactory-publish"),
    ("sql", "SELECT 1 AS x", "-o", "/sys/x.csv"),
])
def test_unwritable_destinations_are_one_line_and_the_lake_is_untouched(lake, args):
    with Lake(lake, read_only=True) as lk:
        snapshots = len(lk.snapshots())
    res = run_cli(*args, "--lake", lake)
    assert res.returncode == 2 and "Traceback" not in res.stderr, res.stderr
    assert len(res.stderr.strip().splitlines()) == 1 and res.stderr.startswith("error: "), res.stderr
    with Lake(lake, read_only=True) as lk:
        assert len(lk.snapshots()) == snapshots and lk.count("problems") == 5


# ---- item 10: terminals ----------------------------------------------------------------------------------

def test_show_sql_and_diff_print_no_escape_sequences(lake):
    outs = [run_cli("show", "v1", "--table", "problems", "--sample", "9", "--lake", lake),
            run_cli("sql", "SELECT question, answer FROM problems", "--lake", lake),
            run_cli("sql", "SELECT question, answer FROM problems", "--format", "markdown", "--lake", lake),
            run_cli("diff", "1", "v1", "--table", "problems", "--limit", "0", "--lake", lake),
            run_cli("diff", "1", "v1", "--table", "problems", "--format", "json", "--lake", lake)]
    for res in outs:
        assert res.returncode == 0, res.stderr
        assert not CONTROL.search(res.stdout.replace("\n", "")), (res.args, res.stdout)
    assert "\\x1b]52" in outs[1].stdout and "\\x1b]52" in outs[3].stdout


# ---- items 6 and 13: the report --------------------------------------------------------------------------

def test_report_draws_dollar_answers_and_escapes_what_the_catalog_says(lake, tmp_path):
    vlf("report", "v1", "--out", tmp_path / "r.html", "--lake", lake)
    page = (tmp_path / "r.html").read_text()
    assert "<script>alert(1)</script>" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page


# ---- item 11: gc keeps what a reader holds --------------------------------------------------------------

def test_gc_keeps_the_snapshot_an_open_reader_holds(tmp_path, monkeypatch):
    monkeypatch.delenv("VLFACTORY_LAKE", raising=False)
    data = tmp_path / "rows.jsonl"
    recipe = tmp_path / "r.yaml"
    recipe.write_text(f"sources:\n  - {{name: s, format: jsonl, path: {data}}}\n")
    folder = tmp_path / "lake"
    for n in (3, 6):
        data.write_text("".join(json.dumps({"id": str(i), "question": f"{i}?", "answer": str(i)}) + "\n"
                                for i in range(n)))
        vlfactory.run(recipe, ["ingest"], lake=folder, say=None)
    reader = Lake(folder, read_only=True)  # a viewer, an export or a publish, opened now
    held = reader.current_snapshot()
    assert reader.query("SELECT count(*) FROM problems").fetchone() == (6,)
    data.write_text("".join(json.dumps({"id": str(i), "question": f"{i}?", "answer": str(i)}) + "\n"
                            for i in range(9)))
    vlfactory.run(recipe, ["ingest"], lake=folder, say=None)  # a writer moves on
    with Lake(folder) as lk:
        lk.gc(0, say=lambda line: None)
        kept = {s["snapshot_id"] for s in lk.snapshots()}
    assert held in kept
    assert reader.query("SELECT count(*) FROM problems").fetchone() == (6,)  # every later page still reads
    assert len(reader.query("SELECT * FROM problems").fetchall()) == 6
    reader.close()
    with Lake(folder) as lk:  # the reader is gone: its snapshot may go
        lk.gc(0, say=lambda line: None)
        assert held not in {s["snapshot_id"] for s in lk.snapshots()}
        assert lk.count("problems") == 9


def test_gc_on_a_catalog_without_a_folder_keeps_the_last_hours_latest(tmp_path, monkeypatch):
    """A URI catalog (here SQLite; PostgreSQL alike) has no folder for leases: gc keeps every snapshot that was the
    latest within VLFACTORY_READER_GRACE_S, so a reader that opened it then keeps reading."""
    from vlfactory.stores import maintenance

    monkeypatch.delenv("VLFACTORY_LAKE", raising=False)
    uri, data = f"ducklake:sqlite:{tmp_path / 'catalog.sqlite'}", str(tmp_path / "data")
    rows = tmp_path / "rows.jsonl"
    recipe = tmp_path / "r.yaml"
    recipe.write_text(f"sources:\n  - {{name: s, format: jsonl, path: {rows}}}\n")
    readers = []
    for n in (3, 6, 9):
        rows.write_text("".join(json.dumps({"id": str(i), "question": f"{i}?", "answer": str(i)}) + "\n"
                                for i in range(n)))
        vlfactory.run(recipe, ["ingest"], lake=uri, data_path=data, say=None)
        readers.append(Lake(uri, read_only=True))
    with Lake(uri, data_path=data) as lk:
        lk.gc(0, say=lambda line: None)
    assert [r.query("SELECT count(*) FROM problems").fetchone()[0] for r in readers] == [3, 6, 9]
    for r in readers:
        r.close()
    monkeypatch.setattr(maintenance, "READER_GRACE_S", 0.0)
    with Lake(uri, data_path=data) as lk:
        lk.gc(0, say=lambda line: None)
        assert len(lk.snapshots()) == 1 and lk.count("problems") == 9  # no grace: only the latest
