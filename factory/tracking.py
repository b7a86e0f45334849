"""Experiment tracking, off by default: the factory's numbers to any of accelerate's trackers (TensorBoard, W&B,
trackio, MLflow, Comet, Aim, ClearML, DVCLive, SwanLab), the same classes `Accelerator(log_with=...)` uses.

A recipe's `tracking:` block turns it on, or `--report-to` on `vlfactory run` and `iterate` (`--report-to none`
turns a recipe's block off):

    tracking:
      backend: tensorboard   # tensorboard | wandb | trackio | mlflow | comet_ml | aim | clearml | dvclive | swanlab
      project: shapes        # the project (W&B, trackio, MLflow experiment, Comet, ClearML, SwanLab; default: recipe)
      dir: runs/tracking     # local files: TensorBoard's log folder, wandb's dir, TRACKIO_DIR, Aim's repo, ...

    vlfactory iterate quickstart --report-to tensorboard && tensorboard --logdir runs/tracking

The metrics are ours, whatever the library: every stage's result under its name (vlfactory.stages.run_stage):
`distil/requests_per_s`, `distil/tokens_per_s`, `distil/failed`, `distil/seconds`, `verify/rejected/wrong_answer`,
the verify funnel by table and source (`verify/traces/shapes/accepted`), the sets' counts; the loop's evaluations
as `eval/<benchmark>/<stage>/accuracy` over `iteration`. A training in a tracked run reports to the same library
through TRL's own `report_to` (configure_trainer; transformers has no Aim callback, so an Aim run gets its
trainings from `export`). Numbers and names only: the run's config holds the recipe's name and hash and the lake's
run id, with credentials masked (vlfactory.redact).

After the fact, `export` (`vlfactory track export VERSION --to BACKEND`) replays a version's stored trainings
(`training_logs`, under TRL's names: `train/loss`, ...) and the loop's evaluations (`evals`) into a tracker, each
in the run live tracking would have made: turning tracking on after a run still shows its curves.

Each library reads its own environment (`WANDB_MODE=offline`, `WANDB_API_KEY`, `MLFLOW_TRACKING_URI`, ...);
accelerate (and so torch) is imported only when tracking is on.

    from vlfactory import tracking
    from vlfactory.recipe import TrackingConfig
    with tracking.start(TrackingConfig("tensorboard", dir="tb"), "my-run"):
        run_stage(lake, "verify", recipe.stage_config("verify"), scope)   # logged
"""

from __future__ import annotations

import contextlib
import io
import os
from pathlib import Path

from vlfactory.redact import redact

# accelerate's trackers (accelerate.tracking.LOGGER_TYPE_TO_CLASS), by the names `report_to` and `log_with` take.
BACKENDS = ("tensorboard", "wandb", "trackio", "mlflow", "comet_ml", "aim", "clearml", "dvclive", "swanlab")
MODULES = {"comet_ml": "comet_ml"}  # the module each library imports as, where it is not the backend's name
PACKAGES = {"comet_ml": "comet-ml"}  # what to pip install, where it is not the backend's name
TRAINER_BACKENDS = tuple(b for b in BACKENDS if b != "aim")  # those transformers has a callback for

_active: Tracker | None = None  # the tracked run of this process: one at a time, as wandb.run


class Tracker:
    """One run in the chosen library through accelerate's tracker class; `log` takes a flat mapping of numbers."""

    def __init__(self, backend: str, project: str, name: str, folder: str | None, config: dict):
        from accelerate.tracking import LOGGER_TYPE_TO_CLASS

        from vlfactory.recipe import slug

        self.backend, self.project, self.name = backend, project, name
        self.folder = Path(folder or "runs").resolve()
        self.config = {k: redact(v) if isinstance(v, str) else v for k, v in config.items()}
        self.context: dict[str, float] = {}  # merged into every log: the loop's iteration
        self.steps = 0
        self.env: dict[str, str | None] = {}  # variables set for the libraries, restored at close
        if backend == "trackio" and folder:  # trackio reads it once, when first imported
            self._setenv("TRACKIO_DIR", str(self.folder))
        if folder or backend in ("tensorboard", "aim"):
            self.folder.mkdir(parents=True, exist_ok=True)
        # What accelerate's init_trackers(project_name, init_kwargs={backend: ...}) passes, naming the run `name`:
        # TensorBoard and Aim take the run's name (a folder, a run), the others the project and the name beside it.
        first, kwargs = {
            "tensorboard": (slug(name, "run"), {"logging_dir": str(self.folder)}),
            "wandb": (project, {"name": name, "config": self.config, **({"dir": str(self.folder)} if folder else {})}),
            "trackio": (project, {"name": name, "config": self.config, "resume": "allow"}),
            "mlflow": (project, {"run_name": name, **({"logging_dir": str(self.folder)} if folder else {})}),
            "aim": (name, {"logging_dir": str(self.folder), "experiment": project}),
            "clearml": (project, {"task_name": name}),
            "dvclive": (name, {"dir": str(self.folder / slug(name, "run"))}),
            "swanlab": (project, {"experiment_name": name, **({"logdir": str(self.folder)} if folder else {})}),
            "comet_ml": (project, {}),
        }[backend]
        self.tracker = LOGGER_TYPE_TO_CLASS[backend](first, **kwargs)
        with contextlib.redirect_stdout(io.StringIO()):  # banners (trackio's) would break the factory's own lines
            self.tracker.start()
            if backend not in ("wandb", "trackio"):  # those took the config at init
                self.tracker.store_init_configuration(self.config)
        if backend == "wandb":
            self.tracker.tracker.define_metric("iteration")
            self.tracker.tracker.define_metric("eval/*", step_metric="iteration")

    def log(self, metrics: dict[str, float], step: int | None = None) -> None:
        """Log numbers at `step` (default: this run's count of logs; W&B counts its own)."""
        metrics = self.context | metrics
        self.steps += 1
        if self.backend == "trackio":
            import trackio

            # TRL's trackio callback starts a run of its own for a training, which finishes ours: resume it.
            if trackio.context_vars.current_run.get() is not self.tracker.run:
                with contextlib.redirect_stdout(io.StringIO()):
                    self.tracker.start()
        self.tracker.log(metrics, step=None if self.backend == "wandb" else self.steps if step is None else step)

    def close(self, ok: bool) -> None:
        try:
            if self.backend == "wandb":
                self.tracker.tracker.finish(exit_code=0 if ok else 1)
            else:
                with contextlib.redirect_stdout(io.StringIO()):
                    self.tracker.finish()
        finally:
            for key, value in self.env.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value

    def _setenv(self, key: str, value: str) -> None:
        self.env.setdefault(key, os.environ.get(key))
        os.environ[key] = value


def choose(recipe, report_to: str | None):
    """The recipe with `--report-to` applied: a backend name replaces the block's (its project and dir stay),
    `none` removes it, None leaves the block as it is; a chosen library that is not installed is one error line,
    before anything runs."""
    import dataclasses

    from vlfactory.recipe import RecipeError, TrackingConfig

    if report_to == "none":
        return dataclasses.replace(recipe, tracking=None)
    if report_to is not None:
        if report_to not in BACKENDS:
            raise RecipeError(f"--report-to: {report_to!r} is not one of {', '.join(BACKENDS)} or none")
        recipe = dataclasses.replace(recipe, tracking=dataclasses.replace(
            recipe.tracking or TrackingConfig(report_to), backend=report_to))
    if recipe.tracking is not None and not installed(recipe.tracking.backend):
        raise RecipeError(f"tracking: {recipe.tracking.backend} {missing(recipe.tracking.backend)}, or run with "
                          "--report-to none")
    return recipe


def installed(backend: str) -> bool:
    return not missing(backend)


def missing(backend: str) -> str:
    """What a tracker lacks, as the words after its name ("is not installed; pip install ..."), or ''."""
    from importlib.util import find_spec

    package = PACKAGES.get(backend, backend)
    if find_spec("accelerate") is None:
        return f"needs accelerate, whose trackers vlfactory uses: pip install accelerate {package}"
    if backend == "tensorboard":  # torch's writer needs the tensorboard package; tensorboardX stands alone
        found = bool(find_spec("torch") and find_spec("tensorboard")) or bool(find_spec("tensorboardX"))
    else:
        found = find_spec(MODULES.get(backend, backend)) is not None
    return "" if found else f"is not installed; pip install {package} (or vlfactory[track])"


@contextlib.contextmanager
def start(cfg, name: str, config: dict | None = None, project: str = "vlfactory"):
    """Track what runs inside (stages, evaluations, trainings) as one run named `name`; nothing when `cfg` is
    None. Inside a tracked run (a loop's stages), it is that run."""
    global _active
    if cfg is None or _active is not None:
        yield _active
        return
    tracker = Tracker(cfg.backend, cfg.project or project, name, cfg.dir, config or {})
    _active, ok = tracker, False
    try:
        yield tracker
        ok = True
    finally:
        _active = None
        tracker.close(ok)


def for_run(recipe, run_id: str, command: str):
    """start() for a run the lake records: named `<recipe>-<run id>` (the `runs` table's), in the project the
    recipe's block names, else one named after the recipe."""
    return start(recipe.tracking, f"{recipe.name}-{run_id}", {"recipe": recipe.name, "recipe_hash": recipe.hash,
                                                             "run_id": run_id, "command": command},
                 project=recipe.name)


def note(**values: float) -> None:
    """Numbers logged with everything from now on in the tracked run, if any: the loop's `iteration`."""
    if _active is not None:
        _active.context |= values


def stage_metrics(result) -> dict[str, float]:
    """A StageResult as numbers under the stage's name: its counts (rejected and skipped by reason, the stage's
    own funnel), its wall seconds, and requests and completion tokens per second where it generated."""
    name = result.stage
    out = {f"{name}/{key.replace('.', '/')}": float(value) for key, value in result.counts().items()}
    out[f"{name}/seconds"] = float(result.seconds)
    if result.requests and result.seconds > 0:
        out[f"{name}/requests_per_s"] = result.requests / result.seconds
        out[f"{name}/tokens_per_s"] = result.completion_tokens / result.seconds
    return out


def log_stage(result) -> None:
    """The stages' hook (vlfactory.stages.run_stage): log a stage's result to the tracked run, if any."""
    if _active is not None and (result.wanted or result.written or result.extra):
        _active.log(stage_metrics(result))


def log_eval(benchmark: str, stage: str, iteration: int, accuracy: float, problems: int) -> None:
    """An evaluation of the loop, over `iteration` (TensorBoard's step)."""
    if _active is not None:
        _active.log({f"eval/{benchmark}/{stage}/accuracy": accuracy, f"eval/{benchmark}/{stage}/problems": problems,
                     "iteration": iteration}, step=iteration)


def configure_trainer(args, name: str) -> None:
    """Point a TRL config at the tracked run, if any: `report_to` its library (beside any the trainer settings
    name), its project, the run name `<run>-<name>`, TensorBoard's log folder beside the run's. W&B's callback
    logs into the open run; trackio's starts its own run of that name in the project. The trainers call this
    after the settings digest: where the numbers go is not what is trained, so tracking never retrains."""
    from vlfactory.recipe import slug

    t = _active
    if t is None or t.backend not in TRAINER_BACKENDS:  # Aim: no transformers callback; `export` replays them
        return
    named = [args.report_to] if isinstance(args.report_to, str) else list(args.report_to or [])
    args.report_to = [t.backend] + [r for r in named if r not in ("none", t.backend)]
    args.run_name, args.project = f"{t.name}-{name}", t.project
    if t.backend == "tensorboard":  # transformers' callback reads its folder from the environment
        t._setenv("TENSORBOARD_LOGGING_DIR", str(t.folder / slug(args.run_name, "run")))


def export(lake, version: str | int, backend: str, project: str | None = None, folder: str | None = None,
           say=None) -> list[str]:
    """Replay what a version of the lake holds into a tracker after the fact (`vlfactory track export`): each
    training's logged steps (`training_logs`, as `train/<name>` over TRL's step, the names transformers' own
    callbacks use) in the run live tracking gives it (`<recipe>-<run id>-<kind>-iter<k>`), and the loop's
    evaluations (`evals`) as `eval/<benchmark>/<stage>/accuracy` over `iteration` in the run's own
    (`<recipe>-<run id>`). Turning tracking on after a run still shows its curves. Returns the runs written.

        vlfactory track export iter2 --to tensorboard --dir runs/tracking
    """
    from vlfactory.recipe import RecipeError, slug

    if backend not in BACKENDS:
        raise RecipeError(f"--to: {backend!r} is not one of {', '.join(BACKENDS)}")
    if not installed(backend):
        raise RecipeError(f"--to: {backend} {missing(backend)}")
    say = say or (lambda line: None)
    s = lake.resolve(version)
    tables = set(lake.tables())
    recipes = dict(lake.query(f"SELECT run_id, recipe_name FROM runs@{s}").fetchall()) if "runs" in tables else {}

    def base(run_id: str | None) -> str:
        return f"{recipes.get(run_id) or 'vlfactory'}-{run_id}" if run_id else f"vlfactory-{slug(str(version), 'v')}"

    written: list[str] = []
    if "training_logs" in tables:
        trainings = lake.query(f"""SELECT t.training_id, t.kind, t.iteration, t.run_id, t.status
                                   FROM trainings@{s} t WHERE t.training_id IN (SELECT training_id FROM training_logs@{s})
                                   ORDER BY t.started_at NULLS LAST, t.training_id""").fetchall()
        logged: dict[str, dict[int, dict[str, float]]] = {}
        for training_id, step, metric, value in lake.query(
                f"""SELECT training_id, step, name, value FROM training_logs@{s}
                    WHERE step IS NOT NULL AND value IS NOT NULL ORDER BY training_id, step, name""").fetchall():
            logged.setdefault(training_id, {}).setdefault(int(step), {})[f"train/{metric}"] = value
        for training_id, kind, iteration, run_id, status in trainings:
            name = f"{base(run_id)}-{kind}" + (f"-iter{iteration}" if iteration is not None else "")
            if name in written:  # two trainings of one kind in one iteration: each its own run
                name += f"-{training_id[:8]}"
            steps = logged.get(training_id, {})
            tracker = Tracker(backend, project or recipes.get(run_id) or "vlfactory", name, folder,
                              {"training_id": training_id, "run_id": run_id, "kind": kind, "exported_from": str(version)})
            try:
                for step, metrics in steps.items():
                    tracker.log(metrics | {"train/global_step": step}, step=step)
            finally:
                tracker.close(status == "ok")
            written.append(name)
            say(f"{name}: {len(steps)} steps of training {training_id}")
    if "evals" in tables:
        evals = lake.query(f"""SELECT run_id, iteration, benchmark, stage, accuracy, problems FROM evals@{s}
                               WHERE iteration IS NOT NULL AND stage IS NOT NULL ORDER BY run_id, iteration""").fetchall()
        by_run: dict[str | None, list] = {}
        for run_id, *rest in evals:
            by_run.setdefault(run_id, []).append(rest)
        for run_id, rows in by_run.items():
            name = base(run_id)
            tracker = Tracker(backend, project or recipes.get(run_id) or "vlfactory", name, folder,
                              {"run_id": run_id, "exported_from": str(version)})
            try:
                for iteration, benchmark, stage, accuracy, problems in rows:
                    numbers = {f"eval/{benchmark}/{stage}/accuracy": accuracy,
                               f"eval/{benchmark}/{stage}/problems": problems, "iteration": iteration}
                    tracker.log({k: v for k, v in numbers.items() if v is not None}, step=iteration)
            finally:
                tracker.close(True)
            written.append(name)
            say(f"{name}: {len(rows)} evaluations")
    return written
