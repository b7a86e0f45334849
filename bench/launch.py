"""What does `accelerate launch` cost the loop? One tiny SFT trained in this process and launched as a child.

    python bench/launch.py --lake DIR                 # a lake `vlfactory iterate quickstart` made; 3 rounds
    python bench/launch.py --lake DIR --rounds 5 --dataset sft@iter2-sft

`vlfactory iterate` starts every training as the paper's run did: `accelerate launch` of the trainer's
entry point in a child process (vlfactory.trainers.launch.launch_training, the loop's own call), which
imports torch, transformers and TRL again and reads the set again. This bench trains the same 2-step SFT
(the trainers' tiny defaults, `max_steps: 2`, `use_cpu: true`) of the tiny base model on one set version
(default `sft@iter1-sft`) three ways, each into a fresh folder so nothing is reused, in rounds (in-process,
launch with 1 process, launch with 2 processes):

- in this process, through the same training function the child runs (vlfactory.trainers.sft.train_sft);
  the first one also imports torch, transformers and TRL and is printed apart, the later ones are the
  baseline: a training in a process that has the libraries already, as a loop training in-process would;
- `launch_training` with `num_processes: 1`, and with 2 (two trainers over gloo, each batch of 2 per process).

Printed per training: wall time, CPU seconds (user + system) of this process and of its children (the
launcher and its workers, from getrusage(RUSAGE_CHILDREN)), and the total's ratio to the median in-process
baseline of the same run; then per way the range over the rounds and the extra CPU seconds a launch costs.
The trainings write their `trainings` rows into a copy of the lake (the original is only read). The
trainers' output goes to DIR/train.log, not the terminal.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import resource
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path


def cpu() -> tuple[float, float]:
    """CPU seconds so far (user + system) of this process and of its waited-for descendants."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime, children.ru_utime + children.ru_stime


def timed(train) -> tuple[float, float, float]:
    """(wall s, this process's CPU s, children's CPU s) of `train()`."""
    wall, (own, children) = time.monotonic(), cpu()
    train()
    after = cpu()
    return time.monotonic() - wall, after[0] - own, after[1] - children


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lake", required=True, help="a lake with the set version --dataset (a quickstart lake)")
    parser.add_argument("--dataset", default="sft@iter1-sft")
    parser.add_argument("--model", default="tiny-qwen2.5-vl")
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--keep", default=None, help="train in this folder and keep it (default: a temporary one)")
    a = parser.parse_args()

    from vlfactory.recipe import LaunchConfig
    from vlfactory.stores.lake import Lake, LakeError, LakeSpec
    from vlfactory.trainers.config import read_settings
    from vlfactory.trainers.launch import launch_training
    from vlfactory.trainers.sft import train_sft

    lake_dir = Path(a.lake).resolve()
    try:
        with Lake(lake_dir, read_only=True) as lake:
            rows = lake.count("sft", lake.resolve(a.dataset.rpartition("@")[2]))
    except LakeError as e:   # no lake, or no such version
        sys.exit(f"launch: {e}" + ("" if lake_dir.exists() else f"; a quickstart lake: vlfactory iterate quickstart "
                                                                 f"--lake {lake_dir}"))
    work = Path(a.keep or tempfile.mkdtemp(prefix="bench-launch-")).resolve()
    copy = work / "lake"
    if not copy.exists():
        shutil.copytree(lake_dir, copy)
    spec = LakeSpec.resolve(str(copy))
    settings = dict(read_settings("sft", None)) | {"max_steps": a.steps, "use_cpu": True}
    print(f"{a.steps}-step SFT of {a.model} on {a.dataset} ({rows} rows) from {lake_dir}; settings {settings}; "
          f"{a.rounds} rounds in {work}", flush=True)

    def in_process(name: str):
        return lambda: train_sft(a.dataset, a.model, str(work / name), config=settings, lake=str(copy))

    def launched(name: str, processes: int):
        return lambda: launch_training("sft", a.dataset, a.model, settings, work / name, spec,
                                       launch=LaunchConfig(num_processes=processes), lake_args={"lake": str(copy)})

    ways = {"in this process": [], "accelerate launch, 1 process": [], "accelerate launch, 2 processes": []}
    lines = []
    with open(work / "train.log", "a") as log, contextlib.redirect_stderr(log), contextlib.redirect_stdout(log):
        first = timed(in_process("first"))
        for r in range(a.rounds):
            for way, train in zip(ways, (in_process(f"in-process-{r}"), launched(f"launch1-{r}", 1),
                                         launched(f"launch2-{r}", 2))):
                ways[way].append(timed(train))
                print(f"round {r + 1}, {way}: {ways[way][-1]}", file=sys.__stdout__, flush=True)
    base = statistics.median(own + children for _, own, children in ways["in this process"])
    print("\n| training | wall s | CPU s, this process | CPU s, children | CPU s, total | total / in-process |")
    print("|---|---|---|---|---|---|")
    for label, runs in [("in this process, first (imports torch, transformers, TRL)", [first]), *ways.items()]:
        for wall, own, children in runs:
            lines.append(f"| {label} | {wall:.1f} | {own:.1f} | {children:.1f} | {own + children:.1f} | "
                         f"{(own + children) / base:.1f} |")
    print("\n".join(lines))
    print()
    for way, runs in ways.items():
        totals, walls = [own + children for _, own, children in runs], [w for w, _, _ in runs]
        print(f"{way}: {min(totals):.1f}-{max(totals):.1f} CPU s (median {statistics.median(totals):.1f}, "
              f"{statistics.median(totals) / base:.1f}x in-process; {statistics.median(totals) - base:+.1f} s), "
              f"wall {min(walls):.1f}-{max(walls):.1f} s")
    print(f"({os.cpu_count()} cores; in-process baseline: the median of {len(ways['in this process'])}"
          f" trainings after the first)")


if __name__ == "__main__":
    main()
