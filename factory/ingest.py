"""Ingest: read sources, map their columns onto the schema, store problems and images.

Every row read ends in exactly one place: a new problem, a problem the lake
already holds, or `rejected` with a reason. Images are decoded once to prove
they are images, stored once (by SHA-256 of the original bytes) and
byte-exact. Problems are keyed by (image, question, answer), so re-ingesting a
source adds nothing. Writes go in batches, one snapshot each (a batch's images
as one Parquet file the lake adopts), so a crash loses at most the batch in
flight and a rerun picks up the rest.

    vlfactory ingest recipes/tabmwp.yaml
"""

from __future__ import annotations

import dataclasses
import glob
import itertools
import hashlib
import io
import json
import os
import re
import string
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import pyarrow as pa

from vlfactory.recipe import IngestConfig, RecipeError, Source
from vlfactory.stages import Scope, StageResult
from vlfactory.stores import schema
from vlfactory.stores.lake import Lake

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".gif", ".bmp", ".webp", ".tif", ".tiff"}


@dataclass
class Tally:
    source: str
    read: int = 0
    ingested: int = 0
    present: int = 0                  # already in the lake
    new_images: int = 0
    rejected: Counter = field(default_factory=Counter)

    @property
    def n_rejected(self) -> int:
        return sum(self.rejected.values())

    def line(self) -> str:
        why = ", ".join(f"{k} {v}" for k, v in self.rejected.most_common())
        return (f"{self.source}: read {self.read} = ingested {self.ingested} + already in lake {self.present}"
                f" + rejected {self.n_rejected}" + (f" ({why})" if why else ""))


@dataclass
class Row:
    """A source row mapped onto the schema, before its image is checked."""

    source_id: str
    question: str | None
    answer: str | None
    choices: list[str] | None
    caption: str | None
    split: str
    image: Any                        # bytes, path, HF image dict, or None
    raw: dict


class Reject(Exception):
    def __init__(self, reason: str, detail: str):
        super().__init__(detail)
        self.reason, self.detail = reason, detail


# ---- reading sources --------------------------------------------------------

def read_source(src: Source) -> Iterator[dict]:
    """Raw rows of a source, each with `_key` (its id in the source when it has one)."""
    rows = _READERS[src.format](src)
    for i, row in enumerate(rows):
        if src.limit is not None and i >= src.limit:
            return
        yield row


def _files(pattern: str, suffixes: tuple[str, ...]) -> list[str]:
    if os.path.isdir(pattern):
        return sorted(str(p) for p in Path(pattern).rglob("*") if p.suffix in suffixes)
    files = sorted(glob.glob(pattern)) if any(c in pattern for c in "*?[") else [pattern]
    if not files:
        raise RecipeError(f"no files match {pattern}")
    return files


def _read_json(src: Source) -> Iterator[dict]:
    for path in _files(src.path, (".json",)):
        try:
            data = json.loads(Path(path).read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise RecipeError(f"{path}: not valid JSON ({e})") from None
        if isinstance(data, dict):
            # An object keyed by id: the key becomes the source id.
            for key, value in data.items():
                row = dict(value) if isinstance(value, dict) else {"value": value}
                row.setdefault("id", key)
                row["_key"] = key
                yield row
        elif isinstance(data, list):
            for i, value in enumerate(data):
                yield dict(value) if isinstance(value, dict) else {"value": value, "_bad": f"row {i} is not an object"}
        else:
            raise RecipeError(f"{path}: expected a JSON list of rows or an object keyed by id")


def _read_jsonl(src: Source) -> Iterator[dict]:
    for path in _files(src.path, (".jsonl", ".json")):
        with open(path, encoding="utf-8", errors="replace") as f:
            for n, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as e:
                    yield {"_bad": f"{path}:{n}: invalid JSON ({e.msg})", "_key": f"line{n}"}
                    continue
                yield row if isinstance(row, dict) else {"_bad": f"{path}:{n}: not a JSON object", "_key": f"line{n}"}


def _read_parquet(src: Source) -> Iterator[dict]:
    import pyarrow.parquet as pq

    for path in _files(src.path, (".parquet",)):
        for batch in pq.ParquetFile(path).iter_batches(batch_size=512):
            yield from batch.to_pylist()


def _read_hf(src: Source) -> Iterator[dict]:
    import datasets

    ds = datasets.load_dataset(src.path, src.subset, split=src.split, data_dir=src.data_dir,
                               data_files=src.data_files, revision=src.revision)
    # Keep images as their original bytes: decoding and re-encoding would change the hash.
    for name, feature in ds.features.items():
        if isinstance(feature, datasets.Image):
            ds = ds.cast_column(name, datasets.Image(decode=False))
    yield from ds


def _read_imagefolder(src: Source) -> Iterator[dict]:
    root = Path(src.path)
    meta: dict[str, dict] = {}
    for name in ("metadata.jsonl", "metadata.csv", "metadata.parquet"):
        for mpath in root.rglob(name):
            for row in _read_metadata(mpath):
                meta[str((mpath.parent / row["file_name"]).resolve())] = row
    for path in sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES):
        row = dict(meta.get(str(path.resolve()), {}))
        rel = path.relative_to(root)
        row.setdefault("file_name", str(rel))
        row.setdefault("id", str(rel.with_suffix("")))
        if len(rel.parts) > 1:
            row.setdefault("label", rel.parts[-2])
        row["image"] = str(path)
        yield row


def _read_metadata(path: Path) -> Iterable[dict]:
    if path.suffix == ".jsonl":
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    if path.suffix == ".csv":
        import csv

        return list(csv.DictReader(path.open()))
    import pyarrow.parquet as pq

    return pq.read_table(path).to_pylist()


def _read_synthetic(src: Source) -> Iterator[dict]:
    from vlfactory.synthetic import generate

    yield from generate(src.n, seed=src.seed, kinds=src.kinds)


_READERS: dict[str, Callable[[Source], Iterator[dict]]] = {
    "json": _read_json, "jsonl": _read_jsonl, "parquet": _read_parquet,
    "hf": _read_hf, "imagefolder": _read_imagefolder, "synthetic": _read_synthetic,
}


# ---- mapping rows onto the schema -------------------------------------------

def column_map(src: Source) -> dict[str, str | None]:
    """The schema column -> source column mapping, defaults filled in (same name)."""
    mapping: dict[str, str | None] = {k: k for k in ("question", "answer", "image", "choices", "caption", "id")}
    mapping.update(src.columns)
    return mapping


def _fields(template: str) -> list[str]:
    return [f for _, f, _, _ in string.Formatter().parse(template) if f]


def check_columns(src: Source, first: dict) -> None:
    """Fail before any write when the mapping names a column the data lacks."""
    mapping = column_map(src)
    for key, col in mapping.items():
        if col is None or (key not in src.columns and key not in ("question", "answer")):
            continue  # optional columns that merely default to their own name
        for name in (_fields(col) if "{" in col else [col]):
            if name not in first:
                cols = ", ".join(k for k in first if not k.startswith("_"))
                raise RecipeError(f"source {src.name}: columns.{key}: {name!r} is not a column of the data "
                                  f"(columns: {cols}); map it under `columns:`")


def preflight(recipe: IngestConfig) -> None:
    """Read each source's first row and check the mapping, before anything is written."""
    for src in recipe.sources + recipe.benchmarks:
        first = next(read_source(src), None)
        if first is not None:
            check_columns(src, first)


def map_row(src: Source, mapping: dict[str, str | None], raw: dict, index: int) -> Row:
    if "_bad" in raw:
        raise Reject("bad_row", raw["_bad"])

    def get(key: str) -> Any:
        col = mapping.get(key)
        if col is None:
            return None
        if "{" in col:
            try:
                return col.format_map(raw)
            except (KeyError, IndexError, ValueError) as e:
                raise Reject("unmappable_column", f"columns.{key}: template {col!r} needs {e} which this row lacks")
        if col not in raw:
            if key in src.columns:
                raise Reject("unmappable_column", f"columns.{key}: column {col!r} missing from this row")
            return None  # an optional column left at its default name
        return raw[col]

    source_id = get("id")
    source_id = str(source_id if source_id is not None else raw.get("_key", index))
    question = get("question")
    answer = get("answer")
    if question is None or not str(question).strip():
        raise Reject("empty_question", "the question is missing or empty")
    if answer is None or (isinstance(answer, str) and not answer.strip()) or answer == []:
        raise Reject("missing_answer", "the answer is missing or empty")
    choices = get("choices")
    if isinstance(choices, str):
        try:
            choices = json.loads(choices)
        except json.JSONDecodeError:
            raise Reject("bad_choices", f"choices is a string that is not a JSON list: {choices[:80]!r}")
    if choices is not None:
        if not isinstance(choices, (list, tuple)):
            raise Reject("bad_choices", f"choices must be a list, got {type(choices).__name__}")
        choices = [str(c) for c in choices]
    caption = get("caption")
    split = get("split") if "split" in mapping else None
    return Row(source_id=source_id, question=str(question).strip(),
               answer=(answer if isinstance(answer, str) else json.dumps(answer) if isinstance(answer, (list, dict)) else str(answer)).strip(),
               choices=choices or None, caption=None if caption is None else str(caption),
               split=str(split) if split is not None else src.split, image=get("image"), raw=raw)


# ---- images -------------------------------------------------------------------

@dataclass
class CheckedImage:
    image_id: str
    data: bytes
    width: int
    height: int
    format: str


def _check_image(data: bytes, full_decode: bool) -> tuple[int, int, str]:
    """Prove the bytes are one whole image; return its size and format.

    Every byte is checked, but pixels are inflated only where that is the
    check: a PNG's chunks are verified against their CRCs through IEND
    (truncation or a flipped bit fails), a JPEG's entropy-coded data is fully
    decoded at 1/8 scale, other formats are decoded in full. `full_decode`
    inflates every pixel of every format (about 50x slower on PNG).
    """
    from PIL import Image

    with Image.open(io.BytesIO(data)) as im:
        width, height, fmt = im.size[0], im.size[1], im.format or "unknown"
        if full_decode or fmt not in ("PNG", "JPEG"):
            im.load()
        elif fmt == "PNG":
            im.verify()
        else:
            im.draft(im.mode, (max(1, width // 8), max(1, height // 8)))
            im.load()
    return width, height, fmt


def load_image(value: Any, root: Path, full_decode: bool = False) -> CheckedImage:
    """Read an image's original bytes, prove they decode, and hash them."""
    from PIL import Image

    path = None
    if isinstance(value, dict):  # datasets' Image(decode=False): {"bytes": ..., "path": ...}
        data, path = value.get("bytes"), value.get("path")
        if data is None and path:
            value = path
        elif data is None:
            raise Reject("missing_image", "the image field is empty")
        else:
            value = data
    if isinstance(value, (bytes, bytearray, memoryview)):
        data = bytes(value)
    elif isinstance(value, (str, os.PathLike)):
        path = os.path.join(root, os.path.expanduser(value))  # an absolute path stays as it is
        try:
            with open(path, "rb", buffering=0) as f:  # unbuffered: one read of the whole file
                data = f.read()
        except FileNotFoundError:
            raise Reject("missing_image", f"image file not found: {path}")
        except OSError as e:
            raise Reject("missing_image", f"cannot read image {path}: {e.strerror or e}")
    elif isinstance(value, Image.Image):
        # Already decoded upstream (no original bytes): store a lossless PNG of it.
        buf = io.BytesIO()
        value.save(buf, format="PNG")
        data = buf.getvalue()
    else:
        raise Reject("missing_image" if value is None else "bad_image",
                     "no image in this row" if value is None else f"unsupported image value {type(value).__name__}")
    if not data:
        raise Reject("bad_image", f"empty image file{f': {path}' if path else ''}")
    try:
        width, height, fmt = _check_image(data, full_decode)
    except Exception as e:  # PIL raises many types for bad data
        where = f"{path}: " if path else ""
        raise Reject("bad_image", f"{where}not a readable image ({type(e).__name__}: {str(e)[:120]})")
    return CheckedImage(hashlib.sha256(data).hexdigest(), data, width, height, fmt)


# ---- ids and fingerprints -------------------------------------------------------

def problem_id(image_id: str | None, question: str, answer: str) -> str:
    return hashlib.sha256("\x1f".join((image_id or "", question, answer)).encode()).hexdigest()[:16]


def rejected_id(stage: str, reason: str, ref_id: str) -> str:
    return hashlib.sha256("\x1f".join((stage, reason, ref_id)).encode()).hexdigest()[:16]


_PUNCT = re.compile(r"[^\w\s]")


def normalise_question(q: str) -> str:
    return " ".join(_PUNCT.sub(" ", q.lower()).split())


@dataclass
class Fingerprints:
    images: set[str] = field(default_factory=set)
    questions: set[str] = field(default_factory=set)

    def match(self, image_id: str | None, question: str, by: list[str]) -> str | None:
        if "image" in by and image_id and image_id in self.images:
            return "its image is a benchmark image"
        if "question" in by and self.questions and normalise_question(question) in self.questions:
            return "its question matches a benchmark question"
        return None


def benchmark_fingerprints(recipe: IngestConfig, workers: int) -> Fingerprints:
    fp = Fingerprints()
    for src in recipe.benchmarks:
        mapping, root = column_map(src), _images_root(src)
        for i, raw in enumerate(read_source(src)):
            try:
                row = map_row(src, mapping, raw, i)
            except Reject:
                continue
            fp.questions.add(normalise_question(row.question))
            if row.image is not None:
                try:
                    fp.images.add(load_image(row.image, root).image_id)
                except Reject:
                    pass
    return fp


def _images_root(src: Source) -> Path:
    if src.images_root:
        return Path(src.images_root)
    if src.path and os.path.exists(src.path):
        p = Path(src.path)
        return p if p.is_dir() else p.parent
    return Path.cwd()


# ---- the stage -----------------------------------------------------------------

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
    def clean(v):
        if isinstance(v, (bytes, bytearray, memoryview)):
            return f"<{len(v)} bytes>"
        if isinstance(v, dict):
            return {k: clean(x) for k, x in v.items()}
        if isinstance(v, list):
            return [clean(x) for x in v]
        return v if isinstance(v, (str, int, float, bool, type(None))) else str(v)
    return json.dumps(clean({k: v for k, v in raw.items() if not k.startswith("_")}), ensure_ascii=False, default=str)[:100_000]


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

    def read(self, lake: Lake) -> "LakeKeys":
        # One statement, so one snapshot for the ids and its number.
        self.snapshot, problems, images = lake.con.execute("""SELECT (SELECT id FROM lake.current_snapshot()),
            (SELECT list(problem_id) FROM lake.problems), (SELECT list(image_id) FROM lake.images)""").fetchone()
        self.problems, self.images = set(problems or ()), set(images or ())
        return self


def ingest_source(lake: Lake, src: Source, recipe: IngestConfig, fingerprints: Fingerprints,
                  pool: ThreadPoolExecutor, writer: ThreadPoolExecutor,
                  progress: Callable[[int], None] | None = None) -> Tally:
    tally = Tally(src.name)
    loading = writer.submit(LakeKeys().read, lake)  # read while the first batch is prepared
    mapping, root = column_map(src), _images_root(src)
    rows = read_source(src)
    first = next(rows, None)
    if first is None:
        return tally
    check_columns(src, first)
    seen: dict[str, str] = {}  # problem_id -> source_id, within this run

    # A source has images when its mapping says so or its rows carry an image column.
    wants_image = mapping["image"] is not None and ("image" in src.columns or "image" in first)

    def prepare(items: list[tuple[int, dict]]) -> list:
        out = []
        for i, raw in items:
            try:
                row = map_row(src, mapping, raw, i)
                out.append((row, load_image(row.image, root, recipe.full_decode) if wants_image else None, None))
            except Reject as r:
                out.append(((i, raw), None, r))
        return out

    # Verifying an image costs less than handing it to another thread; full pixel
    # decodes release the GIL and are worth spreading over cores.
    mapper = pool.map if recipe.full_decode else map
    pending = None  # the batch being written while the next one is prepared
    for chunk in _batches(enumerate(itertools.chain([first], rows)), recipe.batch_rows):
        images: dict[str, CheckedImage] = {}
        problems, rejected = [], []
        for row, image, rej in itertools.chain.from_iterable(mapper(prepare, _chunks(chunk, 64))):
            tally.read += 1
            if rej is not None:
                i, raw = row
                ref = f"{src.name}:{raw.get('id', raw.get('_key', f'#{i}'))}"
                rejected.append((rej.reason, rej.detail, ref, _payload(raw)))
                continue
            image_id = image.image_id if image else None
            pid = problem_id(image_id, row.question, row.answer)
            ref = f"{src.name}:{row.source_id}"
            why = fingerprints.match(image_id, row.question, recipe.decontaminate_by)
            if why:
                rejected.append(("contaminated", f"{ref}: {why}", ref, _payload(row.raw)))
                continue
            if pid in seen:
                rejected.append(("duplicate", f"{ref}: same image, question and answer as {seen[pid]}",
                                 ref, _payload(row.raw)))
                continue
            seen[pid] = ref
            if image:
                images[image_id] = image
            problems.append((pid, row, image_id))
        tally.rejected.update(r[0] for r in rejected)
        if pending is not None:
            pending.result()
        pending = writer.submit(_write_batch, lake, src, loading.result(), images, problems, rejected, tally)
        if progress:
            progress(len(chunk))
    if pending is not None:
        pending.result()
    return tally


class _Stale(Exception):
    """Another writer committed since the keys were read."""


def _write_batch(lake: Lake, src: Source, keys: LakeKeys, images: dict[str, CheckedImage], problems: list,
                 rejected: list, tally: Tally) -> None:
    run = lake.run_id
    rejected_table = pa.Table.from_pylist([
        {"rejected_id": rejected_id("ingest", r[0], r[2]), "stage": "ingest", "reason": r[0], "reasons": [r[0]],
         "detail": r[1], "ref_id": r[2], "source": src.name, "payload": r[3], "run_id": run} for r in rejected],
        schema=schema.REJECTED)
    while True:
        new = [p for p in problems if p[0] not in keys.problems]
        if not new and not rejected:
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
                # Rejected rows are few: an anti-join costs less than reading their ids up front.
                written += lake.insert("rejected", rejected_table, key="rejected_id")
        except _Stale:
            keys.read(lake)
            continue
        if written:
            keys.snapshot += 1  # ours; had DuckLake retried it after another writer's, the next batch sees a mismatch
        keys.problems.update(p[0] for p in new)
        keys.images.update(i.image_id for i in imgs)
        tally.new_images += len(imgs)
        tally.ingested += len(new)
        break
    tally.present += len(problems) - len(new)


def ingest(lake: Lake, recipe: IngestConfig, workers: int | None = None,
           progress_factory: Callable[[str, int | None], Callable[[int], None]] | None = None) -> list[Tally]:
    """Ingest every source of a recipe; returns one tally per source.

    One writer thread reads the lake's ids, then commits each batch (DuckDB
    releases the GIL) while the next batch is read and checked.
    """
    workers = workers or os.cpu_count() or 1
    # Ingest's statements are small: DuckDB's worker threads cost more in hand-offs than they save.
    threads = lake.con.execute("SELECT current_setting('threads')").fetchone()[0]
    lake.con.execute("SET threads = 1")
    try:
        with ThreadPoolExecutor(workers) as pool, ThreadPoolExecutor(1) as writer:
            fingerprints = benchmark_fingerprints(recipe, workers)
            tallies = []
            for src in recipe.sources:
                progress = progress_factory(src.name, src.limit) if progress_factory else None
                tallies.append(ingest_source(lake, src, recipe, fingerprints, pool, writer, progress))
    finally:
        lake.con.execute(f"SET threads = {threads}")
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
    factory = (lambda name, total: lambda n: progress(result, n)) if progress else None
    tallies = ingest(lake, cfg, progress_factory=factory)
    for t in tallies:
        result.wanted += t.read
        result.written += t.ingested
        result.cached += t.present
        result.rejected.update(t.rejected)
        result.extra |= {f"{t.source}.read": t.read, f"{t.source}.ingested": t.ingested,
                         f"{t.source}.present": t.present, f"{t.source}.rejected": t.n_rejected}
    result.seconds = time.perf_counter() - t0
    nothing = tallies and not result.written and not result.rejected
    result.summary = "\n".join(t.line() for t in tallies) + (
        "\nnothing new: every row is already in the lake" if nothing else "")
    return result
