"""`vlfactory iterate quickstart`: the README's main job, killed and resumed, and what it learned.

One run of the shipped quickstart (killed with SIGKILL as iteration 2 starts, then resumed), then
what a researcher checks in the lake: the base model was taught to describe images first, on a caption
set of its own (a training of iteration 0), and that model wrote every training image's caption (the
teacher read only those); the verifier rejected at least a tenth of the teacher's chains, each with a
reason (wrong captions make wrong chains); iteration 2 learned from iteration 1's RL model's own
verified, well-formed rollouts (nothing else); GRPO had a reward signal (rewards varied within a group)
on at least 8 steps, and a quarter of the steps, of both runs; the SFT and final models answer the
validation questions far beyond the base model, with 95% intervals apart; and the final model reads the
picture: on the same questions with blank images it loses 20 points or more. bench/loop.py measures the same
run on the held-out set, with paired tests, and its wall time.
"""

from __future__ import annotations

import os
import re
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
    assert "tagged iter1 ->" in first and "eval synthetic-val:" in first
    with Lake(tmp_path / "lake") as lake:
        trainings = lake.query("SELECT kind, iteration, status FROM trainings ORDER BY started_at").fetchall()
    assert trainings == [("sft", 0, "ok"), ("sft", 1, "ok"), ("grpo", 1, "ok")]

    # the rerun redoes nothing of iteration 1 and finishes iteration 2
    res = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=1500)
    assert res.returncode == 0, res.stderr[-3000:]
    out = res.stderr
    assert "sft iter0: done before" in out and "sft iter1: done before" in out and "grpo iter1: done before" in out
    assert "caption: 600 samples = 600 cached + 0 generated" in out   # the model's captions, kept
    assert re.search(r"distil: (\d+) samples = \1 cached \+ 0 generated", out), out[-3000:]
    with Lake(tmp_path / "lake") as lake:
        trainings = {(k, i): (model_id, metrics) for k, i, model_id, metrics in lake.query(
            "SELECT kind, iteration, model_id, metrics FROM trainings WHERE status = 'ok'").fetchall()}
        evals = {(i, s): (acc, n) for i, s, acc, n in lake.query(
            "SELECT iteration, stage, accuracy, problems FROM evals WHERE benchmark = 'synthetic-val'").fetchall()}
        captions = lake.query("""SELECT c.model, p.source, count(*) FROM captions c JOIN problems p USING (problem_id)
                                 WHERE c.origin = 'model' GROUP BY ALL""").fetchall()
        traces = lake.query("""SELECT g.accepted, g.reasons FROM grades g JOIN traces t ON t.trace_id = g.ref_id
                               WHERE g.ref_table = 'traces'""").fetchall()
        tags = lake.tags()
        iter2_rows = [r[0] for r in lake.query(
            f"SELECT completion FROM lake.sft AT (VERSION => {tags['iter2-sft']})").fetchall()]
        iter2_sft = lake.query(f"""SELECT from_table, model, count(*) FROM lake.sft AT (VERSION => {tags['iter2-sft']})
                                   GROUP BY ALL""").fetchall()
        pretrain_set = lake.query(f"""SELECT from_table, count(*) FROM lake.sft AT (VERSION => {tags['pretrain']})
                                      GROUP BY ALL""").fetchall()
        bases = dict(lake.query("SELECT concat(kind, iteration), base_model_id FROM trainings WHERE status = 'ok'").fetchall())
    assert set(trainings) == {("sft", 0), ("sft", 1), ("grpo", 1), ("sft", 2), ("grpo", 2)}

    # the base was taught to describe images on the caption set, every SFT starts from it, and it captioned
    # every training image of iteration 1 (the teacher reads only those captions)
    assert pretrain_set == [("captions", 600)]
    assert bases["sft1"] == bases["sft2"] == trainings[("sft", 0)][0] != bases["sft0"]
    assert captions == [(trainings[("sft", 0)][0], "synthetic", 600)]

    # the funnel rejects: a tenth or more of the teacher's chains, every one with a reason
    rejected = [reasons for accepted, reasons in traces if not accepted]
    assert len(rejected) >= 0.10 * len(traces) > 0 and all(rejected), (len(rejected), len(traces))

    # iteration 2's SFT data: verified rollouts of iteration 1's RL model, nothing else
    assert [(t, m) for t, m, _ in iter2_sft] == [("rollouts", trainings[("grpo", 1)][0])]
    assert iter2_sft[0][2] >= 20
    from vlfactory.verify import format_reward

    assert sum(format_reward(iter2_rows)) == len(iter2_rows)   # require_format: well-formed rows only

    # GRPO had a signal: rewards varied within a group (a gradient) on at least 8 steps and a quarter of the
    # logged steps of each run (the quickstart's: iteration 1 all 43 of 43, iteration 2, on the same rl set
    # with a surer model, 24 of 43; a broken reward, equal for every completion, gives none)
    for k in (1, 2):
        metrics = trainings[("grpo", k)][1]
        assert metrics["steps_reward_std_nonzero"] >= max(8.0, 0.25 * metrics["logged_steps"]), metrics

    # learning beyond noise: the SFT model's 95% interval lies above the base model's
    from vlfactory.reports.evals import wilson_interval

    base, sft, final = evals[(0, "base")], evals[(1, "sft")], evals[(2, "grpo")]
    assert sft[1] == base[1] == final[1] >= 500 and {(1, "grpo"), (2, "sft")} <= set(evals)
    assert wilson_interval(*sft)[0] > wilson_interval(*base)[1], evals
    assert wilson_interval(*final)[0] > wilson_interval(*base)[1], evals

    # the final model reads the picture: the same validation questions with blank images lose 20 points
    import dataclasses

    from vlfactory.stages import eval as evaluate
    from vlfactory.recipe import load_recipe
    from vlfactory.sources.synthetic import blank_copy

    recipe = load_recipe("quickstart")
    final_model = lake_model(tmp_path, trainings[("grpo", 2)][0])
    cfg = recipe.eval_config("synthetic-val", final_model)
    cfg = dataclasses.replace(cfg, benchmark=blank_copy(recipe.benchmarks[0], tmp_path / "blank"))
    with Lake(tmp_path / "lake") as lake:
        blank = evaluate.run(lake, cfg).value
    assert blank.problems == final[1] and final[0] - blank.accuracy >= 0.20, (final, blank.accuracy)


def lake_model(folder, model_id: str) -> str:
    """The checkpoint folder of a model identity (the loop's runs folder holds one per training)."""
    from vlfactory.models import identity

    return next(str(p) for p in (folder / "runs" / "quickstart").iterdir() if p.is_dir() and identity(str(p)) == model_id)
