"""The paper's recipe rehearsed on a CPU (issue 17): `vlfactory iterate openvlthinker/rehearsal`, through the same
code a GPU run of recipes/openvlthinker/iterate.yaml uses.

The rehearsal is iterate.yaml with only models, source paths, sizes, step budgets, process counts and the CPU's
hardware settings changed (checked key by key here, trainer files included); its run starts two real `vllm serve`
replicas of the stand-in reasoner (the distil stage's two base URLs, and the MathVerse judge), then reads the
lake: every source and benchmark has rows, every iteration has its SFT and both GRPO trainings, every model its
evaluations with the protocol the paper used for it, and verify and the GRPO reward never disagree on a
multiple-choice answer.

    .venv/bin/pytest tests/e2e/test_rehearsal.py
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import yaml

from vlfactory.recipe import _extended, load_recipe, shipped_recipes

HERE = shipped_recipes() / "openvlthinker"
REHEARSAL = HERE / "rehearsal.yaml"

# What a CPU rehearsal may change, by key path of the resolved recipe (named lists by their item's name).
ALLOWED = {
    "its own name": r"name",
    "models (the stand-ins) and where they are served": r"(caption|distil|rollout)\.model|eval\.judge\.model|"
                                                        r"loop\.base_model|distil\.(base_url|concurrency)|"
                                                        r"eval\.judge\.(base_url|api_key_env)",
    "the VLM steps' backend: vLLM cannot load a VLM on this CPU": r"(caption|rollout)\.(backend|device|batch_size|"
                                                                 r"max_model_len)",
    "source paths: the fixtures": r"(sources|benchmarks)\[[\w-]+\]\.(path|revision)|loop\.output_dir",
    "sizes": r"[\w.]*sampling\.max_tokens",
    "process counts": r"loop\.launch\.(num_processes|config_file)",
    "trainer files that extend the paper's (checked below)": r"loop\.sft|loop\.grpo_stages\[\w+\]\.config",
}
TRAINER_KEYS = {  # what a rehearsal trainer file may say over the paper's
    "hardware": {"use_cpu", "bf16", "model_init_kwargs", "gradient_checkpointing", "use_vllm"},
    "sizes": {"per_device_train_batch_size", "global_batch_size", "generation_batch_size", "max_completion_length"},
    "step budgets": {"max_steps"},
}


def _flat(value, path: str = "") -> dict[str, object]:
    if isinstance(value, dict):
        return {k: v for key, item in value.items() for k, v in _flat(item, f"{path}.{key}" if path else key).items()}
    if isinstance(value, list) and value and all(isinstance(i, dict) and "name" in i for i in value):
        return {k: v for item in value for k, v in _flat(item, f"{path}[{item['name']}]").items()}
    return {path: value}


def test_the_rehearsal_differs_from_the_gpu_recipe_only_where_a_cpu_must():
    base = _flat(yaml.safe_load((HERE / "iterate.yaml").read_text()))
    ours = _flat(_extended(yaml.safe_load(REHEARSAL.read_text()), REHEARSAL, [REHEARSAL.resolve()]))
    changed = sorted(k for k in base.keys() | ours.keys() if base.get(k, "<absent>") != ours.get(k, "<absent>"))
    unexplained = [k for k in changed if not any(re.fullmatch(p, k) for p in ALLOWED.values())]
    assert not unexplained, f"keys the rehearsal changes for no CPU reason: {unexplained}"
    # and it does change them: every category is used (a rehearsal that changed nothing would not run here)
    assert all(any(re.fullmatch(p, k) for k in changed) for p in ALLOWED.values())

    allowed = set().union(*TRAINER_KEYS.values())
    recipe = load_recipe(REHEARSAL)
    files = [recipe.loop.sft, *(stage.config for stage in recipe.loop.grpo_stages)]
    assert len(files) == 3
    for path in map(Path, files):
        own = yaml.safe_load(path.read_text())
        parent = (path.parent / own.pop("extends")).resolve()
        assert parent == (HERE / parent.name).resolve() and parent.name in ("sft.yaml", "grpo_medium.yaml", "grpo_hard.yaml"), parent
        assert set(own) <= allowed, f"{path.name} changes {sorted(set(own) - allowed)}"


def _ports() -> list[int]:
    urls = load_recipe(REHEARSAL).distil.options.base_url
    return [int(re.search(r":(\d+)/", url).group(1)) for url in urls]


@pytest.fixture(scope="module")
def reasoners(tmp_path_factory):
    """Two `vllm serve` replicas of the stand-in reasoner on the rehearsal's ports, as its recipe says to start them."""
    pytest.importorskip("vllm", reason="vllm is not installed (the `cpu` extra)")
    from vlfactory.models import resolve_model

    model = resolve_model("tiny-r1")
    logs = tmp_path_factory.mktemp("vllm")
    procs = []
    for port in _ports():
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                pytest.fail(f"port {port} is taken: the rehearsal's distil base_url needs it free")
        # --max-num-batched-tokens: every waiting prompt's prefill in one step. vLLM 0.32's CPU worker rewinds a
        # seeded request's generator after a chunked prefill, which its CPU generator cannot do ("CPU Generator does
        # not use offset"): the engine died with 32 seeded requests in flight.
        procs.append(subprocess.Popen(
            [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", model, "--served-model-name",
             "tiny-r1", "--dtype", "float32", "--max-model-len", "2048", "--max-num-batched-tokens", "65536",
             "--enforce-eager", "--port", str(port)],
            stdout=open(logs / f"vllm-{port}.log", "w"), stderr=subprocess.STDOUT,
            env={**os.environ, "VLLM_CPU_KVCACHE_SPACE": os.environ.get("VLLM_CPU_KVCACHE_SPACE", "1")}))
    try:
        deadline = time.monotonic() + 300
        for port, proc in zip(_ports(), procs):
            while True:
                try:
                    urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/models", timeout=2)
                    break
                except OSError:
                    if proc.poll() is not None or time.monotonic() > deadline:
                        pytest.fail(f"vllm on {port} did not start: {(logs / f'vllm-{port}.log').read_text()[-2000:]}")
                    time.sleep(2)
        yield logs
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()


@pytest.mark.slow
def test_the_rehearsal_runs_the_papers_three_iterations_on_a_cpu(reasoners, tmp_path):
    from vlfactory.stores.lake import Lake
    from vlfactory.verify import openvlthinker_reward

    recipe = load_recipe(REHEARSAL)
    cmd = [sys.executable, "-m", "vlfactory.cli", "iterate", "openvlthinker/rehearsal", "--lake", str(tmp_path / "lake")]
    started = time.monotonic()
    res = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=1800,
                         env={**os.environ, "PYTHONUNBUFFERED": "1"})
    took = time.monotonic() - started
    assert res.returncode == 0, res.stderr[-4000:]
    print(f"rehearsal: {took:.0f} s")
    log = res.stderr
    assert "(0 failed requests)" in log and " failed requests)" not in log.replace("(0 failed requests)", "")

    with Lake(tmp_path / "lake", read_only=True) as lake:
        # every source ingested and every benchmark answered, each read through its card's mapping
        counts = dict(lake.query("SELECT source, count(*) FROM problems GROUP BY ALL").fetchall())
        assert recipe.sources and all(counts.get(s.name, 0) > 0 for s in recipe.sources), counts
        assert lake.query("SELECT count(*) FROM rejected WHERE stage = 'ingest'").fetchone()[0] == 0
        answered = dict(lake.query("SELECT benchmark, count(DISTINCT source_id) FROM eval_samples GROUP BY ALL").fetchall())
        assert recipe.benchmarks and all(answered.get(b.name, 0) == 8 for b in recipe.benchmarks), answered

        # every iteration: its SFT, then the medium and hard GRPO stages, each launched and finished
        trainings = lake.query("SELECT iteration, kind, dataset, status FROM trainings ORDER BY started_at").fetchall()
        assert [(i, k, d) for i, k, d, _ in trainings] == [
            (i, k, d) for i in (1, 2, 3) for k, d in
            (("sft", f"sft@iter{i}-sft"), ("grpo", f"rl@iter{i}-rl-medium"), ("grpo", f"rl@iter{i}-rl-hard"))]
        assert {status for *_, status in trainings} == {"ok"}
        logs = list((tmp_path / recipe.loop.output_dir / "logs").glob("*.log"))
        assert len(logs) == 9 and all("accelerate" in p.read_text() or p.stat().st_size for p in logs)

        # every model evaluated on all four benchmarks, with the protocol the paper used for it
        evals = lake.query("SELECT iteration, stage, benchmark, protocol FROM evals").fetchall()
        models = {(0, "base")} | {(i, s) for i in (1, 2, 3) for s in ("sft", "grpo-medium", "grpo")}
        assert {(i, s) for i, s, _, _ in evals} == models
        for iteration, stage, benchmark, protocol in evals:
            expected = ("qwen-boxed" if iteration == 0 else "judge" if benchmark == "mathverse" else "openvlthinker")
            assert protocol == expected, (iteration, stage, benchmark, protocol)
        assert {b for *_, b, _ in evals} == set(recipe.loop.benchmarks)

        # the funnel did real work: some chains and rollouts verified, others not, each with a reason
        verdicts = dict(lake.query("SELECT accepted, count(*) FROM grades GROUP BY ALL").fetchall())
        assert verdicts.get(True, 0) > 0 and verdicts.get(False, 0) > 0
        assert lake.query("SELECT count(*) FROM rejected WHERE stage = 'verify' AND reason IS NULL").fetchone()[0] == 0

        # one answer space: on every multiple-choice sample, the verify stage's verdict is the GRPO reward's
        rows = lake.query("""
            SELECT g.correct, s.completion, p.answer FROM grades g
            JOIN (SELECT rollout_id AS id, completion FROM rollouts UNION ALL SELECT trace_id, completion FROM traces) s
              ON s.id = g.ref_id
            JOIN problems p USING (problem_id)
            WHERE len(p.choices) > 0 AND g.correct IS NOT NULL""").fetchall()
        assert len(rows) >= 20
        rewards = openvlthinker_reward([c for _, c, _ in rows], answer=[a for *_, a in rows])
        assert [bool(c) for c, _, _ in rows] == [r > 0 for r in rewards]


@pytest.mark.slow
def test_the_released_data_recipe_trains_on_the_released_sets(reasoners, tmp_path):
    """recipes/openvlthinker/released.yaml on its fixtures, with the rehearsal's CPU settings: one iteration whose SFT
    data is the released chains (ingested as traces, graded, kept as written) and whose GRPO stages train on the
    released medium and hard sets as they are; iterate.yaml's own sources are not read."""
    from vlfactory.stores.lake import Lake

    cpu = yaml.safe_load(REHEARSAL.read_text())
    fixtures = HERE / "fixtures"
    recipe = {
        "extends": str(HERE / "released.yaml"), "name": "released-rehearsal",
        "sources": [{"name": "sft_iter3", "path": str(fixtures / "sft_iter3")},
                    {"name": "grpo_medium", "path": str(fixtures / "medium_grpo_only")},
                    {"name": "grpo_hard", "path": str(fixtures / "grpo_hard")}],
        "benchmarks": [{**b, "path": str(HERE / b["path"])} for b in cpu["benchmarks"]],
        "rollout": cpu["rollout"], "eval": cpu["eval"],
        "loop": {**{k: cpu["loop"][k] for k in ("base_model", "output_dir", "launch")},
                 "sft": str(HERE / cpu["loop"]["sft"]),
                 "grpo_stages": [{**st, "config": str(HERE / st["config"])} for st in cpu["loop"]["grpo_stages"]]}}
    (tmp_path / "released-rehearsal.yaml").write_text(yaml.safe_dump(recipe, sort_keys=False))
    res = subprocess.run([sys.executable, "-m", "vlfactory.cli", "iterate", "released-rehearsal.yaml", "--lake",
                          str(tmp_path / "lake")], cwd=tmp_path, capture_output=True, text=True, timeout=1200)
    assert res.returncode == 0, res.stderr[-4000:]
    with Lake(tmp_path / "lake", read_only=True) as lake:
        assert dict(lake.query("SELECT source, count(*) FROM problems GROUP BY ALL").fetchall()) == {
            "sft_iter3": 12, "grpo_medium": 12, "grpo_hard": 12}
        (model,) = lake.query("SELECT DISTINCT model FROM traces").fetchall()
        assert re.fullmatch(r"hf:sft_iter3@sha256:[0-9a-f]{16}", model[0]), model   # the released chains, by content
        trainings = lake.query("SELECT kind, dataset, rows, status FROM trainings ORDER BY started_at").fetchall()
        assert [(k, d, s) for k, d, _, s in trainings] == [
            ("sft", "sft@iter1-sft", "ok"), ("grpo", "rl@iter1-rl-medium", "ok"), ("grpo", "rl@iter1-rl-hard", "ok")]
        sft_rows = lake.query("SELECT count(*), count(DISTINCT from_id) FROM sft@iter1-sft WHERE from_table = 'traces'")
        assert trainings[0][2] == sft_rows.fetchone()[0] > 0   # the released chains, as graded and kept
        assert [rows for _, _, rows, _ in trainings[1:]] == [12, 12]   # the released GRPO sets, whole
        assert {s for (s,) in lake.query("SELECT DISTINCT stage FROM evals").fetchall()} == {"base", "sft",
                                                                                               "grpo-medium", "grpo"}
