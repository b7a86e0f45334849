"""The README's main job's data stages (the quickstart recipe, its rules teacher), and the same recipe with
SmolLM2-135M-Instruct, a small real model, distilling on vLLM's CPU engine. Both read the ground-truth
captions: the quickstart's caption model is the base that `iterate` pretrains first (loop.captioner:
pretrained), which a `run` of the data stages does not make (tests/e2e/test_loop.py runs the loop)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from conftest import _needs
from vlfactory.models import identity
from vlfactory.stores.lake import Lake

pytestmark = pytest.mark.slow


def ground_truth_recipe(folder, **blocks) -> str:
    """The quickstart without its caption block (so the ground-truth captions), with `blocks` replaced."""
    import yaml

    from vlfactory.recipe import shipped_recipes

    raw = yaml.safe_load((shipped_recipes() / "quickstart.yaml").read_text())
    raw.pop("caption")
    raw["loop"].pop("captioner")
    recipe = folder / "quickstart.yaml"
    recipe.write_text(yaml.safe_dump(raw | blocks))
    return str(recipe)


def test_quickstart_end_to_end_then_rerun_sends_nothing(tmp_path):
    # the first 24 problems (tests/e2e/test_loop.py runs the whole loop)
    recipe = ground_truth_recipe(tmp_path)
    cmd = [sys.executable, "-m", "vlfactory.cli", "run", recipe, "--lake", str(tmp_path / "lake"), "--limit", "24"]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=1200)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "synthetic: read 24 = ingested 24" in res.stderr
    assert "caption: 24 samples = 0 cached + 24 generated" in res.stderr
    assert "distil: 24 samples = 0 cached + 24 generated + 0 missing" in res.stderr
    with Lake(tmp_path / "lake") as lake:
        traces = lake.query("""SELECT t.model, c.origin, g.accepted, t.answer, g.extracted FROM traces t
                               JOIN captions c USING (caption_id) JOIN grades g ON g.ref_id = t.trace_id""").fetchall()
        sft = lake.query("SELECT count(*), count(DISTINCT problem_id) FROM sft").fetchone()
    # the teacher read the ground-truth captions and every chain it wrote passed the verifier
    assert len(traces) == 24 and all(r[0] == identity("caption-reasoner") and r[1] == "source" for r in traces)
    assert all(r[2] for r in traces) and all(r[3] == r[4] for r in traces)
    assert sft == (24, 24)
    again = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0 and "24 cached + 0 generated" in again.stderr and "nothing new" in again.stderr


def test_smollm2_distils_on_the_vllm_engine(tmp_path, smollm2_dir):
    """The quickstart with a real small model as its teacher, on vLLM's CPU engine (what the quickstart
    used before the rules teacher: it runs, it is cached, its text is real; bench/teachers.py measures how
    well it answers: below chance)."""
    _needs("vllm")
    recipe = ground_truth_recipe(tmp_path, distil={
        "backend": "vllm", "model": "smollm2-135m-instruct", "dtype": "float32", "max_model_len": 2048,
        "sampling": {"temperature": 0.7, "top_p": 0.95, "max_tokens": 96, "n": 2, "seed": 0}})
    env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": "1"}
    cmd = [sys.executable, "-m", "vlfactory.cli", "run", str(recipe), "--lake", str(tmp_path / "lake"),
           "--limit", "24", "--stage", "ingest", "--stage", "caption", "--stage", "distil", "--stage", "verify"]
    res = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=1200)
    assert res.returncode == 0, res.stderr[-3000:]
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
    assert again.returncode == 0 and "48 cached + 0 generated" in again.stderr
