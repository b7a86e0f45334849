"""Checkpoints known by content: a retrain is a new model everywhere (rollout cache, evals, trainings), and the
loop retrains exactly when the data, the base model or the resolved trainer settings change."""

from __future__ import annotations

import json

import pytest

from answer_server import AnswerServer
from test_trainers import SFT, sets_lake, trainings, write_sets  # noqa: F401 (sets_lake: a fixture)
from vlfactory.models import identity
from vlfactory.prompts import load_template
from vlfactory.stores.lake import Lake, LakeError

pytestmark = pytest.mark.slow


def flat(text: str) -> str:
    return " ".join(text.split())


def test_retrain_in_place_is_a_new_model_for_rollouts_and_evals(sets_lake, lake_dir, tiny_vlm_dir, tmp_path, cli):
    from vlfactory.trainers.sft import train_sft

    out = tmp_path / "policy"
    first = train_sft("sft@iter1", str(tiny_vlm_dir), out, config=SFT, lake=str(lake_dir))
    assert first.model_id == identity(str(out)) and first.base_model_id == identity(str(tiny_vlm_dir))
    # the same training again is found finished: nothing trained, no new row
    again = train_sft("sft@iter1", str(tiny_vlm_dir), out, config=SFT, lake=str(lake_dir))
    assert again.reused and again.model_id == first.model_id and len(trainings(lake_dir)) == 1

    recipe = tmp_path / "policy.yaml"
    recipe.write_text(f"""
sources:
  - {{name: syn, format: synthetic, n: 6, seed: 3}}
benchmarks:
  - {{name: held, format: synthetic, n: 3, seed: 99, split: test}}
rollout:
  backend: transformers
  model: {out}
  device: cpu
  sampling: {{temperature: 1.0, max_tokens: 6, n: 1, seed: 0}}
""")
    assert "6 samples = 0 cached + 6 generated" in flat(cli("run", recipe, "--stage", "rollout").output)
    assert "6 samples = 6 cached + 0 generated" in flat(cli("run", recipe, "--stage", "rollout").output)
    cli("eval", "--model", out, "--benchmark", "held", "--recipe", recipe)
    assert "done before" in cli("eval", "--model", out, "--benchmark", "held", "--recipe", recipe).output

    # other data into the same folder: a finished checkpoint is not overwritten by a different training...
    write_sets(lake_dir, "iter2", "b", 3)
    with pytest.raises(LakeError, match="holds a finished sft training of sft@iter1"):
        train_sft("sft@iter2", str(tiny_vlm_dir), out, config=SFT, lake=str(lake_dir))
    # ...unless asked to; then the folder holds another model, and everything keyed on it moves
    second = train_sft("sft@iter2", str(tiny_vlm_dir), out, config=SFT, lake=str(lake_dir), overwrite=True)
    assert second.model_id == identity(str(out)) != first.model_id
    assert "6 samples = 0 cached + 6 generated" in flat(cli("run", recipe, "--stage", "rollout").output)
    eval_out = cli("eval", "--model", out, "--benchmark", "held", "--recipe", recipe).output
    assert "done before" not in eval_out
    with Lake(lake_dir, read_only=True) as lake:
        by_model = dict(lake.query("SELECT model, count(*) FROM rollouts GROUP BY ALL").fetchall())
        evals = lake.query("SELECT model, model_name FROM evals ORDER BY created_at").fetchall()
        made = dict(lake.query("SELECT model_id, training_id FROM models WHERE training_id IS NOT NULL").fetchall())
    rows = {r["training_id"]: r for r in trainings(lake_dir)}
    assert by_model == {first.model_id: 6, second.model_id: 6}
    assert [e[0] for e in evals] == [first.model_id, second.model_id] and evals[1][1] == str(out)
    # which data made each checkpoint: one query, and true
    assert {rows[t]["dataset"] for t in (made[first.model_id], made[second.model_id])} == {"sft@iter1", "sft@iter2"}
    assert rows[made[second.model_id]]["model_id"] == second.model_id


LOOP = """
name: tinyloop
sources:
  - {{name: syn, format: synthetic, n: 4, seed: 5}}
distil:
  backend: openai
  model: teacher
  base_url: {url}
  sampling: {{max_tokens: 64, n: 1}}
sft: {{cleaned: false}}
rollout:
  backend: transformers
  model: tiny
  device: cpu
  sampling: {{temperature: 1.0, max_tokens: 6, n: 2, seed: 0}}
rl: {{band: [0.0, 1.0], min_samples: 1}}
loop:
  base_model: {base}
  iterations: 1
  output_dir: {out}
  sft: sft.yaml
  grpo: {grpo}
"""


def test_iterate_retrains_when_the_trainer_settings_change_and_skips_when_restored(cli, lake_dir, tmp_path,
                                                                                     tiny_vlm_dir):
    recipe, sft_yaml = tmp_path / "loop.yaml", tmp_path / "sft.yaml"
    grpo = {"use_cpu": True, "bf16": False, "max_steps": 1, "per_device_train_batch_size": 4,
            "num_generations": 4, "max_completion_length": 6, "report_to": "none", "save_strategy": "no"}

    def write_sft(lr: float) -> None:
        sft_yaml.write_text("".join(f"{k}: {json.dumps(v)}\n" for k, v in (SFT | {"max_steps": 1,
                                                                                  "learning_rate": lr}).items()))

    write_sft(1e-3)
    cli("ingest", recipe.write_text("sources:\n  - {name: syn, format: synthetic, n: 4, seed: 5}\n") and recipe)
    template = load_template("reason")
    with Lake(lake_dir) as lake:
        problems = lake.query("SELECT question, choices, caption, answer FROM problems").fetchall()
    answers = {template.render(caption=c, question=q, choices=ch): [f"<think>I see it.</think><answer>{a}</answer>"]
               for q, ch, c, a in problems}
    with AnswerServer(answers) as server:
        recipe.write_text(LOOP.format(url=server.url, base=tiny_vlm_dir, out=tmp_path / "runs", grpo=json.dumps(grpo)))
        cli("iterate", recipe)
        assert [(r["kind"], r["status"]) for r in trainings(lake_dir)] == [("sft", "ok"), ("grpo", "ok")]

        write_sft(5e-4)  # an edited learning rate: another training, in its own folder; GRPO starts from it
        out = flat(cli("iterate", recipe).output)
        assert "sft iter1: done before" not in out and "grpo iter1: done before" not in out, out
        rows = trainings(lake_dir)
        assert [(r["kind"], r["status"]) for r in rows] == [("sft", "ok"), ("grpo", "ok")] * 2
        assert rows[0]["snapshot_id"] == rows[2]["snapshot_id"] and rows[0]["config_hash"] != rows[2]["config_hash"]
        assert rows[0]["output_dir"] != rows[2]["output_dir"] and rows[1]["base_model_id"] != rows[3]["base_model_id"]
        assert rows[3]["base_model_id"] == rows[2]["model_id"]

        write_sft(1e-3)  # restored: both trainings are found finished and skipped
        out = flat(cli("iterate", recipe).output)
        assert "sft iter1: done before" in out and "grpo iter1: done before" in out, out
        assert len(trainings(lake_dir)) == 4
