"""The sft set from graded traces, tags over rewrites, and export that `datasets` loads byte-exact."""

from __future__ import annotations

import hashlib
import json

import pyarrow as pa
import pytest

from vlfactory.recipe import VerifyConfig, parse_recipe
from vlfactory.stages import Scope
from vlfactory.stores import schema
from vlfactory.stores.lake import Lake
from vlfactory.verify import verdict_identity


@pytest.fixture()
def graded_lake(cli, lake_dir, tmp_path):
    """Two synthetic sources; 3 traces per problem with known lengths and verdicts."""
    recipe = tmp_path / "r.yaml"
    recipe.write_text("sources:\n  - {name: big, format: synthetic, n: 8, seed: 1}\n"
                      "  - {name: small, format: synthetic, n: 4, seed: 2}\n")
    cli("ingest", recipe)
    traces, grades = [], []
    verifier, settings = verdict_identity(VerifyConfig())
    with Lake(lake_dir) as lake:
        problems = lake.query("SELECT problem_id, source, answer FROM problems ORDER BY source, source_id").fetchall()
        for n, (pid, source, gold) in enumerate(problems):
            for i in range(3):
                words = 10 * (3 - i)  # sample 2 is the shortest
                text = f"<think>{'step ' * words}</think><answer>{gold}</answer>"
                tid = f"{pid}-{i}"
                traces.append({"trace_id": tid, "problem_id": pid, "sample_index": i, "model": "r1",
                               "completion": text, "request_key": tid})
                accepted = not (n == 0 and i == 2)  # the first problem's shortest sample is rejected
                grades.append({"grade_id": tid, "ref_table": "traces", "ref_id": tid, "problem_id": pid,
                               "source": source, "correct": True, "accepted": accepted, "words": words + 1,
                               "cleaned": f"<think>{'s ' * words}</think>\n<answer>{gold}</answer>",
                               "cleaned_words": words + 1, "cleaned_ok": i != 1, "reasons": [],
                               "verifier": verifier, "settings_hash": settings})
        with lake.transaction("test traces"):
            lake.insert("traces", pa.Table.from_pylist(traces, schema=schema.TRACES))
            lake.insert("grades", pa.Table.from_pylist(grades, schema=schema.GRADES))
    return problems


def build(lake_dir, **sft) -> object:
    from vlfactory.stages import sft as sftset

    recipe = parse_recipe({"sources": [{"name": "big", "format": "synthetic"}, {"name": "small", "format": "synthetic"}],
                           "sft": sft})
    with Lake(lake_dir) as lake:
        return sftset.run(lake, recipe.stage_config("sft"), Scope.of(recipe)).value


def test_sft_picks_shortest_accepted_cleaned_per_problem(graded_lake, lake_dir, cli):
    stats = build(lake_dir, per_problem=1, pick="shortest")
    assert stats.examples == 12 and stats.written and stats.by_source == {"big": 8, "small": 4}
    with Lake(lake_dir) as lake:
        rows = lake.query("SELECT problem_id, from_id, completion, prompt, image_id, words FROM sft").fetchall()
    first = graded_lake[0][0]
    chosen = {r[0]: r[1] for r in rows}
    assert chosen[first] == f"{first}-0"  # its shortest was rejected and sample 1 failed cleaning
    assert all(pid == first or fid.endswith("-2") for pid, fid in chosen.items())
    assert len(rows) == 12 and all(r[2].startswith("<think>s ") and r[4] for r in rows)  # the cleaned text, with an image
    assert all("<think>" in r[3] and "<answer>" in r[3] for r in rows)  # the rollout prompt's instruction
    # an identical rebuild writes nothing
    assert not build(lake_dir, per_problem=1, pick="shortest").written


def test_weights_balance_sources_and_tags_survive_rewrites(graded_lake, lake_dir, cli):
    build(lake_dir, per_problem=1)
    cli("tag", "iter1")
    stats = build(lake_dir, per_problem=2, pick="random", seed=3, weights={"big": 1, "small": 1})
    assert stats.by_source == {"big": 8, "small": 8}  # 4 problems each, 2 samples each
    assert stats.dropped["over the source's weighted share"] == 4
    with Lake(lake_dir) as lake:
        assert lake.count("sft") == 16
        assert lake.query("SELECT count(*) FROM sft@iter1").fetchone()[0] == 12
        old = {r[0] for r in lake.query("SELECT example_id FROM sft@iter1").fetchall()}
        new = {r[0] for r in lake.query("SELECT example_id FROM sft").fetchall()}
    assert old != new
    # all, with a cap on examples
    stats = build(lake_dir, pick="all", max_examples=5, cleaned=False)
    assert stats.examples == 5 and stats.dropped["over max_examples"] == 12 * 3 - 1 - 5


def test_a_set_tag_moves_only_when_the_sets_rows_change(graded_lake, lake_dir):
    """The loop tags its sets through Lake.tag_if_changed: a set rebuilt with the rows its tag names (in a later
    snapshot) keeps the tag where it was; other rows move it to the current snapshot."""
    build(lake_dir, per_problem=1)
    with Lake(lake_dir) as lake:
        first, moved = lake.tag_if_changed("iter1-sft", "sft")
        assert moved and first == lake.data_snapshot()
    build(lake_dir, per_problem=2)
    assert build(lake_dir, per_problem=1).written   # the same rows as tagged, written again
    with Lake(lake_dir) as lake:
        assert lake.data_snapshot() > first and lake.tag_if_changed("iter1-sft", "sft") == (first, False)
    build(lake_dir, per_problem=2)
    with Lake(lake_dir) as lake:
        now = lake.data_snapshot()
        assert lake.tag_if_changed("iter1-sft", "sft") == (now, True) and lake.tags()["iter1-sft"] == now
        assert lake.query("SELECT count(*) FROM sft@iter1-sft").fetchone()[0] == lake.count("sft") > 12


def test_export_loads_with_plain_datasets_byte_exact(graded_lake, lake_dir, cli, tmp_path):
    import datasets

    build(lake_dir, per_problem=1)
    cli("tag", "iter1")
    build(lake_dir, per_problem=2)  # a later rewrite must not leak into the export of iter1
    out = cli("export", "sft@iter1", "--to", tmp_path / "out", "--shard-rows", "5").output
    assert "wrote 3 shards" in out
    ds = datasets.load_dataset("parquet", data_dir=str(tmp_path / "out" / "sft"), split="train")
    assert len(ds) == 12 and isinstance(ds.features["image"], datasets.Image)
    assert {"problem_id", "source_id", "prompt", "completion", "image"} <= set(ds.column_names)
    assert ds[0]["image"].size[0] > 0  # decodes to a PIL image
    raw = ds.cast_column("image", datasets.Image(decode=False))
    for row in raw:
        assert hashlib.sha256(row["image"]["bytes"]).hexdigest() == row["image_id"]
    cli("export", "iter1", "--table", "sft", "--to", tmp_path / "hf", "--format", "hf")
    saved = datasets.load_from_disk(str(tmp_path / "hf"))
    assert len(saved) == 12 and saved.features["image"] == datasets.Image()
    res = cli("export", "iter1", "--to", tmp_path / "x", ok=False)
    assert res.exit_code == 2 and "name the table" in res.output
    assert "unknown table" in cli("export", "nope@iter1", "--to", tmp_path / "x", ok=False).output
    json.dumps(ds.features.to_dict())  # the features serialise (the dataset card needs them)
