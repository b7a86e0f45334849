"""The rollout stage (the policy answers from the image), its grades, and the rl set picked by pass rate."""

from __future__ import annotations

import pyarrow as pa
import pytest

from answer_server import AnswerServer
from vlfactory.models import identity
from vlfactory.prompts import load_template
from vlfactory.stores import schema
from vlfactory.stores.lake import Lake


def recipe_text(url: str, band: str) -> str:
    return f"""
name: rollouts
sources:
  - {{name: synthetic, format: synthetic, n: 10, seed: 7}}
rollout:
  backend: openai
  model: policy
  base_url: {url}
  concurrency: 4
  timeout_s: 5
  max_retries: 0
  sampling: {{temperature: 1.0, top_p: 0.99, max_tokens: 64, n: 4, seed: 3}}
  commit_rows: 8
rl:
  band: {band}
  min_samples: 4
"""


def flat(text: str) -> str:
    return " ".join(text.split())  # rich wraps long lines


def rl_rows(lake_dir, table: str = "rl") -> dict[str, tuple]:
    with Lake(lake_dir) as lake:
        rows = lake.query(f"SELECT problem_id, samples, correct, pass_rate, prompt, policy_model, image_id "
                          f"FROM {table}").fetchall()
    return {r[0]: r[1:] for r in rows}


def test_rollouts_graded_by_verify_then_rl_set_by_pass_rate(cli, lake_dir, tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(recipe_text("http://127.0.0.1:9/v1", "[0.25, 0.75]"))
    cli("run", recipe, "--stage", "ingest")
    template = load_template("rollout")
    with Lake(lake_dir) as lake:
        problems = lake.query("SELECT problem_id, question, choices, answer FROM problems "
                              "ORDER BY source, source_id, problem_id").fetchall()
        # a problem without an image: the policy cannot see it, so it gets no rollouts
        with lake.transaction("a problem without an image"):
            lake.insert("problems", pa.Table.from_pylist([{
                "problem_id": "no-image", "source": "synthetic", "source_id": "zz", "question": "What is 2 + 2?",
                "answer": "4"}], schema=schema.PROBLEMS))
    # problem i gets i % 5 of its 4 samples right: pass rates 0, 1/4, 1/2, 3/4, 1
    right = {pid: i % 5 for i, (pid, *_) in enumerate(problems)}
    prompts = {pid: template.render(question=q, choices=c) for pid, q, c, _ in problems}
    answers = {prompts[pid]: [f"<think>I read the image.</think> <answer>{gold if s < right[pid] else 'no idea'}"
                              f"</answer>" for s in range(4)] for pid, _, _, gold in problems}

    with AnswerServer(answers) as server:
        recipe.write_text(recipe_text(server.url, "[0.25, 0.75]"))
        out = flat(cli("run", recipe, "--stage", "rollout").output)
        assert "rollout: 40 samples = 0 cached + 40 generated + 0 missing" in out, out
        assert "skipped 1 (no image)" in out
        assert len(server.hits) == 10 and all(image for _, image in server.hits)
        assert sorted(p for p, _ in server.hits) == sorted(prompts.values())
        with Lake(lake_dir) as lake:  # no verdict yet: verdicts live in grades, written by the verify stage
            assert lake.query("SELECT count(*) FROM pass_rates").fetchone()[0] == 0
        cli("run", recipe, "--stage", "verify")
        with Lake(lake_dir) as lake:
            rows = lake.query("""SELECT r.problem_id, r.sample_index, g.correct, g.grade_reason, r.answer, r.reasoning,
                                        r.model, r.backend, r.prompt_hash, r.temperature, r.request_key, g.extracted
                                 FROM rollouts r JOIN grades g ON g.ref_id = r.rollout_id""").fetchall()
            rates = {r[0]: r[1:] for r in lake.query(
                "SELECT problem_id, model, samples, correct, pass_rate FROM pass_rates").fetchall()}
        assert len(rows) == 40 and len({r[10] for r in rows}) == 40
        assert all(r[5] == "I read the image." and r[6] == "policy" and r[7] == "openai"
                   and r[8] == template.hash and r[9] == 1.0 and r[4] == r[11] for r in rows)
        assert all(r[3] == ("correct" if r[2] else "incorrect") and (r[2] or r[4] == "no idea") for r in rows)
        assert rates == {pid: ("policy", 4, k, k / 4) for pid, k in right.items()}

        # a rerun sends nothing
        out = flat(cli("run", recipe, "--stage", "rollout").output)
        assert "40 samples = 40 cached + 0 generated" in out and len(server.hits) == 10

    # the rl set: pass rate in [0.25, 0.75] with 4 samples -> 1, 2 or 3 right
    out = flat(cli("run", recipe, "--stage", "rl").output)
    assert ("rl: 6 of 11 problems with pass rate in [0.25, 0.75] (min 4 samples) by policy; "
            "4 outside the band, 1 with too few samples; by source: synthetic 6; written") in out, out
    first = rl_rows(lake_dir)
    assert first == {pid: (4, k, k / 4, prompts[pid], "policy", first[pid][-1]) for pid, k in right.items()
                     if 1 <= k <= 3}
    assert all(r[-1] for r in first.values())  # every problem comes with its image
    cli("tag", "iter1")

    # the next iteration's band rewrites the table; the tag still reads the old set
    recipe.write_text(recipe_text("http://127.0.0.1:9/v1", "[0.0, 0.25]"))
    out = flat(cli("run", recipe, "--stage", "rl").output)
    assert "rl: 4 of 11 problems with pass rate in [0.0, 0.25]" in out and out.count("; written") == 1, out
    assert set(rl_rows(lake_dir)) == {pid for pid, k in right.items() if k <= 1}
    assert rl_rows(lake_dir, "rl@iter1") == first

    # an identical rebuild writes nothing
    with Lake(lake_dir) as lake:
        rl_snapshots = len([s for s in lake.snapshots() if (s["commit_message"] or "").startswith("rl set")])
    out = flat(cli("run", recipe, "--stage", "rl").output)
    assert "rl: 4 of 11 problems" in out and "unchanged, nothing written" in out, out
    with Lake(lake_dir) as lake:
        assert rl_snapshots == len([s for s in lake.snapshots()
                                    if (s["commit_message"] or "").startswith("rl set")]) == 2

    # --limit: only the first problems are considered
    out = flat(cli("run", recipe, "--stage", "rl", "--limit", "3").output)
    assert "rl: 2 of 3 problems with pass rate in [0.0, 0.25]" in out and "1 outside the band" in out, out


@pytest.mark.slow
def test_rollout_with_the_transformers_backend_sends_the_image(tiny_vlm_dir, cli, lake_dir, tmp_path):
    from transformers import AutoProcessor

    recipe = tmp_path / "r.yaml"
    recipe.write_text(f"""
sources:
  - {{name: synthetic, format: synthetic, n: 3, seed: 4}}
rollout:
  backend: transformers
  model: {tiny_vlm_dir}
  device: cpu
  sampling: {{temperature: 1.0, top_p: 0.99, max_tokens: 8, n: 2, seed: 3}}
""")
    cli("run", recipe, "--stage", "ingest")
    out = flat(cli("run", recipe, "--stage", "rollout").output)
    assert "rollout: 6 samples = 0 cached + 6 generated + 0 missing" in out, out
    with Lake(lake_dir) as lake:
        rows = lake.query("""SELECT r.sample_index, r.prompt_tokens, r.completion_tokens, r.model, r.backend,
                                    p.question, p.choices
                             FROM rollouts r JOIN problems p USING (problem_id)""").fetchall()
    assert len(rows) == 6 and sorted(r[0] for r in rows) == [0, 0, 0, 1, 1, 1]
    # the model is known by its content, not its folder
    assert all(r[3] == identity(str(tiny_vlm_dir)) and r[4] == "transformers" and 1 <= r[2] <= 8 for r in rows)
    # the image's tokens are in the prompt: more than the same text alone
    processor = AutoProcessor.from_pretrained(tiny_vlm_dir)
    template = load_template("rollout")
    for r in rows:
        text = template.render(question=r[5], choices=r[6])
        chat = processor.apply_chat_template([{"role": "user", "content": [{"type": "text", "text": text}]}],
                                             add_generation_prompt=True, tokenize=False)
        assert r[1] >= len(processor.tokenizer(chat)["input_ids"]) + 4

    # a rerun sends nothing (and loads no model)
    out = flat(cli("run", recipe, "--stage", "rollout").output)
    assert "6 samples = 6 cached + 0 generated" in out, out


def test_eval_records_accuracy_per_benchmark(cli, lake_dir, tmp_path, shared_data):
    import json as _json

    dyn = _json.loads((shared_data / "dynamath-seed" / "dataset.json").read_text())
    ids = list(dyn)[:6]
    template = load_template("rollout")
    # the server answers the gold for the first four problems and a wrong number for the others
    answers = {template.render(question=dyn[k]["question"], choices=None):
               [f"<think>...</think><answer>{dyn[k]['answer'] if i < 4 else 'nonsense 12345'}</answer>"]
               for i, k in enumerate(ids)}
    with AnswerServer(answers) as server:
        recipe = tmp_path / "eval.yaml"
        recipe.write_text(f"""
sources:
  - {{name: synthetic, format: synthetic, n: 2}}
benchmarks:
  - {{name: dynamath, format: json, path: {shared_data / 'dynamath-seed' / 'dataset.json'}}}
rollout:
  backend: openai
  model: ignored-by-eval
  base_url: {server.url}
  sampling: {{max_tokens: 64, temperature: 1.0}}
""")
        cli("ingest", recipe)
        out = cli("eval", "--model", "policy-v1", "--benchmark", "dynamath", "--recipe", recipe, "--limit", "6").output
        assert "eval dynamath: 4/6 correct = 66.7%" in out
        assert len(server.hits) == 6 and all(image for _, image in server.hits)
    with Lake(lake_dir) as lake:
        rows = lake.query("SELECT model, benchmark, problems, correct, accuracy, sampling FROM evals").fetchall()
    assert rows[0][:4] == ("policy-v1", "dynamath", 6, 4) and abs(rows[0][4] - 4 / 6) < 1e-9
    assert '"temperature": 0.0' in rows[0][5]  # evaluation decodes greedily whatever the rollout stage says
    # the same model, benchmark rows, prompt, decoding and verifier: done before, nothing sent, no new row
    out = cli("eval", "--model", "policy-v1", "--benchmark", "dynamath", "--recipe", recipe, "--limit", "6").output
    assert "eval dynamath: done before: 4/6 correct" in out and len(server.hits) == 6
    with Lake(lake_dir) as lake:
        assert lake.count("evals") == 1
