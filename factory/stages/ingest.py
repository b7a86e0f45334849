"""Ingest: read sources, map their columns onto the schema, store problems and images.

Every row read ends in exactly one place: a new problem, a problem the lake
already holds, or `rejected` with a reason. Images are decoded once to prove
they are images, stored once (by SHA-256 of the original bytes) and
byte-exact. Problems are keyed by (image, question, answer), so re-ingesting a
source adds nothing. Writes go in batches, one snapshot each (a batch's images
as one Parquet file the lake adopts), so a crash loses at most the batch in
flight and a rerun picks up the rest.

A source that maps a `completion` column (a released SFT set's assistant turns)
also writes each row's chain as a `traces` row of its problem, by the source's
identity (`Source.model`, e.g. "hf:ydeng9/OpenVLThinker-sft-iter3@REV"), with the
distil stage's columns (reasoning, extracted answer) and no generation settings;
keyed by (identity, problem, completion), so a rerun adds none. The verify stage
grades them and the sft stage picks them like distilled traces.

    vlfactory ingest recipes/tabmwp.yaml
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import os
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Iterator

import pyarrow as pa

from vlfactory.recipe import IngestConfig, Source
from vlfactory.sources.columns import Reject, _printable, _source_ref, check_columns, column_map, map_row, preflight
from vlfactory.sources.decontam import Fingerprints, benchmark_fingerprints
from vlfactory.sources.images import CheckedImage, images_root, load_image
from vlfactory.sources.readers import read_source, source_identity
from vlfactory.stages import Scope, StageResult
from vlfactory.stages.distil import split_reasoning
from vlfactory.stages.generation import sha
from vlfactory.stores import schema, tables
from vlfactory.stores.lake import Lake, WriteConflict


@dataclass


class Tally:
    source: str
    read: int = 0
    ingested: int = 0
    present: int = 0                  # already in the lake
    new_images: int = 0
    traces: int = 0                   # new `traces` rows (a source with a completion column)
    left_out: Counter = field(default_factory=Counter)  # rows the source's `where` did not keep
    rejected: Counter = field(default_factory=Counter)

    @property
    def n_rejected(self) -> int:
        return sum(self.rejected.values())

    def line(self) -> str:
        why = ", ".join(f"{k} {v}" for k, v in self.rejected.most_common())
        return (f"{self.source}: read {self.read} = ingested {self.ingested} + already in lake {self.present}"
                f" + rejected {self.n_rejected}" + (f" ({why})" if why else "")
                + (f"; {self.traces} new traces" if self.traces else "")
                + (f"; {self.left_out['where']} rows left out by where" if self.left_out["where"] else ""))


def problem_id(image_id: str | None, question: str, answer: str) -> str:
    return hashlib.sha256("\x1f".join((image_id or "", question, answer)).encode()).hexdigest()[:16]


def trace_key(model: str, problem_id_: str, completion: str) -> str:
    """A source trace's request_key: its writer's identity, its problem and its text."""
    return sha("source-trace", model, problem_id_, completion)


def rejected_id(source: str, position: int, reason: str, payload: str) -> str:
    """A rejected source row's identity: its source, its position in the source's read order and its
    content, with the reason. Two rows sharing a source id are two rejections; the same row rejected
    again by a rerun is the one already stored."""
    key = "\x1f".join(("ingest", source, str(position), reason, payload))
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()[:16]


def _chunks(it: Iterable, n: int) -> Iterator[list]:
    chunk = []
    for x in it:
        chunk.append(x)
        if len(chunk) >= n:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _batches(it: Iterable, n: int) -> Iterator[list]:
    """Chunks of n rows with the last two evened out: a short tail would cost a commit of
    its own while the writer has nothing left to overlap it with."""
    held = None
    for chunk in _chunks(it, n):
        if held is not None and len(chunk) < n:
            both = held + chunk
            yield both[:len(both) // 2]
            held = both[len(both) // 2:]
            continue
        if held is not None:
            yield held
        held = chunk
    if held is not None:
        yield held


def _payload(raw: dict) -> str:
    """The row as JSON text that stores: bytes by their size and digest, lone surrogates escaped."""
    def clean(v):
        if isinstance(v, (bytes, bytearray, memoryview)):
            return f"<{len(v)} bytes sha256:{hashlib.sha256(v).hexdigest()[:16]}>"
        if isinstance(v, dict):
            return {str(k): clean(x) for k, x in v.items()}
        if isinstance(v, (list, tuple)):
            return [clean(x) for x in v]
        return v if isinstance(v, (str, int, float, bool, type(None))) else str(v)
    text = json.dumps(clean({k: v for k, v in raw.items() if not str(k).startswith("_")}), ensure_ascii=False,
                      default=str)
    return _printable(text[:100_000])


@dataclass


class LakeKeys:
    """The problem and image ids the lake holds as of `snapshot`.

    Read with one query per source rather than probed per batch: every scan of a
    DuckLake table costs a few milliseconds of catalog lookups before any data. A batch
    is filtered against these ids and written on top of exactly this snapshot; when
    another writer has committed in between (a shared catalog), they are read again and
    the batch refiltered. As with an anti-join inside the batch's INSERT, a writer
    committing *during* the batch's transaction goes unseen: DuckLake retries appends to
    the same table without rechecking them.
    """

    snapshot: int = -1
    problems: set[str] = field(default_factory=set)
    images: set[str] = field(default_factory=set)
    model: str | None = None          # a source with completions: also the request keys of its traces
    traces: set[str] = field(default_factory=set)

    def read(self, lake: Lake) -> "LakeKeys":
        # One statement, so one snapshot for the ids and its number.
        self.snapshot, problems, images, traces = tables.one(lake, """SELECT (SELECT id FROM lake.current_snapshot()),
            (SELECT list(problem_id) FROM lake.problems), (SELECT list(image_id) FROM lake.images),
            (SELECT list(request_key) FROM lake.traces WHERE model = ?)""", [self.model])
        self.problems, self.images, self.traces = set(problems or ()), set(images or ()), set(traces or ())
        return self


def ingest_source(lake: Lake, src: Source, recipe: IngestConfig, fingerprints: Fingerprints,
                  pool: ThreadPoolExecutor, writer: ThreadPoolExecutor,
                  progress: Callable[[int, Counter], None] | None = None) -> Tally:
    tally = Tally(src.name)
    chains = "completion" in src.columns
    if chains and src.model is None:
        src = dataclasses.replace(src, model=source_identity(src))
    loading = writer.submit(LakeKeys(model=src.model if chains else None).read, lake)  # while the first batch is prepared
    mapping, root = column_map(src), images_root(src)
    rows = read_source(src, tally.left_out)
    first = next(rows, None)
    if first is None:
        return tally
    check_columns(src, first)
    seen: dict[str, str] = {}  # problem_id -> source_id, within this run
    seen_traces: dict[str, str] = {}  # trace key -> source_id; and chains per problem, for sample_index
    per_problem: Counter = Counter()

    # A source has images when its mapping says so or its rows carry an image column.
    wants_image = mapping["image"] is not None and ("image" in src.columns or "image" in first)

    def prepare(items: list[tuple[int, dict]]) -> list:
        out = []
        for i, raw in items:
            try:
                row = map_row(src, mapping, raw, i)
                image = load_image(row.image, root, recipe.full_decode, recipe.max_image_bytes) if wants_image else None
                out.append((i, row, image, None))
            except Reject as r:
                out.append((i, raw, None, r))
        return out

    # Verifying an image costs less than handing it to another thread; full pixel
    # decodes release the GIL and are worth spreading over cores.
    mapper = pool.map if recipe.full_decode else map
    pending = None  # the batch being written while the next one is prepared
    for chunk in _batches(enumerate(itertools.chain([first], rows)), recipe.batch_rows):
        images: dict[str, CheckedImage] = {}
        problems, rejected, traces = [], [], []
        for i, row, image, rej in itertools.chain.from_iterable(mapper(prepare, _chunks(chunk, 64))):
            tally.read += 1
            if rej is not None:
                ref = _source_ref(src.name, mapping, row, i)
                rejected.append((rej.reason, _printable(rej.detail), ref, _payload(row), i))
                continue
            image_id = image.image_id if image else None
            pid = problem_id(image_id, row.question, row.answer)
            ref = f"{src.name}:{row.source_id}"
            why = fingerprints.match(image_id, row.question, recipe.decontaminate_by)
            if why:
                rejected.append(("contaminated", f"{ref}: {why}", ref, _payload(row.raw), i))
                continue
            if row.completion is not None:  # a chain: a duplicate only when its problem and text both repeat
                key = trace_key(src.model, pid, row.completion)
                if key in seen_traces:
                    rejected.append(("duplicate", f"{ref}: same problem and completion as {seen_traces[key]}",
                                     ref, _payload(row.raw), i))
                    continue
                seen_traces[key] = ref
                traces.append(_trace_row(src.model, pid, per_problem[pid], row.completion, key, lake.run_id))
                per_problem[pid] += 1
                if pid in seen:
                    continue  # another chain for a problem this batch already holds
            elif pid in seen:
                rejected.append(("duplicate", f"{ref}: same image, question and answer as {seen[pid]}",
                                 ref, _payload(row.raw), i))
                continue
            seen[pid] = ref
            if image:
                images[image_id] = image
            problems.append((pid, row, image_id))
        reasons = Counter(r[0] for r in rejected)
        tally.rejected.update(reasons)
        if pending is not None:
            pending.result()
        pending = writer.submit(_write_batch, lake, src, loading.result(), images, problems, rejected, tally, traces)
        if progress:
            progress(len(chunk), reasons)
    if pending is not None:
        pending.result()
    return tally


def _trace_row(model: str, pid: str, index: int, completion: str, key: str, run_id: str | None) -> dict:
    """A `traces` row for a chain a source carries: the distil stage's columns, no generation settings."""
    from vlfactory.verify import extract_answer

    return {"trace_id": key[:16], "problem_id": pid, "sample_index": index, "model": model, "completion": completion,
            "reasoning": split_reasoning(completion), "answer": extract_answer(completion), "request_key": key,
            "run_id": run_id, "backend": "dataset"}


def _model_row(src: Source, run_id: str | None) -> pa.Table:
    """The `models` row naming a source that wrote traces (kind dataset), as generation.record_model names models."""
    local = Path(src.path).exists()
    return pa.table({"model_key": [sha("model", src.model, src.path)[:16]], "model_id": [src.model],
                     "name": [Path(src.path).name if local else src.path], "revision": [src.revision],
                     "path": [src.path if local else None], "kind": ["dataset"],
                     "training_id": [None], "run_id": [run_id]}, schema=schema.MODELS)


class _Stale(Exception):
    """Another writer committed since the keys were read."""


def _write_batch(lake: Lake, src: Source, keys: LakeKeys, images: dict[str, CheckedImage], problems: list,
                 rejected: list, tally: Tally, traces: list | None = None) -> None:
    run = lake.run_id
    traces = traces or []
    rejected_table = pa.Table.from_pylist([
        {"rejected_id": rejected_id(src.name, r[4], r[0], r[3]), "stage": "ingest", "reason": r[0], "reasons": [r[0]],
         "detail": r[1], "ref_id": r[2], "source": src.name, "payload": r[3], "run_id": run} for r in rejected],
        schema=schema.REJECTED)
    while True:
        new = [p for p in problems if p[0] not in keys.problems]
        chains = [t for t in traces if t["request_key"] not in keys.traces]
        if not new and not rejected and not chains:
            break  # the keys lag the lake but never lead it: what they hold is there
        imgs = [images[i] for i in sorted({p[2] for p in new if p[2]} - keys.images)]
        image_table = pa.table({
            "image_id": [i.image_id for i in imgs], "bytes": [i.data for i in imgs],
            "width": [i.width for i in imgs], "height": [i.height for i in imgs],
            "format": [i.format for i in imgs], "n_bytes": [len(i.data) for i in imgs],
            "run_id": [run] * len(imgs)}, schema=schema.IMAGES)
        problem_table = pa.table({
            "problem_id": [p[0] for p in new], "source": [src.name] * len(new),
            "source_id": [p[1].source_id for p in new], "split": [p[1].split for p in new],
            "question": [p[1].question for p in new], "answer": [p[1].answer for p in new],
            "choices": [p[1].choices for p in new], "image_id": [p[2] for p in new],
            "caption": [p[1].caption for p in new], "run_id": [run] * len(new)}, schema=schema.PROBLEMS)
        try:
            with lake.transaction(f"ingest {src.name}: {len(new)} problems, {len(rejected)} rejected"):
                if lake.current_snapshot() != keys.snapshot:
                    raise _Stale
                written = lake.append("images", image_table) + lake.insert("problems", problem_table)
                if new:  # checked against keys.snapshot only: a concurrent batch of these tables must conflict
                    lake.guard("images", "problems")
                # Rejected rows are few: an anti-join costs less than reading their ids up front.
                written += lake.insert("rejected", rejected_table, key="rejected_id")
                if chains:
                    n_traces = lake.insert("traces", pa.Table.from_pylist(chains, schema=schema.TRACES),
                                           key="request_key")
                    written += n_traces + lake.insert("models", _model_row(src, run), key="model_key")
        except (_Stale, WriteConflict):
            keys.read(lake)
            continue
        if written:
            keys.snapshot += 1  # ours; had DuckLake retried it after another writer's, the next batch sees a mismatch
        keys.problems.update(p[0] for p in new)
        keys.images.update(i.image_id for i in imgs)
        keys.traces.update(t["request_key"] for t in chains)
        tally.traces += n_traces if chains else 0
        tally.new_images += len(imgs)
        tally.ingested += len(new)
        break
    tally.present += len(problems) - len(new)


def ingest(lake: Lake, recipe: IngestConfig, workers: int | None = None,
           progress_factory: Callable[[str, int | None], Callable[[int, Counter], None]] | None = None,
           fingerprints: Fingerprints | None = None) -> list[Tally]:
    """Ingest every source of a recipe against the benchmarks' `fingerprints` (read here when not given);
    returns one tally per source.

    One writer thread reads the lake's ids, then commits each batch (DuckDB
    releases the GIL) while the next batch is read and checked.
    """
    workers = workers or os.cpu_count() or 1
    # Ingest's statements are small: DuckDB's worker threads cost more in hand-offs than they save.
    with tables.threads(lake, 1), ThreadPoolExecutor(workers) as pool, ThreadPoolExecutor(1) as writer:
        if fingerprints is None:
            fingerprints = benchmark_fingerprints(recipe, workers)
        tallies = []
        for src in recipe.sources:
            progress = progress_factory(src.name, src.limit) if progress_factory else None
            tallies.append(ingest_source(lake, src, recipe, fingerprints, pool, writer, progress))
    return tallies


def run(lake: Lake, cfg: IngestConfig, scope: Scope, progress=None) -> StageResult:
    """The ingest stage: the sources in scope, each read up to `scope.limit` rows; one tally line per source."""
    limit = scope.limit
    sources = [dataclasses.replace(src, limit=src.limit if limit is None else (limit if src.limit is None else min(src.limit, limit)),
                                   n=src.n if limit is None else min(src.n, limit))
               for src in cfg.sources if src.name in scope.sources]
    cfg = dataclasses.replace(cfg, sources=sources)
    preflight(cfg)
    result = StageResult("ingest")
    t0 = time.perf_counter()

    def batch_done(n: int, reasons: Counter) -> None:
        result.rejected.update(reasons)  # live, for progress lines; the tallies below are the final word
        progress(result, n)

    fingerprints = benchmark_fingerprints(cfg, os.cpu_count() or 1)
    tallies = ingest(lake, cfg, progress_factory=(lambda name, total: batch_done) if progress else None,
                     fingerprints=fingerprints)
    result.rejected = Counter()
    for t in tallies:
        result.wanted += t.read
        result.written += t.ingested
        result.cached += t.present
        result.rejected.update(t.rejected)
        result.extra |= {f"{t.source}.read": t.read, f"{t.source}.ingested": t.ingested,
                         f"{t.source}.present": t.present, f"{t.source}.rejected": t.n_rejected}
        if t.traces:
            result.extra[f"{t.source}.traces"] = t.traces
        if t.left_out["where"]:
            result.extra[f"{t.source}.left_out"] = t.left_out["where"]
    for name, why in fingerprints.unread.items():
        if why:
            result.extra[f"{name}.benchmark_unread"] = sum(why.values())
    result.seconds = time.perf_counter() - t0
    nothing = tallies and not result.written and not result.rejected and not any(t.traces for t in tallies)
    result.summary = "\n".join([t.line() for t in tallies] + fingerprints.unread_lines()) + (
        "\nnothing new: every row is already in the lake" if nothing else "")
    return result
