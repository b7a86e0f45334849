"""Experiment tracking (vlfactory.tracking) through the real libraries, offline: a real run against a server on
loopback, logged to TensorBoard (read back with its EventAccumulator), W&B in offline mode (its run file read
back) and trackio (its local SQLite database); TRL's report_to follows the run's choice without changing the
training's address; the loop says each step as it starts and ends.

    .venv/bin/pytest tests/cli/test_tracking.py
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from fault_server import FaultServer

SECRET = "sk-tracking-test-0123456789abcdef"


class FailFirst(FaultServer):
    """Answers 500 to the first `n` requests, whatever their prompt; then as FaultServer does ("echo ...")."""

    def __init__(self, n: int):
        super().__init__()
        self.fail = n

    def _take(self, prompt, headers, body):
        behaviour = super()._take(prompt, headers, body)
        with self._lock:
            if self.fail > 0:
                self.fail -= 1
                self.hits[-1].behaviour = behaviour = "500"
        return behaviour


def write_recipe(tmp_path: Path, url: str, backend: str | None) -> Path:
    recipe = tmp_path / "r.yaml"
    block = f"tracking: {{backend: {backend}, project: tracked-test, dir: {tmp_path / 'track'}}}" if backend else ""
    recipe.write_text(f"""
name: tracked
sources:
  - {{name: synthetic, format: synthetic, n: 6, seed: 3}}
distil:
  backend: openai
  model: reasoner
  base_url: {url}
  api_key_env: TRACKING_TEST_KEY
  max_retries: 0
  concurrency: 1
  sampling: {{max_tokens: 16, n: 2}}
sft: {{}}
{block}
""")
    return recipe


def tracked_run(tmp_path: Path, monkeypatch, backend: str, report_to: str | None = None):
    """`vlfactory.run` of every stage the recipe has (ingest, caption, distil with two requests failing, verify,
    sft), tracked into tmp_path/track; returns (the RunResult, the server's hits)."""
    import vlfactory

    monkeypatch.setenv("TRACKING_TEST_KEY", SECRET)
    with FailFirst(2) as server:
        recipe = write_recipe(tmp_path, server.url, None if report_to else backend)
        out = vlfactory.run(recipe, lake=tmp_path / "lake", say=None, report_to=report_to)
    assert any(SECRET in str(h.headers) for h in server.hits)  # the key was in use, so a leak would show
    return out, server.hits


def expected(out) -> dict[str, float]:
    """What the run should have logged: each stage's numbers as vlfactory.tracking names them."""
    from vlfactory.tracking import stage_metrics

    want = {}
    for result in out.results:
        want |= stage_metrics(result)
    return want


def no_secret_under(folder: Path) -> None:
    for path in folder.rglob("*"):
        if path.is_file():
            assert SECRET.encode() not in path.read_bytes(), path


def test_tensorboard_gets_every_stage(tmp_path, monkeypatch):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out, hits = tracked_run(tmp_path, monkeypatch, "tensorboard")
    runs = list((tmp_path / "track").iterdir())
    assert [r.name for r in runs] == [f"tracked-{out.run_id}"]  # the run's name is the lake's run id
    events = EventAccumulator(str(runs[0]))
    events.Reload()
    logged = {tag: events.Scalars(tag)[-1].value for tag in events.Tags()["scalars"]}

    # generation: requests, failures, throughput; each as the server and the lake saw them
    distil = next(r for r in out.results if r.stage == "distil")
    assert logged["distil/requests"] == len(hits) == 6
    assert logged["distil/failed"] == 2 == sum(h.behaviour == "500" for h in hits)
    assert logged["distil/written"] == 8  # 4 answered requests x n=2
    assert logged["distil/tokens_per_s"] == pytest.approx(distil.completion_tokens / distil.seconds, rel=1e-4)
    assert logged["distil/tokens_per_s"] > 0 and logged["distil/requests_per_s"] > 0
    # verification: rejections by reason and the funnel per table and source, as the lake holds them
    from vlfactory.stores.lake import Lake

    with Lake(tmp_path / "lake", read_only=True) as lake:
        reasons = dict(lake.query("SELECT reason, count(*) FROM rejected WHERE stage = 'verify' GROUP BY ALL")
                       .fetchall())
    assert reasons and {k: logged[f"verify/rejected/{k}"] for k in reasons} == reasons
    assert logged["verify/traces/synthetic/generated"] == 8
    # everything the stages returned arrived, with the same values (float32 in the event file)
    want = expected(out)
    assert want and set(want) <= set(logged)
    assert all(logged[k] == pytest.approx(v, rel=1e-5) for k, v in want.items())
    no_secret_under(tmp_path / "track")


def wandb_history(run_file: Path, record_type: str = "history") -> list[dict]:
    """The `history` records of a W&B run file (`record_type="run"`: the run's config as wandb.init took it): a
    LevelDB-style log (32 KiB blocks of records, each a 7-byte header: crc, length, type) of protobuf Records,
    after a 7-byte file header."""
    from wandb.proto import wandb_internal_pb2 as pb

    data, pos, chunk, rows = run_file.read_bytes(), 7, b"", []
    assert data[:4] == b":W&B"
    while pos + 7 <= len(data):
        if 32768 - pos % 32768 < 7:  # a block's tail too short for a header is padding
            pos += 32768 - pos % 32768
            continue
        size, kind = int.from_bytes(data[pos + 4:pos + 6], "little"), data[pos + 6]
        chunk, pos = chunk + data[pos + 7:pos + 7 + size], pos + 7 + size
        if kind in (1, 4):  # a whole record, or the last piece of one
            record = pb.Record()
            record.ParseFromString(chunk)
            chunk = b""
            if record.WhichOneof("record_type") == record_type:
                items = record.history.item if record_type == "history" else record.run.config.update
                rows.append({i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in items})
    return rows


def test_wandb_offline_run_holds_the_stages(tmp_path, monkeypatch):
    pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    # --report-to picks the library; the recipe names none (project and folder then default)
    monkeypatch.chdir(tmp_path)
    out, hits = tracked_run(tmp_path, monkeypatch, "wandb", report_to="wandb")
    (run_file,) = (tmp_path / "wandb").glob("offline-run-*/run-*.wandb")
    rows = wandb_history(run_file)
    logged = {}
    for row in rows:
        logged |= row
    want = expected(out)
    assert {k: logged[k] for k in want} == pytest.approx(want)
    assert logged["distil/failed"] == 2 and logged["distil/requests"] == len(hits)
    (config,) = wandb_history(run_file, "run")  # offline, files/config.yaml is never written: the run record
    assert config["run_id"] == out.run_id
    no_secret_under(tmp_path / "wandb")


def test_trackio_local_database(tmp_path):
    """trackio reads TRACKIO_DIR once, at import: a run of the CLI in its own process."""
    pytest.importorskip("trackio")
    with FailFirst(0) as server:
        recipe = write_recipe(tmp_path, server.url, "trackio")
        env = {k: v for k, v in os.environ.items() if not k.startswith(("TRACKIO", "VLFACTORY"))}
        res = subprocess.run([sys.executable, "-m", "vlfactory.cli", "run", str(recipe), "--lake", str(tmp_path / "lake")],
                             capture_output=True, text=True, timeout=300, env=env | {"TRACKING_TEST_KEY": SECRET},
                             cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert "Trackio" not in res.stdout + res.stderr  # its banners are kept out of the factory's lines
    (db,) = (tmp_path / "track").glob("tracked-test*.db")
    with sqlite3.connect(db) as con:
        rows = con.execute("SELECT run_name, metrics FROM metrics").fetchall()
    logged = {}
    for name, metrics in rows:
        assert name.startswith("tracked-")
        logged |= json.loads(metrics)
    assert logged["distil/requests"] == len(server.hits) == 6
    assert logged["distil/written"] == 12 and logged["distil/failed"] == 0
    assert logged["verify/traces/synthetic/generated"] == 12
    no_secret_under(tmp_path / "track")


def test_report_to_reaches_the_trainer_and_not_its_address(tmp_path):
    """A training inside a tracked run reports to the same library through TRL's own report_to; its settings
    digest (part of the checkpoint's address) is the untracked one's, so tracking never retrains."""
    pytest.importorskip("trl")
    from vlfactory import tracking
    from vlfactory.recipe import TrackingConfig
    from vlfactory.trainers.config import load_config, settings_digest

    args, extras = load_config("sft", None, tmp_path / "out")
    before = settings_digest(args, extras)
    assert args.report_to in ([], "none", ["none"])
    with tracking.start(TrackingConfig("tensorboard", project="p", dir=str(tmp_path / "tb")), "run-1"):
        tracking.configure_trainer(args, "sft-iter1")
        assert os.environ["TENSORBOARD_LOGGING_DIR"] == str(tmp_path / "tb" / "run-1-sft-iter1")
    assert args.report_to == ["tensorboard"] and args.run_name == "run-1-sft-iter1" and args.project == "p"
    assert "TENSORBOARD_LOGGING_DIR" not in os.environ  # restored when the run closed
    args2, _ = load_config("sft", None, tmp_path / "out")
    tracking.configure_trainer(args2, "sft")  # no tracked run: untouched
    assert args2.report_to in ([], "none", ["none"]) and settings_digest(args2, extras) == before


def test_bad_choices_are_one_line(tmp_path):
    from vlfactory.recipe import RecipeError, load_recipe

    recipe = write_recipe(tmp_path, "http://127.0.0.1:9/v1", "neptune")  # accelerate has no tracker of that name
    with pytest.raises(RecipeError, match=r"tracking\.backend.*'neptune' is not one of tensorboard, wandb, trackio, "
                                          r"mlflow, comet_ml, aim, clearml, dvclive, swanlab"):
        load_recipe(recipe)
    assert load_recipe(write_recipe(tmp_path, "http://127.0.0.1:9/v1", "mlflow")).tracking.backend == "mlflow"
    from vlfactory import tracking

    recipe = load_recipe(write_recipe(tmp_path, "http://127.0.0.1:9/v1", "tensorboard"))
    with pytest.raises(RecipeError, match="--report-to: 'comet' is not one of"):
        tracking.choose(recipe, "comet")
    assert tracking.choose(recipe, "none").tracking is None
    assert tracking.choose(recipe, "wandb").tracking.dir == str(tmp_path / "track")  # the block's folder stays


@pytest.mark.slow  # two tiny trainings and a reused one: about 30 s on 2 shared cores
def test_a_tracked_training_reports_through_trl_and_reuses_the_untracked_checkpoint(cli, lake_dir, tiny_vlm_dir,
                                                                                   tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from test_trainers import SFT, write_sets

    from vlfactory import tracking
    from vlfactory.recipe import TrackingConfig
    from vlfactory.stores.lake import Lake
    from vlfactory.trainers.sft import train_sft

    recipe = tmp_path / "r.yaml"
    recipe.write_text("sources:\n  - {name: syn, format: synthetic, n: 6, seed: 3}\n")
    cli("ingest", recipe)
    write_sets(lake_dir, "iter1", "a", 6)
    first = train_sft("sft@iter1", str(tiny_vlm_dir), tmp_path / "sft", config=SFT, lake=str(lake_dir), iteration=1)
    with tracking.start(TrackingConfig("tensorboard", dir=str(tmp_path / "tb")), "run-1"):
        again = train_sft("sft@iter1", str(tiny_vlm_dir), tmp_path / "sft", config=SFT, lake=str(lake_dir),
                          iteration=1)
        assert again.reused and again.config_hash == first.config_hash  # tracked: the same training, not redone
        other = train_sft("sft@iter1", str(tiny_vlm_dir), tmp_path / "sft2", config=SFT, lake=str(lake_dir),
                          iteration=1)
    assert other.config_hash == first.config_hash
    events = EventAccumulator(str(tmp_path / "tb" / "run-1-sft-iter1"))
    events.Reload()
    logged = [e.value for e in events.Scalars("train/loss")]
    with Lake(lake_dir, read_only=True) as lake:
        losses = [r[0] for r in lake.query("SELECT value FROM training_logs WHERE training_id = ? AND name = 'loss' "
                                           "ORDER BY step", [other.training_id]).fetchall()]
    assert len(logged) == 3 and logged == pytest.approx(losses, rel=1e-5)  # TRL's own numbers, step by step


def test_the_loop_says_each_step_as_it_starts_and_ends(lake_dir, tmp_path):
    import re

    from vlfactory.loop import Loop
    from vlfactory.recipe import load_recipe
    from vlfactory.stores.lake import LakeSpec

    path = tmp_path / "loop.yaml"
    path.write_text("""
sources:
  - {name: syn, format: synthetic, n: 5, seed: 1}
batch_rows: 2
rollout: {backend: openai, model: policy, base_url: "http://127.0.0.1:9/v1"}
rl: {}
loop: {base_model: tiny-qwen2.5-vl}
""")
    recipe = load_recipe(path)
    lines, bars = [], []

    def progress(name):
        import contextlib

        @contextlib.contextmanager
        def bar():
            yield lambda result, n: bars.append((name, n))
        return bar()

    loop = Loop(recipe, LakeSpec.resolve(str(lake_dir)), say=lines.append, progress=progress)
    loop.stage("ingest", recipe.stage_config("ingest"))
    loop.k = 2
    loop.stage("ingest", recipe.stage_config("ingest"))
    assert re.fullmatch(r"iter0 ingest: started at 00:00:\d\d", lines[0]), lines
    assert "read 5 = ingested 5" in lines[1]  # the stage's own lines between
    assert re.fullmatch(r"iter0 ingest: done in \d+\.\ds, 00:00:\d\d elapsed", lines[2]), lines
    assert re.fullmatch(r"iter2 ingest: started at 00:00:\d\d", lines[-3]), lines
    assert re.fullmatch(r"iter2 ingest: reused \(done before\), \d+\.\ds, 00:00:\d\d elapsed", lines[-1]), lines
    assert sum(n for name, n in bars if name == "ingest") >= 5  # the per-stage progress callback saw the rows


def test_export_replays_a_versions_trainings_and_evaluations(tmp_path):
    """`vlfactory track export` after the fact: each stored training's every logged number at its step, in the run
    live tracking names it, and the loop's evaluations over the iteration in each run's own."""
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from test_reports import build_lake

    from vlfactory.stores.lake import Lake

    lake = build_lake(tmp_path, trainings=True)  # four trainings (sft and grpo of two iterations), five evals
    res = subprocess.run([sys.executable, "-m", "vlfactory.cli", "track", "export", "iter2", "--to", "tensorboard",
                          "--dir", str(tmp_path / "tb"), "--lake", str(lake)], capture_output=True, text=True,
                         timeout=300)
    assert res.returncode == 0, res.stderr
    with Lake(lake, read_only=True) as lk:
        stored = lk.query("SELECT training_id, step, name, value FROM training_logs").fetchall()
        run_ids = [r[0] for r in lk.query("SELECT run_id FROM runs WHERE command LIKE 'test iteration %' "
                                          "ORDER BY started_at").fetchall()]

    def scalars(run: str) -> dict[tuple[int, str], float]:
        events = EventAccumulator(str(tmp_path / "tb" / run))
        events.Reload()
        return {(e.step, tag): e.value for tag in events.Tags()["scalars"] for e in events.Scalars(tag)}

    for training_id, run in (("sft1", "sft-iter1"), ("grpo1", "grpo-iter1"), ("sft2", "sft-iter2"),
                             ("grpo2", "grpo-iter2")):
        got = scalars(f"vlfactory-iter2-{run}")  # trainings recorded without a run: named after the version
        want = {(step, f"train/{name}"): value for t, step, name, value in stored if t == training_id}
        assert len(want) >= 12 and {k: v for k, v in got.items() if k[1] != "train/global_step"} == \
            pytest.approx(want, rel=1e-5)
    first, second = scalars(f"small-{run_ids[0]}"), scalars(f"small-{run_ids[1]}")
    assert first[0, "eval/shapes-eval/base/accuracy"] == 0.0 and first[1, "eval/shapes-eval/sft/accuracy"] == 0.5
    assert second[2, "eval/shapes-eval/grpo/accuracy"] == 1.0 and second[2, "eval/shapes-k4/grpo/accuracy"] == 0.5
    res = subprocess.run([sys.executable, "-m", "vlfactory.cli", "track", "export", "iter2", "--to", "neptune",
                          "--lake", str(lake)], capture_output=True, text=True, timeout=300)
    assert res.returncode == 2 and res.stderr.count("\n") == 1 and "'neptune' is not one of tensorboard" in res.stderr
