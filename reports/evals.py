"""The report's evaluation sections, read from the catalog: the loop's models labelled and ordered (base, iter1
sft, iter1 grpo, ...), a few stored answers of each, accuracy per question type against the question-only
baseline and per source (the benchmark its rows name), and consecutive models compared on the same problems (exact
McNemar or a paired bootstrap); the Wilson interval of an accuracy.

    from vlfactory.reports.evals import paired
    with Lake("./lake", read_only=True) as lake:
        print(paired(lake, lake.resolve("iter2")))
"""

from __future__ import annotations

import re
from itertools import pairwise

from vlfactory.reports.reads import iteration_tags, rows
from vlfactory.stores.lake import Lake

STAGE_ORDER = {"base": 0, "sft": 1, "grpo": 3}   # grpo-<stage> (an earlier GRPO run) sorts between


def eval_label(r: dict) -> str:
    """Which model of the loop an evals row is about: base, iter1 sft, iter1 grpo, ... (else its iteration)."""
    if r.get("stage") == "base":
        return "base"
    if r.get("stage"):
        return f"iter{r['iteration']} {r['stage']}"
    return f"iter{r['iteration']}" if r.get("iteration") is not None else "-"


def eval_order(r: dict) -> tuple:
    return (r["iteration"] if r.get("iteration") is not None else 10**9, STAGE_ORDER.get(r.get("stage"), 2))


def eval_examples(lake: Lake, per_model: int = 3) -> list[dict]:
    """A few stored answers of each evaluated model of the loop, per benchmark, at the last iteration tag
    (all of them are in `eval_samples`)."""
    tags = iteration_tags(lake)
    if not tags:
        return []
    s = tags[-1][1]
    found = rows(lake, f"""SELECT e.iteration, e.stage, e.benchmark, x.source_id, x.sample_index, x.prompt,
                                  x.completion, x.extracted, x.answer, x.correct, x.reason
                           FROM (SELECT DISTINCT iteration, stage, benchmark, eval_key FROM evals@{s}
                                 WHERE iteration IS NOT NULL AND stage IS NOT NULL) e
                           JOIN eval_samples@{s} x USING (eval_key)
                           QUALIFY row_number() OVER (PARTITION BY e.iteration, e.stage, e.benchmark
                                                      ORDER BY x.source_id, x.sample_index) <= {int(per_model)}""")
    return sorted(found, key=lambda r: (eval_order(r), r["benchmark"], r["source_id"], r["sample_index"]))


def question_type(question: str | None) -> str:
    """A question's type, for accuracy by type: its first three words, lower case, without punctuation or numbers.

    >>> question_type("Which shape is bigger, the red one or the blue one?"), question_type("How many shapes?")
    ('which shape is', 'how many shapes')
    """
    words = re.findall(r"[^\W\d_]+", (question or "").lower())
    return " ".join(words[:3]) or "(no question)"


def question_only(rows: list[dict]) -> list[float]:
    """Per row (`question`, `answer` the gold, `choices`), the expected score of answering without the image: the
    most common gold answer among the *other* rows asking the very same question (ties split evenly), else one
    choice at random, else 0. Leaving the row itself out keeps a question asked once from scoring itself.

    >>> question_only([{"question": "Bigger, red or blue?", "answer": a, "choices": None} for a in "rrb"])
    [0.5, 0.5, 0.0]
    >>> question_only([{"question": "Colour?", "answer": "red", "choices": ["red", "blue", "green", "yellow"]}])
    [0.25]
    """
    from collections import Counter

    golds: dict[str, Counter] = {}
    for r in rows:
        golds.setdefault(r["question"], Counter())[r["answer"]] += 1
    scores = []
    for r in rows:
        others = golds[r["question"]].copy()
        others[r["answer"]] -= 1
        best = max(others.values(), default=0)
        if best > 0:
            tied = [a for a, n in others.items() if n == best]
            scores.append(1 / len(tied) if r["answer"] in tied else 0.0)
        else:
            scores.append(1 / len(r["choices"]) if r.get("choices") else 0.0)
    return scores


def answers(lake: Lake, s: int) -> list[dict]:
    """Per evaluated model of the loop, benchmark and problem: the model (`model`, its `order`), the question's type
    (`question_type`), the share of its samples that were right (`correct`) and the problem's question-only
    baseline (`question_only`, over the benchmark's problems): what a model that ignores the image scores."""
    found = rows(lake, f"""SELECT e.iteration, e.stage, x.benchmark, x.source_id, x.question, x.answer,
                                  avg(coalesce(x.correct, false)::INT) AS correct, any_value(p.choices) AS choices
                           FROM eval_samples@{s} x
                           JOIN (SELECT DISTINCT iteration, stage, eval_key FROM evals@{s}
                                 WHERE iteration IS NOT NULL AND stage IS NOT NULL) e USING (eval_key)
                           LEFT JOIN problems@{s} p ON p.source = x.benchmark AND p.source_id = x.source_id
                           GROUP BY ALL""")
    problems = {(r["benchmark"], r["source_id"]): r for r in found}
    baseline = dict(zip(problems, question_only(list(problems.values()))))
    return [r | {"model": eval_label(r), "order": eval_order(r), "type": question_type(r["question"]),
                 "baseline": baseline[r["benchmark"], r["source_id"]]} for r in found]


def accuracy_by(answered: list[dict], *keys: str) -> list[dict]:
    """Accuracy and question-only baseline of each model per benchmark (the source its rows name) and `keys` of
    `answers` rows (`type`: per question type; none: per source), in the order benchmark, keys, model."""
    groups: dict[tuple, dict] = {}
    for r in answered:
        g = groups.setdefault((r["benchmark"], *(r[k] for k in keys), r["model"]), {
            "benchmark": r["benchmark"], **{k: r[k] for k in keys}, "model": r["model"], "order": r["order"],
            "problems": 0, "correct": 0.0, "baseline": 0.0})
        g["problems"] += 1
        g["correct"] += r["correct"]
        g["baseline"] += r["baseline"]
    out = [g | {"accuracy": g["correct"] / g["problems"], "baseline": g["baseline"] / g["problems"]}
           for g in groups.values()]
    return sorted(out, key=lambda g: (g["benchmark"], *(g[k] for k in keys), g["order"]))


def by_question_type(lake: Lake, s: int) -> list[dict]:
    """Eval accuracy of each evaluated model of the loop per benchmark and question type, with the question-only
    baseline of each group: `accuracy_by(answers(lake, s), "type")`."""
    return accuracy_by(answers(lake, s), "type")


def wilson_interval(accuracy: float, n: int, z: float = 1.96) -> tuple[float, float]:
    """The Wilson score interval of an accuracy measured on n problems (95% for z = 1.96).

    >>> [round(x, 3) for x in wilson_interval(0.5, 100)]
    [0.404, 0.596]
    >>> wilson_interval(0.0, 0)
    (0.0, 1.0)
    """
    if n == 0:
        return 0.0, 1.0
    centre = (accuracy + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * (accuracy * (1 - accuracy) / n + z * z / (4 * n * n)) ** 0.5
    return max(0.0, centre - half), min(1.0, centre + half)


def mcnemar_exact(b: int, c: int) -> float:
    """The two-sided exact McNemar test of paired binary outcomes: b pairs right only under A, c right only under
    B; the p-value of so uneven a split when either model is as likely to win a discordant pair.

    >>> round(mcnemar_exact(10, 2), 4), mcnemar_exact(3, 3), mcnemar_exact(0, 0)
    (0.0386, 1.0, 1.0)
    """
    from math import comb

    n = b + c
    if n == 0:
        return 1.0
    return min(1.0, 2 * sum(comb(n, i) for i in range(min(b, c) + 1)) / 2 ** n)


def paired_bootstrap(a: list[float], b: list[float], resamples: int = 10_000, seed: int = 0) -> float:
    """Two-sided p-value of the mean paired difference b - a (per-problem scores) by the paired bootstrap: twice
    the share of resampled differences on the far side of zero (the observed sign's opposite).

    >>> paired_bootstrap([0.0] * 20, [1.0] * 20) < 0.001, paired_bootstrap([0.5] * 9, [0.5] * 9)
    (True, 1.0)
    """
    import random

    n = len(a)
    diffs = [y - x for x, y in zip(a, b)]
    observed = sum(diffs) / n if n else 0.0
    if not n or not any(diffs):
        return 1.0
    rnd = random.Random(seed)
    far = 0
    for _ in range(resamples):
        mean = sum(diffs[rnd.randrange(n)] for _ in range(n)) / n
        far += (mean <= 0) if observed > 0 else (mean >= 0)
    return min(1.0, 2 * (far + 1) / (resamples + 1))


def paired(lake: Lake, s: int) -> list[dict]:
    """Consecutive models of the loop (base -> iter1 sft -> iter1 grpo -> ...) compared on the problems both
    answered, per benchmark: accuracies, the problems that flipped each way, and the p-value (exact McNemar with
    one sample per problem; a paired bootstrap of per-problem accuracy with several)."""
    found = rows(lake, f"""SELECT e.iteration, e.stage, x.benchmark, x.source_id,
                                  avg(coalesce(x.correct, false)::INT) AS score,
                                  count(*) AS samples
                           FROM eval_samples@{s} x
                           JOIN (SELECT DISTINCT iteration, stage, eval_key FROM evals@{s}
                                 WHERE iteration IS NOT NULL AND stage IS NOT NULL) e USING (eval_key)
                           GROUP BY ALL""")
    models: dict[str, dict] = {}
    for r in found:
        m = models.setdefault(r["benchmark"], {}).setdefault(eval_label(r), {"order": eval_order(r), "scores": {},
                                                                              "samples": 0})
        m["scores"][r["source_id"]] = r["score"]
        m["samples"] = max(m["samples"], r["samples"])
    out = []
    for bench, by_model in sorted(models.items()):
        ordered = sorted(by_model.items(), key=lambda kv: kv[1]["order"])
        for (name_a, a), (name_b, b) in pairwise(ordered):
            common = sorted(set(a["scores"]) & set(b["scores"]))
            if not common:
                continue
            xa, xb = [a["scores"][k] for k in common], [b["scores"][k] for k in common]
            binary = a["samples"] == b["samples"] == 1
            only_a = sum(x > y for x, y in zip(xa, xb))
            only_b = sum(y > x for x, y in zip(xa, xb))
            out.append({"benchmark": bench, "a": name_a, "b": name_b, "problems": len(common),
                        "accuracy_a": sum(xa) / len(common), "accuracy_b": sum(xb) / len(common),
                        "better_a": only_a, "better_b": only_b,
                        "test": "exact McNemar" if binary else "paired bootstrap",
                        "p": mcnemar_exact(only_a, only_b) if binary else paired_bootstrap(xa, xb)})
    return out
