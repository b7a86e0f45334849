"""A training started as the paper's run started it: `accelerate launch` of the trainer's entry point, a child process.

`vlfactory iterate` trains through `launch_training`. The settings are
resolved and digested here (the checkpoint's address), a finished training in
that folder is reused without starting anything, and otherwise

    python -m accelerate.commands.launch --num_processes N [--config_file F] \\
        -m vlfactory.trainers.KIND --dataset TABLE@TAG --model BASE --output OUT/KIND-<address> \\
        --config OUT/configs/KIND-<address>.yaml --lake LAKE --run_id RUN --iteration K

runs, its output (stdout and stderr, merged) shown as it comes and kept in
OUT/logs/KIND-<address>.log. The settings file is the recipe's trainer
settings as one mapping (a trainers YAML, a recipe's inline mapping, plus what
the loop adds), so the child digests exactly what this process did. The child
records its own `trainings` row; one that dies without recording its end
(killed, out of memory, a crash before its first row) is recorded here as
failed with the last meaningful line it printed, and `TrainingFailed` says so
in one line.

Processes: `loop.launch: {num_processes: 8, config_file: zero3.yaml}`; one
process by default. Without a config file, more than one process runs through
accelerate's torchrun launcher (`--multi_gpu`): on a CPU they join a gloo
group when the settings say `use_cpu: true` (measured: `accelerate launch
--cpu --num_processes 2` starts one process, as accelerate's simple launcher
runs one unless mpirun is configured).

    from vlfactory.trainers.launch import launch_training
    record = launch_training("sft", "sft@iter1-sft", "tiny-qwen2.5-vl", "sft.yaml", Path("runs"), LakeSpec.resolve("lake"))
"""

from __future__ import annotations

import collections
import json
import os
import re
import socket
import subprocess
import sys
import uuid
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path

import yaml

from vlfactory.recipe import LaunchConfig, RecipeError
from vlfactory.stores.lake import Lake, LakeSpec
from vlfactory.stores.runs import package_versions
from vlfactory.trainers.config import load_config, read_settings, settings_digest
from vlfactory.trainers.run import TABLES, Training, address, finished, from_record, read_record, record_failure

# A line that says why a child failed: an exception with its message, or the entry point's `error: ...`
# (the launchers' own summaries, CalledProcessError and ChildFailedError, only say that a child failed).
_ERROR = re.compile(r"^(error: .+|(?:[A-Za-z_][\w.]*\.)?[A-Z]\w*(?:Error|Exception|Exit|Interrupt)\b(?::.*)?)$")
_LAUNCHER = re.compile(r"(CalledProcessError|ChildFailedError)\b")


class TrainingFailed(RecipeError):
    """A training's child process failed; the message is one line: what, why, where its output is."""


def launch_training(kind: str, dataset: str, model: str, settings, out: Path, spec: LakeSpec, *,
                    launch: LaunchConfig | None = None, lake_args: dict | None = None, run_id: str | None = None,
                    iteration: int | None = None) -> Training:
    """Train `model` on the set version `dataset` with `settings` (a trainers YAML, a mapping or None) into
    OUT/KIND-<address>, through `accelerate launch` in a child process; the record of the finished training
    (`reused` when it was done before). `lake_args`: how the child opens the lake (--lake, --data-path).
    Inside a tracked run, the child reports to it as an in-process training would (tracking.configure_trainer).
    Raises TrainingFailed."""
    from vlfactory import tracking
    from vlfactory.models import identity

    launch = launch or LaunchConfig()
    values = read_settings(kind, settings)
    args, extras = load_config(kind, values, out, processes=launch.num_processes)
    config_hash = settings_digest(args, extras, launch.num_processes)
    if launch.num_processes > 1 and not launch.config_file and not args.use_cpu and not _gpus():
        raise RecipeError(f"loop.launch.num_processes: {launch.num_processes} processes on a machine without a GPU "
                          f"need use_cpu: true in the {kind} settings (they then train together over gloo)")
    table, _, version = dataset.rpartition("@")
    with Lake(spec, create=False) as lake:
        snapshot = lake.resolve(version)
        data, rows = lake.digest(table, snapshot), lake.count(table, snapshot)
    base_model_id = identity(model)
    output = out / f"{kind}-{address(data, base_model_id, config_hash)}"
    done = finished(output, kind, table, data, base_model_id, config_hash, overwrite=False)
    if done is not None:
        return done
    config_file, log = out / "configs" / f"{output.name}.yaml", out / "logs" / f"{output.name}.log"
    config_file.parent.mkdir(parents=True, exist_ok=True)
    config_file.write_text(yaml.safe_dump(values, sort_keys=False))
    argv = ["--dataset", dataset, "--model", model, "--output", str(output), "--config", str(config_file)]
    for key, value in {**(lake_args or {}), "run_id": run_id, "iteration": iteration}.items():
        if value is not None:
            argv += [f"--{key}", str(value)]
    untracked = (args.report_to, args.run_name, args.project)
    tracking.configure_trainer(args, kind + (f"-iter{iteration}" if iteration is not None else ""))
    if (args.report_to, args.run_name, args.project) != untracked:  # after the digest: not a setting
        argv += ["--report", json.dumps({"report_to": args.report_to, "run_name": args.run_name,
                                         "project": args.project})]
    before = (read_record(output) or {}).get("training_id")
    code, error = run_child(command(kind, argv, launch), log)
    record = read_record(output)
    if record is not None and record.get("training_id") == before:
        record = None  # the folder's record is an earlier attempt's: this child wrote none
    if record is not None and record.get("status") == "ok":  # saved and recorded (whatever the teardown's exit)
        return from_record(record)
    if record is not None and record.get("status") == "failed":
        error = record.get("error") or error  # the child recorded why, in its own words
    else:
        started = from_record(record) if record is not None else Training(
            uuid.uuid4().hex[:16], kind, dataset, TABLES[kind], snapshot, rows, model, str(output),
            json.dumps(json.loads(args.to_json_string()) | extras),
            package_versions() | {"accelerate": metadata.version("accelerate")}, datetime.now(timezone.utc),
            run_id=run_id, iteration=iteration, base_model_id=base_model_id, config_hash=config_hash,
            data_digest=data)
        error = error or f"exit code {code}"
        record_failure(spec, started, error)
    raise TrainingFailed(f"{kind} training on {dataset} failed: {error} (its output: {log})")


def command(kind: str, argv: list[str], launch: LaunchConfig) -> list[str]:
    """The `accelerate launch` command line for the entry point `vlfactory.trainers.KIND` with `argv`."""
    n = launch.num_processes
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", str(n)]
    if launch.config_file:
        cmd += ["--config_file", launch.config_file]
    else:  # accelerate's defaults, said, so it does not warn that they were assumed
        cmd += ["--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no"]
        if n > 1:  # the torchrun launcher: several processes, on GPUs or (gloo) on a CPU
            cmd += ["--multi_gpu", "--main_process_port", str(_free_port())]
    if not os.environ.get("OMP_NUM_THREADS"):  # accelerate would pin each process to one thread
        cmd += ["--num_cpu_threads_per_process", str(max(1, (os.cpu_count() or 1) // n))]
    return cmd + ["-m", f"vlfactory.trainers.{kind}", *argv]


def run_child(cmd: list[str], log: Path) -> tuple[int, str | None]:
    """Run `cmd`, its output shown on stderr as it comes and kept in `log`; (exit code, the last line that
    says why it failed, or None)."""
    log.parent.mkdir(parents=True, exist_ok=True)
    tail: collections.deque[str] = collections.deque(maxlen=400)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    with open(log, "w") as keep, subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env,
                                                   text=True, errors="replace",
                                                   preexec_fn=_dies_with_parent()) as child:
        try:
            for line in child.stdout:
                sys.stderr.write(line)
                keep.write(line)
                tail.append(line.rstrip("\n").rsplit("\r", 1)[-1].strip())
            code = child.wait()
        except BaseException:  # interrupted: the training goes with the loop
            child.terminate()
            child.wait(30)
            raise
    return code, (last_error(tail) if code else None)


def _dies_with_parent():
    """For Popen's preexec_fn: on Linux the child asks the kernel for SIGTERM when this process dies, even by
    SIGKILL, so a training never outlives the loop that launched it (accelerate's launcher passes SIGTERM on to
    its workers). libc is loaded here, in the parent: the child only makes the one system call."""
    import ctypes
    import signal

    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):  # not Linux: no such call
        return None
    return lambda: prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def last_error(lines) -> str | None:
    """The last line of a failed child's output that says why: an exception with its message, or the entry
    point's `error: ...` line; else the last line that is not a launcher's summary.

    >>> last_error(["Traceback (most recent call last):", '  File "x.py", line 1', "ValueError: bad lr",
    ...             "subprocess.CalledProcessError: Command '[...]' returned non-zero exit status 1."])
    'ValueError: bad lr'
    """
    lines = [line for line in lines if line]
    found = [line for line in lines if _ERROR.match(line) and not _LAUNCHER.search(line)]
    if found:
        return found[-1]
    rest = [line for line in lines if not _LAUNCHER.search(line)]
    return rest[-1] if rest else None


def _gpus() -> bool:
    import torch

    return torch.cuda.is_available()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
