"""One answer space for multiple choice, through the real stages on a real catalog: the paper recipe's rollout
prompt (recipes/prompts/openvlthinker.txt) shows the options by their text and reaches the policy as rendered,
the verify stage grades with the official grader of training data (`verify.protocol: openvlthinker-data`), the rl
stage's pass rates count those grades, and every verdict in the lake equals the official GRPO reward's
(vlfactory.verify.openvlthinker_reward, r1v.py): an option's text is right for all of them, its letter for none."""

from __future__ import annotations

import json
from pathlib import Path

from PIL import Image

from answer_server import AnswerServer
from vlfactory.prompts import load_template
from vlfactory.recipe import load_recipe
from vlfactory.stores.lake import Lake
from vlfactory.verify import openvlthinker_reward

# (question, gold, choices, the <answer> of each of the policy's 5 rollouts)
PROBLEMS = [
    ("Which number is larger?", "5", ["3", "5"], ["5", "5", "B", "(B)", "3"]),
    ("Is the function linear or nonlinear?", "nonlinear", ["linear", "nonlinear"],
     ["Nonlinear", "nonlinear", "nonlinear", "B", "linear"]),
    ("Is the left bar taller?", "Yes", ["Yes", "No"], ["Yes", "yes", "No", "A", "Yes"]),
    ("Which way does the arrow point?", "North-East", ["North-East", "South-West"],
     ["North-East", "north-east", "B", "South-West", "A"]),
    ("How many dots are there?", "12", None, ["12", "12 cm", "x = 12", "13", "twelve"]),
]


def recipe_text(data, url: str) -> str:
    return f"""
name: answer-space
sources:
  - {{name: mc, format: json, path: {data}}}
rollout:
  backend: openai
  model: policy
  base_url: {url}
  max_retries: 0
  prompt: openvlthinker
  sampling: {{temperature: 1.0, top_p: 0.99, max_tokens: 64, n: 5, seed: 0}}
verify:
  protocol: openvlthinker-data
rl:
  band: [0.0, 1.0]
  min_samples: 5
"""


def test_rollout_prompt_verify_pass_rates_and_reward_agree(cli, lake_dir, tmp_path):
    rows = []
    for i, (question, gold, choices, _) in enumerate(PROBLEMS):
        Image.new("RGB", (32, 32), (40 * i, 90, 200)).save(tmp_path / f"{i}.png")
        rows.append({"id": f"q{i}", "question": question, "answer": gold, "image": f"{i}.png", "choices": choices})
    (tmp_path / "mc.json").write_text(json.dumps(rows))
    recipe = tmp_path / "r.yaml"
    recipe.write_text(recipe_text(tmp_path / "mc.json", "http://127.0.0.1:9/v1"))
    cli("run", recipe, "--stage", "ingest")

    template = load_template("openvlthinker")
    prompts = {q: template.render(question=q, choices=c) for q, _, c, _ in PROBLEMS}
    completions = {q: [f"<think>I look at the image.</think> So it is this one. <answer>{a}</answer>" for a in answers]
                   for q, _, _, answers in PROBLEMS}
    with AnswerServer({prompts[q]: completions[q] for q in prompts}) as server:
        recipe.write_text(recipe_text(tmp_path / "mc.json", server.url))
        cli("run", recipe, "--stage", "rollout")
        hits = sorted(p for p, _ in server.hits)
    cli("run", recipe, "--stage", "verify")
    cli("run", recipe, "--stage", "rl")

    # the policy saw the options by their text, never a letter to answer with
    assert hits == sorted(prompts.values())
    assert "Which number is larger?\nOptions:\n- 3\n- 5\nAnswer with the text of one option" in prompts[PROBLEMS[0][0]]
    assert not any("(A)" in p for p in hits)
    with Lake(lake_dir) as lake:
        graded = lake.query("""SELECT p.question, p.answer, r.completion, g.correct FROM rollouts r
                               JOIN grades g ON g.ref_id = r.rollout_id JOIN problems p ON p.problem_id = r.problem_id
                               ORDER BY r.problem_id, r.sample_index""").fetchall()
        rl = {q: (rate, prompt)
              for q, rate, prompt in lake.query("SELECT question, pass_rate, prompt FROM rl").fetchall()}
    assert len(graded) == 5 * len(PROBLEMS)
    rewards = openvlthinker_reward([c for _, _, c, _ in graded], answer=[gold for _, gold, _, _ in graded])
    assert [ok for *_, ok in graded] == [r > 0 for r in rewards]           # verify == the GRPO reward, row by row
    assert set(rewards) == {0.0, 1.0}
    letters = [ok for _, _, c, ok in graded if "<answer>B</answer>" in c or "<answer>(B)</answer>" in c]
    assert letters and not any(letters)                                      # a letter is no answer here
    # the pass rates the rl set was picked by are those verdicts (and so the reward's mean)
    for question, gold, _, answers in PROBLEMS:
        mine = [r for (q, *_), r in zip(graded, rewards) if q == question]
        assert rl[question] == (sum(r > 0 for r in mine) / 5, prompts[question])
    assert [rl[q][0] for q, *_ in PROBLEMS] == [0.4, 0.6, 0.6, 0.4, 0.6]


def test_the_paper_recipe_grades_its_data_and_rewards_in_that_answer_space():
    import yaml

    recipe = load_recipe("openvlthinker/iterate")
    assert recipe.verify.protocol == "openvlthinker-data"
    assert recipe.stage_config("rl").verify == recipe.verify == recipe.stage_config("sft").verify  # pass rates, sft set
    assert recipe.rollout.prompt == recipe.sft.prompt == "openvlthinker"
    assert {yaml.safe_load(Path(s.config).read_text())["reward"] for s in recipe.loop.grpo_stages} == {"openvlthinker"}
    assert recipe.eval.base_protocol == "qwen-boxed" and recipe.eval.protocol == "openvlthinker"
