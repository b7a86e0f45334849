"""The README's main job: the quickstart recipe end to end with the small real model on the CPU."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from conftest import _needs
from vlfactory.models import identity
from vlfactory.stores.lake import Lake

pytestmark = pytest.mark.slow


def test_quickstart_end_to_end_then_rerun_sends_nothing(tmp_path, smollm2_dir):
    _needs("vllm")
    env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": "1"}
    # the first 24 problems (the whole recipe distils 300: tests/test_loop.py runs it)
    cmd = [sys.executable, "-m", "vlfactory.cli", "run", "quickstart", "--lake", str(tmp_path / "lake"), "--limit", "24"]
    res = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=1200)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "synthetic: read 24 = ingested 24" in res.stderr
    assert "caption: 24 samples = 0 cached + 24 generated" in res.stderr
    assert "distil: 48 samples = 0 cached + 48 generated + 0 missing" in res.stderr
    with Lake(tmp_path / "lake") as lake:
        traces = lake.query("""SELECT t.model, t.completion, t.completion_tokens, c.origin, t.prompt_hash
                               FROM traces t JOIN captions c USING (caption_id)""").fetchall()
        tokens = lake.query("SELECT sum(prompt_tokens), sum(completion_tokens) FROM traces").fetchone()
        # one extraction: what a real model's trace stores as its answer is what its grade read
        disagree = lake.query("""SELECT count(*) FROM traces t JOIN grades g ON g.ref_id = t.trace_id
                                 WHERE t.answer IS DISTINCT FROM g.extracted""").fetchone()[0]
        graded = lake.query("SELECT count(*) FROM grades WHERE ref_table = 'traces'").fetchone()[0]
    assert len(traces) == 48
    assert all(r[0] == identity("smollm2-135m-instruct") and r[3] == "source" for r in traces)
    assert identity("smollm2-135m-instruct").startswith("HuggingFaceTB/SmolLM2-135M-Instruct@")
    assert sum(bool(r[1].strip()) for r in traces) >= 40  # a real model writes real text
    assert tokens[0] > 24 * 50 and tokens[1] > 48
    assert graded == 48 and disagree == 0
    again = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert again.returncode == 0 and "48 cached + 0 generated" in again.stderr and "nothing new" in again.stderr
