"""Bad input never stops an ingest (issue 12 item 5): a bad row becomes a `rejected` row with its
reason and the rest goes in; a bad recipe or an unreadable data file is one error line before
anything is written; a rerun finishes and adds nothing twice.

    .venv/bin/pytest tests/stages/test_bad_input.py
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from vlfactory.stores.lake import Lake


def _png(path: Path, color=(200, 30, 30), size=(32, 24)) -> Path:
    from PIL import Image

    Image.new("RGB", size, color).save(path)
    return path


def ingest(recipe: Path, lake: Path) -> subprocess.CompletedProcess:
    """`vlfactory ingest` in its own process, with a timeout: a FIFO or /dev/zero read by mistake would hang it."""
    return subprocess.run([sys.executable, "-m", "vlfactory.cli", "ingest", str(recipe), "--lake", str(lake)],
                          capture_output=True, text=True, timeout=300)


def test_bad_rows_are_rejected_and_a_rerun_finishes(tmp_path):
    img = tmp_path / "img"
    img.mkdir()
    for i in range(4):
        _png(img / f"ok{i}.png", color=(10 * i, 20, 30))
    _png(img / "big.png", size=(400, 400))  # noise would compress badly; a plain image over a small cap
    os.mkfifo(img / "fifo.png")
    big = (img / "big.png").stat().st_size
    cap = (img / "ok0.png").stat().st_size * 4
    assert big > cap
    rows = [
        ("good-0", b'{"id": "good-0", "q": "How many?", "a": "3", "img": "ok0.png"}'),
        ("surrogate", b'{"id": "surrogate", "q": "Lone \\ud800 here?", "a": "1", "img": "ok1.png"}'),
        ("not-utf8", b'{"id": "not-utf8", "q": "Caf\xe9 au lait?", "a": "1", "img": "ok1.png"}'),
        ("nan", b'{"id": "nan", "q": "NaN answer?", "a": NaN, "img": "ok1.png"}'),
        ("inf", b'{"id": "inf", "q": "Infinite answer?", "a": Infinity, "img": "ok1.png"}'),
        ("list-q", b'{"id": "list-q", "q": ["a", "list"], "a": "1", "img": "ok1.png"}'),
        ("fifo", b'{"id": "fifo", "q": "A FIFO?", "a": "1", "img": "fifo.png"}'),
        ("zero", b'{"id": "zero", "q": "Endless?", "a": "1", "img": "/dev/zero"}'),
        ("big", b'{"id": "big", "q": "Too large?", "a": "1", "img": "big.png"}'),
        ("twice", b'{"id": "twice", "q": "First of two", "a": "", "img": "ok2.png"}'),
        ("good-1", b'{"id": "good-1", "q": "How many blue?", "a": "4", "img": "ok1.png"}'),
        ("good-2", b'{"id": "good-2", "q": "Which one?", "a": 2.5, "img": "ok2.png"}'),
        ("twice", b'{"id": "twice", "q": "Second of two", "a": "", "img": "ok3.png"}'),
        ("good-3", b'{"id": "good-3", "q": "Which letter?", "a": "B", "choices": ["A", "B"], "img": "ok3.png"}'),
    ]
    data = tmp_path / "rows.jsonl"
    data.write_bytes(b"\n".join(line for _, line in rows) + b"\n")
    recipe = tmp_path / "r.yaml"
    recipe.write_text(f"""
batch_rows: 4            # 'twice' lands in two batches
max_image_bytes: {cap}
sources:
  - name: bad
    format: jsonl
    path: {data}
    images_root: {img}
    columns: {{question: q, answer: a, image: img, id: id}}
""")
    lake_dir = tmp_path / "lake"
    res = ingest(recipe, lake_dir)
    assert res.returncode == 0, res.stderr
    assert f"read {len(rows)} = ingested 4 + already in lake 0 + rejected 10" in res.stderr, res.stderr
    with Lake(lake_dir) as lake:
        got = lake.query("SELECT ref_id, reason, detail, payload FROM rejected ORDER BY ref_id, detail").fetchall()
        problems = dict(lake.query("SELECT source_id, answer FROM problems").fetchall())
    reasons = {}
    for ref, reason, _, _ in got:
        reasons.setdefault(ref.removeprefix("bad:"), []).append(reason)
    assert reasons == {
        "surrogate": ["invalid_text"], "not-utf8": ["invalid_text"], "nan": ["missing_answer"],
        "inf": ["bad_answer"], "list-q": ["bad_question"], "fifo": ["bad_image"], "zero": ["bad_image"],
        "big": ["image_too_large"], "twice": ["missing_answer", "missing_answer"]}
    details = {ref.removeprefix("bad:"): d for ref, _, d, _ in got}
    assert "FIFO" in details["fifo"] and "device" in details["zero"] and str(cap) in details["big"]
    # both rows named 'twice' are kept, each with its own content
    assert sorted(json.loads(p)["q"] for ref, _, _, p in got if ref == "bad:twice") == ["First of two", "Second of two"]
    assert problems == {"good-0": "3", "good-1": "4", "good-2": "2.5", "good-3": "B"}

    again = ingest(recipe, lake_dir)
    assert again.returncode == 0, again.stderr
    assert "ingested 0 + already in lake 4 + rejected 10" in again.stderr, again.stderr
    with Lake(lake_dir) as lake:
        assert lake.count("rejected") == 10 and lake.count("problems") == 4


def test_a_json_file_with_bad_rows_and_parquet_text(cli, lake_dir, tmp_path):
    """A JSON document with a non-UTF-8 byte in one row and a lone surrogate in a key still loads its
    other rows; Parquet binary text that is not UTF-8, NaN questions and answers are rejected per row."""
    _png(tmp_path / "a.png")
    (tmp_path / "rows.json").write_bytes(
        b'{"1": {"question": "Fine?", "answer": "yes", "image": "a.png"},'
        b' "2": {"question": "Bad \xff byte", "answer": "no", "image": "a.png"},'
        b' "\\udc80": {"question": "Key with a surrogate", "answer": "x", "image": "a.png"}}')
    pq.write_table(pa.table({"question": pa.array([b"Fine too?", b"\xff\xfe", None, b"Q?"], pa.binary()),
                             "answer": [1.0, 2.0, 3.0, float("nan")]}), tmp_path / "rows.parquet")
    recipe = tmp_path / "r.yaml"
    recipe.write_text(f"""
sources:
  - {{name: js, format: json, path: {tmp_path / 'rows.json'}}}
  - {{name: pq, format: parquet, path: {tmp_path / 'rows.parquet'}}}
""")
    out = cli("ingest", recipe).output
    assert "js: read 3 = ingested 1 + already in lake 0 + rejected 2 (invalid_text 2)" in out
    assert "pq: read 4 = ingested 1 + already in lake 0 + rejected 3" in out
    with Lake(lake_dir) as lake:
        rejected = dict(lake.query("SELECT ref_id, reason FROM rejected WHERE source = 'pq'").fetchall())
        questions = lake.query("SELECT source, question, answer FROM problems ORDER BY 1").fetchall()
    assert questions == [("js", "Fine?", "yes"), ("pq", "Fine too?", "1.0")]
    assert rejected == {"pq:1": "invalid_text", "pq:2": "empty_question", "pq:3": "missing_answer"}
    assert "js: read 3 = ingested 0 + already in lake 1 + rejected 2" in cli("ingest", recipe).output
    with Lake(lake_dir) as lake:
        assert lake.count("rejected") == 5


BAD_RECIPES = {
    # a malformed template, and templates that would reach past the row's columns
    "sources:\n  - {name: a, format: json, path: DATA, columns: {image: '{id.png'}}\n":
        "columns.image: '{id.png' is not a valid template",
    "sources:\n  - {name: a, format: json, path: DATA, columns: {image: '{id.__class__}'}}\n":
        "{id.__class__} is not a column name",
    "sources:\n  - {name: a, format: json, path: DATA, columns: {question: '{}'}}\n": "{} is not a column name",
    # YAML that is not a tree
    "a: &x [*x]\nsources:\n  - {name: a, format: synthetic}\n": "contains itself (a recursive YAML anchor)",
    "a: &a [1, 1, 1, 1, 1, 1, 1, 1, 1, 1]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a, *a]\n"
    "c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b, *b]\nd: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c, *c]\n"
    "e: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d, *d]\nf: &f [*e, *e, *e, *e, *e, *e, *e, *e, *e, *e]\n"
    "sources:\n  - {name: a, format: synthetic}\n": "YAML aliases are expanded",
    "sources: " + "[" * 5000 + "]" * 5000 + "\n": "not valid YAML",
    # impossible values
    "batch_rows: 0\nsources:\n  - {name: a, format: synthetic}\n": "batch_rows: must be at least 1",
    "max_image_bytes: 0\nsources:\n  - {name: a, format: synthetic}\n": "max_image_bytes: must be at least 1",
    # data that cannot be read at all
    "sources:\n  - {name: a, format: parquet, path: EMPTY_PARQUET}\n": "not a readable Parquet file",
    "sources:\n  - {name: a, format: json, path: FIFO}\n": "is not a regular file or a folder",
    "sources:\n  - {name: a, format: json, path: /dev/zero}\n": "is not a regular file or a folder",
    "sources:\n  - {name: a, format: json, path: NOT_JSON}\n": "not valid JSON",
}


def test_bad_recipes_and_unreadable_files_are_one_line(cli, lake_dir, tmp_path):
    data = tmp_path / "data.json"
    data.write_text(json.dumps([{"id": "1", "question": "Q?", "answer": "1"}]))
    (tmp_path / "empty.parquet").write_bytes(b"")
    (tmp_path / "not.json").write_text("{oops")
    os.mkfifo(tmp_path / "fifo.json")
    paths = {"DATA": data, "EMPTY_PARQUET": tmp_path / "empty.parquet", "FIFO": tmp_path / "fifo.json",
             "NOT_JSON": tmp_path / "not.json"}
    cases = dict(BAD_RECIPES)
    cases[b"sources:\n  - {name: caf\xe9, format: synthetic}\n"] = "not UTF-8 text"
    for i, (text, message) in enumerate(cases.items()):
        recipe = tmp_path / f"bad{i}.yaml"
        if isinstance(text, bytes):
            recipe.write_bytes(text)
        else:
            for name, path in paths.items():
                text = text.replace(name, str(path))
            recipe.write_text(text)
        res = cli("ingest", recipe, ok=False)
        assert res.exit_code == 2, (text[:200], res.output)
        assert message in res.output and res.output.count("\n") == 1, (text[:200], res.output)
    assert not lake_dir.exists()  # nothing was written, not even an empty lake
