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
import math
import os
import re
import stat
import string
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import pyarrow as pa

from vlfactory.recipe import MAX_IMAGE_BYTES, IngestConfig, RecipeError, Source
from vlfactory.stages import Scope, StageResult
from vlfactory.stores import schema
from vlfactory.stores.lake import Lake, WriteConflict

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


# Text files are decoded with surrogateescape: a byte that is not UTF-8 becomes a lone surrogate in
# that one row's strings, and map_row rejects the row (invalid_text) instead of the whole file failing.

def _read_json(src: Source) -> Iterator[dict]:
    for path in _files(src.path, (".json",)):
        try:
            data = json.loads(Path(path).read_bytes().decode("utf-8", "surrogateescape"))
        except json.JSONDecodeError as e:
            raise RecipeError(f"{path}: not valid JSON ({e})") from None
        except RecursionError:
            raise RecipeError(f"{path}: not valid JSON (nested too deep)") from None
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
        with open(path, encoding="utf-8", errors="surrogateescape") as f:
            for n, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except (json.JSONDecodeError, RecursionError) as e:
                    why = e.msg if isinstance(e, json.JSONDecodeError) else "nested too deep"
                    yield {"_bad": f"{path}:{n}: invalid JSON ({why})", "_key": f"line{n}"}
                    continue
                yield row if isinstance(row, dict) else {"_bad": f"{path}:{n}: not a JSON object", "_key": f"line{n}"}


def _read_parquet(src: Source) -> Iterator[dict]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    files = []
    for path in _files(src.path, (".parquet",)):  # every footer read up front: a broken file fails before any write
        try:
            files.append((path, pq.ParquetFile(path)))
        except (pa.ArrowException, OSError) as e:
            raise RecipeError(f"{path}: not a readable Parquet file ({_first_line(e)})") from None
    for path, f in files:
        try:
            for batch in f.iter_batches(batch_size=512):
                yield from batch.to_pylist()
        except (pa.ArrowException, OSError) as e:
            raise RecipeError(f"{path}: not a readable Parquet file ({_first_line(e)}); the rows before it are "
                              "stored, a rerun after fixing it adds the rest") from None


def _first_line(e: BaseException) -> str:
    return (str(e).strip().splitlines() or [type(e).__name__])[0][:300]


def _read_hf(src: Source) -> Iterator[dict]:
    import datasets

    try:
        ds = datasets.load_dataset(src.path, src.subset, split=src.split, data_dir=src.data_dir,
                                   data_files=src.data_files, revision=src.revision)
    except Exception as e:  # datasets raises many types (missing repo, no network, bad files, bad split)
        raise RecipeError(f"{src.path}: datasets cannot load it ({type(e).__name__}: {_first_line(e)})") from None
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
            for n, row in enumerate(_read_metadata(mpath), 1):
                if not isinstance(row, dict) or not isinstance(row.get("file_name"), str):
                    raise RecipeError(f"{mpath}: row {n} has no file_name (the image's path relative to it)")
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
    import csv

    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        if path.suffix == ".jsonl":
            text = path.read_bytes().decode("utf-8", "surrogateescape")
            return [json.loads(line) for line in text.splitlines() if line.strip()]
        if path.suffix == ".csv":
            with path.open(encoding="utf-8", errors="surrogateescape", newline="") as f:
                return list(csv.DictReader(f))
        return pq.read_table(path).to_pylist()
    except (ValueError, RecursionError, csv.Error, pa.ArrowException, OSError) as e:
        raise RecipeError(f"{path}: not valid {path.suffix[1:]} metadata ({_first_line(e)})") from None


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
    if "_bad" in first:  # an unreadable row says nothing about the columns; it is rejected on its own
        return
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
        rows = read_source(src)
        first = next((row for row, _ in zip(rows, range(1000)) if "_bad" not in row), None)
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
            except (KeyError, IndexError, ValueError, TypeError, AttributeError) as e:
                raise Reject("unmappable_column", f"columns.{key}: template {col!r} needs {e} which this row lacks")
        if col not in raw:
            if key in src.columns:
                raise Reject("unmappable_column", f"columns.{key}: column {col!r} missing from this row")
            return None  # an optional column left at its default name
        return raw[col]

    source_id = _text(get("id"), "id", scalar=True)
    if source_id is None:
        source_id = _text(raw.get("_key", index), "id", scalar=True)
    question = _text(get("question"), "question", scalar=True, missing="empty_question")
    if question is None or not question.strip():
        raise Reject("empty_question", "the question is missing or empty")
    answer = _answer(get("answer"))
    choices = get("choices")
    if isinstance(choices, (bytes, str)):
        text = _text(choices, "choices")
        try:
            choices = json.loads(text)
        except (json.JSONDecodeError, RecursionError):
            raise Reject("bad_choices", f"choices is a string that is not a JSON list: {_printable(text[:80])!r}")
    if choices is not None:
        if not isinstance(choices, (list, tuple)):
            raise Reject("bad_choices", f"choices must be a list, got {type(choices).__name__}")
        choices = [_text(c, "choices", scalar=True, missing="bad_choices") for c in choices]
        if None in choices:
            raise Reject("bad_choices", "choices holds an empty (null) option")
    caption = _text(get("caption"), "caption", scalar=True)
    split = _text(get("split"), "split", scalar=True) if "split" in mapping else None
    return Row(source_id=source_id, question=question.strip(), answer=answer, choices=choices or None,
               caption=caption, split=split if split is not None else src.split, image=get("image"), raw=raw)


def _text(value: Any, what: str, scalar: bool = False, missing: str | None = None) -> str | None:
    """A text field as a str that stores: bytes must be UTF-8; a str must hold no lone surrogate (a JSON
    `\\ud800`, or a byte of the file that was not UTF-8); numbers become their text when `scalar`, a NaN is
    a missing value (rejected as `missing` when that is given), an infinity is rejected."""
    if isinstance(value, (bytes, bytearray, memoryview)):
        try:
            value = bytes(value).decode("utf-8")
        except UnicodeDecodeError as e:
            raise Reject("invalid_text", f"{what} is not UTF-8 text (byte {e.start}: {bytes(value)[e.start:e.start + 1]!r})")
    if isinstance(value, float) and scalar:
        if math.isnan(value):
            if missing:
                raise Reject(missing, f"{what} is NaN (a missing value)")
            return None
        if math.isinf(value):
            raise Reject(f"bad_{what}", f"{what} is {value}, not a value")
    if value is None or isinstance(value, str):
        pass
    elif scalar and isinstance(value, (int, float)):  # bool is an int: True -> "True"
        value = str(value)
    else:
        raise Reject(f"bad_{what}", f"{what} must be text, got {type(value).__name__}: {_printable(str(value)[:80])}")
    if value is not None:
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as e:
            raise Reject("invalid_text", f"{what} is not valid text: {value[e.start]!r} at {e.start} is a lone "
                                         "surrogate (an escape in the JSON, or a byte that was not UTF-8)")
    return value


def _answer(value: Any) -> str:
    """The gold answer as text: a string, a number (not NaN or infinite), or a list/mapping of them as JSON."""
    if isinstance(value, (list, tuple, dict)):
        if not value:
            raise Reject("missing_answer", "the answer is missing or empty")
        try:
            value = json.dumps(value, allow_nan=False)
        except ValueError:
            raise Reject("bad_answer", "the answer holds NaN or an infinity")
        except TypeError as e:
            raise Reject("bad_answer", f"the answer is not JSON-like: {e}")
    answer = _text(value, "answer", scalar=True, missing="missing_answer")
    if answer is None or not answer.strip():
        raise Reject("missing_answer", "the answer is missing or empty")
    return answer.strip()


def _source_ref(source: str, mapping: dict[str, str | None], raw: dict, index: int) -> str:
    """SOURCE:ID of a row that could not be mapped: its id column when it has one, else its key or position."""
    col = mapping.get("id")
    value = raw.get(col) if col and "{" not in col else None
    return _printable(f"{source}:{raw.get('_key', index) if value is None else value}")


def _printable(text: str) -> str:
    """Text that stores and prints: a lone surrogate becomes its escape (\\udc80)."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


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


def load_image(value: Any, root: Path, full_decode: bool = False, max_bytes: int = MAX_IMAGE_BYTES) -> CheckedImage:
    """Read an image's original bytes (at most `max_bytes`), prove they decode, and hash them."""
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
        data = _read_image_file(path, max_bytes)
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
    if len(data) > max_bytes:
        raise Reject("image_too_large", f"{len(data)} bytes, over max_image_bytes ({max_bytes})")
    try:
        width, height, fmt = _check_image(data, full_decode)
    except Exception as e:  # PIL raises many types for bad data
        where = f"{path}: " if path else ""
        raise Reject("bad_image", f"{where}not a readable image ({type(e).__name__}: {str(e)[:120]})")
    return CheckedImage(hashlib.sha256(data).hexdigest(), data, width, height, fmt)


def _read_image_file(path: str, max_bytes: int) -> bytes:
    """A regular file's bytes, refused unread when it is larger than `max_bytes`.

    Opened non-blocking and checked on the open descriptor, so a FIFO (which would block until a
    writer came) or a device (/dev/zero never ends) is rejected, not read, and a file swapped in
    after a check is still the file checked.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        raise Reject("missing_image", f"image file not found: {path}")
    except (OSError, ValueError) as e:  # ValueError: a NUL in the path
        raise Reject("missing_image", f"cannot read image {path}: {getattr(e, 'strerror', None) or e}")
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            kind = ("a folder" if stat.S_ISDIR(st.st_mode) else "a FIFO" if stat.S_ISFIFO(st.st_mode)
                    else "a device" if stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode) else "not a file")
            raise Reject("bad_image", f"{path} is {kind}, not a regular file")
        if st.st_size > max_bytes:
            raise Reject("image_too_large", f"{path}: {st.st_size} bytes, over max_image_bytes ({max_bytes})")
        chunks, size = [], 0
        # Ask for the size fstat gave (plus one, to see the end); a file that grows stops at the cap.
        while chunk := os.read(fd, min(st.st_size + 1, max_bytes + 1 - size)):
            chunks.append(chunk)
            size += len(chunk)
            if size > max_bytes:
                raise Reject("image_too_large", f"{path}: over max_image_bytes ({max_bytes})")
    except OSError as e:
        raise Reject("missing_image", f"cannot read image {path}: {e.strerror or e}")
    finally:
        os.close(fd)
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


# ---- ids and fingerprints -------------------------------------------------------

def problem_id(image_id: str | None, question: str, answer: str) -> str:
    return hashlib.sha256("\x1f".join((image_id or "", question, answer)).encode()).hexdigest()[:16]


def rejected_id(source: str, position: int, reason: str, payload: str) -> str:
    """A rejected source row's identity: its source, its position in the source's read order and its
    content, with the reason. Two rows sharing a source id are two rejections; the same row rejected
    again by a rerun is the one already stored."""
    key = "\x1f".join(("ingest", source, str(position), reason, payload))
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()[:16]


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
                    fp.images.add(load_image(row.image, root, max_bytes=recipe.max_image_bytes).image_id)
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

    def read(self, lake: Lake) -> "LakeKeys":
        # One statement, so one snapshot for the ids and its number.
        self.snapshot, problems, images = lake.con.execute("""SELECT (SELECT id FROM lake.current_snapshot()),
            (SELECT list(problem_id) FROM lake.problems), (SELECT list(image_id) FROM lake.images)""").fetchone()
        self.problems, self.images = set(problems or ()), set(images or ())
        return self


def ingest_source(lake: Lake, src: Source, recipe: IngestConfig, fingerprints: Fingerprints,
                  pool: ThreadPoolExecutor, writer: ThreadPoolExecutor,
                  progress: Callable[[int, Counter], None] | None = None) -> Tally:
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
        problems, rejected = [], []
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
            if pid in seen:
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
        pending = writer.submit(_write_batch, lake, src, loading.result(), images, problems, rejected, tally)
        if progress:
            progress(len(chunk), reasons)
    if pending is not None:
        pending.result()
    return tally


class _Stale(Exception):
    """Another writer committed since the keys were read."""


def _write_batch(lake: Lake, src: Source, keys: LakeKeys, images: dict[str, CheckedImage], problems: list,
                 rejected: list, tally: Tally) -> None:
    run = lake.run_id
    rejected_table = pa.Table.from_pylist([
        {"rejected_id": rejected_id(src.name, r[4], r[0], r[3]), "stage": "ingest", "reason": r[0], "reasons": [r[0]],
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
                if new:  # checked against keys.snapshot only: a concurrent batch of these tables must conflict
                    lake.guard("images", "problems")
                # Rejected rows are few: an anti-join costs less than reading their ids up front.
                written += lake.insert("rejected", rejected_table, key="rejected_id")
        except (_Stale, WriteConflict):
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
           progress_factory: Callable[[str, int | None], Callable[[int, Counter], None]] | None = None) -> list[Tally]:
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

    def batch_done(n: int, reasons: Counter) -> None:
        result.rejected.update(reasons)  # live, for progress lines; the tallies below are the final word
        progress(result, n)

    tallies = ingest(lake, cfg, progress_factory=(lambda name, total: batch_done) if progress else None)
    result.rejected = Counter()
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
