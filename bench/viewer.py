"""Viewer page latency on a lake with 100k traces, and row-diff time over the same table.

Builds a local lake shaped like a distillation run: P problems with small PNG
images, ground-truth captions, T traces (T/P samples per problem, completions
of a few hundred words), a grade per trace (about half accepted, the rest with
reasons) and a rejected row per rejection; tags `iter1` (90% of the traces)
and `iter2` (all, with the first 10% regraded under other settings). Then
serves it with `vlfactory.viewer` on loopback and times what the page asks
for, over HTTP (query, JSON and transfer included), median of R runs:

- a page of 50 traces: the first; one deep in the table (keyset: `after` the
  key at 90%); the same deep page by OFFSET (what keyset paging avoids);
- filtered pages (verdict + source, a reason, a SQL WHERE, an iteration),
  first page of a new filter (the count included) and the next one (cached);
- a sample (every column, caption, prompt, versions), a problem page, an image.

Baseline, measured in the same run on the same connection: the bare DuckDB
query of one page of the traces table (`ORDER BY trace_id LIMIT 50`, no joins,
no HTTP), the floor for any page. Each figure is printed with its ratio to it.
Row diff: `vlfactory.diff(iter1, iter2, table=traces/grades)` beside reading
both versions' compared columns once (the floor for any content comparison).

    python bench/viewer.py [--traces 100000] [--problems 5000] [--repeat 5] [--row-group-rows 8192]
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
    import hashlib

    rnd = random.Random(0)
    lake_dir = root / "lake"
    sources = ("tabmwp", "geometry3k", "synthetic")
    reasons = ("incorrect", "no_answer", "truncated", "too_long", "repetition")
    per = n_traces // n_problems
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
                             "question": f"What is the value of bar {i % 7}?", "answer": str(i % 50),
                             "image_id": image_id, "caption": None, "run_id": lake.run_id})
            captions.append({"caption_id": f"c{i:07d}", "problem_id": pid, "image_id": image_id,
                             "model": "source:" + sources[i % 3], "origin": "source",
                             "caption": " ".join(rnd.choices(WORDS, k=60)), "run_id": lake.run_id})
        with lake.transaction("bench: problems"):
            lake.append("images", pa.Table.from_pylist(images, schema=schema.IMAGES))
            lake.insert("problems", pa.Table.from_pylist(problems, schema=schema.PROBLEMS))
            lake.insert("captions", pa.Table.from_pylist(captions, schema=schema.CAPTIONS))
        cut = int(n_traces * 0.9)
        for lo, hi, tag in ((0, cut, "iter1"), (cut, n_traces, "iter2")):
            traces, grades, rejected = [], [], []
            for j in range(lo, hi):
                k = j // per % n_problems
                tid = hashlib.md5(f"t{j}".encode()).hexdigest()[:16]
                ok = rnd.random() < 0.5
                n_words = rnd.randrange(50, 600)
                said = str(k % 50) if ok else "x"
                text = f"<think>{' '.join(rnd.choices(WORDS, k=n_words))}</think> <answer>{said}</answer>"
                traces.append({"trace_id": tid, "problem_id": f"p{k:07d}", "sample_index": j % per, "model": "reasoner",
                               "prompt_hash": "reason", "completion": text, "answer": said,
                               "prompt_tokens": 200, "completion_tokens": int(n_words * 1.3),
                               "finish_reason": "length" if n_words > 580 else "stop", "temperature": 0.7,
                               "top_p": 0.95, "max_tokens": 800, "seed": j % per, "request_key": tid,
                               "latency_s": 1.0, "run_id": lake.run_id, "caption_id": f"c{k:07d}",
                               "backend": "openai"})
                why = [] if ok else rnd.sample(reasons, rnd.randrange(1, 3))
                grades.append({"grade_id": "g" + tid, "ref_table": "traces", "ref_id": tid, "problem_id": f"p{k:07d}",
                               "source": sources[k % 3], "verifier": "v1", "settings_hash": "s1", "correct": ok,
                               "extracted": said, "grade_reason": "correct" if ok else why[0],
                               "reasons": why, "accepted": ok, "words": n_words,
                               "cleaned": text[:400] if ok else None, "cleaned_words": 60 if ok else None,
                               "cleaned_ok": ok, "run_id": lake.run_id})
                if why:
                    rejected.append({"rejected_id": "r" + tid, "stage": "verify", "reason": why[0], "reasons": why,
                                     "detail": f"traces {tid}: {', '.join(why)}", "ref_id": tid,
                                     "source": sources[k % 3], "run_id": lake.run_id,
                                     "payload": json.dumps({"ref_table": "traces", "problem_id": f"p{k:07d}"})})
            with lake.transaction(f"bench: traces {lo}-{hi}"):
                if tag == "iter2":  # a regrade of the first tenth under other settings
                    lake.con.execute("UPDATE lake.grades SET settings_hash = 's2', grade_id = 'h' || ref_id "
                                     f"WHERE ref_id IN (SELECT ref_id FROM lake.grades LIMIT {n_traces // 10})")
                for table, rows, sch in (("traces", traces, schema.TRACES), ("grades", grades, schema.GRADES),
                                         ("rejected", rejected, schema.REJECTED)):
                    lake.insert(table, pa.Table.from_pylist(rows, schema=sch))
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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--traces", type=int, default=100_000)
    ap.add_argument("--problems", type=int, default=5_000)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--row-group-rows", type=int, default=None,
                    help="Set DuckLake's parquet_row_group_size on traces and grades (default: the lake's, "
                         "8,192 since migration 11; 122880 is DuckDB's default, what older lakes wrote).")
    args = ap.parse_args()

    from vlfactory import diff
    from vlfactory.viewer import server

    with tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        lake_dir = build(Path(tmp), args.problems, args.traces, args.row_group_rows)
        print(f"built a lake of {args.problems:,} problems and {args.traces:,} traces in {time.perf_counter() - t:.1f}s")
        with Lake(lake_dir, read_only=True) as lake:
            httpd = server(lake, port=0)
            threading.Thread(target=httpd.serve_forever, daemon=True).start()
            base = f"http://127.0.0.1:{httpd.server_port}"

            def get(path: str, **q) -> bytes:
                with urllib.request.urlopen(f"{base}{path}?{urllib.parse.urlencode(q)}", timeout=120) as r:
                    return r.read()

            def page(**q) -> dict:
                return json.loads(get("/api/rows", table="traces", **q))

            with httpd.RequestHandlerClass.viewer.lock:
                keys = [r[0] for r in lake.con.execute("SELECT trace_id FROM lake.traces ORDER BY 1").fetchall()]
            deep = keys[int(len(keys) * 0.9)]

            def floor() -> None:
                with httpd.RequestHandlerClass.viewer.lock:
                    lake.con.execute("SELECT trace_id, problem_id, sample_index, model, answer, completion_tokens, "
                                     "finish_reason FROM lake.traces ORDER BY trace_id LIMIT 50").fetchall()

            def fresh(**q):  # a filter not seen before: the count is part of the request
                httpd.RequestHandlerClass.viewer.counts.clear()
                return page(**q)

            first = page()
            sid, pid, image = first["rows"][0]["trace_id"], first["rows"][0]["problem_id"], first["rows"][0]["image_id"]
            baseline = timed(floor, args.repeat)
            cases = {
                "first page (count cached)": lambda: page(),
                "first page, new filter (count included)": lambda: fresh(),
                "deep page, keyset (after the key at 90%)": lambda: page(after=deep),
                "verdict=rejected + source, new filter": lambda: fresh(verdict="rejected", source="tabmwp"),
                "verdict=rejected + source, next page": lambda: page(verdict="rejected", source="tabmwp", after=deep),
                "reason=truncated, new filter": lambda: fresh(reason="truncated"),
                "WHERE completion_tokens > 600, new filter": lambda: fresh(where="completion_tokens > 600"),
                "iteration=2 (rows new since iter1), new filter": lambda: fresh(iteration="2"),
                "sample (all columns, caption, versions)": lambda: get("/api/sample", table="traces", id=sid),
                "problem page (generations, versions)": lambda: get("/api/problem", id=pid),
                "image": lambda: get(f"/image/{image}"),
            }
            print(f"baseline: bare DuckDB page of 50 traces, {1000 * baseline:.1f} ms (median of {args.repeat})")
            for how, q in (("keyset", {"after": deep}), ("OFFSET", {"offset": int(len(keys) * 0.9)})):
                s = timed(lambda: sql_page(lake, httpd, **q), args.repeat)
                print(f"  deep page as SQL only, {how:6s} (at 90%)                {1000 * s:8.1f} ms  "
                      f"{s / baseline:6.1f}x baseline")
            for name, fn in cases.items():
                fn()  # warm
                s = timed(fn, args.repeat)
                print(f"  {name:48s} {1000 * s:8.1f} ms  {s / baseline:6.1f}x baseline")
            httpd.shutdown()
            httpd.server_close()

            def read_both(table: str) -> None:
                for v in (lake.resolve("iter1"), lake.resolve("iter2")):
                    lake.con.execute(f"SELECT * EXCLUDE (run_id, created_at) FROM lake.{table} AT (VERSION => {v})"
                                     ).to_arrow_table()
            for table in ("traces", "grades"):
                floor_s = timed(lambda: read_both(table), max(1, args.repeat // 2))
                d = diff("iter1", "iter2", table=table, lake=lake, limit=20)
                s = timed(lambda: diff("iter1", "iter2", table=table, lake=lake, limit=20), max(1, args.repeat // 2))
                print(f"row diff {table} iter1 -> iter2 (+{d.n_added:,} -{d.n_removed:,} ~{d.n_changed:,}): "
                      f"{s:.2f}s; reading both versions {floor_s:.2f}s; {s / floor_s:.1f}x")


def sql_page(lake: Lake, httpd, after: str | None = None, offset: int | None = None) -> None:
    """A page of the viewer's joined traces view, its listed columns, by keyset or by OFFSET."""
    viewer = httpd.RequestHandlerClass.viewer
    cols = ", ".join(f"v.{c}" for c in ("trace_id", "problem_id", "source", "sample_index", "model", "answer",
                                         "accepted", "reasons", "completion_tokens", "finish_reason"))
    with viewer.lock:
        view = viewer.view("traces", lake.current_snapshot())
        where = "WHERE v.trace_id > ?" if after else ""
        lake.con.execute(f"SELECT {cols} FROM ({view}) v {where} ORDER BY v.trace_id LIMIT 50"
                         + (f" OFFSET {offset}" if offset else ""), [after] if after else []).fetchall()


if __name__ == "__main__":
    main()
