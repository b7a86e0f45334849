"""Evaluation against a planned OpenAI-compatible server on a real catalog: n samples per problem give
pass@1..n by the unbiased estimator, every answer lands in `eval_samples`, the official prompt formatting
and judge, the MathVerse LLM-judge protocol through the openai backend, the loop's base model graded by the
official Qwen baseline (its suffix after each benchmark's formatting) and the trained ones by the official
judge, and an evaluation done before is recorded for a new iteration and stage without generating."""

from __future__ import annotations

import json
from math import comb

import pytest
from PIL import Image

from answer_server import AnswerServer
from vlfactory.loop import Loop
from vlfactory.stages import eval as evaluate
from vlfactory.prompts import load_template
from vlfactory.recipe import parse_recipe
from vlfactory.stores.lake import Lake, LakeSpec
from vlfactory.verify import JUDGE_FIELDS

N = 4
# (question, gold, choices, correct samples of N)
PROBLEMS = [(f"How many dots are in box {i}?", str(10 + i), None, c) for i, c in enumerate([0, 1, 2, 3, 4, 1])]
PROBLEMS += [("Which is the largest?", "5", ["3", "5", "4"], 2)]


def format_instruction(instruction, options=None):
    """OpenVLThinker's evaluation/eval_openvlthinker.py, for questions with and without options."""
    if options and len(options) > 0:
        prompt_hint = "Hint: Please answer the question and provide the correct option letter, e.g., A, B, C, D, E, at the end."
        choice_list = "\n".join(f"({chr(65+i)}) {opt}" for i, opt in enumerate(options))
        return f"{prompt_hint}\nQuestion: {instruction}\nChoices:\n{choice_list}"
    prompt_hint = "Hint: Please answer the question requiring an answer."
    return f"{prompt_hint}\nQuestion: {instruction}"


@pytest.fixture()
def bench(tmp_path):
    rows = []
    for i, (question, gold, choices, _) in enumerate(PROBLEMS):
        Image.new("RGB", (32, 32), (40 * i, 90, 200)).save(tmp_path / f"{i}.png")
        rows.append({"id": f"q{i}", "question": question, "answer": gold, "image": f"{i}.png", "choices": choices})
    (tmp_path / "bench.json").write_text(json.dumps(rows))
    return tmp_path / "bench.json"


def recipe(url: str, bench, ev: dict):
    return parse_recipe({
        "sources": [{"name": "synthetic", "format": "synthetic", "n": 2}],
        "benchmarks": [{"name": "bench", "format": "json", "path": str(bench)}],
        "rollout": {"backend": "openai", "model": "ignored", "base_url": url, "max_retries": 0,
                    "sampling": {"max_tokens": 64}},
        "eval": ev})


def planned(prompt_of, letter_answers: bool = False) -> dict[str, list[str]]:
    """Per prompt, N completions of which the problem's planned number are correct (official tags)."""
    out = {}
    for question, gold, choices, c in PROBLEMS:
        right = "B" if choices and letter_answers else gold
        out[prompt_of(question, choices)] = [f"<think>count</think> so <answer>{right if j < c else 'nonsense'}</answer>"
                                             for j in range(N)]
    return out


def test_pass_at_k_equals_the_estimator_and_every_sample_is_stored(lake_dir, bench):
    with AnswerServer(planned(lambda q, ch: format_instruction(q, ch), letter_answers=True)) as server:
        r = recipe(server.url, bench, {"protocol": "openvlthinker", "formats": {"bench": "hint"},
                                       "sampling": {"temperature": 1.0, "n": N, "max_tokens": 64}})
        with Lake(lake_dir) as lake:
            result = evaluate.run(lake, r.eval_config("bench", "policy-v1", iteration=1, stage="grpo")).value
            evals = lake.query("SELECT problems, correct, accuracy, pass_at_k, samples_per_problem, protocol, stage, "
                               "iteration FROM evals").fetchall()
            samples = lake.query("SELECT source_id, sample_index, prompt, completion, extracted, correct, reason "
                                 "FROM eval_samples ORDER BY source_id, sample_index").fetchall()
        hits = list(server.hits)
    counts = [c for *_, c in PROBLEMS]
    want = [sum(1 - comb(N - c, k) / comb(N, k) for c in counts) / len(counts) for k in range(1, N + 1)]
    assert result.pass_at_k == pytest.approx(want) and result.accuracy == pytest.approx(sum(counts) / (N * len(counts)))
    assert want[0] < want[1] < want[2] < want[3] == pytest.approx(6 / 7)   # the problem solved 0 of N never passes
    problems, correct, accuracy, pass_at_k, n, protocol, stage, iteration = evals[0]
    assert (problems, correct, n, protocol, stage, iteration) == (7, sum(counts), N, "openvlthinker", "grpo", 1)
    assert pass_at_k == pytest.approx(want)
    # every answer, with its prompt and verdict; the prompts are the official formatting, images sent
    assert len(samples) == 7 * N and len(hits) == 7 and all(image for _, image in hits)
    assert {p for p, _ in hits} == {format_instruction(q, ch) for q, _, ch, _ in PROBLEMS}
    by_problem = {}
    for source_id, j, prompt, completion, extracted, ok, reason in samples:
        by_problem.setdefault(source_id, []).append(ok)
        assert reason == ("correct" if ok else "incorrect")
        assert extracted in ("nonsense", "B") or extracted.isdigit()
    assert [sum(by_problem[f"q{i}"]) for i in range(7)] == counts   # "B" for gold "5" of [3, 5, 4] is correct


def test_done_before_is_recorded_for_a_new_iteration_and_stage_without_generating(lake_dir, bench):
    template = load_template("rollout")
    with AnswerServer(planned(lambda q, ch: template.render(question=q, choices=ch))) as server:
        r = recipe(server.url, bench, {})
        with Lake(lake_dir) as lake:
            first = evaluate.run(lake, r.eval_config("bench", "policy-v1", iteration=1, stage="sft")).value
            again = evaluate.run(lake, r.eval_config("bench", "policy-v1", iteration=2, stage="sft")).value
            third = evaluate.run(lake, r.eval_config("bench", "policy-v1", iteration=2, stage="sft")).value
            rows = lake.query("SELECT iteration, stage, eval_key, accuracy FROM evals ORDER BY iteration").fetchall()
            samples = lake.count("eval_samples")
        assert len(server.hits) == 7
    assert not first.done_before and again.done_before and third.done_before
    assert [(i, s) for i, s, *_ in rows] == [(1, "sft"), (2, "sft")] and rows[0][2:] == rows[1][2:]
    assert samples == 7   # greedy, one sample each; a done-before evaluation stores no new ones
    # greedy first sample of each problem: correct where the plan put at least one right answer first
    assert first.correct == sum(c > 0 for *_, c in PROBLEMS)


def test_mathverse_judge_protocol_through_the_openai_backend(lake_dir, bench):
    judge_template = load_template("mathverse_judge", fields=JUDGE_FIELDS)
    policy = {q: ["<think>I count.</think> So <answer>" + gold + "</answer>" if i % 3 == 0 else
                  "<think>I count.</think> So <answer>7</answer>" if i % 3 == 1 else "It is " + gold]
              for i, (q, gold, _, _) in enumerate(PROBLEMS)}
    verdicts = {}
    for i, (q, gold, _, _) in enumerate(PROBLEMS):
        prediction = gold if i % 3 == 0 else "7" if i % 3 == 1 else "Failed to extract."
        # verify_mathverse_gpt4.py wraps each extracted answer in a list: the judge reads ['7']
        text = judge_template.render(instruction=q, groundtruth=gold, prediction=str([prediction]))
        # step by step, then the verdict; one judge answers a bare "Yes"; the no-tag one is judged "No"
        verdicts[text] = ["Yes" if i == 3 else f"The prediction {prediction} vs {gold}.\nJudgement: "
                          + ("Yes" if prediction == gold else "No")]
    with AnswerServer(policy | verdicts) as server:
        r = recipe(server.url, bench, {
            "protocols": {"bench": "judge"}, "formats": {"bench": "query"},
            "judge": {"backend": "openai", "model": "judge-v1", "base_url": server.url, "max_retries": 0,
                      "model_id": "judge-v1", "sampling": {"temperature": 0.0, "max_tokens": 256}}})
        with Lake(lake_dir) as lake:
            result = evaluate.run(lake, r.eval_config("bench", "policy-v1")).value
            rows = lake.query("SELECT source_id, extracted, correct, reason, judge FROM eval_samples "
                              "ORDER BY source_id").fetchall()
        judged = [p for p, image in server.hits if not image]
    assert len(judged) == 7 and set(judged) == set(verdicts)
    want = [i % 3 == 0 for i in range(7)]
    assert [ok for _, _, ok, _, _ in rows] == want and result.correct == sum(want)
    assert rows[2][1] is None and rows[2][3] == "no_answer" and "Judgement: No" in rows[2][4]
    assert rows[3][4] == "Yes" and rows[3][2]


QWEN_SUFFIX = "\n\nYour final answer MUST BE put in \\boxed{}"   # run_evaluation.py / eval_qwen.py at 6997b47


def test_the_base_model_is_graded_as_the_official_qwen_baseline_the_trained_as_openvlthinker(lake_dir, bench):
    """The loop's iteration 0 evaluates with `eval.base_protocol` (qwen-boxed: the suffix after each benchmark's
    official formatting, boxed answers, the gold as its letter); iteration 1 with the recipe's protocol."""
    answers = {}
    for prompt_of in (format_instruction, lambda q, ch: q):   # the hint and query formattings
        for i, (question, gold, choices, _) in enumerate(PROBLEMS):
            right = "B" if choices else gold
            # the base model boxes its answer or ends with "Answer: x"; `<answer>` tags would be no answer here
            answers[prompt_of(question, choices) + QWEN_SUFFIX] = [
                f"I count them, so \\boxed{{{right}}}." if i % 2 else f"Counting them. Final Answer: {right}"]
            answers[prompt_of(question, choices)] = [f"<think>count</think> so <answer>{right}</answer>"]
    with AnswerServer(answers) as server:
        r = parse_recipe({
            "sources": [{"name": "synthetic", "format": "synthetic", "n": 2}],
            "benchmarks": [{"name": "bench", "format": "json", "path": str(bench)},
                           {"name": "bench-q", "format": "json", "path": str(bench)}],
            "rollout": {"backend": "openai", "model": "ignored", "base_url": server.url, "max_retries": 0,
                        "sampling": {"max_tokens": 64}},
            "rl": {"band": [0.0, 1.0]},
            "loop": {"base_model": "base-v1", "benchmarks": ["bench", "bench-q"]},
            "eval": {"protocol": "openvlthinker", "base_protocol": "qwen-boxed",
                     "formats": {"bench": "hint", "bench-q": "query"}}})
        loop = Loop(r, LakeSpec.resolve(lake_dir), say=lambda *a: None)
        loop.evaluate("base-v1", 0, "base")
        base_hits = list(server.hits)
        loop.evaluate("sft-v1", 1, "sft")
        trained_hits = server.hits[len(base_hits):]
        with Lake(lake_dir) as lake:
            evals = lake.query("SELECT iteration, stage, benchmark, protocol, problems, correct FROM evals "
                               "ORDER BY iteration, benchmark").fetchall()
            extracted = lake.query("SELECT extracted, reason FROM eval_samples WHERE protocol = 'qwen-boxed' "
                                   "ORDER BY benchmark, source_id").fetchall()
    # the suffix reached every prompt of both formattings, with the image; the trained model's prompts have none
    assert sorted(p for p, _ in base_hits) == sorted(k for k in answers if k.endswith(QWEN_SUFFIX))
    assert len(base_hits) == 14 and all(image for _, image in base_hits)
    assert len(trained_hits) == 14 and not any(p.endswith(QWEN_SUFFIX) for p, _ in trained_hits)
    assert evals == [(0, "base", "bench", "qwen-boxed", 7, 7), (0, "base", "bench-q", "qwen-boxed", 7, 7),
                     (1, "sft", "bench", "openvlthinker", 7, 7), (1, "sft", "bench-q", "openvlthinker", 7, 7)]
    assert {reason for _, reason in extracted} == {"correct"}
    assert [e for e, _ in extracted[:7]] == ["10", "11", "12", "13", "14", "15", "b"]   # boxed, or after "answer:"


def test_a_failing_eval_is_recorded_failed_with_its_error(cli, lake_dir, bench, tmp_path):
    """`vlfactory eval` is one recorded run, like `run` and `iterate`: when its server never answers it exits
    with the one line saying so, and its run row says `failed` with that error (not `running`, later marked
    interrupted with none)."""
    path = tmp_path / "eval.yaml"
    path.write_text(f"""
sources: [{{name: synthetic, format: synthetic, n: 2}}]
benchmarks: [{{name: bench, format: json, path: {json.dumps(str(bench))}}}]
rollout: {{backend: openai, model: policy, base_url: "http://127.0.0.1:9/v1", max_retries: 0,
          fail_fast_after_s: 0.5, sampling: {{max_tokens: 16}}}}
""")
    failed = cli("eval", "--model", "policy-v1", "--benchmark", "bench", "--recipe", path, ok=False)
    assert failed.exit_code == 2 and "no server answers at http://127.0.0.1:9/v1" in failed.output
    with Lake(lake_dir, read_only=True) as lake:
        runs = lake.query("SELECT command, status, error, ended_at IS NOT NULL FROM runs").fetchall()
    assert len(runs) == 1
    command, status, error, ended = runs[0]
    assert (command, status, ended) == ("eval", "failed", True)
    assert error.startswith("EndpointsUnreachable: ") and "no server answers at http://127.0.0.1:9/v1" in error
