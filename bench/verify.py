"""Grading speed: grades per second through `grade_many`'s process pool vs. one process.

20,000 (gold, completion) pairs in realistic shapes are built from the real
slices in ../shared/data (TabMWP dev1k: questions, choices and the authors'
worked solutions as the reasoning; DynaMath seed: floats, choice letters,
texts), else from the synthetic source. Each completion is a <think> chain
with numbers, then a final answer written the ways models write it: in
<answer>, \\boxed{}, "the answer is", a choice letter, an equation
("x = 12"), a LaTeX form (\\sqrt{144}, \\frac{2\\pi}{3}, \\approx 2.09); some
right, some wrong, some cut off before any answer. A fair share (printed)
needs math-verify, which is where the pool's worker processes earn their keep.

Measured in the same run over the same pairs, in slices of 2,000 (the verify stage's batch):
- single process: the verifier's rules, then math-verify in this process, one
  item after another (the floor a plain loop gets on one core);
- pool, 1 worker: `grade_many(pairs, workers=1)` (what the worker round trips cost);
- pool: `grade_many(pairs)` with one worker per core.
Verdicts must be identical (asserted); the figure is the ratio (target >= 1.7x on 2 cores).
On a shared machine neighbours take cores away: the "machine ceiling" printed before and after
(how much faster N busy processes go than one) says whether the cores were there to use.

    python bench/verify.py [--pairs 20000] [--repeat 2]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import sys
import time
from fractions import Fraction
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"


def problems() -> list[dict]:
    """(question, answer, choices, solution) rows from the real slices, else the synthetic source."""
    tabmwp, dynamath = SHARED / "tabmwp-dev1k" / "problems.json", SHARED / "dynamath-seed" / "dataset.json"
    if tabmwp.exists() and dynamath.exists():
        rows = [{"question": r["question"], "answer": r["answer"], "choices": r["choices"],
                 "solution": r["solution"]} for r in json.loads(tabmwp.read_text()).values()]
        rows += [{"question": r["question"], "answer": r["answer"], "choices": None, "solution": None}
                 for r in json.loads(dynamath.read_text()).values()]
        return rows
    from vlfactory.sources.synthetic import generate

    return [{"question": r["question"], "answer": r["answer"], "choices": r["choices"], "solution": r["caption"]}
            for r in generate(1500, seed=0)]


def _number(s: str) -> Fraction | None:
    try:
        return Fraction(s.replace(",", ""))
    except (ValueError, ZeroDivisionError):
        return None


def _steps(rng: random.Random, value: Fraction | None, n: int) -> str:
    """Generic working with numbers, for problems without a written solution."""
    x = float(value) if value is not None else rng.uniform(1, 100)
    lines = []
    for _ in range(n):
        a, b = round(rng.uniform(1, 50), rng.choice([0, 1, 2])), round(rng.uniform(1, 20), rng.choice([0, 1]))
        lines.append(rng.choice([f"First, {a} + {b} = {a + b:g}.", f"Then multiply: {a} \\times {b} = {a * b:g}.",
                                 f"The difference is {a} - {b} = {a - b:g}, which is not what we need.",
                                 f"Reading the figure, the value near x = {b} is about {x:.3g}.",
                                 f"Let me compute the ratio \\frac{{{a}}}{{{b}}} \\approx {a / b:.4f}."]))
    return "\n".join(lines)


def _latex(rng: random.Random, value: Fraction) -> str | None:
    """A LaTeX way to write `value` that the cheap rules cannot read (math-verify must)."""
    x = float(value)
    for d in (1, 2, 3, 4, 6):   # a multiple of pi, as DynaMath's periods and angles are
        k = round(x * d / math.pi)
        if k and abs(k * math.pi / d - x) < 5e-5 * abs(x):
            return f"\\frac{{{k if k != 1 else ''}\\pi}}{{{d}}}" if d > 1 else f"{k if k != 1 else ''}\\pi"
    if value.denominator == 1 and 0 < value <= 400:
        return rng.choice([f"\\sqrt{{{value * value}}}", f"x = {value}", f"{value}^{{1}}", f"y = {value}"])
    if value.denominator == 1:
        return f"x = {value}"
    return rng.choice([f"x = {float(value):g}", f"\\approx {float(value):g}"])


def pairs(n: int, seed: int = 0, rows: list[dict] | None = None) -> list[tuple[str, str, list | None, str]]:
    """n (completion, gold, choices, question) items in realistic shapes, for random `rows`
    (dicts with question, answer, choices, solution; default: `problems()`)."""
    rng = random.Random(seed)
    rows = rows or problems()
    out = []
    while len(out) < n:
        p = rng.choice(rows)
        gold, choices = str(p["answer"]), p["choices"]
        value = _number(gold)
        think = p["solution"] or _steps(rng, value, rng.randint(4, 12))
        think += "\n" + _steps(rng, value, rng.randint(8, 30))   # R1-length chains (~300 words), more numbers
        wrong = None
        if value is not None:
            wrong = str(value + rng.choice([1, -1, 2, 10])) if value.denominator == 1 else f"{float(value) * 1.1:.4g}"
        elif choices:
            wrong = rng.choice([c for c in choices if c != gold] or [gold])
        shape = rng.choices(["answer", "boxed", "answer_is", "wrong", "latex", "latex_wrong", "letter", "cut"],
                            [12, 10, 6, 12, 30, 14, 8, 8])[0]
        answer = gold
        if shape in ("latex", "latex_wrong") and value is not None:
            answer = _latex(rng, value if shape == "latex" else _number(wrong)) or gold
        elif shape in ("wrong", "latex_wrong") and wrong is not None:
            answer = wrong
        elif shape == "letter" and choices and gold in choices:
            answer = f"({'ABCDEFGH'[choices.index(gold)]})"
        if shape == "cut":
            text = f"<think>\n{think[: len(think) // 2]}"
        elif shape == "answer_is":
            text = f"<think>\n{think}\n</think>\nAfter checking each step, the answer is {answer}."
        elif shape == "boxed" or (shape.startswith("latex") and rng.random() < 0.5):
            text = (f"<think>\n{think}\n</think>\nSo the result is $\\boxed{{{answer}}}$.\n"
                    f"<answer>\\boxed{{{answer}}}</answer>")
        else:
            text = f"<think>\n{think}\n</think>\nThe final answer follows.\n<answer>{answer}</answer>"
        out.append((text, gold, choices, p["question"]))
    return out


def single_process(items) -> list:
    """The same rules, with math-verify called in this process: one core, no pool, no IPC."""
    from vlfactory import verify

    out = []
    for completion, gold, choices, question in items:
        judged = verify._judge(completion, gold, choices, question)
        if not isinstance(judged, verify.Grade):
            correct, reason = verify._WORK[judged[1]](*judged[2:])   # (answer, function, its arguments)
            judged = verify.Grade(correct, judged[0], reason)
        out.append(judged)
    return out


def _spin(seconds: float) -> int:
    end, n = time.perf_counter() + seconds, 0
    while time.perf_counter() < end:
        n += 1
    return n


def ceiling(cores: int) -> float:
    """How much faster `cores` busy processes go than one, on this machine right now (shared
    machines give less than `cores`)."""
    import multiprocessing

    one = _spin(1.0)
    with multiprocessing.get_context("fork").Pool(cores) as pool:
        many = sum(pool.map(_spin, [1.0] * cores))
    return many / one


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pairs", type=int, default=20_000)
    ap.add_argument("--slice", type=int, default=2_000, help="pairs per grade_many call (the stage's batch)")
    ap.add_argument("--repeat", type=int, default=1, help="passes over the pairs (times add up)")
    args = ap.parse_args()

    import logging

    logging.getLogger("math_verify").setLevel(logging.ERROR)   # its signal timeout is off in-process
    from vlfactory import verify

    items = pairs(args.pairs)
    cores = os.cpu_count() or 1
    needs_sympy = sum(not isinstance(verify._judge(*it), verify.Grade) for it in items)
    chars = sum(len(it[0]) for it in items) / len(items)
    print(f"{len(items)} pairs from {'../shared/data' if (SHARED / 'tabmwp-dev1k').exists() else 'synthetic'}: "
          f"{chars:.0f} chars per completion on average, {needs_sympy} ({needs_sympy / len(items):.0%}) "
          f"need math-verify; {cores} cores, load average {os.getloadavg()[0]:.1f}")
    print(f"  machine ceiling now: {cores} busy processes run {ceiling(cores):.2f}x one")

    verify.grade_many(items[:200])   # start the workers and import math-verify outside the timing
    single_process(items[:50])
    # Slices alternate which side goes first, so a neighbour's load falls on both alike.
    runs = {"single process": single_process, "pool, 1 worker": lambda x: verify.grade_many(x, workers=1),
            f"pool, {cores} workers": verify.grade_many}
    seconds = dict.fromkeys(runs, 0.0)
    grades: dict[str, list] = {name: [] for name in runs}
    slices = [items[k:k + args.slice] for k in range(0, len(items), args.slice)]
    for rep in range(args.repeat):
        for k, chunk in enumerate(slices):
            for name in (list(runs) if k % 2 == 0 else list(runs)[::-1]):
                t0 = time.perf_counter()
                got = runs[name](chunk)
                seconds[name] += time.perf_counter() - t0
                if rep == 0:
                    grades[name] += got
    (g1, gw, gp), (t1, tw, tp) = grades.values(), seconds.values()
    same = g1 == gw == gp
    n = len(items) * args.repeat
    for name, dt in seconds.items():
        print(f"  {name:<20} {dt:7.2f} s  {n / dt:8.0f} grades/s  {t1 / dt:5.2f}x")
    print(f"  pool over single process: {t1 / tp:.2f}x (over one worker: {tw / tp:.2f}x); verdicts identical: "
          f"{same} ({sum(g.correct for g in gp)} correct, {sum(g.reason == 'no_answer' for g in gp)} no answer)")
    print(f"  machine ceiling after: {ceiling(cores):.2f}x (a figure is only meaningful when both are near {cores})")
    assert same, [(i, a, b) for i, (a, b) in enumerate(zip(g1, gp)) if a != b][:5]


if __name__ == "__main__":
    sys.exit(main())
