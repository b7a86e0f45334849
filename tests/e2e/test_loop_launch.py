"""The loop's trainings launched as the paper's run launched them (`accelerate launch`, a child process): a child
that fails stops the loop with one line and leaves a failed `trainings` row with its error, whether the child
recorded it (a bad setting) or died before it could (a launcher that cannot start); the entry points read the
trainers YAML and flags through TRL's TrlParser; the loop's options are checked when the recipe loads."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pytest

from test_trainers import SFT, sets_lake, trainings  # noqa: F401 (fixture)
from vlfactory.recipe import RecipeError, load_recipe
from vlfactory.stores import schema
from vlfactory.stores.lake import Lake, LakeSpec

LOOP = """
sources:
  - {name: syn, format: synthetic, n: 4, seed: 2}
  - {name: other, format: synthetic, n: 2, seed: 9}
rollout: {backend: transformers, model: tiny-qwen2.5-vl, device: cpu}
rl: {}
sft: {cleaned: false}
loop:
  base_model: tiny-qwen2.5-vl
  iterations: 1
  output_dir: runs
  benchmarks: []
"""


@pytest.mark.parametrize("loop, error", [
    ("schedule: [{generator: {stage: hard, step: 2}}]", r"schedule\[0\]\.generator: iteration 1's data comes from"),
    ("grpo_stages: [{name: a, band: [0, 1]}]\n  schedule: [{}, {generator: {stage: hard}}]",
     r"schedule\[1\]\.generator\.stage: 'hard' is not one of loop\.grpo_stages \(a\)"),
    ("schedule: [{}, {generator: last}]", r"schedule\[1\]\.generator: 'last'; write final or"),
    ("grpo_stages: [{name: a, band: [0, 1], source: syn}]", r"grpo_stages\[0\]: give its rl set as band"),
    ("grpo_stages: [{name: a}]", r"grpo_stages\[0\]: give its rl set as band"),
    ("grpo_stages: [{name: a, source: nope}]", r"grpo_stages\[0\]\.source: 'nope' is not one of the recipe's sources"),
    ("schedule: [{rl_weights: {nope: 2}}]", r"schedule\[0\]\.rl_weights: 'nope' is not one of the recipe's sources"),
    ("schedule: [{rl_weights: {syn: 1.5}}]", r"schedule\[0\]\.rl_weights\.syn: expected int"),
    ("launch: {num_processes: 0}", r"loop\.launch\.num_processes: must be at least 1"),
    ("launch: {config_file: zero9.yaml}", r"loop\.launch\.config_file: .*zero9\.yaml does not exist"),
])
def test_the_loop_options_are_checked_when_the_recipe_loads(tmp_path, loop, error):
    path = tmp_path / "r.yaml"
    path.write_text(LOOP + f"  {loop}\n")
    with pytest.raises(RecipeError, match=error):
        load_recipe(path)


def test_launch_paths_are_relative_to_the_recipe(tmp_path):
    (tmp_path / "zero3.yaml").write_text("distributed_type: DEEPSPEED\n")
    path = tmp_path / "r.yaml"
    path.write_text(LOOP + "  launch: {num_processes: 8, config_file: zero3.yaml}\n"
                           "  grpo_stages: [{name: medium, source: other}]\n"
                           "  schedule: [{}, {generator: {stage: medium, step: 120}, rl_weights: {syn: 2}}]\n")
    loop = load_recipe(path).loop
    assert (loop.launch.num_processes, loop.launch.config_file) == (8, str(tmp_path / "zero3.yaml"))
    assert loop.plan(2).generator.step == 120 and loop.plan(1).generator is None


def traces_for_every_problem(spec, recipe) -> None:
    """Distillation's output, written by hand: one correct trace per problem (no reasoner runs here)."""
    from vlfactory.stages import Scope, run_stage

    with Lake(spec) as lake:
        run_stage(lake, "ingest", recipe.stage_config("ingest"), Scope.of(recipe))
        problems = lake.query("SELECT problem_id, answer FROM problems WHERE list_contains(?, source)",
                              [[src.name for src in recipe.sources]]).fetchall()
        rows = [{"trace_id": f"t-{pid}", "problem_id": pid, "sample_index": 0, "model": "r1",
                 "completion": f"<think>I look.</think> <answer>{gold}</answer>", "finish_reason": "stop",
                 "request_key": f"t-{pid}"} for pid, gold in problems]
        with lake.transaction("traces"):
            lake.insert("traces", pa.Table.from_pylist(rows, schema=schema.TRACES))


@pytest.mark.slow
def test_a_failing_child_stops_the_loop_with_one_line_and_a_failed_row(tmp_path, monkeypatch, cli, lake_dir):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "r.yaml"
    path.write_text(LOOP + "  sft: {use_cpu: true, bf16: false, max_steps: 1, model_init_kwargs: {dtype: float13}}\n")
    traces_for_every_problem(LakeSpec.resolve(str(lake_dir), None), load_recipe(path))
    result = cli("iterate", path, ok=False)
    assert result.exit_code == 2
    last = result.output.strip().splitlines()[-1]
    (row,) = trainings(lake_dir)
    assert row["status"] == "failed" and "float13" in row["error"]
    assert last.startswith(f"error: sft training on sft@iter1-sft failed: {row['error']} (its output: ")
    log = Path(last.rsplit("(its output: ", 1)[1].rstrip(")"))
    assert log.is_file() and "float13" in log.read_text()
    with Lake(lake_dir, read_only=True) as lake:
        (status, error), = lake.query("SELECT status, error FROM runs WHERE command = 'iterate'").fetchall()
    assert status == "failed" and "float13" in error


@pytest.mark.slow
def test_a_child_that_dies_before_recording_is_recorded_by_the_loop(sets_lake, lake_dir, tmp_path):
    """A launcher that cannot start the trainer (a DeepSpeed accelerate config where DeepSpeed is not installed)
    writes no row of its own: the loop records the failure with the child's last error line; fixed, the same
    training trains into the same folder."""
    import importlib.util

    from vlfactory.recipe import LaunchConfig
    from vlfactory.trainers.launch import TrainingFailed, launch_training

    if importlib.util.find_spec("deepspeed") is not None:
        pytest.skip("DeepSpeed is installed: this launcher would start")
    zero3 = Path(__file__).resolve().parents[2] / "recipes" / "openvlthinker" / "zero3.yaml"
    spec, out = LakeSpec.resolve(str(lake_dir), None), tmp_path / "runs"
    settings = SFT | {"max_steps": 1}
    with pytest.raises(RecipeError, match="2 processes on a machine without a GPU need use_cpu: true"):
        launch_training("sft", "sft@iter1", "tiny-qwen2.5-vl", settings | {"use_cpu": False}, out, spec,
                        launch=LaunchConfig(2), lake_args={"lake": str(lake_dir)})
    with pytest.raises(TrainingFailed, match=r"failed: ImportError: DeepSpeed is not installed") as failed:
        launch_training("sft", "sft@iter1", "tiny-qwen2.5-vl", settings, out, spec,
                        launch=LaunchConfig(1, str(zero3)), lake_args={"lake": str(lake_dir)}, iteration=1)
    (row,) = trainings(lake_dir)
    assert (row["status"], row["iteration"], row["rows"]) == ("failed", 1, 6)
    assert row["error"].startswith("ImportError: DeepSpeed is not installed") and row["error"] in str(failed.value)
    folder = Path(row["output_dir"])
    assert json.loads((folder / "vlfactory_training.json").read_text())["status"] == "failed"
    record = launch_training("sft", "sft@iter1", "tiny-qwen2.5-vl", settings, out, spec,
                             lake_args={"lake": str(lake_dir)}, iteration=1)
    assert record.status == "ok" and record.output_dir == str(folder)
    assert [r["status"] for r in trainings(lake_dir)] == ["failed", "ok"]
    log = out / "logs" / f"{folder.name}.log"
    log.unlink()
    again = launch_training("sft", "sft@iter1", "tiny-qwen2.5-vl", settings, out, spec, lake_args={"lake": str(lake_dir)})
    assert again.reused and not log.exists()  # found done: nothing launched


@pytest.mark.slow
def test_the_entry_point_reads_yaml_and_flags_through_trlparser(sets_lake, lake_dir, tmp_path, capsys):
    from vlfactory.trainers.run import main
    from vlfactory.trainers.sft import train_sft

    config = tmp_path / "sft.yaml"
    config.write_text("".join(f"{k}: {json.dumps(v)}\n" for k, v in SFT.items()))   # max_steps: 3
    argv = ["--dataset", "sft@iter1", "--model", "tiny-qwen2.5-vl", "--output", str(tmp_path / "out"),
            "--config", str(config), "--lake", str(lake_dir)]
    main("sft", train_sft, [*argv, "--max_steps", "1", "--learning_rate", "2e-4"])
    assert "sft ok: sft@iter1" in capsys.readouterr().out
    (row,) = trainings(lake_dir)
    settings = json.loads(row["config"])
    assert (settings["max_steps"], settings["learning_rate"], settings["max_pixels"]) == (1, 2e-4, 56 * 56)
    with pytest.raises(SystemExit) as exit_:
        main("sft", train_sft, [*argv, "--max_step", "1"])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and err.startswith("error: ") and "'--max_step'" in err  # TrlParser's unknown flag


@pytest.mark.slow
def test_a_launched_training_reports_to_the_loops_tracked_run(sets_lake, lake_dir, tmp_path):
    """Inside a tracked run, the child trainer reports through TRL's report_to to the run's library, under
    <run>-<kind>-iterK, as an in-process training would; its settings digest stays the untracked one's."""
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from vlfactory import tracking
    from vlfactory.recipe import TrackingConfig
    from vlfactory.trainers.config import load_config, settings_digest
    from vlfactory.trainers.launch import launch_training

    settings = SFT | {"max_steps": 2}
    with tracking.start(TrackingConfig("tensorboard", dir=str(tmp_path / "tb")), "run-1"):
        record = launch_training("sft", "sft@iter1", "tiny-qwen2.5-vl", settings, tmp_path / "runs",
                                 LakeSpec.resolve(str(lake_dir), None), lake_args={"lake": str(lake_dir)}, iteration=1)
    assert record.config_hash == settings_digest(*load_config("sft", settings, "o"))
    events = EventAccumulator(str(tmp_path / "tb" / "run-1-sft-iter1"))
    events.Reload()
    assert len(events.Scalars("train/loss")) == 2
