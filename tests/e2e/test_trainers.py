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
# The planted GRPO task: the wired tiny VLM (vlfactory.models.tiny.tiny_vlm_r1) writes one well-formed R1 chain
# whose <answer> is drawn evenly from R1_ANSWERS ("Yes", "No", "2", "3"), and every rl row's gold is one of them:
# a reward pays one completion in four and nothing else varies. Plain SGD, so each update is the reward's gradient
# scaled: Adam moves every parameter by about lr per step, the wired model's zeroed projections included, and
# broke its chain within 4 steps at lr 1e-2 (its format reward fell to 0). Measured (2 shared cores, 8 completions
# a step): P(rewarded answer) 0.25 -> 0.89 after 4 steps at lr 0.3, chain intact; with a constant reward it stays
# 0.25 (every advantage is 0).
PLANTED = CPU | {"max_steps": 3, "per_device_train_batch_size": 8, "num_generations": 8, "max_completion_length": 32,
                 "optim": "sgd", "learning_rate": 0.3, "lr_scheduler_type": "constant"}


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


def planted_rl(lake_dir, gold: str) -> str:
    """Rewrite `rl` from the lake's problems with every gold answer `gold`; tag it `planted`; returns its version."""
    with Lake(lake_dir) as lake:
        problems = lake.query("""SELECT problem_id, source, source_id, image_id, question
                                 FROM problems ORDER BY source_id""").to_arrow_table().to_pylist()
        rl = [p | {"prompt": p["question"], "answer": gold, "choices": None} for p in problems]
        with lake.transaction(f"planted rl: {gold}"):
            lake.con.execute("DELETE FROM lake.rl")
            lake.insert("rl", pa.Table.from_pylist(rl, schema=schema.RL))
        lake.tag("planted")
    return "rl@planted"


def answer_probability(model_dir, lake_dir, answer: str, dataset: str = "rl@planted") -> float:
    """The model's probability, averaged over the set's prompts (image and text, rendered as the trainer renders
    them), that the token after the wired chain's `<answer>` starts `answer`: the rewarded completion's
    probability, since every other token of the chain is certain."""
    import torch
    from transformers import AutoModelForImageTextToText, AutoProcessor

    from vlfactory.models import register_processors
    from vlfactory.models.tiny import R1_CHAIN
    from vlfactory.trainers.data import prepare, read_set, rl_dataset

    register_processors()
    processor = AutoProcessor.from_pretrained(model_dir)
    model = AutoModelForImageTextToText.from_pretrained(model_dir).eval()
    with Lake(lake_dir, read_only=True) as lake:
        examples = rl_dataset(prepare(read_set(lake, dataset, "rl")[1], {}))
    token = processor.tokenizer.encode(answer, add_special_tokens=False)[0]
    probabilities = []
    for ex in examples:
        text = processor.apply_chat_template(ex["prompt"], add_generation_prompt=True, tokenize=False) + R1_CHAIN
        with torch.no_grad():
            logits = model(**processor(text=[text], images=ex["images"], return_tensors="pt")).logits[0, -1]
        probabilities.append(torch.softmax(logits, -1)[token].item())
    assert len(probabilities) == len(examples) > 0
    return sum(probabilities) / len(probabilities)


def logged(lake_dir, name: str) -> list[float]:
    """A number the last training logged, one value per step in step order (`training_logs`)."""
    with Lake(lake_dir, read_only=True) as lake:
        return [v for (v,) in lake.query("""SELECT value FROM training_logs WHERE name = ? AND training_id =
                    (SELECT training_id FROM trainings ORDER BY started_at DESC LIMIT 1) ORDER BY step""",
                                         [name]).fetchall()]


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
def test_grpo_with_the_factory_rewards_raises_the_rewarded_answer(sets_lake, lake_dir, tiny_vlm_r1_dir, tmp_path):
    """The planted task (PLANTED) through train_grpo with the factory's rewards (accuracy, weight 1; format,
    weight 0.5): the gold answer "2" is one of the wired model's four, so accuracy pays one completion in four.
    After 3 steps the probability of writing "2" has risen from 0.25 to over 0.5, the accuracy the trainer logged
    rose from its first step to its last, and the chain stayed well-formed. A reward that pays nothing in
    particular (a constant) leaves every advantage at 0 and the probability at 0.25."""
    from vlfactory.trainers.grpo import train_grpo

    dataset = planted_rl(lake_dir, "2")
    before = answer_probability(tiny_vlm_r1_dir, lake_dir, "2")
    config = PLANTED | {"reward_weights": [1.0, 0.5]}
    record = train_grpo(dataset, str(tiny_vlm_r1_dir), tmp_path / "grpo", config=config, lake=str(lake_dir))
    after = answer_probability(tmp_path / "grpo", lake_dir, "2")
    assert before == pytest.approx(0.25, abs=0.01)  # the wired draw: one answer in four
    assert after > 0.5, (before, after)
    accuracy = logged(lake_dir, "rewards/accuracy_reward/mean")
    assert len(accuracy) == 3 and accuracy[-1] > accuracy[0], accuracy  # sampled by the trainer, step by step
    assert logged(lake_dir, "rewards/format_reward/mean") == [1.0, 1.0, 1.0]  # the chain is intact
    assert record.status == "ok" and record.metrics["step"] == 3 and record.metrics["steps_reward_std_nonzero"] >= 1
    (row,) = trainings(lake_dir)
    assert (row["kind"], row["dataset_table"], row["rows"]) == ("grpo", "rl", 6)
    assert json.loads(row["config"])["reward_weights"] == [1.0, 0.5]


@pytest.mark.slow
def test_grpo_on_a_set_smaller_than_one_step_fails_with_one_line_and_is_recorded(sets_lake, lake_dir, tmp_path):
    """Six problems and a step that draws eight (32 completions / 4 per problem): TRL would stop with "args.max_steps
    must be set"; the trainer says which set, how many problems and what a step needs, before loading a model."""
    from vlfactory.trainers.grpo import train_grpo

    config = PLANTED | {"per_device_train_batch_size": 32, "num_generations": 4}
    (tmp_path / "no-model-needed").mkdir()
    with pytest.raises(ValueError, match=r"rl@iter1: 6 problems, and one GRPO step draws 8 "):
        train_grpo("rl@iter1", str(tmp_path / "no-model-needed"), tmp_path / "grpo", config=config,
                   lake=str(lake_dir))
    (row,) = trainings(lake_dir)
    assert row["status"] == "failed" and row["error"].startswith("ValueError: rl@iter1: 6 problems")


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
