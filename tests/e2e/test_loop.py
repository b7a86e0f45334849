"""`vlfactory iterate quickstart`: the README's main job, killed and resumed, and what it learned.

One run of the shipped quickstart (killed with SIGKILL as iteration 2 starts, then resumed), then
what a researcher checks in the lake: the base model was taught to see first (a training on the
captions set, iteration 0); iteration 2 learned from iteration 1's RL model's own verified rollouts
(nothing else); GRPO had a reward signal (rewards varied within a group) on most steps; the SFT and
final models answer the held-out questions far beyond the base model, with 95% intervals apart; and
the final model reads the picture: on the same questions with blank images it loses 20 points or
more. bench/loop.py measures the same run's targets and wall time.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from conftest import _needs
from vlfactory.stores.lake import Lake

pytestmark = pytest.mark.slow


def test_quickstart_loop_learns_and_resumes_after_a_kill(tmp_path):
    _needs("trl")
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    cmd = [sys.executable, "-m", "vlfactory.cli", "iterate", "quickstart", "--lake", str(tmp_path / "lake")]
    # killed with SIGKILL as soon as iteration 2 starts
    proc = subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    seen = []
    deadline = time.monotonic() + 1500
    for line in proc.stderr:
        seen.append(line)
        if "== iteration 2 ==" in line or time.monotonic() > deadline:
            proc.send_signal(signal.SIGKILL)
            break
    proc.wait(60)
    first = "".join(seen)
    assert "== iteration 2 ==" in first, first[-3000:]
    assert "tagged iter1 ->" in first and "eval synthetic-eval:" in first
    with Lake(tmp_path / "lake") as lake:
        trainings = lake.query("SELECT kind, iteration, status FROM trainings ORDER BY started_at").fetchall()
    assert trainings == [("sft", 0, "ok"), ("sft", 1, "ok"), ("grpo", 1, "ok")]

    # the rerun redoes nothing of iteration 1 and finishes iteration 2
    res = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=1500)
    assert res.returncode == 0, res.stderr[-3000:]
    out = res.stderr
    assert "sft iter0: done before" in out and "sft iter1: done before" in out and "grpo iter1: done before" in out
    assert "distil: 300 samples = 300 cached + 0 generated" in out
    with Lake(tmp_path / "lake") as lake:
        trainings = {(k, i): (model_id, metrics) for k, i, model_id, metrics in lake.query(
            "SELECT kind, iteration, model_id, metrics FROM trainings WHERE status = 'ok'").fetchall()}
        evals = {(i, s): (acc, n) for i, s, acc, n in lake.query(
            "SELECT iteration, stage, accuracy, problems FROM evals WHERE benchmark = 'synthetic-eval'").fetchall()}
        tags = lake.tags()
        iter2_sft = lake.query(f"""SELECT from_table, model, count(*) FROM lake.sft AT (VERSION => {tags['iter2-sft']})
                                   GROUP BY ALL""").fetchall()
        pretrain_set = lake.query(f"""SELECT from_table, count(*) FROM lake.sft AT (VERSION => {tags['pretrain']})
                                      GROUP BY ALL""").fetchall()
        bases = dict(lake.query("SELECT concat(kind, iteration), base_model_id FROM trainings WHERE status = 'ok'").fetchall())
    assert set(trainings) == {("sft", 0), ("sft", 1), ("grpo", 1), ("sft", 2), ("grpo", 2)}

    # the base was taught to see on every training image's caption, and every SFT starts from it
    assert pretrain_set == [("captions", 300)]
    assert bases["sft1"] == bases["sft2"] == trainings[("sft", 0)][0] != bases["sft0"]

    # iteration 2's SFT data: verified rollouts of iteration 1's RL model, nothing else
    assert [(t, m) for t, m, _ in iter2_sft] == [("rollouts", trainings[("grpo", 1)][0])]
    assert iter2_sft[0][2] >= 20

    # GRPO had a signal: rewards varied within a group on most logged steps of both runs
    for k in (1, 2):
        metrics = trainings[("grpo", k)][1]
        assert metrics["steps_reward_std_nonzero"] >= 0.5 * metrics["logged_steps"] > 0, metrics

    # learning beyond noise: the SFT model's 95% interval lies above the base model's
    from vlfactory.stages.eval import wilson_interval

    base, sft, final = evals[(0, "base")], evals[(1, "sft")], evals[(2, "grpo")]
    assert sft[1] == base[1] == final[1] >= 200 and {(1, "grpo"), (2, "sft")} <= set(evals)
    assert wilson_interval(*sft)[0] > wilson_interval(*base)[1], evals
    assert wilson_interval(*final)[0] > wilson_interval(*base)[1], evals

    # the final model reads the picture: the same held-out questions with blank images lose 20 points
    import dataclasses

    from vlfactory.stages import eval as evaluate
    from vlfactory.recipe import load_recipe
    from vlfactory.sources.synthetic import blank_copy

    recipe = load_recipe("quickstart")
    final_model = lake_model(tmp_path, trainings[("grpo", 2)][0])
    cfg = recipe.eval_config("synthetic-eval", final_model)
    cfg = dataclasses.replace(cfg, benchmark=blank_copy(recipe.benchmarks[0], tmp_path / "blank"))
    with Lake(tmp_path / "lake") as lake:
        blank = evaluate.run(lake, cfg).value
    assert blank.problems == final[1] and final[0] - blank.accuracy >= 0.20, (final, blank.accuracy)


def lake_model(folder, model_id: str) -> str:
    """The checkpoint folder of a model identity (the loop's runs folder holds one per training)."""
    from vlfactory.models import identity

    return next(str(p) for p in (folder / "runs" / "quickstart").iterdir() if p.is_dir() and identity(str(p)) == model_id)
