"""The Python API: what the `vlfactory` command does, callable from a notebook.

    import vlfactory
    dd = vlfactory.load("sft@iter1", lake="./lake")      # a DatasetDict by split, images as the Image feature
    ds = vlfactory.load("sft@iter1", split="train", columns=["question", "completion", "image"])
    it = vlfactory.load("traces", split="train", streaming=True)   # an IterableDataset read in batches
    t = vlfactory.table("traces@iter1")                 # a pyarrow.Table (latest: "traces")
    df = vlfactory.frame("grades")                      # a polars.DataFrame
    run = vlfactory.run("quickstart", stages=["ingest", "verify"], limit=20)
    print(run["verify"].line())                         # the StageResult the CLI prints
    vlfactory.iterate("quickstart", iterations=1)       # the loop; returns each iteration's policy
    vlfactory.diff("iter1", "iter2", table="sft")       # rows added, removed and changed by key

The CLI is a thin layer over these functions (`vlfactory run` is `run` with a
progress bar), so a notebook gets the same results as the command line.
`lake` is a folder, a `ducklake:` URI or an open `Lake`; by default
$VLFACTORY_LAKE, else the recipe's `lake:`, else ./lake.
"""

from __future__ import annotations

import contextlib
import os
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable, Iterator

from vlfactory.stores.lake import Lake, LakeError, LakeSpec

if TYPE_CHECKING:
    import datasets
    import polars
    import pyarrow as pa

    from vlfactory.recipe import Recipe
    from vlfactory.stages import StageResult
    from vlfactory.stores.diffs import TableDiff

Say = Callable[[str], None]


def lake_spec(lake: str | os.PathLike | None = None, data_path: str | None = None, recipe: Recipe | None = None
              ) -> LakeSpec:
    """Where the lake is: `lake`, else $VLFACTORY_LAKE, else the recipe's `lake:`, else ./lake."""
    if lake is None and not os.environ.get("VLFACTORY_LAKE") and recipe is not None and recipe.lake.catalog:
        lake, data_path = recipe.lake.catalog, data_path or recipe.lake.data_path
    return LakeSpec.resolve(lake, data_path)


@contextlib.contextmanager
def opened(lake: Lake | str | os.PathLike | None = None, data_path: str | None = None, recipe: Recipe | None = None,
           **kwargs) -> Iterator[Lake]:
    """An open lake: the one given, left open, or one opened here and closed after."""
    if isinstance(lake, Lake):
        yield lake
        return
    with Lake(lake_spec(lake, data_path, recipe), **kwargs) as lk:
        yield lk


def parse_ref(ref: str, table: str | None = None) -> tuple[str, str | None]:
    """("sft", "iter1") from "sft@iter1"; ("sft", None) (latest) from "sft"; ("sft", "iter1") from ("iter1", "sft")."""
    name, at, version = str(ref).partition("@")
    if table is not None:
        if at:
            raise LakeError(f"give TABLE@VERSION ({ref!r}) or table= ({table!r}), not both")
        return table, str(ref)
    return name, version or None


# ---- reading -------------------------------------------------------------------------

def table(ref: str, lake: Lake | str | os.PathLike | None = None, *, table: str | None = None,
          columns: list[str] | None = None, data_path: str | None = None) -> pa.Table:
    """A table at a version as Arrow, rows in a total order, with an `image` column (bytes and a file name, the
    layout of `datasets`' Image feature) where the table names an image_id; `columns`: only those.

        vlfactory.table("sft@iter1")   vlfactory.table("traces")   vlfactory.table("iter1", table="rl")
    """
    return _arrow(ref, lake, table, columns, data_path)


def frame(ref: str, lake: Lake | str | os.PathLike | None = None, *, table: str | None = None,
          columns: list[str] | None = None, data_path: str | None = None) -> polars.DataFrame:
    """`table(...)` as a polars DataFrame (polars is an extra: `pip install 'vlfactory[polars]'`)."""
    try:
        import polars as pl
    except ImportError:
        raise ModuleNotFoundError("vlfactory.frame needs polars, which the core install leaves out: pip install "
                                  "'vlfactory[polars]' (or vlfactory.table for the same rows as Arrow)") from None
    return pl.from_arrow(_arrow(ref, lake, table, columns, data_path))


def _arrow(ref, lake, table, columns, data_path) -> pa.Table:
    from vlfactory.hub.export import select

    name, version = parse_ref(ref, table)
    with opened(lake, data_path, read_only=True) as lk:
        return lk.query(select(lk, name, version, columns=columns)).to_arrow_table()


def load(ref: str, lake: Lake | str | os.PathLike | None = None, *, table: str | None = None,
         split: str | None = None, columns: list[str] | None = None, streaming: bool = False,
         progress: bool = False, data_path: str | None = None
         ) -> datasets.DatasetDict | datasets.Dataset | datasets.IterableDatasetDict | datasets.IterableDataset:
    """A table at a version as `datasets.load_dataset` gives a dataset from the Hub: a `DatasetDict` by split, or
    with `split=` that split's `Dataset`. Splits are publish's: a problem's split (from its source) is the split
    of every row about it, benchmark rows (evals) are test, the rest train. `columns=` keeps only those (`image`
    is the Image column of a table naming an image_id, decoded from the exact stored bytes). `streaming=True`
    gives an `IterableDataset` (`IterableDatasetDict`) that reads the lake, pinned at the version's snapshot, a
    record batch at a time as it is iterated. Nothing is printed unless `progress=True` (a bar of rows read).

        dd = vlfactory.load("sft@iter1", lake="./lake"); dd["train"][0]["image"]   # a PIL image
        ds = vlfactory.load("sft@iter1", split="train", columns=["question", "completion", "image"])
        for row in vlfactory.load("traces", split="train", streaming=True): ...
    """
    from vlfactory.hub.export import load as load_splits

    name, version = parse_ref(ref, table)
    with opened(lake, data_path, read_only=True) as lk:
        return load_splits(lk, name, version, split, columns, streaming, progress)


def diff(a: str | int, b: str | int = "latest", *, table: str | None = None,
         lake: Lake | str | os.PathLike | None = None, data_path: str | None = None, limit: int | None = None
         ) -> TableDiff | dict[str, dict[str, int]]:
    """Between versions A and B: with `table`, its rows added, removed and changed by key (a `TableDiff`, lists
    cut at `limit` rows, counts whole); without, per table the rows added, removed and changed (by key)."""
    from vlfactory.stores.diffs import row_diff

    with opened(lake, data_path, read_only=True) as lk:
        if table is None:
            return lk.diff(a, b)
        return row_diff(lk, table, a, b, limit=limit)


# ---- running -------------------------------------------------------------------------

@dataclass
class RunResult:
    """What `run` did: each stage's StageResult, in order, and the snapshot it ended on."""

    run_id: str
    snapshot: int
    results: list[StageResult] = field(default_factory=list)
    seconds: float = 0.0
    tag: str | None = None

    def __getitem__(self, stage: str) -> StageResult:
        for r in self.results:
            if r.stage == stage:
                return r
        raise KeyError(f"{stage!r} did not run; ran: {', '.join(r.stage for r in self.results)}")

    @property
    def failed(self) -> int:
        return sum(r.failed for r in self.results)


def stage_list(recipe: Recipe, stages: str | list[str] | tuple[str, ...] | None) -> list[str]:
    """The stages to run, in order: those named, or every stage the recipe configures."""
    from vlfactory.stages import OPTIONAL, STAGES

    if stages is None:
        return [s for s in STAGES if s not in OPTIONAL or recipe.stage_config(s) is not None]
    named = [stages] if isinstance(stages, str) else list(stages)
    if unknown := [s for s in named if s not in STAGES]:
        raise ValueError(f"unknown stage {unknown[0]!r}; stages: {', '.join(STAGES)}")
    return named


def run(recipe: Recipe | str | os.PathLike, stages: str | list[str] | None = None, *,
        lake: Lake | str | os.PathLike | None = None, data_path: str | None = None, limit: int | None = None,
        tag: str | None = None, say: Say | None = print, progress: Callable | None = None,
        argv: str | None = None, report_to: str | None = None) -> RunResult:
    """Run a recipe's stages in order (all it configures, or those named) as one recorded run; `vlfactory run`.

    `limit`: the first N problems of the recipe's sources (rows per source for ingest). `tag` names the snapshot
    the run ends on. `say` gets the lines the CLI prints; `progress(stage)` returns a context manager yielding a
    `Progress` callback (the CLI's bar), or None. `report_to` (wandb, trackio, tensorboard, none) overrides the
    recipe's `tracking:` block (vlfactory.tracking).
    """
    from vlfactory import tracking
    from vlfactory.recipe import Recipe, load_recipe
    from vlfactory.stages import Scope, run_stage
    from vlfactory.stores import runs

    say = say or (lambda line: None)
    recipe = tracking.choose(recipe if isinstance(recipe, Recipe) else load_recipe(recipe), report_to)
    names = stage_list(recipe, stages)
    configs = {name: recipe.stage_config(name) for name in names}
    scope = Scope.of(recipe, limit)
    if "ingest" in names:  # a mapping that does not fit the data fails here, before anything is written
        from vlfactory.sources.columns import preflight

        preflight(configs["ingest"])
    with opened(lake, data_path, recipe) as lk:
        say(f"lake: {lk.spec.display}")
        t0 = time.perf_counter()
        with runs.recorded(lk, "run " + ",".join(names), recipe.text, recipe.name, argv) as record:
            out = RunResult(record.run_id, lk.current_snapshot())
            with tracking.for_run(recipe, record.run_id, "run"):
                for name in names:
                    with progress(name) if progress else contextlib.nullcontext() as callback:
                        result = run_stage(lk, name, configs[name], scope, callback)
                    say(result.line())
                    out.results.append(result)
                    record.counts |= {f"{name}.{k}": v for k, v in result.counts().items()}
        if tag:
            say(f"tagged {tag} -> snapshot {lk.tag(tag, force=True)}")
            out.tag = tag
        if out.failed:
            say(f"{out.failed} requests failed after retries: see `vlfactory sql \"SELECT * FROM rejected WHERE "
                f"reason = 'request_failed'\"`; rerun to retry them")
        out.seconds, out.snapshot = time.perf_counter() - t0, lk.current_snapshot()
        say(f"done in {out.seconds:.1f}s; snapshot {out.snapshot} (name it with `vlfactory tag NAME`)")
    return out


def iterate(recipe: Recipe | str | os.PathLike, *, lake: Lake | str | os.PathLike | None = None,
            data_path: str | None = None, iterations: int | None = None, limit: int | None = None,
            say: Say | None = print, progress: Callable | None = None, report_to: str | None = None) -> list[str]:
    """The OpenVLThinker loop of the recipe's `loop:` section, resumable per step (`vlfactory iterate`); returns
    each iteration's policy checkpoint. The loop opens the lake per step, so give a spec rather than an open Lake.
    `say`, `progress` and `report_to` as for `run`."""
    from vlfactory import tracking
    from vlfactory.loop import Loop
    from vlfactory.recipe import Recipe, load_recipe

    say = say or (lambda line: None)
    recipe = tracking.choose(recipe if isinstance(recipe, Recipe) else load_recipe(recipe), report_to)
    spec = lake.spec if isinstance(lake, Lake) else lake_spec(lake, data_path, recipe)
    say(f"lake: {spec.display}")
    policies = Loop(recipe, spec, say=say, limit=limit, progress=progress).run(iterations)
    say(f"done: {len(policies)} iterations; final policy {policies[-1] if policies else '-'}")
    return policies


def evaluate(model: str, benchmarks: str | list[str] | tuple[str, ...], recipe: Recipe | str | os.PathLike = "quickstart",
             *, lake: Lake | str | os.PathLike | None = None, data_path: str | None = None, backend: str | None = None,
             max_tokens: int | None = None, limit: int | None = None, say: Say | None = print,
             argv: str | None = None) -> list[StageResult]:
    """Answer benchmarks from their images, verify, store accuracy in `evals`, as one recorded run ("eval", failed
    with its error when it raises); `vlfactory eval`. `benchmarks`: sources of the recipe (its benchmarks: or
    sources:); `backend` overrides the recipe's rollout backend, `max_tokens` its new tokens per answer; `limit`:
    the first N problems. `say` gets each benchmark's line; returns their StageResults, in order.

        vlfactory.evaluate("runs/iter1/grpo", "dynamath", "recipes/quickstart.yaml", limit=50)
    """
    import dataclasses

    from vlfactory.backends import backend_config_class
    from vlfactory.recipe import Recipe, RecipeError, load_recipe
    from vlfactory.stages import eval as stage
    from vlfactory.stores import runs

    say = say or (lambda line: None)
    recipe = recipe if isinstance(recipe, Recipe) else load_recipe(recipe)
    names = [benchmarks] if isinstance(benchmarks, str) else list(benchmarks)
    configs = [recipe.eval_config(name, model, limit=limit) for name in names]
    for i, cfg in enumerate(configs):
        gen = cfg.generation
        if backend and backend != gen.backend:
            if backend == "openai":
                raise RecipeError("--backend openai needs a base_url: give the recipe a rollout: block with one")
            gen = dataclasses.replace(gen, backend=backend, options=backend_config_class(backend)(model=model))
        if max_tokens:
            gen = dataclasses.replace(gen, sampling=dataclasses.replace(gen.sampling, max_tokens=max_tokens))
        configs[i] = dataclasses.replace(cfg, generation=gen)
    results = []
    with opened(lake, data_path, recipe) as lk, runs.recorded(lk, "eval", recipe.text, recipe.name, argv) as record:
        for cfg in configs:
            result = stage.run(lk, cfg)
            say(result.line())
            results.append(result)
            record.counts |= {f"eval.{cfg.benchmark.name}.{k}": v for k, v in result.counts().items()}
    return results


# ---- versions ------------------------------------------------------------------------

VERSION_FIELDS = ("snapshot", "tags", "time", "command", "run_id", "message", "rows")


def versions(lake: Lake | str | os.PathLike | None = None, *, last: int | None = 20, data_path: str | None = None
             ) -> list[dict]:
    """The lake's last `last` snapshots (None: all), oldest first, as `vlfactory versions --format json` prints
    them: snapshot id, its tags, time (UTC), the command and run_id of the run that wrote it, the commit message,
    and the rows in every table holding any (from the catalog's file records, no data file read)."""
    # catalog, runs, tags: any lake's; a few small catalog reads, faster on one thread
    with opened(lake, data_path, read_only=True, check_schema=False, threads=1) as lk:
        return [dict(zip(VERSION_FIELDS, row)) for row in lk.versions(last)]
