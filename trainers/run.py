"""One training run: a set version in, a checkpoint out, the lineage in the catalog's `trainings` table.

The run resolves the set version to a snapshot id, reads exactly the rows that
snapshot held, records a `running` row, trains with the stock TRL trainer that
`make_trainer` builds, saves the model and processor into the output folder,
and sets the row to `ok` (with the final metrics) or `failed`. The same record
goes to `vlfactory_training.json` in the output folder. "Which data made this
checkpoint" is one query, and retraining it one command:

    vlfactory sql "SELECT dataset, snapshot_id, rows, base_model FROM trainings WHERE output_dir LIKE '%sft-iter1'"
    vlfactory train sft --dataset sft@SNAPSHOT_ID --model BASE_MODEL --output runs/again

The lake is open only while reading the set and writing the row, never during
training: a local lake admits one process at a time. Under `accelerate launch`
every process reads the set, in turn, and only the main process writes.

The entry point (`main`) reads its own arguments with TRL's TrlParser, and the
trainers YAML (`--config FILE`) plus any TRL config field given as a flag
(`--learning_rate 1e-5`) through vlfactory.trainers.config.load_config, also a
TrlParser:

    python -m vlfactory.trainers.sft --dataset sft@iter1 --model tiny-qwen2.5-vl --output runs/sft1 \\
        --config sft.yaml --num_train_epochs 2
"""

from __future__ import annotations

import json
import os
import re
import sys
import time
import uuid
import hashlib
from dataclasses import asdict, dataclass, field, fields
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Callable

import pyarrow as pa

from vlfactory import tracking
from vlfactory.recipe import RecipeError
from vlfactory.stores import tables
from vlfactory.stores.lake import Lake, LakeError, LakeSpec
from vlfactory.stores.runs import package_versions
from vlfactory.stores.schema import TRAINING_LOGS
from vlfactory.trainers.config import load_config, settings_digest
from vlfactory.trainers.data import prepare, read_set, rl_dataset, sft_dataset

TABLES = {"sft": "sft", "grpo": "rl"}          # trainer kind -> the set table it reads
BUILDERS = {"sft": sft_dataset, "grpo": rl_dataset}
RECORD_FILE = "vlfactory_training.json"


@dataclass
class Training:
    """A `trainings` row."""

    training_id: str
    kind: str                   # sft | grpo
    dataset: str                # the version as given: sft@iter1
    dataset_table: str
    snapshot_id: int            # what it resolved to: retrain with TABLE@SNAPSHOT_ID
    rows: int
    base_model: str
    output_dir: str
    config: str                 # the full TRL config, JSON
    versions: dict[str, str]
    started_at: datetime
    status: str = "running"     # running | ok | failed
    metrics: dict[str, float] = field(default_factory=dict)
    ended_at: datetime | None = None
    run_id: str | None = None
    iteration: int | None = None
    error: str | None = None
    model_id: str | None = None       # the identity (content digest) of the checkpoint it produced
    base_model_id: str | None = None  # the identity of the model it started from
    config_hash: str | None = None    # digest of the resolved trainer settings (settings_digest)
    data_digest: str | None = None    # what the set held at snapshot_id (Lake.digest)
    reused: bool = field(default=False, metadata={"column": False})  # done before: nothing was trained

    def line(self) -> str:
        if self.reused:
            return (f"{self.kind} done before: {self.dataset} (snapshot {self.snapshot_id}) on {self.base_model} "
                    f"-> {self.output_dir} ({self.model_id}); skipped")
        shown = {k: round(v, 4) for k, v in self.metrics.items() if k in ("train_loss", "loss", "reward", "step")}
        return (f"{self.kind} {self.status}: {self.dataset} (snapshot {self.snapshot_id}, {self.rows} rows) on "
                f"{self.base_model} -> {self.output_dir} ({self.model_id}); {shown}; training_id {self.training_id}"
                + (f"; {self.error}" if self.error else ""))


COLUMNS = [f.name for f in fields(Training) if f.metadata.get("column", True)]


def address(data_digest: str, base_model_id: str, config_hash: str) -> str:
    """What a training is: its data (the set's rows, by content), the identity of its base model and its
    settings. The loop names checkpoint folders by it, so a different training never lands in a finished
    one's folder, and the same one (even on the same rows rewritten in a later snapshot) is found done."""
    return hashlib.sha256(json.dumps([data_digest, base_model_id, config_hash]).encode()).hexdigest()[:12]


def finished(output_dir: Path, kind: str, table: str, data_digest: str, base_model_id: str, config_hash: str,
             overwrite: bool) -> Training | None:
    """The finished training in `output_dir` when it is this one (None: train). A folder holding a finished
    *different* training, or files that are not a training of ours, is refused unless `overwrite`."""
    path = output_dir / RECORD_FILE
    if not path.exists():
        if output_dir.is_dir() and any(output_dir.iterdir()) and not overwrite:
            raise LakeError(f"{output_dir} is not empty and holds no vlfactory training; choose another "
                            f"--output, or pass --overwrite to train into it")
        return None
    done = json.loads(path.read_text())
    if done.get("status") != "ok":
        return None  # an interrupted or failed run: train again
    same = (done.get("kind"), done.get("dataset_table"), done.get("data_digest"), done.get("base_model_id"),
            done.get("config_hash")) == (kind, table, data_digest, base_model_id, config_hash)
    if same:
        return from_record(done, reused=True)
    if overwrite:
        return None
    raise LakeError(f"{output_dir} holds a finished {done.get('kind')} training of {done.get('dataset')} "
                    f"(snapshot {done.get('snapshot_id')}) on {done.get('base_model')}, not this one; choose "
                    f"another --output, or pass --overwrite to replace it")


def train(kind: str, make_trainer: Callable, dataset: str, model: str, output_dir: str | Path,
          config=None, lake: str | None = None, data_path: str | None = None, run_id: str | None = None,
          iteration: int | None = None, overwrite: bool = False, flags: list[str] | tuple = (),
          report: dict | None = None) -> Training | None:
    """Train `model` on the set version `dataset` with the trainer
    `make_trainer(model_path, extras, args, train_dataset)` builds (extras: the trainers YAML's keys
    beyond TRL's, vlfactory.trainers.config.FactoryArguments; `flags`: TRL config fields as command-line
    flags, over the YAML's). The dataset's images are already resized as the settings say
    (vlfactory.trainers.data.prepare): the trainer keeps the base model's processor, so the checkpoint does.

    A finished training of the same (data snapshot, base model identity, settings) in `output_dir`
    is not run again (its record comes back with `reused`); a different finished one there is
    refused unless `overwrite`. `report` ({report_to, run_name, project}) is where a tracked run in
    another process (the loop's) wants the numbers; like tracking, it is not part of the settings.
    Returns the record (None on the other processes of a distributed run).
    """
    from accelerate import PartialState

    from vlfactory.models import identity, register_processors, resolve_model

    output_dir = Path(output_dir).resolve()
    args, extras = load_config(kind, config, output_dir, flags=flags)
    config_hash = settings_digest(args, extras, int(os.environ.get("WORLD_SIZE", "1")))
    # After the digest: where the numbers go is not what is trained, so a tracked rerun reuses the checkpoint.
    tracking.configure_trainer(args, kind + (f"-iter{iteration}" if iteration is not None else ""))
    for key, value in (report or {}).items():
        setattr(args, key, value)
    base_model_id = identity(model)
    state = PartialState()
    spec = LakeSpec.resolve(lake, data_path)
    versions = package_versions() | {"accelerate": metadata.version("accelerate")}
    # the settings as resolved, and how many processes trained (the global batch without global_batch_size)
    full_config = json.dumps(json.loads(args.to_json_string()) | extras | {"processes": state.num_processes})
    record, version, reused = None, dataset, None  # only the main process records
    for turn in range(state.num_processes):
        if turn == state.process_index and reused is None:
            with Lake(spec, create=False) as lk:
                ref, rows = read_set(lk, version, TABLES[kind])
                if state.is_main_process:
                    reused = finished(output_dir, kind, TABLES[kind], ref.digest, base_model_id, config_hash,
                                      overwrite)
                if state.is_main_process and reused is None:
                    _insert(lk, record := Training(
                        uuid.uuid4().hex[:16], kind, dataset, ref.table, ref.snapshot_id, rows.num_rows, model,
                        str(output_dir), full_config, versions, datetime.now(timezone.utc), run_id=run_id,
                        iteration=iteration if iteration is not None else _iteration(dataset),
                        base_model_id=base_model_id, config_hash=config_hash, data_digest=ref.digest))
        if turn == 0 and state.num_processes > 1:  # the others read the snapshot the main process resolved
            from accelerate.utils import broadcast_object_list

            snap, reused = broadcast_object_list([ref.snapshot_id if record else None, reused]
                                                 if state.is_main_process else [None, None])
            version = str(snap)
        state.wait_for_everyone()
    if reused is not None:
        return reused if state.is_main_process else None
    if record:
        _write_record(record)
    try:
        if kind == "grpo":
            _check_one_step(rows.num_rows, args, dataset)
        register_processors()  # before AutoProcessor.from_pretrained (no-torchvision Qwen2.5-VL folders)
        trainer = make_trainer(resolve_model(model), extras, args, BUILDERS[kind](prepare(rows, extras)))
        result = trainer.train()
        trainer.save_model(str(output_dir))
    except BaseException as e:
        if record:
            record.status, record.error = "failed", f"{type(e).__name__}: {(str(e).strip() or '-').splitlines()[0]}"
            _finish(spec, record)
        raise
    if record:
        record.status, record.metrics = "ok", _metrics(trainer.state.log_history, result.metrics)
        record.model_id = identity(str(output_dir))
        _finish(spec, record, log_rows(record.training_id, trainer.state.log_history, record.run_id))
    return record


def model_for(model_path: str, args, extras: dict):
    """The model as the trainer gets it: its path (TRL loads it), or, when the settings freeze part of it,
    loaded as TRL would (its model_init_kwargs) with those parameters out of training. The vision tower is
    `visual` without its `merger` (Qwen2-VL, Qwen2.5-VL) or `vision_tower` (LLaVA); the projector is
    `visual.merger` or `multi_modal_projector`, as LLaMA-Factory names them."""
    tower, projector = extras.get("freeze_vision_tower"), extras.get("freeze_multi_modal_projector")
    if not (tower or projector):
        return model_path
    from trl.trainer.utils import create_model_from_path

    model = create_model_from_path(model_path, **(args.model_init_kwargs or {}))
    inner = getattr(model, "model", model)
    visual = getattr(inner, "visual", None) or getattr(inner, "vision_tower", None)
    if visual is None:
        raise RecipeError(f"freeze_vision_tower: {model_path} has no vision tower (visual or vision_tower)")
    merger = getattr(visual, "merger", None) or getattr(inner, "multi_modal_projector", None)
    if tower:
        for name, parameter in visual.named_parameters():
            if not name.startswith("merger."):
                parameter.requires_grad_(False)
    if projector:
        if merger is None:
            raise RecipeError(f"freeze_multi_modal_projector: {model_path} has no projector (visual.merger or "
                              "multi_modal_projector)")
        merger.requires_grad_(False)
    return model


def _iteration(dataset: str) -> int | None:
    m = re.match(r"iter(\d+)\b", dataset.rpartition("@")[2])  # iter2, iter2-sft
    return int(m.group(1)) if m else None


def _metrics(log_history: list[dict], final: dict) -> dict[str, float]:
    """The last logged value of every number (loss, reward, rewards/..., grad_norm, ...) and the run's totals;
    for GRPO also how many logged steps had rewards that varied within a group (`reward_std` > 0: a gradient)
    out of `logged_steps`, since the last value alone cannot say whether RL had a signal throughout."""
    out = {}
    for entry in [*log_history, final]:
        out.update({k: float(v) for k, v in entry.items() if isinstance(v, (int, float)) and not isinstance(v, bool)})
    stds = [entry["reward_std"] for entry in log_history if isinstance(entry.get("reward_std"), (int, float))]
    if stds:
        out |= {"logged_steps": float(len(stds)), "steps_reward_std_nonzero": float(sum(s > 0 for s in stds))}
    return out


def _check_one_step(problems: int, args, dataset: str) -> None:
    """A GRPO step draws generation_batch_size / num_generations distinct problems and TRL drops an incomplete
    draw, so a smaller set trains nothing and TRL stops with "args.max_steps must be set": say what and why."""
    need = args.generation_batch_size // args.num_generations
    if problems < need:
        raise ValueError(f"{dataset}: {problems} problems, and one GRPO step draws {need} "
                         f"(generation_batch_size {args.generation_batch_size} / num_generations "
                         f"{args.num_generations}): widen the set or lower per_device_train_batch_size")


def log_rows(training_id: str, log_history: list[dict], run_id: str | None = None) -> list[dict]:
    """TRL's log history as `training_logs` rows: one per logged step and number (loss, reward, kl, ...)."""
    out = []
    for entry in log_history:
        step, epoch = entry.get("step"), entry.get("epoch")
        for name, value in entry.items():
            if name not in ("step", "epoch") and isinstance(value, (int, float)) and not isinstance(value, bool):
                out.append({"training_id": training_id, "step": int(step) if step is not None else None,
                            "epoch": float(epoch) if epoch is not None else None, "name": name,
                            "value": float(value), "run_id": run_id})
    return out


def _insert(lake: Lake, record: Training) -> None:
    row = asdict(record)
    row["metrics"] = None
    with lake.transaction(f"train {record.kind} {record.training_id}: start"):
        tables.insert_row(lake, "trainings", {c: row[c] for c in COLUMNS})


def _finish(spec: LakeSpec, record: Training, logs: list[dict] | None = None) -> None:
    record.ended_at = datetime.now(timezone.utc)
    _write_record(record)
    # Training takes hours and a local lake admits one process: wait out a `vlfactory sql` rather than lose the record.
    for attempt in range(60):
        try:
            message = f"train {record.kind} {record.training_id}: {record.status}"
            with Lake(spec, create=False) as lk, lk.transaction(message):
                tables.update(lk, "trainings", "training_id", record.training_id, {
                    "status": record.status, "metrics": record.metrics or None, "ended_at": record.ended_at,
                    "error": record.error, "model_id": record.model_id})
                if logs:  # the loss and reward curves, committed with the status
                    lk.insert("training_logs", pa.Table.from_pylist(logs, schema=TRAINING_LOGS))
                if record.model_id:  # name the checkpoint's identity, and say which training made it
                    name_model(lk, record.model_id, record.output_dir, record.training_id, record.run_id)
            return
        except LakeError:
            if attempt == 59:
                raise
            time.sleep(2)


def name_model(lake: Lake, model_id: str, path: str, training_id: str | None, run_id: str | None) -> None:
    """A `models` row: the checkpoint folder `path` has identity `model_id` and was made by `training_id` (a
    training's final model, or one of its step checkpoints); once per (identity, path), in the open transaction."""
    key = hashlib.sha256(json.dumps(["model", model_id, path]).encode()).hexdigest()[:16]
    if not lake.existing("models", "model_key", [key]):
        tables.insert_row(lake, "models", {"model_key": key, "model_id": model_id, "name": path, "path": path,
                                           "kind": "folder", "training_id": training_id, "run_id": run_id})


def read_record(output_dir: str | Path) -> dict | None:
    """The training record in a checkpoint folder (`vlfactory_training.json`), if any."""
    try:
        return json.loads((Path(output_dir) / RECORD_FILE).read_text())
    except (OSError, ValueError):
        return None


def from_record(done: dict, **changes) -> Training:
    known = {f.name for f in fields(Training)}
    return Training(**{k: v for k, v in done.items() if k in known} | {"config": json.dumps(done.get("config"))}
                    | changes)


def record_failure(spec: LakeSpec, record: Training, error: str) -> Training:
    """Set a training that ended without recording its end (a child process that died) to `failed` with
    `error`; a record never inserted (it died before) is inserted first."""
    with Lake(spec, create=False) as lk:
        if not lk.query("SELECT 1 FROM trainings WHERE training_id = ?", [record.training_id]).fetchone():
            _insert(lk, record)
    record.status, record.error = "failed", error
    _finish(spec, record)
    return record


def _write_record(record: Training) -> None:
    path = Path(record.output_dir) / RECORD_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    row = {k: v for k, v in asdict(record).items() if k in COLUMNS} | {"config": json.loads(record.config)}
    path.write_text(json.dumps(row, indent=2, default=str) + "\n")


@dataclass
class TrainArguments:
    """The entry point's own arguments (TrlParser); `--config FILE` and TRL config fields as flags go to
    vlfactory.trainers.config.load_config."""

    dataset: str = field(metadata={"help": "a set version: TABLE@iter1, TABLE@42 (a snapshot), or iter1"})
    model: str = field(metadata={"help": "base model: a folder, a hub id, or tiny-qwen2.5-vl"})
    output: str = field(metadata={"help": "output folder for the checkpoint"})
    lake: str | None = field(default=None, metadata={"help": "lake folder or ducklake: URI [env VLFACTORY_LAKE; ./lake]"})
    data_path: str | None = field(default=None, metadata={"help": "data path of a ducklake: URI lake "
                                                                  "[env VLFACTORY_DATA_PATH]"})
    overwrite: bool = field(default=False, metadata={"help": "train into --output even when it holds a different "
                                                             "finished training"})
    run_id: str | None = field(default=None, metadata={"help": "the run this training belongs to (set by iterate)"})
    iteration: int | None = field(default=None, metadata={"help": "the loop's iteration (set by iterate)"})
    report: str | None = field(default=None, metadata={
        "help": "JSON {report_to, run_name, project}: where a tracked run's numbers go (set by iterate); not a "
                "setting of the training"})


def main(kind: str, train_fn: Callable, argv: list[str] | None = None) -> None:
    """The module entry point: `python -m vlfactory.trainers.KIND ...`, also under `accelerate launch -m`."""
    from trl import TrlParser

    argv = list(sys.argv[1:] if argv is None else argv)
    config = None
    if "--config" in argv[:-1]:  # TrlParser's own convention: --config FILE names the settings YAML
        at = argv.index("--config")
        config = argv[at + 1]
        del argv[at:at + 2]
    parser = TrlParser([TrainArguments], prog=f"python -m vlfactory.trainers.{kind}", allow_abbrev=False,
                       description=f"{TABLES[kind].upper()} set version -> {kind} checkpoint, recorded in the "
                                   "catalog. Also: --config FILE (the trainers YAML: TRL config fields and "
                                   "vlfactory's extra keys; default: a few tiny CPU steps) and any TRL config "
                                   "field as a flag over the file's (--learning_rate 1e-5).")
    a, flags = parser.parse_args_into_dataclasses(argv, return_remaining_strings=True)
    try:
        record = train_fn(a.dataset, a.model, a.output, config=config, lake=a.lake, data_path=a.data_path,
                          overwrite=a.overwrite, run_id=a.run_id, iteration=a.iteration, flags=flags,
                          report=json.loads(a.report) if a.report else None)
    except (LakeError, RecipeError) as e:
        parser.exit(2, f"error: {e}\n")
    if record:
        print(record.line(), flush=True)
