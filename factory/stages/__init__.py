"""The stage contract: one list of stages, one way to call them, one result type.

`vlfactory run` and `vlfactory iterate` run the same list. A stage is one module
of this package, named as the stage (`vlfactory.stages.distil`), with one entry point,

    run(lake, config, scope, progress=None) -> StageResult

taking the lake, the stage's own typed config (`Recipe.stage_config(name)`: a
GenerationConfig for caption/distil/rollout, VerifyConfig, SFTSetConfig,
RLSetConfig, IngestConfig) and a `Scope` (the recipe's sources and `--limit`),
and returning what it did: rows written, rejected rows by reason, counts,
tokens, time. The loop steers a stage by handing it another config
(`dataclasses.replace(config, model=...)`), never by editing the recipe.

    from vlfactory.stages import Scope, run_stage
    result = run_stage(lake, "distil", recipe.stage_config("distil"), Scope.of(recipe))
    print(result.line())
"""

from __future__ import annotations

import importlib
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Callable

from vlfactory import tracking

# In order; `vlfactory run` runs them all, skipping those the recipe leaves out. Verify grades what
# distil and rollout wrote; the sets read those grades.
STAGES = ("ingest", "caption", "distil", "rollout", "verify", "sft", "rl")
OPTIONAL = ("distil", "sft", "rollout", "rl")  # a recipe may leave these out; the others always run


@dataclass(frozen=True)
class Scope:
    """The problems a stage works on: those of the recipe's sources, the first `limit` in the stages' order.

    For ingest, `limit` is rows read per source.
    """

    sources: tuple[str, ...]
    limit: int | None = None

    @classmethod
    def of(cls, recipe, limit: int | None = None) -> "Scope":
        return cls(tuple(s.name for s in recipe.sources), limit)

    def problems(self) -> str:
        """A subquery: the problems in scope, in the stages' common order."""
        names = ", ".join("'" + s.replace("'", "''") + "'" for s in self.sources) or "NULL"
        return (f"(SELECT * FROM lake.problems WHERE source IN ({names}) ORDER BY source, source_id, problem_id"
                + (f" LIMIT {int(self.limit)})" if self.limit is not None else ")"))


@dataclass
class StageResult:
    """What one stage did. Every stage returns one; the CLI, the loop and the runs table read it the same way."""

    stage: str
    wanted: int = 0                   # units of work in scope: samples to generate or grade, rows to read
    cached: int = 0                   # already in the lake before this run: nothing to do
    written: int = 0                  # rows this run wrote (generated samples, grades, set rows, problems)
    rejected: Counter = field(default_factory=Counter)  # rows this run rejected, by reason
    failed: int = 0                   # requests that failed after retries (rejected as request_failed)
    requests: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    skipped: Counter = field(default_factory=Counter)   # work not attempted, by reason
    seconds: float = 0.0
    extra: dict[str, int] = field(default_factory=dict)  # the stage's own numbers (funnel, mix by source)
    summary: str = ""                 # the stage's own first line; default: the generation line
    notes: list[str] = field(default_factory=list)       # more lines: a funnel, per-source tallies
    value: Any = None                 # what the stage returns to a caller (the eval's accuracy, the set's stats)

    @property
    def missing(self) -> int:
        return max(0, self.wanted - self.cached - self.written)

    def counts(self) -> dict[str, int]:
        out = {k: getattr(self, k) for k in ("wanted", "cached", "written", "failed", "requests", "prompt_tokens",
                                             "completion_tokens")}
        out |= {f"rejected.{k}": v for k, v in self.rejected.items()}
        out |= {f"skipped.{k}": v for k, v in self.skipped.items()}
        return out | self.extra

    def line(self) -> str:
        head = self.summary or self.generation_line()
        skipped = "".join(f"; skipped {n} ({why})" for why, n in self.skipped.items() if n)
        return "\n".join([head + skipped, *self.notes])

    def generation_line(self) -> str:
        rate = f", {self.completion_tokens / self.seconds:.0f} tok/s" if self.seconds and self.completion_tokens else ""
        return (f"{self.stage}: {self.wanted} samples = {self.cached} cached + {self.written} generated"
                f" + {self.missing} missing ({self.failed} failed requests); "
                f"{self.requests} requests, {self.prompt_tokens} prompt + {self.completion_tokens} completion "
                f"tokens in {self.seconds:.1f}s{rate}")


Progress = Callable[[StageResult, int], None]


def run_stage(lake, name: str, config, scope: Scope, progress: Progress | None = None) -> StageResult:
    """Run one stage; an optional stage the recipe leaves out (config None) does nothing and says so."""
    if name not in STAGES:
        raise ValueError(f"unknown stage {name!r}; stages: {', '.join(STAGES)}")
    if config is None and name in OPTIONAL:
        return StageResult(name, summary=f"{name}: no {name}: block in the recipe, nothing to do")
    result = importlib.import_module(f"vlfactory.stages.{name}").run(lake, config, scope, progress)
    tracking.log_stage(result)  # to W&B / trackio / TensorBoard when the run is tracked (vlfactory.tracking)
    return result
