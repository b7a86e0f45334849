"""The catalog of a lake folder: SQLite (the default) against the DuckDB file it replaced.

    python bench/catalog.py [--commits 200] [--rows 256]

For each catalog, one writer process commits `--commits` keyed batches of `--rows` rows through
`Lake.write` (as a distil run commits), and meanwhile a reader process opens the lake read-only
and counts the rows, again and again (as `vlfactory sql` does). Printed: the writer's time per
commit, the reader's open+query latency (median, p90) and how many reads failed, each with its
ratio to the DuckDB-file catalog measured in the same run. A DuckDB catalog file admits no
reader while a writer holds it: its reads fail, which is why lake folders moved to SQLite.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import statistics
import tempfile
import time
from pathlib import Path


def writer(root: str, commits: int, rows: int, out: mp.Queue, started: mp.Event) -> None:
    import pyarrow as pa

    from vlfactory.stores import schema
    from vlfactory.stores.lake import Lake

    with Lake(root) as lake:
        started.set()
        times = []
        for i in range(commits):
            batch = pa.Table.from_pylist([{"prompt_hash": f"{i}-{j}", "name": "bench", "text": "x" * 200, "run_id": None}
                                          for j in range(rows)], schema=schema.PROMPTS)
            t = time.perf_counter()
            lake.write(f"batch {i}", lambda: lake.insert("prompts", batch, key="prompt_hash"))
            times.append(time.perf_counter() - t)
    out.put(("writer", times))


def reader(root: str, stop: mp.Event, out: mp.Queue) -> None:
    from vlfactory.stores.lake import Lake

    latencies, failures = [], []
    while not stop.is_set():
        t = time.perf_counter()
        try:
            with Lake(root, read_only=True) as lake:
                lake.query("SELECT count(*) FROM prompts").fetchone()
            latencies.append(time.perf_counter() - t)
        except Exception as e:  # noqa: BLE001 (what a user would see)
            failures.append(str(e).splitlines()[0][:100])
            time.sleep(0.05)
    out.put(("reader", (latencies, failures)))


def measure(kind: str, commits: int, rows: int) -> dict:
    from vlfactory.stores.lake import Lake, load_extension

    root = Path(tempfile.mkdtemp(prefix=f"bench-catalog-{kind}-")) / "lake"
    root.mkdir()
    if kind == "duckdb":  # a folder made before the SQLite default
        import duckdb

        con = duckdb.connect()
        load_extension(con, "ducklake")
        con.execute(f"ATTACH 'ducklake:{root}/catalog.ducklake' AS lake (DATA_PATH '{root}/data/')")
        con.close()
    Lake(root).close()  # migrations, outside the figure
    ctx = mp.get_context("spawn")
    out, stop, started = ctx.Queue(), ctx.Event(), ctx.Event()
    w = ctx.Process(target=writer, args=(str(root), commits, rows, out, started))
    w.start()
    started.wait()
    r = ctx.Process(target=reader, args=(str(root), stop, out))
    r.start()
    w.join()
    stop.set()
    r.join()
    got = dict(out.get() for _ in range(2))
    times, (latencies, failures) = got["writer"], got["reader"]
    # the reader alone, for its baseline
    alone = []
    for _ in range(10):
        t = time.perf_counter()
        try:
            with Lake(root, read_only=True) as lake:
                lake.query("SELECT count(*) FROM prompts").fetchone()
            alone.append(time.perf_counter() - t)
        except Exception:  # noqa: BLE001
            pass
    q = sorted(latencies)
    return {"commit_ms": statistics.median(times) * 1000, "commit_total_s": sum(times),
            "read_ms": statistics.median(q) * 1000 if q else float("nan"),
            "read_p90_ms": q[int(len(q) * 0.9)] * 1000 if q else float("nan"),
            "reads": len(q), "failed": len(failures), "alone_ms": statistics.median(alone) * 1000 if alone else float("nan"),
            "why": sorted(set(failures))[:1]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--commits", type=int, default=200)
    ap.add_argument("--rows", type=int, default=256)
    args = ap.parse_args()
    base = measure("duckdb", args.commits, args.rows)
    new = measure("sqlite", args.commits, args.rows)
    print(f"{args.commits} commits of {args.rows} keyed rows, one reader looping `open read-only + count(*)`")
    print(f"{'':22s} {'duckdb file':>14s} {'sqlite':>14s} {'ratio':>8s}")
    for key, label in (("commit_ms", "writer ms/commit"), ("commit_total_s", "writer total s"),
                       ("read_ms", "read ms (median)"), ("read_p90_ms", "read ms (p90)"), ("reads", "reads done"),
                       ("failed", "reads failed"), ("alone_ms", "read ms, no writer")):
        b, n = base[key], new[key]
        ratio = f"{n / b:.2f}x" if b and b == b else "-"
        print(f"{label:22s} {b:14.1f} {n:14.1f} {ratio:>8s}")
    if base["why"]:
        print(f"duckdb-file reads failed with: {base['why'][0]}")
    if new["why"]:
        print(f"sqlite reads failed with: {new['why'][0]}")


if __name__ == "__main__":
    main()
