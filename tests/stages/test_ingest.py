"""Ingest through recipes alone: the real slices, every format, bad rows, decontamination."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from vlfactory.recipe import RecipeError, load_recipe
from vlfactory.stores.lake import Lake

REPO = Path(__file__).resolve().parents[2]


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_real_slices_ingest_exactly(cli, lake_dir, shared_data):
    out = cli("ingest", REPO / "tests" / "support" / "recipes" / "tabmwp.yaml").output
    assert "read 1000 = ingested 1000" in out
    cli("run", REPO / "tests" / "support" / "recipes" / "dynamath.yaml")
    tab = json.loads((shared_data / "tabmwp-dev1k" / "problems.json").read_text())
    dyn = json.loads((shared_data / "dynamath-seed" / "dataset.json").read_text())
    with Lake(lake_dir) as lake:
        rows = lake.query("""SELECT p.source, p.source_id, p.question, p.answer, p.choices, p.caption,
                                    i.image_id, sha256(i.bytes) AS stored_sha, i.width, i.height, i.format
                             FROM problems p JOIN images i USING (image_id)""").fetchall()
        n_images = lake.count("images")
    assert len(rows) == len(tab) + len(dyn)
    by_source = {}
    for r in rows:
        by_source.setdefault(r[0], {})[r[1]] = r
    assert set(by_source["tabmwp"]) == set(tab) and set(by_source["dynamath"]) == set(dyn)
    for pid, r in by_source["tabmwp"].items():
        src = tab[pid]
        file_sha = sha(shared_data / "tabmwp-dev1k" / "tables" / f"{pid}.png")
        assert r[6] == r[7] == file_sha  # image_id is the hash of the stored, byte-exact file
        assert (r[2], r[3], r[5]) == (src["question"], src["answer"], src["table"])
        assert r[4] == src["choices"]
        assert r[10] == "PNG" and r[8] > 0 and r[9] > 0
    for pid, r in by_source["dynamath"].items():
        assert r[6] == r[7] == sha(shared_data / "dynamath-seed" / dyn[pid]["image"])
        assert r[3] == dyn[pid]["answer"] and r[5] is None
    # each distinct image stored once
    distinct = {r[6] for r in rows}
    assert n_images == len(distinct) < len(rows)


def test_reingest_adds_nothing_and_time_travel(cli, lake_dir, shared_data):
    cli("ingest", REPO / "tests" / "support" / "recipes" / "dynamath.yaml")
    cli("tag", "first")
    with Lake(lake_dir) as lake:
        before = {t: lake.count(t) for t in ("images", "problems", "rejected")}
    out = cli("ingest", REPO / "tests" / "support" / "recipes" / "dynamath.yaml").output
    assert "ingested 0 + already in lake 501" in out and "nothing new" in out
    with Lake(lake_dir) as lake:
        assert {t: lake.count(t) for t in before} == before
    cli("ingest", REPO / "tests" / "support" / "recipes" / "tabmwp.yaml", "--limit", "40")
    with Lake(lake_dir) as lake:
        assert lake.count("problems") == 541
        old = lake.query("SELECT source, count(*) FROM problems@first GROUP BY source").fetchall()
        assert old == [("dynamath", 501)]
    # --at reads every table at the old version
    res = cli("sql", "SELECT count(*) AS n FROM problems", "--at", "first", "--format", "jsonl")
    assert json.loads(res.output)["n"] == 501


def _png(path: Path, color=(200, 30, 30), size=(32, 24)) -> bytes:
    from PIL import Image

    Image.new("RGB", size, color).save(path)
    return path.read_bytes()


def test_bad_rows_are_rejected_with_reasons(cli, lake_dir, tmp_path):
    img = tmp_path / "imgs"
    img.mkdir()
    _png(img / "good1.png")
    _png(img / "good2.png", color=(0, 0, 255))
    good = (img / "good1.png").read_bytes()
    (img / "truncated.png").write_bytes(good[: len(good) // 2])
    (img / "garbage.png").write_bytes(b"this is not an image at all")
    # a flipped bit in the middle of the pixel data: the file's structure is intact, its CRC is not
    import os as _os
    from PIL import Image

    Image.frombytes("RGB", (64, 64), _os.urandom(64 * 64 * 3)).save(img / "noise.png")
    noisy = bytearray((img / "noise.png").read_bytes())
    noisy[len(noisy) // 2] ^= 0x10
    (img / "flipped.png").write_bytes(bytes(noisy))
    lines = [
        {"id": "a", "q": "How many?", "a": "3", "img": "good1.png"},
        {"id": "b", "q": "How many blue?", "a": "4", "img": "good2.png"},
        {"id": "c", "q": "Truncated?", "a": "1", "img": "truncated.png"},
        {"id": "d", "q": "Garbage?", "a": "1", "img": "garbage.png"},
        {"id": "e", "q": "Missing file?", "a": "1", "img": "nope.png"},
        {"id": "f", "q": "No answer?", "a": "", "img": "good1.png"},
        {"id": "g", "q": "   ", "a": "2", "img": "good1.png"},
        {"id": "h", "q": "How many?", "a": "3", "img": "good1.png"},  # duplicate of a
        {"id": "i", "q": "Null answer", "a": None, "img": "good2.png"},
        {"id": "j", "q": "Flipped bit?", "a": "1", "img": "flipped.png"},
    ]
    data = tmp_path / "rows.jsonl"
    data.write_text("\n".join(json.dumps(r) for r in lines) + "\n{not json\n")
    recipe = tmp_path / "r.yaml"
    recipe.write_text(f"""
sources:
  - name: mixed
    format: jsonl
    path: {data}
    images_root: {img}
    columns: {{question: q, answer: a, image: img, id: id}}
""")
    out = cli("ingest", recipe).output
    assert "read 11 = ingested 2 + already in lake 0 + rejected 9" in out
    with Lake(lake_dir) as lake:
        got = dict(lake.query("SELECT ref_id, reason FROM rejected").fetchall())
        details = dict(lake.query("SELECT ref_id, detail FROM rejected").fetchall())
        payload = json.loads(lake.query("SELECT payload FROM rejected WHERE ref_id = 'mixed:f'").fetchone()[0])
        assert sorted(r[0] for r in lake.query("SELECT source_id FROM problems").fetchall()) == ["a", "b"]
    assert got["mixed:c"] == got["mixed:d"] == got["mixed:j"] == "bad_image"
    assert got["mixed:e"] == "missing_image" and "nope.png" in details["mixed:e"]
    assert got["mixed:f"] == got["mixed:i"] == "missing_answer"
    assert got["mixed:g"] == "empty_question"
    assert got["mixed:h"] == "duplicate" and "mixed:a" in details["mixed:h"]
    assert [r for r, why in got.items() if why == "bad_row"] and payload["q"] == "No answer?"
    # rerun: nothing new anywhere, rejected rows not duplicated
    out = cli("ingest", recipe).output
    assert "ingested 0 + already in lake 2" in out
    with Lake(lake_dir) as lake:
        assert lake.count("rejected") == 9


def test_decontamination_against_benchmarks(cli, lake_dir, tmp_path, shared_data):
    dyn = json.loads((shared_data / "dynamath-seed" / "dataset.json").read_text())
    root = shared_data / "dynamath-seed"
    _png(tmp_path / "fresh.png", color=(1, 2, 3))
    _png(tmp_path / "fresh2.png", color=(9, 9, 9))
    rows = [
        {"id": "same-image", "question": "A brand new question?", "answer": "1", "image": str(root / dyn["1"]["image"])},
        {"id": "same-question", "question": "  " + dyn["2"]["question"].upper() + "!! ", "answer": "x",
         "image": str(tmp_path / "fresh.png")},
        {"id": "clean", "question": "Something else entirely?", "answer": "2", "image": str(tmp_path / "fresh2.png")},
    ]
    (tmp_path / "train.json").write_text(json.dumps(rows))
    recipe = _train_and_benchmark(tmp_path, "dynamath", root / "dataset.json")
    out = cli("ingest", recipe).output
    assert "rejected 2 (contaminated 2)" in out
    with Lake(lake_dir) as lake:
        assert [r[0] for r in lake.query("SELECT source_id FROM problems").fetchall()] == ["clean"]
        reasons = dict(lake.query("SELECT ref_id, detail FROM rejected WHERE reason = 'contaminated'").fetchall())
        assert "benchmark image" in reasons["train:same-image"]
        assert "benchmark question" in reasons["train:same-question"]
        # benchmarks are only fingerprints: none of them became training problems
        assert lake.query("SELECT count(*) FROM problems WHERE source = 'dynamath'").fetchone()[0] == 0


def test_unreadable_benchmark_rows_are_counted(cli, lake_dir, tmp_path):
    """A benchmark row that gives no fingerprint lets training rows like it through: the ingest stage says how
    many and why, per benchmark (a row without a question: neither fingerprint; a broken image: its question's)."""
    _png(tmp_path / "seen.png", color=(4, 5, 6))
    (tmp_path / "broken.png").write_bytes(b"not a png")
    bench = [{"id": "ok", "question": "How tall is the tower?", "answer": "3", "image": str(tmp_path / "seen.png")},
             {"id": "no-question", "question": "", "answer": "4", "image": str(tmp_path / "seen.png")},
             {"id": "broken-image", "question": "What colour is the car?", "answer": "red",
              "image": str(tmp_path / "broken.png")}]
    (tmp_path / "bench.json").write_text(json.dumps(bench))
    train = [{"id": "same-question", "question": "what colour is the car", "answer": "blue"},
             {"id": "clean", "question": "How many birds?", "answer": "2"}]
    (tmp_path / "train.json").write_text(json.dumps(train))
    recipe = _train_and_benchmark(tmp_path, "bench", tmp_path / "bench.json")
    out = " ".join(cli("ingest", recipe).output.split())
    assert "benchmark bench: 2 rows not fingerprinted (" in out
    assert "empty_question 1" in out and "image bad_image 1" in out
    assert "rejected 1 (contaminated 1)" in out  # the broken image's question still caught its training twin
    from vlfactory.stages import Scope
    from vlfactory.stages.ingest import run

    with Lake(lake_dir) as lake:  # a rerun reads the benchmarks again, and says so again
        result = run(lake, load_recipe(recipe).stage_config("ingest"), Scope(("train",)))
    assert result.extra["bench.benchmark_unread"] == 2 and "benchmark bench: 2 rows" in result.summary


def test_every_format_maps_through_columns(cli, lake_dir, tmp_path):
    from PIL import Image

    imgs = []
    for i in range(4):
        p = tmp_path / f"im{i}.png"
        imgs.append(_png(p, color=(i * 40, 10, 10), size=(20 + i, 20)))
    # parquet with image bytes and a JSON-string choices column
    pq.write_table(pa.table({"uid": ["p0", "p1"], "prompt": ["Which?", "How many?"], "label": ["B", "7"],
                             "options": ['["A", "B"]', None], "png": [imgs[0], imgs[1]]}),
                   tmp_path / "rows.parquet")
    # an hf dataset folder: Image feature stored as {bytes, path}
    import datasets

    hf_dir = tmp_path / "hf"
    hf_dir.mkdir()
    ds = datasets.Dataset.from_dict({"question": ["Area?"], "answer": ["12"],
                                     "image": [{"bytes": imgs[2], "path": None}]},
                                    features=datasets.Features({"question": datasets.Value("string"),
                                                                "answer": datasets.Value("string"),
                                                                "image": datasets.Image()}))
    ds.to_parquet(hf_dir / "train-00000-of-00001.parquet")
    # imagefolder with metadata.jsonl
    folder = tmp_path / "folder" / "circles"
    folder.mkdir(parents=True)
    Image.new("RGB", (16, 16), (5, 6, 7)).save(folder / "c1.png")
    (folder.parent / "metadata.jsonl").write_text(
        json.dumps({"file_name": "circles/c1.png", "q": "How many circles?", "a": "1"}) + "\n")
    # json as a list of rows
    (tmp_path / "list.json").write_text(json.dumps([{"question": "Perimeter?", "answer": 10, "file": "im3.png"}]))
    recipe = tmp_path / "all.yaml"
    recipe.write_text(f"""
name: formats
sources:
  - name: pq
    format: parquet
    path: {tmp_path / 'rows.parquet'}
    columns: {{id: uid, question: prompt, answer: label, choices: options, image: png}}
  - name: hub
    format: hf
    path: {hf_dir}
    split: train
  - name: folder
    format: imagefolder
    path: {folder.parent}
    columns: {{question: q, answer: a, id: file_name}}
  - name: listed
    format: json
    path: {tmp_path / 'list.json'}
    split: test
    columns: {{image: file}}
""")
    cli("ingest", recipe)
    with Lake(lake_dir) as lake:
        rows = {r[0]: r[1:] for r in lake.query(
            """SELECT source || ':' || source_id, question, answer, choices, split, sha256(i.bytes)
               FROM problems JOIN images i USING (image_id) ORDER BY 1""").fetchall()}
    h = lambda b: hashlib.sha256(b).hexdigest()  # noqa: E731
    assert rows["pq:p0"] == ("Which?", "B", ["A", "B"], "train", h(imgs[0]))
    assert rows["pq:p1"][2] is None and rows["pq:p1"][4] == h(imgs[1])
    assert rows["hub:0"] == ("Area?", "12", None, "train", h(imgs[2]))
    assert rows["folder:circles/c1.png"][:2] == ("How many circles?", "1")
    assert rows["listed:0"] == ("Perimeter?", "10", None, "test", h(imgs[3]))


def test_malformed_recipes_fail_before_any_write(cli, lake_dir, tmp_path, shared_data):
    cases = {
        "sources:\n  - {name: a, format: json, path: /no/such/file.json}\n": "path: /no/such/file.json does not exist",
        "sources:\n  - {name: a, format: jsn, path: x}\n": "format: 'jsn' is not one of",
        "sourcs: []\n": "sourcs: unknown key (did you mean 'sources'?)",
        "sources:\n  - {name: a, format: synthetic, n: many}\n": "n: expected int",
        "sources:\n  - {name: a, format: synthetic, columns: {questoin: q}}\n": "columns.questoin: unknown schema column (did you mean 'question'?)",
        "sources: [\n": "not valid YAML",
        "api_key: sk-123\nsources:\n  - {name: a, format: synthetic}\n": "secrets do not belong in recipes",
        f"sources:\n  - {{name: a, format: json, path: {shared_data / 'dynamath-seed/dataset.json'}, "
        "columns: {question: prompt}}\n": "columns.question: 'prompt' is not a column of the data",
    }
    for i, (text, message) in enumerate(cases.items()):
        recipe = tmp_path / f"bad{i}.yaml"
        recipe.write_text(text)
        res = cli("ingest", recipe, ok=False)
        assert res.exit_code == 2, res.output
        assert message in res.output and res.output.count("\n") == 1, res.output
    with pytest.raises(RecipeError, match="recipe not found"):
        load_recipe(tmp_path / "missing.yaml")
    assert not lake_dir.exists()  # nothing was written, not even an empty lake


def _train_and_benchmark(tmp_path, name: str, path) -> Path:
    """A recipe: tmp_path/train.json as the source `train`, `path` as the benchmark `name` (both JSON)."""
    recipe = tmp_path / "r.yaml"
    recipe.write_text(f"""
sources:
  - {{name: train, format: json, path: {tmp_path / 'train.json'}}}
benchmarks:
  - {{name: {name}, format: json, path: {path}}}
""")
    return recipe
