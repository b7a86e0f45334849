"""Viewer page latency on a lake of a million traces, and row-diff time over the same table.

Builds a local lake shaped like a distillation run: P problems with small PNG
images, ground-truth captions, T traces (T/P samples per problem, completions
of 50 to 600 words), a grade per trace (about half accepted, the rest with
reasons) and a rejected row per rejection; tags `iter1` (90% of the traces)
and `iter2` (all, with the first 10% regraded under other settings). Then
serves it with `vlfactory.viewer` on loopback and times what the page asks
for, over HTTP (query, JSON and transfer included), each request R times:

- list pages, as a user meets them: the first page, the next, one deep in
  the table (at 90%), sorted by a column (first page and next), filtered
  (verdict + source, a reason, a model, an iteration, a WHERE over listed
  columns), each filter new (its count and facet counts computed) and then
  paged, and the facet counts the page asks for beside each list: their
  median, p95 and worst, against the 300 ms target;
- once: building the list index of the traces (what the server does in the
  background when it starts), and a WHERE naming a column the index lacks
  (one pass over the whole table, then its pages from the kept keys);
- a sample (every column, caption, prompt, versions, its neighbours in the
  list), a problem page, an image and a thumbnail.

Baseline, measured in the same run: the bare DuckDB query of one page of the
traces table (`ORDER BY trace_id LIMIT 50`, listed columns, no joins, no
HTTP), the floor for any page. Row diff (`--diffs`): `vlfactory.diff(iter1,
iter2, table=traces/grades)` beside reading both versions' compared columns
once (the floor for any content comparison).

    python bench/viewer.py [--traces 1000000] [--problems 20000] [--repeat 5] [--lake DIR] [--diffs]
"""

from __future__ import annotations

import argparse
import io
import json
import random
import statistics
import tempfile
import threading
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pyarrow as pa

from vlfactory.stores import schema
from vlfactory.stores.lake import Lake

WORDS = ("the value of the bar is then we add subtract compare each column row total so answer check "
         "first second third chart table shows").split()


def png(i: int) -> bytes:
    from PIL import Image, ImageDraw

    im = Image.new("RGB", (64, 64), "white")
    rnd = random.Random(i)
    d = ImageDraw.Draw(im)
    for _ in range(4):
        x, y = rnd.randrange(48), rnd.randrange(48)
        d.rectangle([x, y, x + 16, y + 16], fill=tuple(rnd.randrange(256) for _ in range(3)))
    out = io.BytesIO()
    im.save(out, "PNG")
    return out.getvalue()


def build(root: Path, n_problems: int, n_traces: int, row_group_rows: int | None = None) -> Path:
    """The lake: problems, images and captions through Lake's own writes; traces, grades and rejections made by
    DuckDB from `range()` (a million rows in minutes), committed 100,000 at a time as a long stage would."""
    import hashlib

    rnd = random.Random(0)
    lake_dir = root / "lake"
    sources = ("tabmwp", "geometry3k", "synthetic")
    per = max(1, n_traces // n_problems)
    with Lake(lake_dir) as lake:
        if row_group_rows:  # smaller Parquet row groups: a point read decodes one group's texts, not the file's
            for table in ("traces", "grades"):
                lake.con.execute(f"CALL lake.set_option('parquet_row_group_size', {int(row_group_rows)}, "
                                 f"table_name => '{table}')")
        lake.start_run("bench viewer")
        images, problems, captions = [], [], []
        for i in range(n_problems):
            data = png(i)
            image_id = hashlib.sha256(data).hexdigest()
            images.append({"image_id": image_id, "bytes": data, "width": 64, "height": 64, "format": "PNG",
                           "n_bytes": len(data), "run_id": lake.run_id})
            pid = f"p{i:07d}"
            problems.append({"problem_id": pid, "source": sources[i % 3], "source_id": str(i), "split": "train",
                             "question": f"What is the value of bar {i % 7} in the chart of problem {i}?",
                             "answer": str(i % 50), "image_id": image_id, "caption": None, "run_id": lake.run_id})
            captions.append({"caption_id": f"c{i:07d}", "problem_id": pid, "image_id": image_id,
                             "model": "source:" + sources[i % 3], "origin": "source",
                             "caption": " ".join(rnd.choices(WORDS, k=60)), "run_id": lake.run_id})
        with lake.transaction("bench: problems"):
            lake.append("images", pa.Table.from_pylist(images, schema=schema.IMAGES))
            lake.insert("problems", pa.Table.from_pylist(problems, schema=schema.PROBLEMS))
            lake.insert("captions", pa.Table.from_pylist(captions, schema=schema.CAPTIONS))
        words = "[" + ", ".join(f"'{w}'" for w in WORDS) + "]"
        names = "[" + ", ".join(f"'{w}'" for w in sources) + "]"
        cut = int(n_traces * 0.9)
        for lo, hi, tag in ((0, cut, "iter1"), (cut, n_traces, "iter2")):
            if tag == "iter2":  # a regrade of the first tenth under other settings
                with lake.transaction("bench: regrade"):
                    lake.con.execute("UPDATE lake.grades SET settings_hash = 's2', grade_id = 'h' || ref_id "
                                     f"WHERE ref_id IN (SELECT ref_id FROM lake.grades LIMIT {n_traces // 10})")
            for a in range(lo, hi, 100_000):
                b = min(hi, a + 100_000)
                # per row j: its problem k, a verdict (about half accepted), a length of 50..600 words
                rows = f"""(SELECT j, ((j // {per}) % {n_problems})::BIGINT AS k, substr(md5('t' || j), 1, 16) AS tid,
                                   hash(j, 1) % 2 = 0 AS ok, (50 + hash(j, 2) % 551)::BIGINT AS n,
                                   ['incorrect', 'no_answer', 'truncated', 'too_long', 'repetition']
                                       [(1 + hash(j, 3) % 5)::BIGINT:(1 + hash(j, 3) % 5 + hash(j, 4) % 2)::BIGINT] AS why
                            FROM range({a}, {b}) r(j))"""
                said = "CASE WHEN ok THEN (k % 50)::VARCHAR ELSE 'x' END"
                with lake.transaction(f"bench: traces {a}-{b}"):
                    lake.con.execute(f"""INSERT INTO lake.traces (trace_id, problem_id, sample_index, model,
                        prompt_hash, completion, answer, prompt_tokens, completion_tokens, finish_reason, temperature,
                        top_p, max_tokens, seed, request_key, latency_s, run_id, caption_id, backend)
                        SELECT tid, printf('p%07d', k), j % {per}, 'reasoner', 'reason',
                               '<think>' || array_to_string(list_transform(range(n), x -> {words}[(1 + hash(j, x) % {len(WORDS)})::BIGINT]), ' ')
                               || '</think> <answer>' || {said} || '</answer>', {said}, 200, (n * 1.3)::BIGINT,
                               CASE WHEN n > 580 THEN 'length' ELSE 'stop' END, 0.7, 0.95, 800, j % {per}, tid, 1.0,
                               '{lake.run_id}', printf('c%07d', k), 'openai' FROM {rows}""")
                    lake.con.execute(f"""INSERT INTO lake.grades (grade_id, ref_table, ref_id, problem_id, source,
                        verifier, settings_hash, correct, extracted, grade_reason, reasons, accepted, words, cleaned,
                        cleaned_words, cleaned_ok, run_id)
                        SELECT 'g' || tid, 'traces', tid, printf('p%07d', k), {names}[1 + k % 3], 'v1', 's1', ok,
                               {said}, CASE WHEN ok THEN 'correct' ELSE why[1] END,
                               CASE WHEN ok THEN []::VARCHAR[] ELSE why END, ok, n,
                               CASE WHEN ok THEN 'cleaned' END, CASE WHEN ok THEN 60 END, ok, '{lake.run_id}'
                        FROM {rows}""")
                    lake.con.execute(f"""INSERT INTO lake.rejected (rejected_id, stage, reason, reasons, detail,
                        ref_id, source, run_id, payload)
                        SELECT 'r' || tid, 'verify', why[1], why, 'traces ' || tid || ': ' || array_to_string(why, ', '),
                               tid, {names}[1 + k % 3], '{lake.run_id}',
                               '{{"ref_table": "traces", "problem_id": "' || printf('p%07d', k) || '"}}'
                        FROM {rows} WHERE NOT ok""")
            lake.tag(tag)
        lake.end_run("ok")
    return lake_dir


def timed(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--traces", type=int, default=1_000_000)
    ap.add_argument("--problems", type=int, default=20_000)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--lake", type=Path, default=None, help="A lake this bench built before (skip the build).")
    ap.add_argument("--diffs", action="store_true", help="Also time row diffs of traces and grades.")
    ap.add_argument("--row-group-rows", type=int, default=None,
                    help="Set DuckLake's parquet_row_group_size on traces and grades (default: the lake's, "
                         "8,192 since migration 11; 122880 is DuckDB's default, what older lakes wrote).")
    args = ap.parse_args()

    from vlfactory import diff
    from vlfactory.viewer import server

    with tempfile.TemporaryDirectory() as tmp:
        lake_dir = args.lake
        if lake_dir is None:
            t = time.perf_counter()
            lake_dir = build(Path(tmp), args.problems, args.traces, args.row_group_rows)
            print(f"built a lake of {args.problems:,} problems and {args.traces:,} traces in "
                  f"{time.perf_counter() - t:.1f}s")
        with Lake(lake_dir, read_only=True) as lake:
            n_traces = lake.count("traces")
            httpd = server(lake, port=0, warm=False)  # the index build is timed below, not in the background
            threading.Thread(target=httpd.serve_forever, daemon=True).start()
            base = f"http://127.0.0.1:{httpd.server_port}"
            viewer = httpd.RequestHandlerClass.viewer

            def get(path: str, **q) -> bytes:
                req = urllib.request.Request(f"{base}{path}?{urllib.parse.urlencode(q)}",
                                             headers={"X-Vlfactory-Token": httpd.token})
                with urllib.request.urlopen(req, timeout=600) as r:
                    return r.read()

            def page(**q) -> dict:
                return json.loads(get("/api/rows", table="traces", **q))

            def fresh(endpoint: str = "/api/rows", **q) -> bytes:  # a filter not seen before: count, facets, keys
                viewer.counts.clear()
                viewer._combos.clear()
                viewer._wheres.clear()
                return get(endpoint, table="traces", **q)

            t = time.perf_counter()
            first = page()
            build_s = time.perf_counter() - t
            snap = lake.current_snapshot()
            index = viewer.index("traces", snap)
            deep_row = lake.con.execute(f"SELECT _row, trace_id FROM {index} ORDER BY _row "
                                        f"LIMIT 1 OFFSET {int(n_traces * 0.9)}").fetchone()
            deep = json.dumps(list(deep_row))
            by_tokens = page(sort="completion_tokens", desc="1")
            rejected = page(verdict="rejected", source="tabmwp")
            sid, pid, image = first["rows"][0]["trace_id"], first["rows"][0]["problem_id"], first["rows"][0]["image_id"]

            def floor() -> None:
                lake.con.execute("SELECT trace_id, problem_id, sample_index, model, completion_tokens, finish_reason "
                                 "FROM lake.traces ORDER BY trace_id LIMIT 50").fetchall()

            lists = {
                "first page": lambda: page(),
                "next page": lambda: page(after=first["next"]),
                "deep page (at 90%)": lambda: page(after=deep),
                "sorted by completion tokens, new sort": lambda: fresh(sort="completion_tokens", desc="1"),
                "sorted by completion tokens, next page": lambda: page(sort="completion_tokens", desc="1",
                                                                       after=by_tokens["next"]),
                "sorted by finish reason, new sort": lambda: fresh(sort="finish_reason"),
                "verdict=rejected + source, new filter": lambda: fresh(verdict="rejected", source="tabmwp"),
                "verdict=rejected + source, next page": lambda: page(verdict="rejected", source="tabmwp",
                                                                     after=rejected["next"]),
                "reason=truncated, new filter": lambda: fresh(reason="truncated"),
                "model=reasoner, new filter": lambda: fresh(model="reasoner"),
                "iteration=2 (rows iter2 added), new filter": lambda: fresh(iteration="2"),
                "WHERE completion_tokens > 600, new filter": lambda: fresh(where="completion_tokens > 600"),
                "facet counts, no filter (new)": lambda: fresh("/api/facets"),
                "facet counts, verdict=rejected (new)": lambda: fresh("/api/facets", verdict="rejected"),
                "facet counts, WHERE finish_reason = 'length' (new)":
                    lambda: fresh("/api/facets", where="finish_reason = 'length'"),
            }
            others = {
                "sample (all columns, caption, versions, neighbours)": lambda: get("/api/sample", table="traces",
                                                                                   id=sid),
                "sample opened from a sorted list": lambda: get("/api/sample", table="traces", id=sid,
                                                                sort="completion_tokens", desc="1"),
                "problem page (generations, versions)": lambda: get("/api/problem", id=pid),
                "image": lambda: get(f"/image/{image}"),
                "thumbnail (96 px)": lambda: get(f"/image/{image}", thumb="96"),
            }
            baseline = timed(floor, args.repeat)
            print(f"{n_traces:,} traces; building the list index of traces (once per table and version, in the "
                  f"background when the server starts): {build_s:.2f}s")
            print(f"baseline: bare DuckDB page of 50 traces, {1000 * baseline:.1f} ms (median of {args.repeat})")
            every = []
            for name, fn in lists.items():
                fn()  # warm
                times = []
                for _ in range(args.repeat):
                    t = time.perf_counter()
                    fn()
                    times.append(time.perf_counter() - t)
                every += times
                print(f"  {name:56s} {1000 * statistics.median(times):8.1f} ms  "
                      f"{statistics.median(times) / baseline:6.1f}x baseline")
            p95 = percentile(every, 0.95)
            print(f"list pages and facet counts ({len(every)} requests): median {1000 * statistics.median(every):.1f} "
                  f"ms, p95 {1000 * p95:.1f} ms, worst {1000 * max(every):.1f} ms "
                  f"({'within' if p95 <= 0.3 else 'OVER'} the 300 ms target)")
            t = time.perf_counter()
            fresh(where="completion LIKE '%check check check%'")
            scan = time.perf_counter() - t
            t = time.perf_counter()
            got = page(where="completion LIKE '%check check check%'")
            again = time.perf_counter() - t
            print(f"  a WHERE naming a column the index lacks (completion LIKE ...): first page {scan:.2f}s "
                  f"(one pass over the table), next request {1000 * again:.1f} ms ({got['total']:,} rows)")
            for name, fn in others.items():
                fn()
                s = timed(fn, args.repeat)
                print(f"  {name:56s} {1000 * s:8.1f} ms  {s / baseline:6.1f}x baseline")
            httpd.shutdown()
            httpd.server_close()
            if args.diffs:
                def read_both(table: str) -> None:
                    for v in (lake.resolve("iter1"), lake.resolve("iter2")):
                        lake.con.execute(f"SELECT * EXCLUDE (run_id, created_at) FROM lake.{table} "
                                         f"AT (VERSION => {v})").to_arrow_table()
                for table in ("traces", "grades"):
                    floor_s = timed(lambda: read_both(table), max(1, args.repeat // 2))
                    d = diff("iter1", "iter2", table=table, lake=lake, limit=20)
                    s = timed(lambda: diff("iter1", "iter2", table=table, lake=lake, limit=20),
                              max(1, args.repeat // 2))
                    print(f"row diff {table} iter1 -> iter2 (+{d.n_added:,} -{d.n_removed:,} ~{d.n_changed:,}): "
                          f"{s:.2f}s; reading both versions {floor_s:.2f}s; {s / floor_s:.1f}x")


if __name__ == "__main__":
    main()
