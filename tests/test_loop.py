"""`vlfactory iterate quickstart`: the README's main job, killed and resumed, and what it learned.

One run of the shipped quickstart (killed with SIGKILL as iteration 2 starts, then resumed), then
what a researcher checks in the lake: iteration 2 learned from iteration 1's RL model's own verified
rollouts (nothing else), GRPO had a reward signal (rewards varied within a group) on most steps, and
the SFT model answers the held-out questions far beyond the base model, with 95% intervals apart.
The issue-11 targets that this loop does not reach yet (final model 25 points over the base, 20
points lost on blank images) are measured by bench/loop.py, not asserted here.
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


def test_quickstart_loop_learns_and_resumes_after_a_kill(tmp_path, smollm2_dir):
    _needs("vllm", "trl")
    env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": "1", "PYTHONUNBUFFERED": "1"}
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
    assert trainings == [("sft", 1, "ok"), ("grpo", 1, "ok")]

    # the rerun redoes nothing of iteration 1 and finishes iteration 2
    res = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=1500)
    assert res.returncode == 0, res.stderr[-3000:]
    out = res.stderr
    assert "sft iter1: done before" in out and "grpo iter1: done before" in out
    assert "distil: 600 samples = 600 cached + 0 generated" in out
    with Lake(tmp_path / "lake") as lake:
        trainings = {(k, i): (model_id, metrics) for k, i, model_id, metrics in lake.query(
            "SELECT kind, iteration, model_id, metrics FROM trainings WHERE status = 'ok'").fetchall()}
        evals = {(i, s): (acc, n) for i, s, acc, n in lake.query(
            "SELECT iteration, stage, accuracy, problems FROM evals WHERE benchmark = 'synthetic-eval'").fetchall()}
        tags = lake.tags()
        iter2_sft = lake.query(f"""SELECT from_table, model, count(*) FROM lake.sft AT (VERSION => {tags['iter2-sft']})
                                   GROUP BY ALL""").fetchall()
    assert set(trainings) == {("sft", 1), ("grpo", 1), ("sft", 2), ("grpo", 2)}

    # iteration 2's SFT data: verified rollouts of iteration 1's RL model, nothing else
    assert [(t, m) for t, m, _ in iter2_sft] == [("rollouts", trainings[("grpo", 1)][0])]
    assert iter2_sft[0][2] >= 20

    # GRPO had a signal: rewards varied within a group on most logged steps of both runs
    for k in (1, 2):
        metrics = trainings[("grpo", k)][1]
        assert metrics["steps_reward_std_nonzero"] >= 0.5 * metrics["logged_steps"] > 0, metrics

    # learning beyond noise: the SFT model's 95% interval lies above the base model's
    from vlfactory.evaluate import wilson_interval

    base, sft = evals[(0, "base")], evals[(1, "sft")]
    assert sft[1] == base[1] >= 200 and {(1, "grpo"), (2, "sft"), (2, "grpo")} <= set(evals)
    assert wilson_interval(*sft)[0] > wilson_interval(*base)[1], evals
