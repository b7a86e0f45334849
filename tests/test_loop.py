"""`vlfactory iterate` on the quickstart recipe: two iterations end to end, killed and resumed."""

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


def test_quickstart_loop_two_iterations_kill_and_resume(tmp_path, smollm2_dir):
    _needs("vllm", "trl")
    env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": "1", "PYTHONUNBUFFERED": "1"}
    cmd = [sys.executable, "-m", "vlfactory.cli", "iterate", "quickstart", "--lake", str(tmp_path / "lake"),
           "--limit", "8"]
    # killed with SIGKILL as soon as iteration 2 starts
    proc = subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    seen = []
    deadline = time.monotonic() + 900
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
        trainings = lake.query("SELECT kind, iteration, status, snapshot_id FROM trainings ORDER BY started_at").fetchall()
    assert [(k, i, s) for k, i, s, _ in trainings] == [("sft", 1, "ok"), ("grpo", 1, "ok")]

    # the rerun redoes nothing of iteration 1 and finishes iteration 2
    res = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=1200)
    assert res.returncode == 0, res.stderr[-3000:]
    out = res.stderr
    assert "sft iter1: done before" in out and "grpo iter1: done before" in out
    assert "eval synthetic-eval iter0 base: done before" in out
    assert "eval synthetic-eval iter1 sft: done before" in out and "eval synthetic-eval iter1 grpo: done before" in out
    assert "distil: 16 samples = 16 cached + 0 generated" in out
    assert "done: 2 iterations" in out
    with Lake(tmp_path / "lake") as lake:
        trainings = lake.query("SELECT kind, iteration, status, dataset, snapshot_id, base_model FROM trainings "
                               "ORDER BY started_at").fetchall()
        evals = lake.query("SELECT iteration, benchmark, problems, eval_key, stage FROM evals "
                           "ORDER BY iteration, created_at").fetchall()
        tags = lake.tags()
        same_data = {t: lake.digest(t, tags[f"iter1-{t}"]) == lake.digest(t, tags[f"iter2-{t}"]) for t in ("sft", "rl")}
    assert "iter1" in tags and "iter2" in tags
    # the base model first, then every SFT and GRPO model, each on every loop benchmark
    assert [(i, s) for i, _, _, _, s in evals] == [(0, "base"), (1, "sft"), (1, "grpo"), (2, "sft"), (2, "grpo")]
    assert {b for _, b, *_ in evals} == {"synthetic-eval"}
    assert "95% CI" in out and out.count("synthetic-eval  ") >= 5   # the closing table
    # Checkpoints are addressed by content (the set's rows, base model identity, settings): an iteration whose
    # sets hold what the previous one's held reuses its checkpoints instead of training the same model again.
    if same_data["sft"]:
        assert "sft iter2: done before" in out
    else:  # iteration 2 starts again from the base model, on its own tagged set
        row = next(r for r in trainings if r[:2] == ("sft", 2))
        assert row[5] == "tiny-qwen2.5-vl" and row[3] == "sft@iter2-sft" and row[4] == tags["iter2-sft"]
    if same_data["sft"] and same_data["rl"]:
        assert "grpo iter2: done before" in out and len(trainings) == 2 and evals[2][3] == evals[4][3]
    assert all(status == "ok" for _, _, status, *_ in trainings)
