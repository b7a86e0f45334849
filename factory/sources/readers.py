"""Readers: the raw rows of a source, by format (json, jsonl, parquet, hf, imagefolder, synthetic)."""

from __future__ import annotations

import glob
import json
import os
from pathlib import Path
from typing import Callable, Iterable, Iterator

import pyarrow as pa

from vlfactory.recipe import RecipeError, Source

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".gif", ".bmp", ".webp", ".tif", ".tiff"}


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
