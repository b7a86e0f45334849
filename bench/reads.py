"""How fast the read commands answer, beside DuckDB itself on the same lake, measured in one run.

Each figure is the wall time of a fresh process, as a user meets it (interpreter start, imports, opening the
lake, the query, the output), median of R runs, with its CPU time (user + system) beside it: on a busy machine
the CPU time is the steadier figure. The two sides of a comparison run alternately, so a busy machine slows
both alike, and the load average is printed at the start and the end:

- `vlfactory sql QUERY` beside a Python process that loads DuckDB's DuckLake extension, attaches the same lake
  read-only (`ATTACH 'ducklake:sqlite:lake/catalog.sqlite' AS lake (READ_ONLY, DATA_PATH ...)`), runs the same
  query and prints it (`.show()`): the floor for any tool over DuckLake. Ratio target: at most 1.5x. The baseline
  loads the extensions as plain DuckDB does, checking each file's signature (0.15 s or more each); a read-only
  vlfactory lake skips that check and forbids any later LOAD (stores/lake.py).
- `vlfactory versions` (target: under 0.5 s) and `vlfactory report` / `report --iterations` (under 3 s), each
  also as a ratio to the DuckDB baseline's `count(*)` measured in the same rounds (what loading DuckDB and its
  extensions and attaching the lake costs any tool), with the bare interpreter start beside them. Nothing of
  a report is cached: every run queries the lake and draws every plot (reports/figures.py writes the SVG).

The lake is the quickstart's: `--lake DIR` reads one already made (e.g. by `vlfactory iterate quickstart --lake
DIR`); without it, the bench makes one first with `vlfactory iterate quickstart` (minutes; its time is printed).

    python bench/reads.py --lake /tmp/x/lake [--repeat 7]
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BASELINE = """
import sys, duckdb
con = duckdb.connect()
con.execute("LOAD ducklake"); con.execute("LOAD sqlite")
con.execute("ATTACH 'ducklake:sqlite:{catalog}' AS lake (READ_ONLY, DATA_PATH '{data}', OVERRIDE_DATA_PATH true)")
con.execute("USE lake")
con.sql(sys.argv[1]).show()
"""


def seconds(cmd: list[str]) -> tuple[float, float]:
    """Wall time and CPU time (user + system, of the process and its children) of one run of `cmd`."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    wall = time.perf_counter() - t
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime


def medians(cmds: dict[str, list[str]], repeat: int) -> dict[str, tuple[float, float]]:
    """Median wall time and median CPU time of each command, the commands run in turn `repeat` times (after one
    warm-up round)."""
    times: dict[str, list[tuple[float, float]]] = {name: [] for name in cmds}
    for i in range(repeat + 1):
        for name, cmd in cmds.items():
            s = seconds(cmd)
            if i:
                times[name].append(s)
    return {name: (statistics.median(w for w, _ in v), statistics.median(c for _, c in v)) for name, v in times.items()}


def load() -> str:
    return "load average " + ", ".join(f"{x:.1f}" for x in os.getloadavg())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--lake", type=Path, default=None, help="A lake folder (default: build the quickstart's).")
    ap.add_argument("--repeat", type=int, default=7)
    args = ap.parse_args()

    vlf = [sys.executable, "-m", "vlfactory.cli"]
    with tempfile.TemporaryDirectory() as tmp:
        lake = args.lake
        if lake is None:
            lake = Path(tmp) / "lake"
            t = time.perf_counter()
            subprocess.run([*vlf, "iterate", "quickstart", "--lake", str(lake)], check=True,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            print(f"built the quickstart lake (vlfactory iterate quickstart) in {time.perf_counter() - t:.0f}s")
        lake = lake.resolve()
        from vlfactory.stores.lake import Lake

        with Lake(lake, read_only=True) as lk:  # installs the extensions once, as any first use does
            tags = lk.tags()
            counts = {t: lk.count(t) for t in ("problems", "traces", "rollouts", "grades", "evals", "training_logs")}
        print(f"lake {lake}: " + ", ".join(f"{t} {n:,}" for t, n in counts.items()) + f"; tags {', '.join(tags)}")
        baseline = Path(tmp) / "duckdb_baseline.py"
        baseline.write_text(BASELINE.format(catalog=lake / "catalog.sqlite", data=f"{lake}/data/"))
        print(f"start: {load()}")
        python = medians({"python": [sys.executable, "-c", "pass"]}, args.repeat)["python"][0]
        print(f"python start, nothing imported: {python:.3f}s (median of {args.repeat})")

        tag = next(iter(tags), None)
        queries = {"count": ("SELECT count(*) FROM traces",) * 2,
                   "group by": ("SELECT source, count(*) AS n FROM problems GROUP BY ALL ORDER BY ALL",) * 2}
        if tag:  # TABLE@TAG against DuckLake's own time travel
            queries["at a tag"] = (f"SELECT count(*) FROM grades@{tag} WHERE accepted",
                                   f"SELECT count(*) FROM grades AT (VERSION => {tags[tag]}) WHERE accepted")
        print("vlfactory sql vs DuckDB+DuckLake (same lake, read-only, same query): wall, then CPU")
        print(f"  {'':50s} {'vlfactory':>9s} {'duckdb':>9s} {'ratio':>6s}   {'vlfactory':>9s} {'duckdb':>9s} "
              f"{'ratio':>6s}")
        for name, (ours, theirs) in queries.items():
            m = medians({"vlfactory": [*vlf, "sql", ours, "--lake", str(lake)],
                         "duckdb": [sys.executable, str(baseline), theirs]}, args.repeat)
            (w, c), (bw, bc) = m["vlfactory"], m["duckdb"]
            print(f"  {name:50s} {w:8.3f}s {bw:8.3f}s {w / bw:5.2f}x   {c:8.3f}s {bc:8.3f}s {c / bc:5.2f}x")

        out = Path(tmp) / "report.html"
        m = medians({"duckdb count(*)": [sys.executable, str(baseline), queries["count"][1]],
                     "versions": [*vlf, "versions", "--lake", str(lake)],
                     "report": [*vlf, "report", "--lake", str(lake), "--out", str(out)],
                     "report --iterations": [*vlf, "report", "--iterations", "--lake", str(lake), "--out", str(out)]},
                    max(3, args.repeat // 2))
        bw, bc = m["duckdb count(*)"]
        print(f"  {'DuckDB baseline, count(*) (in the same rounds)':60s} {bw:8.3f}s wall {bc:7.3f}s CPU")
        for name, target in (("versions", 0.5), ("report", 3.0), ("report --iterations", 3.0)):
            w, c = m[name]
            verdict = "within" if w <= target else "OVER"
            print(f"  vlfactory {name:50s} {w:8.3f}s wall {c:7.3f}s CPU  ({w / bw:.1f}x / {c / bc:.1f}x the baseline; "
                  f"wall {verdict} the {target:g} s target)")
        print(f"end: {load()}")


if __name__ == "__main__":
    main()
