"""The README's main job, measured: does the quickstart loop learn, and does it fit in 10 minutes?

    python bench/loop.py                      # the shipped quickstart recipe, in a fresh temporary folder
    python bench/loop.py --recipe FILE --keep DIR

Runs `vlfactory iterate RECIPE` exactly as the README does (a new lake, a new
runs folder), timing it, then reads every number from the lake and prints the
issue-11 targets, each with its measured value and the baseline it is judged
against, measured in the same run:

- the held-out eval's size, and that none of its images is among the training problems' images;
- the final GRPO model's accuracy against the base model's (iteration 0): +25 points;
- each iteration's GRPO model against its SFT model: as good within the 95% interval;
- the last iteration against the one before (final GRPO models);
- the blank-image ablation: the final model on the same held-out questions with every image
  replaced by an empty canvas (the synthetic background, no shapes): 20 points below real images;
- the main job's wall time against the 10-minute budget.

The ablation is an ordinary evaluation of a jsonl benchmark written next to the lake, so it is
recorded in `evals` like any other (benchmark `<name>-blank`).
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
from pathlib import Path

BUDGET_S = 600.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recipe", default="quickstart")
    parser.add_argument("--keep", default=None, help="run in this folder and keep it (default: a temporary one)")
    parser.add_argument("--measure-only", action="store_true",
                        help="read the finished run in --keep instead of running the loop (no wall time)")
    a = parser.parse_args()

    from vlfactory.stages.eval import run as evaluate, wilson_interval
    from vlfactory.sources.readers import read_source
    from vlfactory.recipe import load_recipe
    from vlfactory.stores.lake import Lake
    from vlfactory.sources.synthetic import blank_copy

    work = Path(a.keep or tempfile.mkdtemp(prefix="bench-loop-")).resolve()
    work.mkdir(parents=True, exist_ok=True)
    recipe = load_recipe(a.recipe)
    cmd = [sys.executable, "-m", "vlfactory.cli", "iterate", a.recipe, "--lake", str(work / "lake")]
    wall = None
    if not a.measure_only:
        print(f"$ {' '.join(cmd)}   (in {work}, {os.cpu_count()} cores)", flush=True)
        started = time.monotonic()
        res = subprocess.run(cmd, cwd=work, env={**os.environ, "PYTHONUNBUFFERED": "1"}, stderr=subprocess.PIPE,
                             text=True)
        wall = time.monotonic() - started
        (work / "iterate.log").write_text(res.stderr)
        if res.returncode != 0:
            sys.exit(f"iterate failed ({res.returncode}); the log is in {work / 'iterate.log'}:\n{res.stderr[-3000:]}")
        print(res.stderr[res.stderr.rfind("model "):] if "model " in res.stderr else res.stderr[-2000:])

    bench = recipe.loop.benchmarks[0]
    with Lake(work / "lake", read_only=True) as lake:
        evals = lake.query(f"""SELECT iteration, stage, model_name, accuracy, problems FROM evals
                               WHERE benchmark = '{bench}' ORDER BY iteration, created_at""").fetchall()
        train_images = {r[0] for r in lake.query("SELECT DISTINCT image_id FROM problems").fetchall()}
    by = {(it, stage): (model, acc, n) for it, stage, model, acc, n in evals}
    last = max(it for it, _ in by)
    final_model, final, n = by[(last, "grpo")]
    base = by[(0, "base")][1]

    src = next(s for s in recipe.benchmarks if s.name == bench)
    held_out = [hashlib.sha256(r["image"]).hexdigest() for r in read_source(src)]
    overlap = sum(h in train_images for h in held_out)

    blank_src = blank_copy(src, work / "blank")
    cfg = dataclasses.replace(recipe.eval_config(bench, final_model), benchmark=blank_src, iteration=None)
    with Lake(work / "lake") as lake:
        blank = evaluate(lake, cfg).value.accuracy

    def ci(acc: float, k: int) -> str:
        lo, hi = wilson_interval(acc, k)
        return f"{100 * acc:.1f}% [{100 * lo:.1f}, {100 * hi:.1f}]"

    rows = [("held-out problems", f"{n} (image overlap with training: {overlap})", ">= 200, overlap 0",
             n >= 200 and overlap == 0),
            ("final GRPO vs base", f"{ci(final, n)} vs {ci(base, n)}: {100 * (final - base):+.1f} points",
             "+25 points", final - base >= 0.25)]
    for it in range(1, last + 1):
        (_, sft, _), (_, grpo, _) = by[(it, "sft")], by[(it, "grpo")]
        rows.append((f"iteration {it}: GRPO vs SFT", f"{ci(grpo, n)} vs {ci(sft, n)}",
                     "GRPO's upper bound >= SFT", wilson_interval(grpo, n)[1] >= sft))
    if last > 1:
        before = by[(last - 1, "grpo")][1]
        rows.append((f"iteration {last} vs {last - 1} (GRPO)", f"{ci(final, n)} vs {ci(before, n)}",
                     "above", final > before))
    rows.append(("blank-image ablation", f"real {100 * final:.1f}% vs blank {100 * blank:.1f}%: "
                 f"{100 * (final - blank):+.1f} points", "+20 points", final - blank >= 0.20))
    if wall is not None:
        rows.append(("main job wall time", f"{wall:.0f} s ({wall / BUDGET_S:.2f} of the budget)",
                     f"<= {BUDGET_S:.0f} s", wall <= BUDGET_S))
    width = max(len(r[0]) for r in rows)
    print("\ntarget".ljust(width + 1), " measured / baseline")
    for name, measured, target, ok in rows:
        print(f"{name.ljust(width)}  {measured}   (target {target}: {'met' if ok else 'NOT met'})")
    print(f"\nlake and logs: {work}")


if __name__ == "__main__":
    main()
