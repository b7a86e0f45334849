"""Readers: the raw rows of a source, by format (json, jsonl, parquet, hf, imagefolder, synthetic), and the
source's row-level rules (`explode`, then `where`, then `limit`)."""

from __future__ import annotations

import glob
import json
import os
from collections import Counter
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import pyarrow as pa

from vlfactory.recipe import RecipeError, Source

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".gif", ".bmp", ".webp", ".tif", ".tiff"}


# ---- reading sources --------------------------------------------------------


def read_source(src: Source, left_out: Counter | None = None) -> Iterator[dict]:
    """Raw rows of a source, each with `_key` (its id in the source when it has one), after the
    source's `explode` and `where`; `left_out` counts the rows `where` did not keep."""
    rows = _READERS[src.format](src)
    if src.explode:
        rows = _explode(rows, src)
    if src.where or src.where_not:
        rows = _where(rows, src, left_out if left_out is not None else Counter())
    for i, row in enumerate(rows):
        if src.limit is not None and i >= src.limit:
            return
        yield row


def source_identity(src: Source) -> str:
    """What a source holds, as the identity of the chains it carries (`Source.model` overrides it): a Hub dataset
    by id and revision ("hf:ydeng9/OpenVLThinker-sft-iter3@REV"), local data by a digest of its files' names
    and bytes ("hf:sft_iter3@sha256:..."), never by where it lies: a copied folder is the same source.

    >>> source_identity(Source("s", "hf", path="ydeng9/OpenVLThinker-sft-iter3", revision="abc"))
    'hf:ydeng9/OpenVLThinker-sft-iter3@abc'
    """
    import hashlib

    local = Path(src.path or "")
    if not src.path or not local.exists():
        return f"{src.format}:{src.path}" + (f"@{src.revision}" if src.revision else "")
    digest = hashlib.sha256()
    files = sorted(local.rglob("*")) if local.is_dir() else [local]
    for path in files:
        rel = path.relative_to(local) if local.is_dir() else Path(path.name)
        if path.is_file() and not any(part.startswith(".") for part in rel.parts):
            with path.open("rb") as f:
                digest.update(f"{rel.as_posix()}\0{hashlib.file_digest(f, 'sha256').hexdigest()}\0".encode())
    return f"{src.format}:{local.name}@sha256:{digest.hexdigest()[:16]}"


def kind(value: Any) -> str:
    """What a value is, for a message: "a string", "a list", "an image" ({bytes, path}), ..."""
    if isinstance(value, dict) and value and set(value) <= {"bytes", "path"}:
        return "an image"
    return {str: "a string", bytes: "bytes", bool: "a bool", int: "an int", float: "a float", list: "a list",
            tuple: "a list", dict: "an object", type(None): "null"}.get(type(value), type(value).__name__)


def _explode(rows: Iterable[dict], src: Source) -> Iterator[dict]:
    """One row per element of the list column `src.explode`, the element's keys as columns (FigureQA's
    `qa`: [{question, answer}, ...] per image). The key is the row's key (or position) / the element's
    position. A row without a list of objects there is rejected (`_bad`), and so is an empty or null
    list; on the first row that holds a value, a missing column or a wrong type is a recipe error,
    raised before anything is written."""
    col, checked = src.explode, False
    for i, row in enumerate(rows):
        if "_bad" in row:
            yield row
            continue
        items, why = row.get(col), None
        if col not in row:
            why = (f"{col!r} is not a column of the data (columns: "
                   f"{', '.join(k for k in row if not k.startswith('_'))})")
        elif items is not None and (not isinstance(items, (list, tuple)) or
                                    not all(isinstance(x, dict) for x in items)):
            what = kind(items) if not isinstance(items, (list, tuple)) else "a list holding " + kind(
                next(x for x in items if not isinstance(x, dict)))
            why = f"column {col!r} is {what}, not a list of objects whose keys become columns"
        elif items and set(items[0]) & (set(row) - {col}) and not checked:
            why = (f"the keys of {col!r}'s elements ({', '.join(sorted(set(items[0]) & set(row)))}) are also "
                   "columns of the row")
        if why and not checked:
            raise RecipeError(f"source {src.name}: explode: {why}")
        checked = checked or bool(items) or why is not None
        key = row.get("_key", i)
        if why or not items:
            empty = f"column {col!r} is {'null' if items is None else 'an empty list'}: no row to make"
            reason = "empty_list" if not why else "unmappable_column" if col not in row else "wrong_type"
            yield {**row, "_key": key, "_reason": reason, "_bad": f"explode: {why or empty}"}
            continue
        rest = {k: v for k, v in row.items() if k != col}
        for j, item in enumerate(items):
            yield {**rest, **item, "_key": f"{key}/{j}"}


def _where(rows: Iterable[dict], src: Source, left_out: Counter) -> Iterator[dict]:
    """The rows whose value in each `where` column is one of those listed and in no `where_not` column
    one of those listed (compared as text, so 2 and "2" match). A column missing from the first row
    read is a recipe error; so is a source of which no row is kept (naming the values its columns
    held), which is a typo more often than a choice."""
    keep = {col: {str(v) for v in values} for col, values in src.where.items()}
    drop = {col: {str(v) for v in values} for col, values in src.where_not.items()}
    seen: dict[str, Counter] = {col: Counter() for col in [*keep, *drop]}
    checked, kept = False, 0
    for row in rows:
        if "_bad" in row:
            yield row
            continue
        why = None
        for key, table in (("where", keep), ("where_not", drop)):
            for col in table:
                if col not in row:
                    why = (f"{key}.{col}: {col!r} is not a column of the data (columns: "
                           f"{', '.join(k for k in row if not k.startswith('_'))})")
                elif isinstance(row[col], (list, tuple, dict, bytes)):
                    why = f"{key}.{col}: column {col!r} is {kind(row[col])}; {key} compares single values"
        if why and not checked:
            raise RecipeError(f"source {src.name}: {why}")
        checked = True
        if why:
            yield {**row, "_reason": "wrong_type", "_bad": why}
            continue
        for col in seen:
            if len(seen[col]) < 50 or str(row[col]) in seen[col]:
                seen[col][str(row[col])] += 1
        if (all(str(row[col]) in values for col, values in keep.items())
                and not any(str(row[col]) in values for col, values in drop.items())):
            kept += 1
            yield row
        else:
            left_out["where"] += 1
    if not kept and left_out["where"]:
        rules = [f"{c} in {sorted(v)}" for c, v in keep.items()] + [f"{c} not in {sorted(v)}" for c, v in drop.items()]
        held = "; ".join(f"{col}: " + ", ".join(f"{v!r} ({n})" for v, n in seen[col].most_common(12)) for col in seen)
        raise RecipeError(f"source {src.name}: where: none of its {left_out['where']} rows has {' and '.join(rules)}; "
                          f"the data holds {held}")


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
    # Rows as Arrow stores them, never decoded: images (at any depth: a list of them, a struct) keep their
    # original bytes as {bytes, path}, since decoding and re-encoding would change the hash.
    for batch in ds.with_format("arrow").iter(batch_size=512):
        yield from batch.to_pylist()


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
    from vlfactory.sources.synthetic import generate

    yield from generate(src.n, seed=src.seed, kinds=src.kinds, split=src.split)


_READERS: dict[str, Callable[[Source], Iterator[dict]]] = {
    "json": _read_json, "jsonl": _read_jsonl, "parquet": _read_parquet,
    "hf": _read_hf, "imagefolder": _read_imagefolder, "synthetic": _read_synthetic,
}
