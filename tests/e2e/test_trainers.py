"""Trainers: set versions read exactly, SFT and GRPO with stock TRL on the tiny Qwen2.5-VL, lineage in `trainings`."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pyarrow as pa
import pytest

from vlfactory.recipe import RecipeError
from vlfactory.stores import schema
from vlfactory.stores.lake import Lake, LakeError

CPU = {"use_cpu": True, "bf16": False, "gradient_checkpointing": False, "logging_steps": 1, "save_strategy": "no",
       "report_to": "none"}
SFT = CPU | {"max_steps": 3, "per_device_train_batch_size": 2, "learning_rate": 1e-3, "max_pixels": 56 * 56}
GRPO = CPU | {"max_steps": 2, "per_device_train_batch_size": 4, "num_generations": 4, "max_completion_length": 12,
              "reward_weights": [1.0, 0.5]}


def write_sets(lake_dir, tag: str, prefix: str, n: int) -> list[str]:
    """Rewrite `sft` (DELETE + INSERT, one snapshot) and `rl` from the first n problems; tag it. Returns example ids."""
    with Lake(lake_dir) as lake:
        problems = lake.query("""SELECT problem_id, source, source_id, image_id, question, choices, answer
                                 FROM problems ORDER BY source_id LIMIT ?""", [n]).to_arrow_table().to_pylist()
        sft = [p | {"example_id": f"{prefix}{i}", "prompt": f"{p['question']} Think, then answer.",
                    "completion": f"<think>Read the image.</think> <answer>{p['answer']}</answer>"}
               for i, p in enumerate(problems)]
        rl = [p | {"prompt": p["question"]} for p in problems]
        with lake.transaction(f"test sets {tag}"):
            lake.con.execute("DELETE FROM lake.sft")
            lake.con.execute("DELETE FROM lake.rl")
            lake.insert("sft", pa.Table.from_pylist(sft, schema=schema.SFT))
            lake.insert("rl", pa.Table.from_pylist(rl, schema=schema.RL))
        lake.tag(tag)
    return [r["example_id"] for r in sft]


@pytest.fixture()
def sets_lake(cli, lake_dir, tmp_path):
    """Synthetic problems with images; sft and rl sets tagged iter1."""
    recipe = tmp_path / "r.yaml"
    recipe.write_text("sources:\n  - {name: syn, format: synthetic, n: 6, seed: 3}\n")
    cli("ingest", recipe)
    return write_sets(lake_dir, "iter1", "a", 6)


def trainings(lake_dir) -> list[dict]:
    with Lake(lake_dir, read_only=True) as lake:
        return lake.query("SELECT * FROM trainings ORDER BY started_at").to_arrow_table().to_pylist()


def test_config_yaml_takes_trl_fields_and_names_unknown_ones(tmp_path):
    from vlfactory.trainers.config import load_config

    path = tmp_path / "sft.yaml"
    path.write_text("learning_rate: 5e-7\nlr_scheduler_type: cosine\nuse_cpu: true\nmax_pixels: 262144\n")
    args, extras = load_config("sft", path, tmp_path / "out")
    assert type(args).__name__ == "SFTConfig" and args.learning_rate == 5e-7  # a float, not PyYAML's string
    assert args.output_dir == str(tmp_path / "out") and extras == {"max_pixels": 262144}
    args, _ = load_config("sft", path, tmp_path / "out", flags=["--learning_rate", "1e-5", "--logging_steps", "7"])
    assert (args.learning_rate, args.logging_steps) == (1e-5, 7)  # flags over the file, as in any TRL script
    path.write_text("learning_rate: 1.0e-6\nnum_generation: 4\n")
    with pytest.raises(RecipeError, match=r"unknown GRPOConfig field 'num_generation' \(did you mean 'num_gener"):
        load_config("grpo", path, tmp_path / "out")
    assert load_config("grpo", {"learning_rate": "1e-6", "use_cpu": True}, "out")[0].learning_rate == 1e-6  # recipes
    with pytest.raises(RecipeError, match="output_dir is set by --output"):
        load_config("sft", {"output_dir": "elsewhere"}, tmp_path / "out")


def test_old_version_reads_exactly_its_rows(sets_lake, lake_dir):
    from vlfactory.trainers.data import read_set, rl_dataset, sft_dataset

    iter2 = write_sets(lake_dir, "iter2", "b", 4)
    with Lake(lake_dir, read_only=True) as lake:
        tags = lake.tags()
        ref, rows = read_set(lake, "sft@iter1", "sft")
        assert ref.snapshot_id == tags["iter1"] and rows.num_rows == 6
        assert sft_dataset(rows)["example_id"] == sets_lake
        assert read_set(lake, f"sft@{tags['iter1']}", "sft")[1].num_rows == 6
        ref2, rows2 = read_set(lake, "iter2", "sft")
        assert ref2.snapshot_id == tags["iter2"] and sft_dataset(rows2)["example_id"] == iter2
        with pytest.raises(LakeError, match="reads the 'rl' table"):
            read_set(lake, "sft@iter1", "rl")
        rl = rl_dataset(read_set(lake, "rl@iter1", "rl")[1])
    example = sft_dataset(rows)[0]
    assert example["images"][0].size[0] > 0  # decoded from the catalog's bytes
    user, assistant = example["messages"]
    assert [p["type"] for p in user["content"]] == ["image", "text"] and "Think" in user["content"][1]["text"]
    assert assistant["content"][0]["text"].endswith("</answer>")
    assert len(rl) == 6 and {"prompt", "images", "answer", "choices", "question"} <= set(rl.column_names)
    assert rl[0]["prompt"][0]["content"][0]["type"] == "image"


@pytest.mark.slow
def test_sft_trains_and_records_lineage(sets_lake, lake_dir, tiny_vlm_dir, tmp_path):
    from safetensors.torch import load_file

    from vlfactory.trainers.sft import train_sft

    out = tmp_path / "sft"
    record = train_sft("sft@iter1", str(tiny_vlm_dir), out, config=SFT, lake=str(lake_dir))
    assert record.status == "ok" and math.isfinite(record.metrics["train_loss"]) and record.metrics["step"] == 3
    before, after = load_file(tiny_vlm_dir / "model.safetensors"), load_file(out / "model.safetensors")
    for name in ("model.layers.0.self_attn.q_proj.weight", "visual.blocks.0.attn.qkv.weight"):
        assert not (before[name] == after[name]).all(), name
    (row,) = trainings(lake_dir)
    with Lake(lake_dir, read_only=True) as lake:
        assert row["snapshot_id"] == lake.tags()["iter1"]
    assert (row["kind"], row["dataset"], row["dataset_table"], row["rows"], row["status"], row["iteration"]) == (
        "sft", "sft@iter1", "sft", 6, "ok", 1)
    assert row["base_model"] == str(tiny_vlm_dir) and row["output_dir"] == str(out)
    assert json.loads(row["config"])["max_steps"] == 3 and "trl" in dict(row["versions"])
    # the trainer resized the images itself (max_pixels) and kept the base model's processor
    assert (out / "processor_config.json").read_text() == (tiny_vlm_dir / "processor_config.json").read_text()
    assert math.isfinite(dict(row["metrics"])["train_loss"]) and row["ended_at"] >= row["started_at"]
    lineage = json.loads((out / "vlfactory_training.json").read_text())
    assert (lineage["training_id"], lineage["snapshot_id"], lineage["status"]) == (
        row["training_id"], row["snapshot_id"], "ok")


@pytest.mark.slow
def test_retrain_on_an_old_snapshot_after_the_set_was_rewritten(sets_lake, lake_dir, tiny_vlm_dir, tmp_path, cli):
    write_sets(lake_dir, "iter2", "b", 3)
    config = tmp_path / "sft.yaml"
    config.write_text("".join(f"{k}: {json.dumps(v)}\n" for k, v in (SFT | {"max_steps": 1}).items()))
    result = cli("train", "sft", "--dataset", "sft@iter1", "--model", tiny_vlm_dir, "--output", tmp_path / "again",
                 "--config", config)
    assert "sft ok: sft@iter1" in result.output
    (row,) = trainings(lake_dir)
    with Lake(lake_dir, read_only=True) as lake:
        iter1 = lake.tags()["iter1"]
        assert lake.count("sft") == 3  # the table now holds iter2's rows...
    assert (row["snapshot_id"], row["rows"], row["status"]) == (iter1, 6, "ok")  # ...the training read iter1's


@pytest.mark.slow
def test_grpo_with_image_prompts_and_the_factory_rewards(sets_lake, lake_dir, tiny_vlm_dir, tmp_path):
    from vlfactory.trainers.grpo import train_grpo

    record = train_grpo("rl@iter1", str(tiny_vlm_dir), tmp_path / "grpo", config=GRPO, lake=str(lake_dir))
    assert record.status == "ok" and record.metrics["step"] == 2
    (row,) = trainings(lake_dir)
    metrics = dict(row["metrics"])
    for key in ("reward", "rewards/accuracy_reward/mean", "rewards/format_reward/mean"):
        assert math.isfinite(metrics[key]), key
    assert (row["kind"], row["dataset_table"], row["rows"]) == ("grpo", "rl", 6)
    assert json.loads(row["config"])["reward_weights"] == [1.0, 0.5]
    assert (tmp_path / "grpo" / "model.safetensors").exists()


@pytest.mark.slow
def test_a_failed_training_is_recorded(sets_lake, lake_dir, tmp_path):
    from vlfactory.trainers.sft import train_sft

    (tmp_path / "not-a-model").mkdir()
    with pytest.raises((OSError, ValueError)) as error:  # transformers: not a model folder
        train_sft("iter1", str(tmp_path / "not-a-model"), tmp_path / "out", config=SFT, lake=str(lake_dir))
    (row,) = trainings(lake_dir)
    assert row["status"] == "failed" and row["ended_at"] is not None and row["iteration"] == 1
    assert row["error"].startswith(error.type.__name__)  # the reason is one query away
    lineage = json.loads((tmp_path / "out" / "vlfactory_training.json").read_text())
    assert lineage["status"] == "failed" and lineage["error"].startswith(error.type.__name__)


@pytest.mark.slow
def test_two_processes_with_torchrun_record_one_training(sets_lake, lake_dir, tmp_path, tiny_vlm_dir):
    """The accelerate/torchrun entry point: every rank reads the same snapshot, only rank 0 writes the catalog."""
    import shutil
    import subprocess
    import sys

    torchrun = shutil.which("torchrun", path=str(Path(sys.executable).parent))
    if torchrun is None:
        pytest.skip("torchrun is not installed")
    config = tmp_path / "sft.yaml"
    config.write_text(json.dumps(SFT | {"max_steps": 2, "per_device_train_batch_size": 1}))
    res = subprocess.run([torchrun, "--nproc_per_node", "2", "-m", "vlfactory.trainers.sft", "--dataset", "sft@iter1",
                          "--model", str(tiny_vlm_dir), "--output", str(tmp_path / "out"), "--config", str(config),
                          "--lake", str(lake_dir)], capture_output=True, text=True, timeout=600,
                         env={**__import__("os").environ, "OMP_NUM_THREADS": "1"})
    assert res.returncode == 0, res.stderr[-3000:]
    rows = trainings(lake_dir)
    assert len(rows) == 1 and rows[0]["status"] == "ok" and rows[0]["rows"] == 6
    assert (tmp_path / "out" / "vlfactory_training.json").exists()
