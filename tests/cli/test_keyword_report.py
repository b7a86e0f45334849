"""Reflection tracking: keyword frequency per 1k words in the traces and rollouts each iteration added and in
the answers of each evaluated model, computed from a real catalog with two iteration tags and drawn by the
iterations report (the paper's figure), with the recipe's own keyword list."""

from __future__ import annotations

import re

import pyarrow as pa

from vlfactory.reports.keywords import keyword_rates
from vlfactory.stores import schema
from vlfactory.stores.lake import Lake

RECIPE = """name: kw
sources:
  - {name: s, format: synthetic, n: 1}
loop: {base_model: m, track_keywords: [wait, check, "but wait"]}
"""
ITER1_TRACES = ["Wait, I check the bars. First the tallest.", "The answer is 4."]
ITER1_ROLLOUTS = ["<think>I check it.</think><answer>4</answer>"]
ITER2_ROLLOUTS = ["<think>Wait. Wait, but wait: check, check, check again.</think><answer>4</answer>",
                  "<think>I am waiting; checking.</think><answer>5</answer>"]
EVALS = {("base", 0): ["The answer is 3."], ("sft", 1): ["Wait, check: 3."], ("grpo", 1): ["Wait wait wait 3"]}


def rate(texts: list[str], word: str) -> float:
    words = sum(len(t.split()) for t in texts)
    hits = sum(len(re.findall(rf"\b{re.escape(word)}\b", t.lower())) for t in texts)
    return 1000 * hits / words


def _samples(table: str, texts: list[str], prefix: str) -> pa.Table:
    key = {"traces": "trace_id", "rollouts": "rollout_id"}[table]
    rows = [{key: f"{prefix}{i}", "problem_id": "p", "sample_index": i, "model": "m", "completion": t,
             "request_key": f"{prefix}{i}"} for i, t in enumerate(texts)]
    return pa.Table.from_pylist(rows, schema=schema.TRACES if table == "traces" else schema.ROLLOUTS)


def test_report_draws_keyword_curves_for_two_iterations(cli, lake_dir, tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(RECIPE)
    cli("ingest", recipe)   # a run with this recipe: the report reads its keyword list
    with Lake(lake_dir) as lake:
        with lake.transaction("iteration 1"):
            lake.insert("traces", _samples("traces", ITER1_TRACES, "t"))
            lake.insert("rollouts", _samples("rollouts", ITER1_ROLLOUTS, "r1-"))
            for (stage, it), texts in EVALS.items():
                lake.insert("evals", pa.Table.from_pylist([{"eval_id": stage, "eval_key": f"k-{stage}", "model": stage,
                                                            "benchmark": "b", "iteration": it, "stage": stage,
                                                            "problems": 1, "correct": 0, "accuracy": 0.0}]))
                lake.insert("eval_samples", pa.Table.from_pylist(
                    [{"eval_key": f"k-{stage}", "model": stage, "benchmark": "b", "source_id": "0", "sample_index": 0,
                      "completion": t} for t in texts], schema=schema.EVAL_SAMPLES))
        lake.tag("iter1")
        with lake.transaction("iteration 2"):
            lake.insert("rollouts", _samples("rollouts", ITER2_ROLLOUTS, "r2-"))
        lake.tag("iter2")
        rates = keyword_rates(lake, ["wait", "check", "but wait"])
    got = {(r["series"], r["point"]): r for r in rates}
    assert set(got) == {("traces", "iter1"), ("rollouts", "iter1"), ("rollouts", "iter2"), ("eval samples", "base"),
                        ("eval samples", "iter1 sft"), ("eval samples", "iter1 grpo")}
    # each iteration counts only the rows it added: iter2's rollouts are ITER2_ROLLOUTS alone
    for (series, point), texts in {("rollouts", "iter1"): ITER1_ROLLOUTS, ("rollouts", "iter2"): ITER2_ROLLOUTS,
                                   ("traces", "iter1"): ITER1_TRACES}.items():
        for word in ("wait", "check", "but wait"):
            assert abs(got[(series, point)]["per_1k"][word] - rate(texts, word)) < 1e-9, (series, point, word)
    assert got[("rollouts", "iter2")]["counts"] == {"wait": 3, "check": 3, "but wait": 1}   # not "waiting", "checking"
    evals = [r["point"] for r in rates if r["series"] == "eval samples"]
    assert evals == ["base", "iter1 sft", "iter1 grpo"]   # in the loop's order
    assert got[("eval samples", "iter1 grpo")]["counts"]["wait"] == 3

    out = tmp_path / "loop.html"
    cli("report", "--iterations", "--out", out)
    page = out.read_text()
    section = page[page.index('<section id="keywords">'):]
    section = section[:section.index("</section>")]
    assert '<figure aria-label="Reflection keywords across iterations"><svg class="plot"' in section
    assert "wait, check, but wait" in section and "iter2" in section and "iter1 grpo" in section
    assert f"{rate(ITER2_ROLLOUTS, 'check'):,.2f}" in section
    # and the stored answers of each evaluated model
    answers = page[page.index('<section id="eval-samples">'):]
    assert all(text in answers for texts in EVALS.values() for text in texts)
