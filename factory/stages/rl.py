"""The rl set: the problems the current policy finds hard, by its pass rate on graded rollouts.

OpenVLThinker trains GRPO on the problems its model does not yet solve
reliably. A problem joins the set when the policy (`rl.model`, else the
rollout stage's model, by identity) has at least `rl.min_samples` rollouts
graded by the current verifier and settings, and its pass rate (the
`pass_rates` view over `grades`: correct / samples) lies in the band
`rl.band: [lo, hi]`, both ends included. A new verifier or new settings
regrade (verify stage) and so move the set. Each row carries what GRPO needs:
the image, the prompt the trainer shows (the `rl.prompt` template rendered
with question and choices), the gold answer, and the pass rate it was picked
by.

The set is a table rewritten in one transaction, so a tag names exactly one
iteration's set (`rl@iter1`) while later iterations rewrite it; a rebuild that
would change nothing writes nothing. A GRPO stage of the loop may instead train
on every problem of a named source (`from_source`: `loop.grpo_stages[i].source`,
e.g. a released GRPO set ingested as a source), with no pass rates.

    vlfactory run RECIPE --stage rollout --stage verify --stage rl --tag iter1
    vlfactory sql "SELECT source, count(*), avg(pass_rate) FROM rl@iter1 GROUP BY source"
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import pyarrow as pa

from vlfactory.prompts import load_template
from vlfactory.recipe import RecipeError, RLSetConfig
from vlfactory.stages import Scope, StageResult
from vlfactory.stores import schema, tables
from vlfactory.stores.lake import Lake
from vlfactory.verify import verdict_identity


@dataclass
class RLStats:
    model: str
    band: tuple[float, float] = (0.0, 1.0)
    min_samples: int = 1
    problems: int = 0                 # problems considered
    kept: int = 0
    outside: int = 0                  # enough samples, pass rate outside the band
    too_few: int = 0                  # fewer than min_samples graded rollouts by the policy (none included)
    ungraded: int = 0                 # rollouts of the policy without a current grade: an error (run verify)
    by_source: Counter = field(default_factory=Counter)
    written: bool = False

    def result(self) -> StageResult:
        mix = ", ".join(f"{s} {n}" for s, n in sorted(self.by_source.items()))
        state = "written" if self.written else "unchanged, nothing written"
        return StageResult(
            "rl", wanted=self.problems, written=self.kept if self.written else 0,
            cached=0 if self.written else self.kept, value=self,
            extra={"problems": self.problems, "kept": self.kept, "outside_band": self.outside,
                   "too_few_samples": self.too_few, "written": int(self.written),
                   **{f"source.{k}": v for k, v in self.by_source.items()}},
            summary=(f"rl: {self.kept} of {self.problems} problems with pass rate in [{self.band[0]}, {self.band[1]}] "
                     f"(min {self.min_samples} samples) by {self.model}; {self.outside} outside the band, "
                     f"{self.too_few} with too few samples; by source: {mix or 'none'}; {state}"))


def candidates(lake: Lake, model: str, current: tuple[str, str], scope: Scope) -> list[dict]:
    """Each problem in scope with the policy's tallies, by the current verifier's grades."""
    return tables.dicts(lake, f"""
        WITH todo AS {scope.problems()},
        rates AS (SELECT problem_id, samples, correct FROM lake.pass_rates
                  WHERE model = ? AND verifier = ? AND settings_hash = ?)
        SELECT p.problem_id, p.source, p.source_id, p.image_id, p.question, p.choices, p.answer,
               coalesce(r.samples, 0) AS samples, coalesce(r.correct, 0) AS correct
        FROM todo p LEFT JOIN rates r ON r.problem_id = p.problem_id
        ORDER BY p.source, p.source_id, p.problem_id""", [model, *current])


def ungraded(lake: Lake, model: str, current: tuple[str, str], scope: Scope) -> int:
    return tables.one(lake, f"""
        SELECT count(*) FROM lake.rollouts r
        WHERE r.model = ? AND r.problem_id IN (SELECT problem_id FROM {scope.problems()})
          AND r.rollout_id NOT IN (SELECT ref_id FROM lake.grades WHERE ref_table = 'rollouts'
                                   AND verifier = ? AND settings_hash = ?)""", [model, *current])[0]


def run(lake: Lake, cfg: RLSetConfig, scope: Scope, progress=None) -> StageResult:
    model = cfg.identity
    if model is None:
        raise RecipeError("rl.model: missing; name the policy whose rollouts count, or add a rollout: block")
    current = verdict_identity(cfg.verify)
    stats = RLStats(model, tuple(cfg.band), cfg.min_samples)
    stats.ungraded = ungraded(lake, model, current, scope)
    if stats.ungraded:  # pass rates from stale or missing verdicts would pick the wrong problems
        raise RecipeError(f"rl: {stats.ungraded} rollouts of {model} have no grade by the current verifier and "
                          f"settings ({current[0]}, settings {current[1]}): run the verify stage first")
    template = load_template(cfg.prompt or "rollout", needs={"question"})
    lo, hi = cfg.band
    rows = []
    for c in candidates(lake, model, current, scope):
        stats.problems += 1
        if c["samples"] == 0 or c["samples"] < cfg.min_samples:
            stats.too_few += 1
            continue
        rate = c["correct"] / c["samples"]
        if not lo - 1e-9 <= rate <= hi + 1e-9:  # 0.7 written in a recipe vs 7/10 computed
            stats.outside += 1
            continue
        rows.append(c | {"prompt": template.render(question=c["question"], choices=c["choices"]),
                         "policy_model": model, "pass_rate": rate, "run_id": lake.run_id})
    table = pa.Table.from_pylist(rows, schema=schema.RL)
    stats.kept = table.num_rows
    stats.by_source.update(table.column("source").to_pylist())
    stats.written = lake.replace("rl", table, f"rl set: {stats.kept} problems, pass rate in [{lo}, {hi}] by {model}")
    return stats.result()


def from_source(lake: Lake, cfg: RLSetConfig, scope: Scope) -> StageResult:
    """The rl set of every problem in scope (a named source's), rendered with the rl block's prompt; no pass rates."""
    template = load_template(cfg.prompt or "rollout", needs={"question"})
    rows = lake.query(f"""SELECT problem_id, source, source_id, image_id, question, choices, answer
                          FROM {scope.problems()} p""").to_arrow_table()
    rows = [r | {"prompt": template.render(question=r["question"], choices=r["choices"]),
                 "policy_model": None, "pass_rate": None, "run_id": lake.run_id} for r in rows.to_pylist()]
    of = f"the {len(rows)} problems of {', '.join(scope.sources)}"
    written = lake.replace("rl", pa.Table.from_pylist(rows, schema=schema.RL), f"rl set: {of}")
    return StageResult("rl", wanted=len(rows), written=len(rows) if written else 0, cached=0 if written else len(rows),
                       summary=f"rl: {of}; {'written' if written else 'unchanged, nothing written'}")
