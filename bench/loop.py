"""The README's main job, measured: does each iteration of the quickstart loop beat the last, beyond noise,
and does it fit in 10 minutes?

    python bench/loop.py                      # the shipped quickstart, in a fresh folder with a fresh model cache
    python bench/loop.py --keep DIR           # ... in DIR, kept
    python bench/loop.py --keep DIR --measure-only   # read a finished run again (no wall time)
    python bench/loop.py --held-out synthetic-val    # report on the validation set instead (recipe choices)

Runs `vlfactory iterate RECIPE` as the README does (a new lake, a new runs folder and, unless
--warm-cache, a new model cache, so the wall time includes building the tiny base model; its log goes to
DIR/iterate.log as it runs), then evaluates every model the loop made (the pretrained base, each SFT and
GRPO model) on the held-out benchmark (`--held-out`, default `synthetic-eval`: the quickstart's reported
set, which no recipe choice looked at; the loop itself evaluates the validation set, `loop.benchmarks`,
where choices are made), reads every number from the lake and prints:

- the held-out set: its size, and what it shares with every training problem (pretraining captions
  included): images, and (question, shape set) combinations;
- the caption model: how often its description of a training image names the image's shapes exactly,
  and the verify funnel of iteration 1's traces (what the teacher wrote from those descriptions) by
  source and reason;
- a table of every model's held-out accuracy, overall and per question type, with 95% (Wilson)
  intervals, beside chance (a uniform guess among the valid answers), the most common answer of each
  type, and the final model on the same questions with blank images (the ablation: an empty canvas);
- paired tests between consecutive models, the final model and its iteration-1 counterpart, and the
  final model with real and blank images: exact McNemar, two-sided, with the problems that flipped each
  way (the same problems, so the test is on the disagreements, not on two intervals);
- the targets of issue 21, each with its measured value: met or NOT met.

The ablation is an ordinary evaluation of a jsonl benchmark written next to the lake (benchmark
`<name>-blank`), recorded in `evals` and `eval_samples` like any other.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import os
import subprocess
import sys
import tempfile
import time
from collections import Counter
from itertools import pairwise
from math import comb
from pathlib import Path

BUDGET_S = 600.0
CHANCE = {"count": 1 / 4, "colour": 1 / 4, "bigger": 1 / 2}   # a uniform guess: 1-4 shapes, 4 colours, 2 named


def qtype(question: str) -> str:
    return ("count" if question.startswith("How many") else "colour" if question.startswith("What color")
            else "bigger")


def mcnemar(b: int, c: int) -> float:
    """Exact two-sided McNemar p: b and c are the problems only one of two models answers right.

    >>> mcnemar(0, 0), round(mcnemar(2, 12), 4), mcnemar(5, 5)
    (1.0, 0.0129, 1.0)
    """
    n = b + c
    if n == 0:
        return 1.0
    return min(1.0, 2 * sum(comb(n, i) for i in range(min(b, c) + 1)) / 2 ** n)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recipe", default="quickstart")
    parser.add_argument("--held-out", default="synthetic-eval",
                        help="the benchmark the table reports (default: the quickstart's held-out set)")
    parser.add_argument("--keep", default=None, help="run in this folder and keep it (default: a temporary one)")
    parser.add_argument("--measure-only", action="store_true",
                        help="read the finished run in --keep instead of running the loop (no wall time)")
    parser.add_argument("--warm-cache", action="store_true",
                        help="use the usual model cache ($VLFACTORY_CACHE) instead of a fresh one in the folder")
    a = parser.parse_args()

    from vlfactory.recipe import load_recipe

    work = Path(a.keep or tempfile.mkdtemp(prefix="bench-loop-")).resolve()
    work.mkdir(parents=True, exist_ok=True)
    recipe = load_recipe(a.recipe)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    if not a.warm_cache:
        env["VLFACTORY_CACHE"] = str(work / "model-cache")   # the base model is built inside the timed run
    wall = None
    if not a.measure_only:
        cmd = [sys.executable, "-m", "vlfactory.cli", "iterate", a.recipe, "--lake", str(work / "lake")]
        print(f"$ {' '.join(cmd)}   (in {work}, {os.cpu_count()} cores)", flush=True)
        started = time.monotonic()
        with open(work / "iterate.log", "w") as log:
            res = subprocess.run(cmd, cwd=work, env=env, stderr=log, text=True, check=False)
        wall = time.monotonic() - started
        if res.returncode != 0:
            tail = (work / "iterate.log").read_text()[-3000:]
            sys.exit(f"iterate failed ({res.returncode}); the log is in {work / 'iterate.log'}:\n{tail}")
    os.environ.update({k: v for k, v in env.items() if k == "VLFACTORY_CACHE"})
    print(report(recipe, work, wall, a.held_out))


def report(recipe, work: Path, wall: float | None, bench: str) -> str:
    from vlfactory import verify
    from vlfactory.reports.evals import wilson_interval
    from vlfactory.sources.readers import read_source
    from vlfactory.sources.synthetic import blank_copy, shape_set
    from vlfactory.stages.eval import run as evaluate
    from vlfactory.stores.lake import Lake

    val = recipe.loop.benchmarks[0]
    src = next(s for s in recipe.benchmarks if s.name == bench)
    held = list(read_source(src))
    with Lake(work / "lake", read_only=True) as lake:
        evals = lake.query("""SELECT iteration, stage, model, eval_key, accuracy, problems FROM evals
                              WHERE benchmark = ? AND iteration IS NOT NULL ORDER BY iteration, created_at""",
                           [val]).fetchall()
        train = lake.query("SELECT image_id, question, caption FROM problems").fetchall()
        captions = lake.query("""SELECT p.caption, c.caption FROM captions c JOIN problems p USING (problem_id)
                                 WHERE c.origin = 'model'""").fetchall()
        trainings = {(k, i): (rows, metrics) for k, i, rows, metrics in lake.query(
            "SELECT kind, iteration, rows, metrics FROM trainings WHERE status = 'ok'").fetchall()}
        trace_grades = lake.query("""SELECT g.source, g.accepted, g.reasons FROM grades g
                                     JOIN traces t ON t.trace_id = g.ref_id WHERE g.ref_table = 'traces'""").fetchall()
        distil = lake.query("SELECT count(DISTINCT problem_id) FROM traces").fetchone()[0]
        tags = lake.tags()
        sets = {}
        for tag in sorted(t for t in tags if t.startswith("iter") and t.endswith("-sft")):
            sets[tag] = [r[0] for r in lake.query(
                f"SELECT completion FROM lake.sft AT (VERSION => {int(tags[tag])})").fetchall()]

    def answers(eval_key: str) -> dict[str, bool]:
        with Lake(work / "lake", read_only=True) as lake:
            return dict(lake.query("SELECT source_id, correct FROM eval_samples WHERE eval_key = ? AND sample_index = 0",
                                   [eval_key]).fetchall())

    folders = {_identity(p.parent): p.parent for p in (work / "runs").rglob("vlfactory_training.json")}

    def held_out(model: str, benchmark=None) -> dict[str, bool]:
        """The model's answers on the held-out set (or a copy of it): evaluated once, read back on a rerun."""
        cfg = dataclasses.replace(recipe.eval_config(bench, str(folders[model])), iteration=None)
        if benchmark is not None:
            cfg = dataclasses.replace(cfg, benchmark=benchmark)
        with Lake(work / "lake") as lake:
            evaluate(lake, cfg)
            key = lake.query("""SELECT eval_key FROM evals WHERE benchmark = ? AND model = ?
                                ORDER BY created_at DESC LIMIT 1""",
                             [bench if benchmark is None else f"{bench}-blank", model]).fetchone()[0]
        return answers(key)

    models = []   # (label, iteration, stage, identity, {source_id: correct}) on the held-out set
    validation = []   # (label, accuracy, problems) as the loop measured them on the validation set
    for it, stage, model, key, accuracy, problems in evals:
        label = "base (iteration 0)" if stage == "base" else f"{stage.upper()} {it}"
        validation.append((label, accuracy, problems))
        models.append((label, it, stage, model, answers(key) if bench == val else held_out(model)))
    last = max(m[1] for m in models)
    final = next(m for m in reversed(models) if m[1] == last and m[2] == "grpo")
    first_grpo = next(m for m in models if m[1] == 1 and m[2] == "grpo")

    # the blank-image ablation of the final model (recorded once; a rerun reads it back)
    blank = ("final, blank images", None, "blank", final[3], held_out(final[3], blank_copy(src, work / "blank")))

    # held out: images and (question, shape set) combinations never in training
    train_images = {r[0] for r in train}
    combos = {(q, shape_set(c)) for _, q, c in train if c}
    image_overlap = sum(hashlib.sha256(r["image"]).hexdigest() in train_images for r in held)
    combo_overlap = sum((r["question"], shape_set(r["caption"])) in combos for r in held)
    kind = {r["id"]: qtype(r["question"]) for r in held}
    gold = {r["id"]: r["answer"] for r in held}
    n = len(held)

    def cell(hits: list[bool]) -> str:
        if not hits:
            return "-"
        acc = sum(hits) / len(hits)
        lo, hi = wilson_interval(acc, len(hits))
        return f"{100 * acc:.1f}% [{100 * lo:.1f}, {100 * hi:.1f}]"

    types = ("count", "colour", "bigger")
    per_type = {t: [i for i in kind if kind[i] == t] for t in types}
    common = {t: Counter(gold[i] for i in per_type[t]).most_common(1)[0] for t in types}
    lines = [(f"held-out: {n} problems ({bench}, split {src.split}; count {len(per_type['count'])}, colour "
              f"{len(per_type['colour'])}, bigger {len(per_type['bigger'])}); shared with the {len(train)} training "
              f"problems: {image_overlap} images, {combo_overlap} (question, shape set) combinations"), ""]

    # the caption model and the funnel it feeds
    exact = sum(shape_set(t) == shape_set(m) for t, m in captions)
    counted = sum(len(shape_set(t)) == len(shape_set(m)) for t, m in captions)
    rejected = [g for g in trace_grades if not g[1]]
    why = Counter((g[0], g[2][0]) for g in rejected)
    lines.append(f"caption model: {len(captions)} training images described; the shape set named exactly in "
                 f"{exact} ({100 * exact / max(1, len(captions)):.0f}%), the number of shapes right in {counted} "
                 f"({100 * counted / max(1, len(captions)):.0f}%); the teacher reads only these")
    lines.append(f"iteration 1's traces: {len(trace_grades)} from {distil} distinct text problems, {len(rejected)} "
                 f"rejected ({100 * len(rejected) / max(1, len(trace_grades)):.1f}%), every one with a reason: "
                 + ", ".join(f"{s} {r} {k}" for (s, r), k in sorted(why.items())))
    sizes = "; ".join(f"{tag}: {len(rows)} rows, {sum(verify.format_reward(rows))} well-formed"
                      for tag, rows in sets.items())
    lines.append(f"SFT sets: {sizes}")
    for it in range(1, last + 1):
        problems, metrics = trainings.get(("grpo", it), (0, {}))
        lines.append(f"GRPO {it}: {problems} RL problems; rewards varied within a group on "
                     f"{int(metrics.get('steps_reward_std_nonzero', 0))} of {int(metrics.get('logged_steps', 0))} "
                     f"logged steps")
    lines.append("")

    head = "| model | all | count | colour | bigger |"
    table = [head, "|---|---|---|---|---|",
            "| chance (uniform guess) | " + f"{100 * sum(CHANCE[kind[i]] for i in kind) / n:.1f}% | "
            + " | ".join(f"{100 * CHANCE[t]:.1f}%" for t in types) + " |",
            "| most common answer of the type | " + f"{100 * sum(common[t][1] for t in types) / n:.1f}% | "
            + " | ".join(f"{100 * common[t][1] / len(per_type[t]):.1f}% ({common[t][0]})" for t in types) + " |"]
    for label, _, _, _, got in [*models, blank]:
        table.append(f"| {label}{' (final)' if got is final[4] else ''} | {cell([bool(got.get(i)) for i in kind])} | "
                    + " | ".join(cell([bool(got.get(i)) for i in per_type[t]]) for t in types) + " |")
    lines += table + [""]
    if bench != val:
        lines += [f"validation ({val}, where recipe choices are made; what `iterate` printed): " + "; ".join(
            f"{label} {100 * acc:.1f}% of {n_}" for label, acc, n_ in validation), ""]

    def paired(name: str, new, old) -> tuple[str, float, float]:
        b = sum(bool(new[4].get(i)) and not old[4].get(i) for i in kind)
        c = sum(bool(old[4].get(i)) and not new[4].get(i) for i in kind)
        p = mcnemar(b, c)
        delta = (b - c) / n
        lines.append(f"| {name} | {100 * delta:+.1f} | {b} | {c} | {p:.2g} |")
        return name, delta, p

    lines += [("| paired test (same problems) | change (points) | right only in the first | right only in the "
               "second | exact McNemar p |"), "|---|---|---|---|---|"]
    tests = {}
    for older, newer in pairwise(models):
        tests[(newer[1], newer[2])] = paired(f"{newer[0]} vs {older[0]}", newer, older)
    overall = paired(f"final (GRPO {last}) vs GRPO 1", final, first_grpo)
    ablation = paired("final, real vs blank images", final, blank)
    lines.append("")

    # the targets
    acc = {m[0]: sum(bool(m[4].get(i)) for i in kind) / n for m in [*models, blank]}
    grpo_ok = [(it, tests[(it, "grpo")]) for it in range(1, last + 1) if (it, "grpo") in tests]
    type_ok = {t: wilson_interval(sum(bool(final[4].get(i)) for i in per_type[t]) / len(per_type[t]),
                                  len(per_type[t]))[0] > CHANCE[t] for t in types}
    share = len(rejected) / max(1, len(trace_grades))
    targets = [
        (f"final vs its iteration-1 counterpart (GRPO {last} vs GRPO 1)",
         f"{100 * overall[1]:+.1f} points, p = {overall[2]:.2g}", "above, paired p < 0.05",
         overall[1] > 0 and overall[2] < 0.05),
        *[(f"GRPO {it} vs SFT {it}", f"{100 * t[1]:+.1f} points, p = {t[2]:.2g}", "not significantly below",
           not (t[1] < 0 and t[2] < 0.05)) for it, t in grpo_ok],
        *[(f"final, {t} questions vs chance", (f"{cell([bool(final[4].get(i)) for i in per_type[t]])} vs "
           f"{100 * CHANCE[t]:.0f}%"), "95% interval above chance", type_ok[t]) for t in types],
        ("final vs its blank-image score", (f"{100 * (acc[final[0]] - acc[blank[0]]):+.1f} points "
         f"(p = {ablation[2]:.2g})"), "+20 points", acc[final[0]] - acc[blank[0]] >= 0.20),
        ("verify rejects iteration 1's traces", (f"{len(rejected)} of {len(trace_grades)} ({100 * share:.1f}%), "
         f"{sum(bool(g[2]) for g in rejected)} with a reason"), ">= 10%, each with a reason",
         share >= 0.10 and all(g[2] for g in rejected)),
        ("held-out problems", f"{n}; {image_overlap} images, {combo_overlap} combinations shared with training",
         ">= 500, none shared", n >= 500 and image_overlap == combo_overlap == 0),
        ("well-formed rows only in the sets", f"require_format {recipe.verify.require_format}; "
         + ", ".join(f"{tag} {sum(verify.format_reward(r))}/{len(r)}" for tag, r in sets.items()),
         "require_format on, every row", recipe.verify.require_format
         and all(sum(verify.format_reward(r)) == len(r) for r in sets.values())),
    ]
    if wall is not None:
        targets.append(("main job wall time (model setup included)", (f"{wall:.0f} s ({wall / BUDGET_S:.2f} of "
                        f"the budget, {os.cpu_count()} cores)"), f"<= {BUDGET_S:.0f} s", wall <= BUDGET_S))
    width = max(len(t[0]) for t in targets)
    lines.append("target".ljust(width) + "  measured   (target: met?)")
    lines += [f"{name.ljust(width)}  {measured}   ({target}: {'met' if ok else 'NOT met'})"
              for name, measured, target, ok in targets]
    lines.append(f"\nlake and logs: {work}")
    return "\n".join(lines)


def _identity(folder: Path) -> str:
    from vlfactory.models import identity

    return identity(str(folder))


if __name__ == "__main__":
    main()
