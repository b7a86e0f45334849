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
"""

from __future__ import annotations

import argparse
import json
import re
import time
import uuid
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Callable

from vlfactory.recipe import RecipeError
from vlfactory.stores.lake import DB, Lake, LakeError, LakeSpec, package_versions
from vlfactory.trainers.config import load_config
from vlfactory.trainers.data import read_set, rl_dataset, sft_dataset

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

    def line(self) -> str:
        shown = {k: round(v, 4) for k, v in self.metrics.items() if k in ("train_loss", "loss", "reward", "step")}
        return (f"{self.kind} {self.status}: {self.dataset} (snapshot {self.snapshot_id}, {self.rows} rows) on "
                f"{self.base_model} -> {self.output_dir}; {shown}; training_id {self.training_id}"
                + (f"; {self.error}" if self.error else ""))


COLUMNS = list(Training.__dataclass_fields__)


def train(kind: str, make_trainer: Callable, dataset: str, model: str, output_dir: str | Path,
          config=None, lake: str | None = None, data_path: str | None = None, run_id: str | None = None,
          iteration: int | None = None) -> Training | None:
    """Train `model` on the set version `dataset` with the trainer
    `make_trainer(model_path, processor_kwargs, args, train_dataset)` builds.

    Returns the record (None on the other processes of a distributed run).
    """
    from accelerate import PartialState

    from vlfactory.models import register_processors, resolve_model

    output_dir = Path(output_dir).resolve()
    args, processor_kwargs = load_config(kind, config, output_dir)
    state = PartialState()
    spec = LakeSpec.resolve(lake, data_path)
    versions = package_versions() | {"accelerate": metadata.version("accelerate")}
    full_config = json.dumps(json.loads(args.to_json_string()) | processor_kwargs)
    record, version = None, dataset  # only the main process records
    for turn in range(state.num_processes):
        if turn == state.process_index:
            with Lake(spec, create=False) as lk:
                ref, rows = read_set(lk, version, TABLES[kind])
                if state.is_main_process:
                    _insert(lk, record := Training(
                        uuid.uuid4().hex[:16], kind, dataset, ref.table, ref.snapshot_id, rows.num_rows, model,
                        str(output_dir), full_config, versions, datetime.now(timezone.utc), run_id=run_id,
                        iteration=iteration if iteration is not None else _iteration(dataset)))
        if turn == 0 and state.num_processes > 1:  # the others read the snapshot the main process resolved
            from accelerate.utils import broadcast_object_list

            version = str(broadcast_object_list([ref.snapshot_id if state.is_main_process else None])[0])
        state.wait_for_everyone()
    if record:
        _write_record(record)
    try:
        register_processors()  # before AutoProcessor.from_pretrained (no-torchvision Qwen2.5-VL folders)
        trainer = make_trainer(resolve_model(model), processor_kwargs, args, BUILDERS[kind](rows))
        result = trainer.train()
        trainer.save_model(str(output_dir))
    except BaseException as e:
        if record:
            record.status, record.error = "failed", f"{type(e).__name__}: {(str(e).strip() or '-').splitlines()[0]}"
            _finish(spec, record)
        raise
    if record:
        record.status, record.metrics = "ok", _metrics(trainer.state.log_history, result.metrics)
        _finish(spec, record)
    return record


def _iteration(dataset: str) -> int | None:
    m = re.match(r"iter(\d+)\b", dataset.rpartition("@")[2])  # iter2, iter2-sft
    return int(m.group(1)) if m else None


def _metrics(log_history: list[dict], final: dict) -> dict[str, float]:
    """The last logged value of every number (loss, reward, rewards/..., grad_norm, ...) and the run's totals."""
    out = {}
    for entry in [*log_history, final]:
        out.update({k: float(v) for k, v in entry.items() if isinstance(v, (int, float)) and not isinstance(v, bool)})
    return out


def _insert(lake: Lake, record: Training) -> None:
    row = asdict(record)
    row["metrics"] = None
    with lake.transaction(f"train {record.kind} {record.training_id}: start"):
        lake.con.execute(f"INSERT INTO {DB}.trainings ({', '.join(COLUMNS)}) VALUES ({', '.join('?' * len(COLUMNS))})",
                         [row[c] for c in COLUMNS])


def _finish(spec: LakeSpec, record: Training) -> None:
    record.ended_at = datetime.now(timezone.utc)
    _write_record(record)
    # Training takes hours and a local lake admits one process: wait out a `vlfactory sql` rather than lose the record.
    for attempt in range(60):
        try:
            message = f"train {record.kind} {record.training_id}: {record.status}"
            with Lake(spec, create=False) as lk, lk.transaction(message):
                lk.con.execute(f"UPDATE {DB}.trainings SET status = ?, metrics = ?, ended_at = ?, error = ? "
                               "WHERE training_id = ?",
                               [record.status, record.metrics or None, record.ended_at, record.error,
                                record.training_id])
            return
        except LakeError:
            if attempt == 59:
                raise
            time.sleep(2)


def _write_record(record: Training) -> None:
    path = Path(record.output_dir) / RECORD_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    row = asdict(record) | {"config": json.loads(record.config)}
    path.write_text(json.dumps(row, indent=2, default=str) + "\n")


def main(kind: str, train_fn: Callable, argv: list[str] | None = None) -> None:
    """The module entry point: `python -m vlfactory.trainers.KIND ...`, also under `accelerate launch -m`."""
    parser = argparse.ArgumentParser(prog=f"python -m vlfactory.trainers.{kind}")
    parser.add_argument("--dataset", required=True, help=f"a {TABLES[kind]} version: {TABLES[kind]}@iter1, "
                        f"{TABLES[kind]}@42 (a snapshot), or iter1")
    parser.add_argument("--model", required=True, help="base model: a folder, a hub id, or tiny-qwen2.5-vl")
    parser.add_argument("--output", required=True, help="output folder for the checkpoint")
    parser.add_argument("--config", default=None,
                        help="trainers YAML: TRL config fields and max_pixels (default: a few tiny CPU steps)")
    parser.add_argument("--lake", default=None, help="lake folder or ducklake: URI [env VLFACTORY_LAKE; ./lake]")
    parser.add_argument("--data-path", default=None, help="data path of a ducklake: URI lake [env VLFACTORY_DATA_PATH]")
    a = parser.parse_args(argv)
    try:
        record = train_fn(a.dataset, a.model, a.output, config=a.config, lake=a.lake, data_path=a.data_path)
    except (LakeError, RecipeError) as e:
        parser.exit(2, f"error: {e}\n")
    if record:
        print(record.line())
