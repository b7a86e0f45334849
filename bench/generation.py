"""Generation throughput: the product's request loop against a server with a known ceiling.

bench/slot_server.py runs in its own process and answers every request after
`latency` seconds with at most `slots` in service, so no client can beat
slots / latency requests per second. The same number of requests goes
through it from each client, in this run:

- the headline: `vlfactory.stages.generation.RequestLoop` running the distil
  stage's declaration (`vlfactory.stages.distil.Distil`), on a fresh local lake:
  request keys, the cache probe, the `openai` backend, the distil stage's
  `traces` rows, and DuckLake commits every
  `commit_rows` rows / `commit_seconds` (catalog writes included). Then the
  lake is checked (exactly `requests` traces rows, distinct request keys, no
  rejected rows) and the same prompts run again, which must send nothing;
- the backend alone, its results written to a plain DuckDB file in batches;
- a bare asyncio.gather loop over the `openai` AsyncOpenAI client (semaphore of `slots`);
- the same bare loop over a plain aiohttp session.

The figure is each one's requests/s divided by slots / latency (target for
the request loop: >= 0.9 at 64 slots and 200 ms), with the client process's CPU per
request (all its threads), which is what limits it. After the headline run,
where the caller's thread spent its time (`--profile` adds cProfile's top
functions for it).

    python bench/generation.py [--requests 5000 --slots 64 --latency 0.2] [--profile] [--only]

(`--only`: the headline run alone.)
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
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
CAPTION = ("A worksheet with a single arithmetic exercise, number {i}, printed in black on white paper, "
           "with a box for the answer below it.")


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


class Clock:
    """Seconds the caller's thread spends in each part of the request loop, by wrapping the parts."""

    def __init__(self):
        self.parts: dict[str, float] = {}

    def add(self, part: str, seconds: float) -> None:
        self.parts[part] = self.parts.get(part, 0.0) + seconds

    def wrap(self, part: str, fn):
        def timed(*a, **k):
            t = time.perf_counter()
            try:
                return fn(*a, **k)
            finally:
                self.add(part, time.perf_counter() - t)
        return timed

    def wrap_cm(self, part: str, cm):
        @contextlib.contextmanager
        def timed(*a, **k):
            t = time.perf_counter()
            with cm(*a, **k) as v:
                yield v
            self.add(part, time.perf_counter() - t)
        return timed

    def wrap_backend(self, backend):
        """Split the time inside backend.generate: producing requests, building bodies, waiting."""
        backend._body = self.wrap("request bodies (json.dumps)", backend._body)
        backend._start = self.wrap("backend start (loop thread, session)", backend._start)  # inside generate
        backend.close = self.wrap("backend close", backend.close)
        inner = backend.generate

        def generate(reqs):
            it, t_pull = iter(reqs), [0.0]

            def pull():  # the loop's request generator: prompts, keys, cache probe
                while True:
                    t = time.perf_counter()
                    r = next(it, _END)
                    t_pull[0] += time.perf_counter() - t
                    if r is _END:
                        return
                    yield r

            gen, t_gen = inner(pull()), 0.0
            try:
                while True:
                    t = time.perf_counter()
                    r = next(gen, _END)
                    t_gen += time.perf_counter() - t
                    if r is _END:
                        return
                    yield r
            finally:
                self.add("backend.generate total", t_gen)
                self.add("requests: keys, cache probe", t_pull[0])
        backend.generate = generate
        return backend


_END = object()


def run_product(url: str, n: int, slots: int, root: Path, profile: bool = False):
    """The distil stage's request loop on a fresh lake, then the checks and the rerun: (elapsed, CPU seconds,
    report lines)."""
    import cProfile
    import io
    import pstats

    import vlfactory.stages.generation as generation
    from vlfactory.backends import Sampling
    from vlfactory.backends.openai_compat import OpenAIConfig
    from vlfactory.recipe import DistilConfig
    from vlfactory.stages.distil import Distil
    from vlfactory.stages.generation import make_backend_for
    from vlfactory.stores.lake import Lake

    lake = Lake(root / "lake")
    lake.start_run("bench generation")
    stage = DistilConfig(model="slot", backend="openai", sampling=Sampling(max_tokens=64),
                         options=OpenAIConfig(model="slot", base_url=url, concurrency=slots))
    distil = Distil(stage)
    # (problem_id, question, choices, caption_id, caption), as the distil stage reads them: one distinct problem each
    problems = [(f"p{i:06d}", PROMPT.format(i=i), None, f"c{i:06d}", CAPTION.format(i=i)) for i in range(n)]

    def backend_factory(clock=None):
        backend = make_backend_for(stage)
        return clock.wrap_backend(backend) if clock else backend

    # The timed run, its parts clocked by wrapping them (a few us per request in all).
    clock = Clock()
    real = {"existing": lake.existing, "transaction": lake.transaction, "sha": generation.sha, "row": distil.row}
    lake.existing = clock.wrap("lake.existing (cache probe)", lake.existing)
    lake.transaction = clock.wrap_cm("DuckLake commit (insert + COMMIT)", lake.transaction)
    generation.sha = clock.wrap("sha256 keys", generation.sha)
    distil.row = clock.wrap("the stage's rows (Distil.row)", distil.row)
    prof = cProfile.Profile() if profile else None
    try:
        if prof:
            prof.enable()  # cProfile follows the thread that enabled it: the caller's
        cpu0, t0 = time.process_time(), time.perf_counter()
        stats = distil.run(lake, problems, backend_factory=lambda: backend_factory(clock))
        elapsed, cpu = time.perf_counter() - t0, time.process_time() - cpu0
        if prof:
            prof.disable()
    finally:
        lake.existing, lake.transaction, generation.sha = real["existing"], real["transaction"], real["sha"]
        distil.row = real["row"]

    rows, keys, traces_ids, answers = lake.con.execute(
        "SELECT count(*), count(DISTINCT request_key), count(DISTINCT trace_id), count(answer) "
        "FROM lake.traces").fetchone()
    rejected = lake.count("rejected")
    commits = lake.con.execute("SELECT count(*) FROM lake.snapshots() WHERE commit_message LIKE 'distil:%'").fetchone()[0]
    assert stats.written == n and stats.failed == 0, stats.line()
    assert rows == keys == traces_ids == n and rejected == 0, f"{rows} rows, {keys} keys, {rejected} rejected"

    t1 = time.perf_counter()
    again = distil.run(lake, problems, backend_factory=backend_factory)
    rerun = time.perf_counter() - t1
    assert again.requests == 0 and again.cached == n and lake.count("traces") == n, again.line()
    lake.close()

    lines = [f"  lake check: {rows} traces rows, {keys} distinct request keys, {rejected} rejected rows, "
             f"{commits} catalog commits; {answers} answers extracted",
             f"  rerun on the same lake: {again.cached} cached, {again.requests} requests sent, {rerun:.2f} s"]
    parts = dict(clock.parts)
    gen = parts.pop("backend.generate total", 0.0)
    pulled = parts.pop("requests: keys, cache probe", 0.0)  # the requests pulled inside generate
    # backend.generate's own time is building bodies (clocked) and waiting on its result queue;
    # the rest of the caller's time is outside it.
    parts["waiting for results (idle)"] = gen - pulled - parts.get("request bodies (json.dumps)", 0.0) - \
        parts.get("backend start (loop thread, session)", 0.0)
    parts["other: prompts, Arrow from_pylist, bookkeeping"] = elapsed - sum(parts.values())
    lines.append(f"  caller thread, of the {elapsed:.2f} s request loop wall time:")
    for part, sec in sorted(parts.items(), key=lambda kv: -kv[1]):
        lines.append(f"    {part:46s} {sec:7.3f} s {sec / n * 1e6:7.0f} us/request")
    if prof:
        out = io.StringIO()
        pstats.Stats(prof, stream=out).sort_stats("tottime").print_stats(25)
        lines.append(out.getvalue())
    return elapsed, cpu, lines


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
    p.add_argument("--profile", action="store_true", help="cProfile the caller's thread during the request loop")
    p.add_argument("--only", action="store_true", help="the request loop alone, without the three baselines")
    args = p.parse_args()
    import aiohttp  # noqa: F401  (imports outside the timed runs)
    import duckdb  # noqa: F401
    import openai  # noqa: F401

    import vlfactory.stages.distil  # noqa: F401
    import vlfactory.stages.generation  # noqa: F401

    ideal = args.slots / args.latency
    tmp = Path(tempfile.mkdtemp(prefix="bench-generation-"))
    proc, port = start_server(args.slots, args.latency)
    url = f"http://127.0.0.1:{port}/v1"
    runs = {"request loop + DuckLake (distil)": lambda: run_product(url, args.requests, args.slots, tmp, args.profile)}
    if not args.only:
        runs |= {
            "openai backend + DuckDB writer": lambda: run_backend(url, args.requests, args.slots, tmp / "bench.duckdb"),
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
            out = run()
            cpu, srv = time.process_time() - cpu0, cpu_seconds(proc.pid) - srv0
            lines: list[str] = []
            if isinstance(out, tuple):  # run_product: CPU of the timed part only, not the checks and rerun
                out, cpu, lines = out
            elapsed = out
            rate = args.requests / elapsed
            print(f"{name:32s} {elapsed:8.2f} {rate:7.1f} {rate / ideal:6.3f} "
                  f"{cpu / args.requests * 1e6:12.0f} us {srv / elapsed:10.0%}", flush=True)
            if lines:
                print("\n".join(lines), flush=True)
    finally:
        proc.terminate()
        proc.wait(10)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
