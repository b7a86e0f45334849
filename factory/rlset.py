"""The rl set: the problems the current policy finds hard, by its pass rate on graded rollouts.

OpenVLThinker trains GRPO on the problems its model does not yet solve
reliably. A problem joins the set when the policy (`rl.model`, else the
rollout stage's model) has at least `rl.min_samples` graded rollouts of it and
its pass rate (the `pass_rates` view: correct / samples) lies in the band
`rl.band: [lo, hi]`, both ends included. Each row carries what GRPO needs:
the image, the prompt the trainer shows (the `rl.prompt` template rendered
with question and choices), the gold answer, and the pass rate it was picked
by.

The set is a table rewritten in one transaction, so a tag names exactly one
iteration's set (`rl@iter1`) while later iterations rewrite it; a rebuild that
would change nothing writes nothing.

    vlfactory run RECIPE --stage rollout --stage rl --tag iter1
    vlfactory sql "SELECT source, count(*), avg(pass_rate) FROM rl@iter1 GROUP BY source"
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa

from vlfactory.prompts import load_template
from vlfactory.recipe import Recipe, RecipeError
from vlfactory.stores import schema
from vlfactory.stores.lake import Lake

# Compared columns when deciding whether a rebuild changes the set (run_id only says who wrote it).


@dataclass
class RLStats:
    model: str | None = None
    band: tuple[float, float] = (0.0, 1.0)
    min_samples: int = 1
    problems: int = 0                 # problems considered
    kept: int = 0
    outside: int = 0                  # enough samples, pass rate outside the band
    too_few: int = 0                  # fewer than min_samples rollouts by the policy (none included)
    by_source: Counter = field(default_factory=Counter)
    written: bool = False

    def counts(self) -> dict[str, int]:
        return {"problems": self.problems, "kept": self.kept, "outside_band": self.outside,
                "too_few_samples": self.too_few, "written": int(self.written),
                **{f"source.{k}": v for k, v in self.by_source.items()}}

    def line(self) -> str:
        if self.model is None:
            return "rl: no rl block in the recipe, nothing to do"
        mix = ", ".join(f"{s} {n}" for s, n in sorted(self.by_source.items()))
        state = "written" if self.written else "unchanged, nothing written"
        return (f"rl: {self.kept} of {self.problems} problems with pass rate in [{self.band[0]}, {self.band[1]}] "
                f"(min {self.min_samples} samples) by {self.model}; {self.outside} outside the band, "
                f"{self.too_few} with too few samples; by source: {mix or 'none'}; {state}")


def policy_model(recipe: Recipe) -> str:
    if recipe.rl.model:
        return recipe.rl.model
    if recipe.rollout is None:
        raise RecipeError("rl.model: missing; name the policy whose rollouts count, or add a rollout: block")
    return recipe.rollout.identity


def candidates(lake: Lake, model: str, limit: int | None) -> list[dict]:
    """Each problem (the first `limit`, in the stages' common order) with the policy's tallies."""
    rel = lake.con.execute(f"""
        WITH todo AS {lake.problems_in_scope(limit)}
        SELECT p.problem_id, p.source, p.source_id, p.image_id, p.question, p.choices, p.answer,
               coalesce(r.samples, 0) AS samples, coalesce(r.correct, 0) AS correct
        FROM todo p LEFT JOIN pass_rates r ON r.problem_id = p.problem_id AND r.model = ?
        ORDER BY p.source, p.source_id, p.problem_id""", [model])
    cols = [d[0] for d in rel.description]
    return [dict(zip(cols, r)) for r in rel.fetchall()]


def run(lake: Lake, recipe: Recipe, limit: int | None = None, progress=None) -> RLStats:
    cfg = recipe.rl
    if cfg is None:
        return RLStats()
    stats = RLStats(policy_model(recipe), tuple(cfg.band), cfg.min_samples)
    template = load_template(cfg.prompt or (recipe.rollout.prompt if recipe.rollout else None) or "rollout",
                             Path(recipe.path).parent if recipe.path else None, needs={"question"})
    lo, hi = cfg.band
    rows = []
    for c in candidates(lake, stats.model, limit):
        stats.problems += 1
        if c["samples"] == 0 or c["samples"] < cfg.min_samples:
            stats.too_few += 1
            continue
        rate = c["correct"] / c["samples"]
        if not lo - 1e-9 <= rate <= hi + 1e-9:  # 0.7 written in a recipe vs 7/10 computed
            stats.outside += 1
            continue
        rows.append(c | {"prompt": template.render(question=c["question"], choices=c["choices"]),
                         "policy_model": stats.model, "pass_rate": rate, "run_id": lake.run_id})
    table = pa.Table.from_pylist(rows, schema=schema.RL)
    stats.kept = table.num_rows
    stats.by_source.update(table.column("source").to_pylist())
    stats.written = lake.replace("rl", table, f"rl set: {stats.kept} problems, pass rate in [{lo}, {hi}] by {stats.model}")
    return stats
