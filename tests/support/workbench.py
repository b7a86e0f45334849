"""A lake with two tagged versions, written by the real stages through the Python API, for the API, diff and
viewer tests.

iter1: two synthetic sources; ground-truth captions; distil (n=2) against a planned-answer server: sample 0
correct with a reflection ("Wait, ...") that cleaning cuts, sample 1 wrong; verify; the sft set (shortest).
iter2: distil n=3, the third sample a shorter correct answer on even-numbered problems (the sft set swaps to it)
and wrong on odd ones; rollouts of a policy (n=2: one right, one wrong) and the rl set; verify with other
reflection keywords (a regrade: odd problems keep their sft example with a recleaned completion).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import vlfactory
from answer_server import AnswerServer
from vlfactory.prompts import load_template
from vlfactory.stores.lake import Lake

SOURCES = """\
  - {name: charts, format: synthetic, n: 8, seed: 1, kinds: [bar, counting]}
  - {name: shapes, format: synthetic, n: 6, seed: 2}
"""


ROLLOUT = """
rollout:
  backend: openai
  model: policy
  base_url: {url}
  max_retries: 0
  sampling: {{temperature: 1.0, max_tokens: 64, n: 2, seed: 3}}
rl: {{band: [0.25, 0.75], min_samples: 2}}
"""


def recipe_text(url: str, n: int = 2, verify: str = "") -> str:
    return f"""name: workbench
sources:
{SOURCES}
distil:
  backend: openai
  model: reasoner
  base_url: {url}
  max_retries: 0
  sampling: {{temperature: 0.7, max_tokens: 256, n: {n}, seed: 1}}
sft: {{per_problem: 1, pick: shortest}}
{verify}
"""


def planned(gold: str, k: int) -> list[str]:
    """The reasoner's samples for the k-th problem (in source, source_id order)."""
    return [f"<think>Let me look at the picture. The value is {gold}. Wait, let me check again. Yes, {gold}.</think>"
            f" <answer>{gold}</answer>",
            "<think>Hmm, hard to say.</think> <answer>no idea</answer>",
            f"<think>It is {gold}.</think> <answer>{gold}</answer>" if k % 2 == 0 else "<answer>still no idea</answer>"]


@dataclass
class Workbench:
    lake: Path
    recipe: Path
    problems: list[dict]      # problem_id, source, source_id, question, answer, image_id, caption, k, policy_right


_BUILT: Workbench | None = None


def build(root: Path) -> Workbench:
    """The workbench in `root`: written by the stages once per test process, then copied (a copied lake reads
    and writes its own files, tests/store/test_lake_safety.py), so each module gets its own lake to change."""
    global _BUILT
    if _BUILT is None:
        _BUILT = _build(root.parent / f"{root.name}-workbench-origin")
    shutil.copytree(_BUILT.lake, root / "lake")
    shutil.copy(_BUILT.recipe, root / "workbench.yaml")
    return Workbench(root / "lake", root / "workbench.yaml", [dict(p) for p in _BUILT.problems])


def _build(root: Path) -> Workbench:
    root.mkdir(parents=True, exist_ok=True)
    lake, recipe = root / "lake", root / "workbench.yaml"
    recipe.write_text(recipe_text("http://127.0.0.1:9/v1"))
    vlfactory.run(recipe, ["ingest", "caption"], lake=lake, say=None)
    with Lake(lake, read_only=True) as lk:
        rel = lk.query("""SELECT p.problem_id, p.source, p.source_id, p.question, p.choices, p.answer, p.image_id,
                                 c.caption FROM problems p JOIN captions c USING (problem_id)
                          ORDER BY p.source, p.source_id, p.problem_id""")
        problems = [dict(zip(rel.columns, r)) | {"k": k} for k, r in enumerate(rel.fetchall())]
    template = load_template("reason")
    answers = {template.render(caption=p["caption"], question=p["question"], choices=p["choices"]):
               planned(p["answer"], p["k"]) for p in problems}
    # The policy sees no caption: problems asking the same question get the same answers, so it gets those wrong.
    rollout = load_template("rollout")
    asked = Counter(rollout.render(question=p["question"], choices=p["choices"]) for p in problems)
    policy = {}
    for p in problems:
        prompt = rollout.render(question=p["question"], choices=p["choices"])
        p["policy_right"] = asked[prompt] == 1
        policy[prompt] = [f"<answer>{p['answer'] if p['policy_right'] else 'nope'}</answer>", "<answer>nope</answer>"]
    with AnswerServer({prompt: texts[:2] for prompt, texts in answers.items()}) as server:
        recipe.write_text(recipe_text(server.url))
        vlfactory.run(recipe, ["distil", "verify", "sft"], lake=lake, tag="iter1", say=None)
        server.answers = {prompt: texts[2:] for prompt, texts in answers.items()} | policy  # distil: only sample 2
        recipe.write_text(recipe_text(server.url, n=3, verify="verify: {reflection_keywords: ['Yes']}")
                          + ROLLOUT.format(url=server.url))
        vlfactory.run(recipe, ["distil", "rollout", "verify", "sft", "rl"], lake=lake, tag="iter2", say=None)
    return Workbench(lake, recipe, problems)


@contextlib.contextmanager
def viewer(lake: Path, **env: str) -> Iterator[str]:
    """`vlfactory view` over the lake in its own process, on a free port (with these environment variables);
    yields its base URL."""
    proc = subprocess.Popen([sys.executable, "-m", "vlfactory.cli", "view", "--lake", str(lake), "--port", "0"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=os.environ | env)
    try:
        line = proc.stdout.readline()
        assert line.startswith("viewing "), line + proc.stderr.read()
        yield line.split(" at ")[1].split()[0].rstrip("/")
    finally:
        proc.terminate()
        proc.wait(20)
