"""Caption and distil stages through a real HTTP server: caching, failures, crash and resume."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fault_server import FaultServer
from vlfactory.prompts import load_template
from vlfactory.stores.lake import Lake


def recipe_text(url: str, n_problems: int = 12, n: int = 2, extra: str = "", caption: str = "") -> str:
    return f"""
name: stages
sources:
  - {{name: synthetic, format: synthetic, n: {n_problems}, seed: 7}}
{caption}
distil:
  backend: openai
  model: reasoner
  base_url: {url}
  concurrency: 4
  timeout_s: 5
  max_retries: 1
  sampling: {{temperature: 0.7, max_tokens: 64, n: {n}, seed: 1}}
  commit_rows: 4
  commit_seconds: 0.2
{extra}
"""


def prompts_of(lake_dir: Path) -> dict[str, str]:
    """The rendered distil prompt of each problem, as the server will see it."""
    template = load_template("reason")
    with Lake(lake_dir) as lake:
        rows = lake.query("SELECT p.problem_id, question, choices, c.caption FROM problems p "
                          "JOIN captions c USING (problem_id)").fetchall()
    return {r[0]: template.render(caption=r[3], question=r[1], choices=r[2]) for r in rows}


def test_caption_then_distil_is_cached_and_keyed(cli, lake_dir, tmp_path):
    with FaultServer() as server:
        recipe = tmp_path / "r.yaml"
        recipe.write_text(recipe_text(server.url))
        out = cli("run", recipe).output
        assert "caption: 12 samples = 0 cached + 12 generated" in out  # ground-truth captions, no model
        assert "distil: 24 samples = 0 cached + 24 generated" in out
        assert len(server.hits) == 12 and all(h.body["n"] == 2 for h in server.hits)
        with Lake(lake_dir) as lake:
            rows = lake.query("""SELECT t.problem_id, t.sample_index, t.completion, t.reasoning, t.prompt_tokens,
                                        t.completion_tokens, t.finish_reason, t.model, t.prompt_hash, t.temperature,
                                        t.seed, t.request_key, t.run_id, c.origin
                                 FROM traces t JOIN captions c USING (caption_id)""").fetchall()
        assert len(rows) == 24 and len({r[11] for r in rows}) == 24
        assert sorted({r[1] for r in rows}) == [0, 1]
        assert all(r[7] == "reasoner" and r[8] == load_template("reason").hash and r[9] == 0.7 and r[13] == "source"
                   for r in rows)
        assert all(r[4] > 0 and r[5] > 0 and r[6] == "stop" and r[12] for r in rows)
        # the server echoed the prompt: the completion holds this problem's own rendered prompt
        prompts = prompts_of(lake_dir)
        assert all(prompts[r[0]] in r[2] for r in rows)

        # a rerun sends nothing
        out = cli("run", recipe, "--stage", "distil").output
        assert "24 cached + 0 generated" in out and len(server.hits) == 12

        # more samples: only the new ones are asked for, with their own seed
        recipe.write_text(recipe_text(server.url, n=3))
        out = cli("run", recipe, "--stage", "distil").output
        assert "36 samples = 24 cached + 12 generated" in out
        new = server.hits[12:]
        assert len(new) == 12 and all(h.body["n"] == 1 and h.body["seed"] == 1 + 2 for h in new)

        # one sampling setting changed: everything under it is regenerated, once
        recipe.write_text(recipe_text(server.url, n=3).replace("temperature: 0.7", "temperature: 0.9"))
        out = cli("run", recipe, "--stage", "distil", "--limit", "5").output
        assert "15 samples = 0 cached + 15 generated" in out
        with Lake(lake_dir) as lake:
            assert lake.count("traces") == 36 + 15
            assert lake.query("SELECT count(*) - count(DISTINCT request_key) FROM traces").fetchone()[0] == 0


def test_model_captions_are_rows_of_their_request(cli, lake_dir, tmp_path):
    """The caption stage's declaration through the request loop: each sample of the image and the captioning
    prompt is a captions row of its problem and image, keyed by its request; a rerun sends nothing."""
    caption = """caption:
  backend: openai
  model: captioner
  base_url: {url}
  overwrite: true
  sampling: {{max_tokens: 32, n: 2}}"""
    with FaultServer() as server:
        recipe = tmp_path / "r.yaml"
        recipe.write_text(recipe_text(server.url, n_problems=3, caption=caption.format(url=server.url)))
        cli("run", recipe, "--stage", "ingest")
        out = cli("run", recipe, "--stage", "caption").output
        assert "caption: 6 samples = 0 cached + 6 generated" in out, out
        text = load_template("caption").render()
        assert len(server.hits) == 3 and all(h.prompt == text for h in server.hits)
        assert all(h.body["messages"][0]["content"][0]["type"] == "image_url" for h in server.hits)
        with Lake(lake_dir) as lake:
            rows = lake.query("""SELECT c.caption_id, c.request_key, c.image_id = p.image_id, c.model, c.origin,
                                        c.caption, c.prompt_hash, c.prompt_tokens, c.completion_tokens, c.finish_reason
                                 FROM captions c JOIN problems p USING (problem_id)
                                 WHERE c.origin = 'model'""").fetchall()
        assert len(rows) == 6 and len({r[1] for r in rows}) == 6
        assert all(r[0] == r[1][:16] and r[2] and r[3] == "captioner" and r[6] == load_template("caption").hash
                   and r[7] > 0 and r[8] > 0 and r[9] == "stop" for r in rows)
        assert sorted(r[5] for r in rows) == sorted(f"echo {i}: {text}" for i in (0, 1) for _ in range(3))
        assert "6 cached + 0 generated" in cli("run", recipe, "--stage", "caption").output and len(server.hits) == 3


def test_failed_requests_become_rejected_rows_and_are_retried(cli, lake_dir, tmp_path):
    with FaultServer() as server:
        recipe = tmp_path / "r.yaml"
        recipe.write_text(recipe_text(server.url))
        cli("run", recipe, "--stage", "ingest")
        cli("run", recipe, "--stage", "caption")
        prompts = prompts_of(lake_dir)
        bad = sorted(prompts)[:3]
        for pid in bad:
            server.plan[prompts[pid]] = ["500"] * 10
        server.plan[prompts[sorted(prompts)[3]]] = ["429:0", "ok"]  # recovers within its retries
        res = cli("run", recipe, "--stage", "distil")
        assert "24 samples = 0 cached + 18 generated + 6 missing (3 failed requests)" in res.output
        assert "3 requests failed" in res.output
        with Lake(lake_dir) as lake:
            rejected = lake.query("SELECT detail FROM rejected WHERE stage = 'distil' AND reason = 'request_failed'"
                                  ).fetchall()
            assert len(rejected) == 3 and all("HTTP 500" in r[0] for r in rejected)
            assert {r[0].split(":")[0] for r in rejected} == set(bad)
        # the server recovers: the rerun asks for exactly the failed prompts
        server.plan.clear()
        before = len(server.hits)
        res = cli("run", recipe, "--stage", "distil")
        assert "24 samples = 18 cached + 6 generated + 0 missing" in res.output
        assert sorted(h.prompt for h in server.hits[before:]) == sorted(prompts[p] for p in bad)


@pytest.mark.slow
def test_kill_9_mid_stage_then_rerun_equals_uninterrupted(tmp_path):
    env = {**os.environ, "VLFACTORY_LAKE": ""}
    cmd = [sys.executable, "-m", "vlfactory.cli"]

    def run(lake: Path, recipe: Path, *args: str, **kw) -> subprocess.Popen:
        return subprocess.Popen([*cmd, "run", str(recipe), "--lake", str(lake), *args], env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **kw)

    with FaultServer(default="slow:0.15") as server:
        recipe = tmp_path / "r.yaml"
        recipe.write_text(recipe_text(server.url, n_problems=40).replace("concurrency: 4", "concurrency: 2"))
        # the reference: one uninterrupted run
        assert run(tmp_path / "ref", recipe).wait(120) == 0
        reference_hits = len(server.hits)
        # the same run, killed with SIGKILL once about half the requests were answered
        server.hits.clear()
        proc = run(tmp_path / "lake", recipe)
        deadline = time.monotonic() + 60
        while len(server.hits) < 20 and time.monotonic() < deadline:
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        first = len(server.hits)
        with Lake(tmp_path / "lake") as lake:
            kept = lake.count("traces")
        assert 0 < kept < 80  # some batches committed, not all
        # the rerun finishes the job and sends only what was not committed
        out = run(tmp_path / "lake", recipe).communicate(timeout=120)[0]
        assert "samples" in out
        resent = len(server.hits) - first
        assert resent == (80 - kept) // 2, out
        with Lake(tmp_path / "lake") as lake, Lake(tmp_path / "ref") as ref:
            keys = sorted(r[0] for r in lake.query("SELECT request_key FROM traces").fetchall())
            ref_keys = sorted(r[0] for r in ref.query("SELECT request_key FROM traces").fetchall())
        assert keys == ref_keys and len(set(keys)) == len(keys) == 80
        assert reference_hits == 40


def test_two_problems_with_the_same_request_are_sent_once(cli, lake_dir, tmp_path):
    """Two problems whose distil prompts are identical (same caption, same question; other answers) make one
    request: the second is reported as skipped, not a crash."""
    data = tmp_path / "twins.jsonl"
    data.write_text("".join(json.dumps({"id": i, "question": "How many bars?", "answer": str(3 + i),
                                        "caption": "Three bars."}) + "\n" for i in range(2)))
    source = (f"  - {{name: twins, format: jsonl, path: {data}, columns: {{question: question, answer: answer, "
              f"caption: caption, id: id}}}}")
    with FaultServer() as server:
        recipe = tmp_path / "r.yaml"
        recipe.write_text(recipe_text(server.url).replace("  - {name: synthetic, format: synthetic, n: 12, seed: 7}",
                                                          source))
        cli("run", recipe, "--stage", "ingest")
        with Lake(lake_dir) as lake:
            assert lake.count("problems") == 2
        out = " ".join(cli("run", recipe, "--stage", "caption", "--stage", "distil").output.split())
        assert "skipped 1 (same request as another problem)" in out and len(server.hits) == 1, out


def test_another_writer_between_probe_and_commit_adds_no_duplicate(cli, lake_dir, tmp_path):
    """A stage's commits skip the key check while only the stage itself has written keys since its probe
    (the table's write guard says so); a row committed by another writer in between must still be seen."""
    import pyarrow as pa

    from vlfactory.stages.generation import prompt_key, sample_key
    from vlfactory.recipe import load_recipe
    from vlfactory.stages import Scope, run_stage
    from vlfactory.stores import schema

    with FaultServer() as server:
        recipe_path = tmp_path / "r.yaml"
        recipe_path.write_text(recipe_text(server.url))
        cli("run", recipe_path, "--stage", "ingest")
        cli("run", recipe_path, "--stage", "caption")
        recipe = load_recipe(recipe_path)
        cfg = recipe.stage_config("distil")
        template = load_template("reason")
        late = sorted(prompts_of(lake_dir).items())[-6:]  # half the problems' samples come from the other writer
        keys = {pid: [sample_key(prompt_key("reasoner", cfg.sampling, template.hash,
                                            [{"role": "user", "content": text}]), i) for i in range(2)]
                for pid, text in late}
        other_rows = pa.Table.from_pylist([
            {"trace_id": k[:16], "problem_id": pid, "sample_index": i, "request_key": k, "model": "reasoner",
             "completion": "from the other writer"} for pid, ks in keys.items() for i, k in enumerate(ks)],
            schema=schema.TRACES)
        calls = []

        def other_writer(result, n):  # after the stage's probe, before its first commit
            if not calls:
                with Lake(lake_dir) as other:
                    calls.append(other.write("another writer", lambda: other.insert("traces", other_rows,
                                                                                      key="request_key")))

        with Lake(lake_dir) as lake:
            lake.start_run("test")
            result = run_stage(lake, "distil", cfg, Scope.of(recipe), other_writer)
            lake.end_run("ok")
            counts = lake.query("SELECT count(*), count(DISTINCT request_key), "
                                "count(*) FILTER (completion = 'from the other writer') FROM traces").fetchone()
        assert calls == [12] and result.written == 12 and counts == (24, 24, 12)


def test_request_keys_are_the_hash_of_their_json_text():
    """Keys are computed without json.dumps per key, and must stay what lakes already hold:
    sha256 of the JSON text of ("prompt", identity, template hash, messages, settings)."""
    import hashlib

    from vlfactory.backends import Sampling
    from vlfactory.stages.generation import image_part, prompt_key, sample_key

    def by_definition(*parts) -> str:
        return hashlib.sha256(json.dumps(parts, sort_keys=True, ensure_ascii=False, default=str).encode()).hexdigest()

    for sampling in (Sampling(), Sampling(n=4, temperature=0.6, top_p=0.9, max_tokens=64, seed=3, stop=["</a>"])):
        settings = {"temperature": sampling.temperature, "top_p": sampling.top_p, "max_tokens": sampling.max_tokens,
                    "seed": sampling.seed, "stop": list(sampling.stop)}
        for messages, as_keyed in (
                ([{"role": "user", "content": 'é "quoted"\n\t\u2028 ☃ \x01'}], None),
                ([{"role": "system", "content": "s"}, {"role": "user", "content": "u"}], None),
                ([{"role": "user", "content": [image_part("img1", b"bytes"), {"type": "text", "text": "t"}]}],
                 [{"role": "user", "content": [{"type": "image", "image_id": "img1"}, {"type": "text", "text": "t"}]}])):
            key = prompt_key("modél", sampling, "th", messages)
            assert key == by_definition("prompt", "modél", "th", as_keyed or messages, settings)
            assert [sample_key(key, i) for i in range(3)] == [by_definition("sample", key, i) for i in range(3)]
