"""The loop with the paper's structure on a tiny Qwen2.5-VL built offline and real TRL training on the CPU:
the base model is evaluated first (iteration 0), then every SFT and GRPO model of each iteration; GRPO runs
in two stages (medium, then hard, each on its own pass-rate band, the second from the first's model);
iteration 2 keeps iteration 1's RL sets (rl_set: fixed) and samples the next round's data its own way;
at the end a table gives every model's accuracy with a Wilson interval."""

from __future__ import annotations

import pyarrow as pa
import pytest

from conftest import _needs
from vlfactory.loop import Loop
from vlfactory.recipe import load_recipe
from vlfactory.stores import schema
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
  benchmarks: [held-out]
  keep_traces: true
  grpo_stages:
    - {name: medium, band: [0.0, 1.0]}
    - {name: hard, band: [0.0, 0.5]}
  schedule:
    - {}
    - {rl_set: fixed, samples: 1, temperature: 0.0}
"""


def test_loop_evaluates_every_model_runs_two_grpo_stages_and_keeps_a_fixed_rl_set(tmp_path, monkeypatch):
    _needs("trl")
    monkeypatch.chdir(tmp_path)
    (tmp_path / "r.yaml").write_text(RECIPE)
    recipe = load_recipe(tmp_path / "r.yaml")
    spec = LakeSpec.resolve(str(tmp_path / "lake"), None)
    # distillation's output, written by hand: one correct trace per problem (no reasoner runs here)
    from vlfactory.stages import Scope, run_stage

    with Lake(spec) as lake:
        run_stage(lake, "ingest", recipe.stage_config("ingest"), Scope.of(recipe))
        problems = lake.query("SELECT problem_id, answer FROM problems WHERE source = 'synthetic'").fetchall()
        traces = [{"trace_id": f"t-{pid}", "problem_id": pid, "sample_index": 0, "model": "r1",
                   "completion": f"<think>I look.</think> <answer>{gold}</answer>", "finish_reason": "stop",
                   "request_key": f"t-{pid}"} for pid, gold in problems]
        with lake.transaction("traces"):
            lake.insert("traces", pa.Table.from_pylist(traces, schema=schema.TRACES))
    said = []
    policies = Loop(recipe, spec, say=lambda *a: said.append(" ".join(map(str, a)))).run()
    out = "\n".join(said)
    assert len(policies) == 2
    with Lake(spec) as lake:
        evals = lake.query("SELECT iteration, stage, benchmark, problems, model_name FROM evals "
                           "ORDER BY created_at").fetchall()
        trainings = lake.query("SELECT kind, iteration, dataset, base_model, output_dir FROM trainings "
                               "ORDER BY started_at").fetchall()
        tags = lake.tags()
    assert [(i, s) for i, s, *_ in evals] == [(0, "base"), (1, "sft"), (1, "grpo-medium"), (1, "grpo"),
                                              (2, "sft"), (2, "grpo-medium"), (2, "grpo")]
    assert all(b == "held-out" and n == 3 for _, _, b, n, _ in evals)
    assert evals[0][4] == "tiny-qwen2.5-vl"
    # two GRPO stages per iteration, the hard one from the medium one's model
    grpo = [t for t in trainings if t[0] == "grpo"]
    assert [t[2] for t in grpo][:2] == ["rl@iter1-rl-medium", "rl@iter1-rl-hard"]
    assert grpo[1][3] == grpo[0][4]
    # iteration 2 keeps iteration 1's sets
    assert tags["iter2-rl-medium"] == tags["iter1-rl-medium"] and tags["iter2-rl-hard"] == tags["iter1-rl-hard"]
    assert "the fixed rl set of iter1-rl-medium" in out
    # the closing table: every model, with its interval and the eval set size
    table = out[out.index("model  "):]
    print(table)
    assert "95% CI" in table and table.count("held-out") == 7 and "base" in table and "grpo-medium" in table
    assert "tiny-qwen2.5-vl" in table
