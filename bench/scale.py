"""Per-row cost as the lake grows: ingest -> caption -> distil -> verify -> sft at two sizes, through the stages a user runs.

The source is a JSON Lines file of N distinct problems over a few dozen real PNG
images, with a ground-truth caption each (so caption is the no-model path); distil
asks a fast local OpenAI-compatible server (bench/slot_server.py, its own
process) for `n` samples per problem; verify grades every trace with the real
verifier; sft builds the set. For each size it prints seconds per stage, the
cost per 1,000 rows at the start and at the end of each stage (from the
progress callback: the first and the last 15% of the stage's rows), catalog
size, Parquet file and snapshot counts, query latency, and an idle rerun of
distil (nothing to send). The figure: per-row cost at the end of distil over
its cost at the start (flat = 1.0; target <= 1.5), and each stage's time at the
large size over its time at the small one (target <= 12x for 10x the rows).
With --report, each lake's report too: the latest version's statistics
(reports/stats.py version_stats, its slowest queries) and `vlfactory report` as a
user runs it (aim: well under a minute at 1M traces).

What the server writes: bench/slot_server.py answers every request with the same
one-line completion, "The answer is 42.", so distil stores and verify grades that
line, not a reasoning chain. The absolute costs (seconds, ms per 1,000 rows) are
for that completion: a real chain of a few hundred tokens makes every row dearer
to store and to grade (bench/verify.py measures grading on real-shaped pairs).
What this bench is for are its ratios within one run (end over start, large size
over small), which measure how cost grows with the number of rows.

    python bench/scale.py                      # 25k and 250k problems, n=4 (1M traces; ~15-20 min on 2 cores)
    python bench/scale.py --sizes 5000 25000   # quicker
    python bench/scale.py --keep /tmp/scale    # keep the lakes (then profile a rerun on /tmp/scale/n250000/lake)
    python bench/scale.py --report             # and time each lake's report
    python bench/scale.py --report-on /tmp/scale/n250000/lake   # time the report of a kept lake, build nothing
"""

from __future__ import annotations

import argparse
import io
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def images(folder: Path, k: int = 32) -> list[str]:
    from PIL import Image, ImageDraw

    folder.mkdir(parents=True, exist_ok=True)
    names = []
    for i in range(k):
        im = Image.new("RGB", (64, 64), (255, 255, 255))
        ImageDraw.Draw(im).rectangle([4 * (i % 8), 4 * (i // 8), 40 + i % 8, 40], fill=(i * 7 % 255, 90, 160))
        buf = io.BytesIO()
        im.save(buf, format="PNG")
        (folder / f"{i}.png").write_bytes(buf.getvalue())
        names.append(f"{i}.png")
    return names


def source(folder: Path, n: int) -> Path:
    pngs = images(folder / "img")
    path = folder / "problems.jsonl"
    with path.open("w") as f:
        for i in range(n):
            a, b = i % 97, i // 97
            f.write(json.dumps({"id": i, "question": f"What is {a} plus {b}? (item {i})", "answer": str(a + b),
                                "image": f"img/{pngs[i % len(pngs)]}", "caption": f"A card showing {a} and {b}."})
                    + "\n")
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise TimeoutError(f"slot server not up on {port}")


class Clock:
    """Rows done over time, from a stage's progress callback: cost per 1k rows at the start and the end."""

    def __init__(self):
        self.points: list[tuple[float, int]] = []
        self.done = 0
        self.t0 = time.perf_counter()

    def __call__(self, result, n: int) -> None:
        self.done += n
        self.points.append((time.perf_counter() - self.t0, self.done))

    def cost(self) -> tuple[float | None, float | None]:
        """Seconds per 1,000 rows over the first and the last 15% of the rows."""
        if len(self.points) < 4:
            return None, None
        total = self.points[-1][1]

        def rate(lo: float, hi: float) -> float | None:
            inside = [(t, d) for t, d in self.points if lo * total <= d <= hi * total]
            if len(inside) < 2 or inside[-1][1] == inside[0][1]:
                return None
            (t1, d1), (t2, d2) = inside[0], inside[-1]
            return 1000 * (t2 - t1) / (d2 - d1)
        return rate(0.0, 0.15), rate(0.85, 1.0)


def lake_stats(lake) -> dict:
    data = Path(lake.data_path()) if "://" not in lake.data_path() else None
    files = list(data.rglob("*.parquet")) if data else []
    catalog = lake.spec.catalog_file
    size = sum(f.stat().st_size for f in files) + (catalog.stat().st_size if catalog and catalog.exists() else 0)
    t0 = time.perf_counter()
    lake.query("SELECT p.source, count(*), avg(g.words) FROM traces t JOIN problems p USING (problem_id) "
               "JOIN grades g ON g.ref_id = t.trace_id GROUP BY ALL").fetchall()
    query = time.perf_counter() - t0
    return {"snapshots": len(lake.snapshots()), "files": len(files), "size_mb": size / 2**20, "query_s": query}


def run_size(n: int, samples: int, url: str, tmp: Path) -> dict:
    from vlfactory.recipe import load_recipe
    from vlfactory.stages import Scope, run_stage
    from vlfactory.stores.lake import Lake

    folder = tmp / f"n{n}"
    data = source(folder, n)
    recipe_path = folder / "r.yaml"
    recipe_path.write_text(f"""
sources:
  - {{name: scale, format: jsonl, path: {data}, columns: {{question: question, answer: answer, image: image,
      caption: caption, id: id}}}}
distil:
  backend: openai
  model: slot
  base_url: {url}
  concurrency: 128
  max_retries: 2
  sampling: {{max_tokens: 64, n: {samples}}}
verify: {{forbidden_phrases: []}}
sft: {{cleaned: false}}
""")
    recipe = load_recipe(recipe_path)
    scope = Scope.of(recipe)
    out = {"problems": n, "stages": {}}
    with Lake(folder / "lake") as lake:
        lake.start_run("bench scale")
        for name in ("ingest", "caption", "distil", "verify", "sft"):
            clock = Clock()
            t0 = time.perf_counter()
            result = run_stage(lake, name, recipe.stage_config(name), scope, clock)
            seconds = time.perf_counter() - t0
            start, end = clock.cost()
            out["stages"][name] = {"seconds": seconds, "rows": result.written, "start_ms_per_1k": start,
                                   "end_ms_per_1k": end}
            print(f"  {n:>7} {name:<8} {seconds:8.1f} s  {result.written:>8} rows  per 1k rows: "
                  f"start {_ms(start)}  end {_ms(end)}", flush=True)
        t0 = time.perf_counter()
        again = run_stage(lake, "distil", recipe.stage_config("distil"), scope)
        out["idle_rerun_s"] = time.perf_counter() - t0
        assert again.requests == 0, again.line()
        out |= lake_stats(lake)
        lake.end_run("ok")
    print(f"  {n:>7} idle distil rerun {out['idle_rerun_s']:.1f} s; {out['snapshots']} snapshots, {out['files']} "
          f"files, {out['size_mb']:.0f} MB, query {out['query_s']:.2f} s", flush=True)
    return out


def time_report(path: Path, slowest: int = 5) -> dict:
    """Seconds of the latest version's statistics (and its slowest queries, each with the rows it fetched), then
    of `vlfactory report` on the lake as a user runs it, in its own process."""
    from vlfactory.reports import evals, stats
    from vlfactory.stores.lake import Lake

    timed, read = [], stats.rows

    def rows(lake, sql, params=None):
        t0 = time.perf_counter()
        out = read(lake, sql, params)
        timed.append((time.perf_counter() - t0, len(out), " ".join(sql.split())[:90]))
        return out

    stats.rows = evals.rows = rows  # this process only: timing each query of version_stats
    try:
        with Lake(path, read_only=True) as lake, lake.one_read():
            t0 = time.perf_counter()
            stats.version_stats(lake, "latest")
            seconds = time.perf_counter() - t0
    finally:
        stats.rows = evals.rows = read
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-m", "vlfactory.cli", "report", "--lake", str(path), "--out",
                        f"{tmp}/report.html"], check=True, stdout=subprocess.DEVNULL)
        report = time.perf_counter() - t0
    print(f"  report of {path}: version_stats {seconds:.2f} s ({len(timed)} queries), vlfactory report {report:.2f} s "
          "wall; slowest queries:", flush=True)
    for q_s, n, sql in sorted(timed, reverse=True)[:slowest]:
        print(f"    {q_s:6.2f} s {n:>8} rows  {sql}", flush=True)
    return {"version_stats_s": seconds, "report_s": report}


def _ms(seconds_per_1k: float | None) -> str:
    return "   -   " if seconds_per_1k is None else f"{1000 * seconds_per_1k:6.0f} ms"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[25_000, 250_000])
    ap.add_argument("--samples", type=int, default=4, help="distil samples per problem")
    ap.add_argument("--keep", type=Path, help="build the lakes in this folder and keep them (to profile a rerun)")
    ap.add_argument("--report", action="store_true", help="time each lake's report (version_stats, vlfactory report)")
    ap.add_argument("--report-on", type=Path, metavar="LAKE", help="only time the report of this lake")
    args = ap.parse_args()
    if args.report_on:
        print(json.dumps({k: round(v, 2) for k, v in time_report(args.report_on).items()}))
        return
    port = free_port()
    server = subprocess.Popen([sys.executable, str(REPO / "bench" / "slot_server.py"), "--port", str(port),
                               "--slots", "256", "--latency", "0.0"], stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    try:
        wait_port(port)
        with tempfile.TemporaryDirectory() as tmp:
            folder = args.keep or Path(tmp)
            results = [run_size(n, args.samples, f"http://127.0.0.1:{port}/v1", folder) for n in args.sizes]
            if args.report:
                server.terminate()  # nothing left to ask it; the report has both cores
                for n, r in zip(args.sizes, results):
                    r |= time_report(folder / f"n{n}" / "lake")
    finally:
        server.terminate()
        server.wait(10)
    small, large = results[0], results[-1]
    factor = large["problems"] / small["problems"]
    print(f"\n{'stage':<8} {'x' + format(factor, 'g') + ' rows: time ratio':>24}   (target <= {1.2 * factor:g}x)")
    for name, st in large["stages"].items():
        print(f"{name:<8} {st['seconds'] / max(small['stages'][name]['seconds'], 1e-9):>24.1f}x")
    d = large["stages"]["distil"]
    flat = d["end_ms_per_1k"] / d["start_ms_per_1k"] if d["start_ms_per_1k"] and d["end_ms_per_1k"] else None
    print(json.dumps({"distil_cost_end_over_start": flat and round(flat, 2), "target": 1.5,
                      "idle_rerun_s": [round(r["idle_rerun_s"], 1) for r in results],
                      "snapshots": [r["snapshots"] for r in results], "files": [r["files"] for r in results]}
                     | ({"version_stats_s": [round(r["version_stats_s"], 2) for r in results],
                         "report_s": [round(r["report_s"], 2) for r in results]} if args.report else {})))


if __name__ == "__main__":
    os.environ.setdefault("VLFACTORY_LAKE", "")
    main()
