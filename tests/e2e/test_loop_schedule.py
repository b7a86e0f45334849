"""The loop with the paper's structure on a tiny Qwen2.5-VL built offline and real TRL training on the CPU:
the base model is evaluated first (iteration 0), then every SFT and GRPO model of each iteration; GRPO runs
in two stages (medium on a pass-rate band, then hard on every problem of a named source, from the medium
model); iteration 2 keeps iteration 1's RL sets (rl_set: fixed), weights one source double in GRPO's data
(rl_weights) and writes its data with the hard stage's step-1 checkpoint (generator), recorded in `models`;
every training runs as the paper's did, through `accelerate launch` as a child process, here with 2 processes
(gloo); at the end a table gives every model's accuracy with a Wilson interval."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import _needs
from test_loop_launch import traces_for_every_problem
from vlfactory.loop import Loop
from vlfactory.recipe import load_recipe
from vlfactory.stores.lake import Lake, LakeSpec

pytestmark = pytest.mark.slow

RECIPE = """
name: schedule
sources:
  - {name: synthetic, format: synthetic, n: 6, seed: 0}
benchmarks:
  - {name: held-out, format: synthetic, n: 3, seed: 1000, split: test}
decontaminate_by: [image]
sft: {cleaned: false}
rollout:
  backend: transformers
  model: tiny-qwen2.5-vl
  device: cpu
  sampling: {temperature: 1.0, max_tokens: 8, n: 2, seed: 0}
rl: {band: [0.0, 1.0], min_samples: 2}
loop:
  base_model: tiny-qwen2.5-vl
  iterations: 2
  output_dir: runs
  launch: {num_processes: 2}
  benchmarks: [held-out]
  keep_traces: true
  sft: {use_cpu: true, bf16: false, max_steps: 2, per_device_train_batch_size: 1, report_to: none,
        save_strategy: "no", gradient_checkpointing: false}
  grpo: {use_cpu: true, bf16: false, max_steps: 2, per_device_train_batch_size: 2, num_generations: 2,
         max_completion_length: 8, report_to: none, save_strategy: steps, save_steps: 1, gradient_checkpointing: false}
  grpo_stages:
    - {name: medium, band: [0.0, 1.0]}
    - {name: hard, source: synthetic}
  schedule:
    - {}
    - {rl_set: fixed, samples: 1, temperature: 0.0, generator: {stage: hard, step: 1}, rl_weights: {synthetic: 2}}
"""


def test_loop_evaluates_every_model_runs_two_grpo_stages_and_keeps_a_fixed_rl_set(tmp_path, monkeypatch):
    _needs("trl")
    monkeypatch.chdir(tmp_path)
    (tmp_path / "r.yaml").write_text(RECIPE)
    recipe = load_recipe(tmp_path / "r.yaml")
    spec = LakeSpec.resolve(str(tmp_path / "lake"), None)
    traces_for_every_problem(spec, recipe)
    said = []
    policies = Loop(recipe, spec, say=lambda *a: said.append(" ".join(map(str, a)))).run()
    out = "\n".join(said)
    assert len(policies) == 2
    with Lake(spec) as lake:
        evals = lake.query("SELECT iteration, stage, benchmark, problems, model_name FROM evals "
                           "ORDER BY created_at").fetchall()
        trainings = lake.query("SELECT kind, iteration, dataset, base_model, output_dir, config, rows, metrics, "
                               "training_id, config_hash FROM trainings ORDER BY started_at").fetchall()
        tags = lake.tags()
        hard_set = lake.query(f"SELECT count(*), count(pass_rate) FROM lake.rl AT (VERSION => {tags['iter1-rl-hard']})"
                              ).fetchone()
        writers = lake.query("""SELECT DISTINCT m.path, m.training_id FROM rollouts r JOIN models m ON m.model_id = r.model
                                WHERE r.temperature = 0 AND m.path LIKE '%checkpoint-1'""").fetchall()
    assert [(i, s) for i, s, *_ in evals] == [(0, "base"), (1, "sft"), (1, "grpo-medium"), (1, "grpo"),
                                              (2, "sft"), (2, "grpo-medium"), (2, "grpo")]
    assert all(b == "held-out" and n == 3 for _, _, b, n, _ in evals)
    assert evals[0][4] == "tiny-qwen2.5-vl"
    # two GRPO stages per iteration, the hard one from the medium one's model, on every problem of its source
    grpo = [t for t in trainings if t[0] == "grpo"]
    assert [t[2] for t in grpo][:2] == ["rl@iter1-rl-medium", "rl@iter1-rl-hard"]
    assert grpo[1][3] == grpo[0][4] and hard_set == (6, 0)  # the source's 6 problems, no pass rates
    # every training launched as the paper's run: `accelerate launch`, 2 processes, one row each, its output kept
    # (iteration 2's SFT set may equal iteration 1's: then it is the same training, found done, not a new row)
    assert [(t[0], t[1]) for t in trainings if t[0] == "grpo"] == [("grpo", 1)] * 2 + [("grpo", 2)] * 2
    assert all(json.loads(t[5])["processes"] == 2 for t in trainings)
    # the loop's digest of the settings (its one process: the folder's address) is the 2-process trainer's own,
    # so a rerun finds the training done without launching it
    from vlfactory.trainers.config import load_config, settings_digest

    assert {t[9] for t in grpo[:2]} == {settings_digest(*load_config("grpo", recipe.loop.grpo, "o", processes=2), 2)}
    assert all((tmp_path / "runs" / "logs" / f"{Path(t[4]).name}.log").is_file() for t in trainings)
    # iteration 2's GRPO data has every problem twice (rl_weights), iteration 1's once
    assert [json.loads(t[5]).get("source_weights") for t in grpo] == [None, None, {"synthetic": 2}, {"synthetic": 2}]
    # iteration 2's data was written by the hard stage's step-1 checkpoint, named in `models` with its training
    hard1 = next(t for t in grpo if t[2] == "rl@iter1-rl-hard")
    assert writers == [(str(Path(hard1[4]) / "checkpoint-1"), hard1[8])]
    assert "iter2 generator: the hard stage's step-1 checkpoint" in out
    # iteration 2 keeps iteration 1's sets
    assert tags["iter2-rl-medium"] == tags["iter1-rl-medium"] and tags["iter2-rl-hard"] == tags["iter1-rl-hard"]
    assert "the fixed rl set of iter1-rl-medium" in out
    # the closing table: every model, with its interval and the eval set size
    table = out[out.index("model  "):]
    print(table)
    assert "95% CI" in table and table.count("held-out") == 7 and "base" in table and "grpo-medium" in table
    assert "tiny-qwen2.5-vl" in table
