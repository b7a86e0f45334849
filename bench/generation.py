"""Generation throughput: the `openai` backend against a server with a known ceiling.

bench/slot_server.py runs in its own process and answers every request after
`latency` seconds with at most `slots` in service, so no client can beat
slots / latency requests per second. Three clients drive the same number of
requests through it, in this run:

- the backend, with the caller doing what a stage does: collect results into
  Arrow tables and write them to a DuckDB file in batches of 500;
- a bare asyncio.gather loop over the `openai` AsyncOpenAI client (semaphore of `slots`);
- the same bare loop over a plain aiohttp session.

The figure is each one's requests/s divided by slots / latency (target for the
backend: >= 0.9), with the client's CPU per request, which is what limits it.

    python bench/generation.py [--requests 5000 --slots 64 --latency 0.2]
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
PROMPT = "What is {i} + {i}? Answer with a number."


def start_server(slots: int, latency: float) -> tuple[subprocess.Popen, int]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, str(HERE / "slot_server.py"), "--port", str(port),
                             "--slots", str(slots), "--latency", str(latency)])
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return proc, port
        time.sleep(0.05)
    proc.kill()
    raise RuntimeError("slot server did not start")


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a process so far (Linux)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run_backend(url: str, n: int, slots: int, db: Path) -> float:
    import duckdb
    import pyarrow as pa

    from vlfactory.backends import Request, Sampling, make_backend

    con = duckdb.connect(str(db))
    con.execute("CREATE OR REPLACE TABLE results (key VARCHAR, text VARCHAR, completion_tokens INTEGER, "
                "finish_reason VARCHAR, prompt_tokens INTEGER, latency_s DOUBLE, error VARCHAR, "
                "attempts INTEGER, endpoint VARCHAR)")
    backend = make_backend({"backend": "openai", "model": "slot", "base_url": url, "concurrency": slots})
    sampling = Sampling(max_tokens=64)
    cols: dict[str, list] = {k: [] for k in ("key", "text", "completion_tokens", "finish_reason", "prompt_tokens",
                                             "latency_s", "error", "attempts", "endpoint")}

    def flush():
        con.register("batch", pa.table(cols))
        con.execute("INSERT INTO results SELECT * FROM batch")
        con.unregister("batch")
        for v in cols.values():
            v.clear()

    t0 = time.perf_counter()
    reqs = (Request(f"r{i}", [{"role": "user", "content": PROMPT.format(i=i)}], sampling) for i in range(n))
    for r in backend.generate(reqs):
        c = r.completions[0] if r.completions else None
        cols["key"].append(r.request.key)
        cols["text"].append(c and c.text)
        cols["completion_tokens"].append(c and c.completion_tokens)
        cols["finish_reason"].append(c and c.finish_reason)
        cols["prompt_tokens"].append(r.prompt_tokens)
        cols["latency_s"].append(r.latency_s)
        cols["error"].append(r.error)
        cols["attempts"].append(r.attempts)
        cols["endpoint"].append(r.endpoint)
        if len(cols["key"]) >= 500:
            flush()
    if cols["key"]:
        flush()
    elapsed = time.perf_counter() - t0
    backend.close()
    rows, errors = con.execute("SELECT count(DISTINCT key), count(error) FROM results").fetchone()
    con.close()
    assert rows == n and errors == 0, f"{rows} rows stored, {errors} errors"
    return elapsed


async def run_openai(url: str, n: int, slots: int) -> float:
    from openai import AsyncOpenAI

    client = AsyncOpenAI(base_url=url, api_key="EMPTY")
    sem = asyncio.Semaphore(slots)

    async def one(i: int):
        async with sem:
            r = await client.chat.completions.create(
                model="slot", messages=[{"role": "user", "content": PROMPT.format(i=i)}], max_tokens=64,
                temperature=0.0, seed=0)
            return r.choices[0].message.content

    t0 = time.perf_counter()
    out = await asyncio.gather(*(one(i) for i in range(n)))
    elapsed = time.perf_counter() - t0
    await client.close()
    assert len(out) == n and all(out)
    return elapsed


async def run_aiohttp(url: str, n: int, slots: int) -> float:
    import aiohttp

    sem = asyncio.Semaphore(slots)
    async with aiohttp.ClientSession(headers={"Authorization": "Bearer EMPTY"}) as session:
        async def one(i: int):
            body = {"model": "slot", "messages": [{"role": "user", "content": PROMPT.format(i=i)}],
                    "max_tokens": 64, "temperature": 0.0, "seed": 0}
            async with sem:
                async with session.post(url + "/chat/completions", json=body) as resp:
                    return (await resp.json())["choices"][0]["message"]["content"]

        t0 = time.perf_counter()
        out = await asyncio.gather(*(one(i) for i in range(n)))
        elapsed = time.perf_counter() - t0
    assert len(out) == n and all(out)
    return elapsed


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--requests", type=int, default=5000)
    p.add_argument("--slots", type=int, default=64, help="server slots = client concurrency")
    p.add_argument("--latency", type=float, default=0.2, help="seconds of service per request")
    args = p.parse_args()
    import aiohttp  # noqa: F401  (imports outside the timed runs)
    import duckdb  # noqa: F401
    import openai  # noqa: F401

    ideal = args.slots / args.latency
    db = Path(tempfile.mkdtemp()) / "bench.duckdb"
    proc, port = start_server(args.slots, args.latency)
    url = f"http://127.0.0.1:{port}/v1"
    runs = {
        "openai backend + DuckDB writer": lambda: run_backend(url, args.requests, args.slots, db),
        "bare AsyncOpenAI loop": lambda: asyncio.run(run_openai(url, args.requests, args.slots)),
        "bare aiohttp loop": lambda: asyncio.run(run_aiohttp(url, args.requests, args.slots)),
    }
    # The last wave is partly empty, so even a free client cannot quite reach 1.
    best = args.requests / (math.ceil(args.requests / args.slots) * args.latency) / ideal
    print(f"ideal {ideal:.0f} req/s ({args.slots} slots / {args.latency:g} s); {args.requests} requests per client "
          f"(best possible ratio {best:.3f}); {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}")
    print(f"{'client':32s} {'seconds':>8s} {'req/s':>7s} {'ratio':>6s} {'client CPU/req':>15s} {'server CPU':>11s}")
    try:
        for name, run in runs.items():
            cpu0, srv0 = time.process_time(), cpu_seconds(proc.pid)
            elapsed = run()
            cpu, srv = time.process_time() - cpu0, cpu_seconds(proc.pid) - srv0
            rate = args.requests / elapsed
            print(f"{name:32s} {elapsed:8.2f} {rate:7.1f} {rate / ideal:6.3f} "
                  f"{cpu / args.requests * 1e6:12.0f} us {srv / elapsed:10.0%}", flush=True)
    finally:
        proc.terminate()
        proc.wait(10)
        shutil.rmtree(db.parent, ignore_errors=True)

if __name__ == "__main__":
    main()
