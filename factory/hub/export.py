"""Export a table at a version as Parquet shards or a `datasets.Dataset`.

Rows keep their catalog columns; a table with an `image_id` also gets an
`image` column holding the original bytes in the layout of `datasets`'
`Image` feature, so the folder loads with plain
`datasets.load_dataset("parquet", data_dir=DIR)` and images decode from the
exact bytes that were ingested.

    vlfactory export sft@iter1 --to out/            # or: vlfactory export iter1 --table sft --to out/
    vlfactory export iter1 --table sft --to out/ --format hf   # Dataset.save_to_disk

MAP columns (`runs.versions`, `trainings.metrics`) become lists of {key, value}, which `datasets` has a type
for. An export writes only inside the folder named (checked after resolving links), never inside the lake,
and deletes only the files it wrote: `DIR/TABLE/.vlfactory-export.json` lists them, so a re-export replaces
its own shards and leaves anything else in the folder alone (a file of someone else's in a shard's place is
refused, not overwritten).
"""

from __future__ import annotations

from pathlib import Path

import json
import os

import pyarrow as pa

from vlfactory.stores.lake import Lake, LakeError
from vlfactory.stores.sqltext import ident

IMAGE_FEATURE = {"_type": "Image"}
MANIFEST = ".vlfactory-export.json"  # the files an export wrote into DIR/TABLE/: the only ones it may delete


def select(lake: Lake, table: str, version: str | int | None, where: str | None = None,
           columns: list[str] | None = None) -> str:
    """The SQL that reads a table at a version in a total order, images attached where it names them;
    `where` filters on the table's columns as `t.<column>`; `columns` keeps only those (`image` included)."""
    if table not in lake.tables():
        raise LakeError(f"unknown table {table!r}; tables: {', '.join(lake.tables())}")
    ref = f"{table}@{version}" if version is not None else table
    rel = lake.query(f"SELECT * FROM {ref} LIMIT 0")
    cols = rel.columns
    imaged = "image_id" in cols and table != "images"
    if columns is not None:
        have = [*cols, *(["image"] if imaged else [])]
        if unknown := [c for c in columns if c not in have]:
            raise LakeError(f"columns: {table} has no column {unknown[0]!r}; its columns: {', '.join(have)}")
    keep = [(c, kind) for c, kind in zip(cols, rel.types) if columns is None or c in columns]
    # `datasets` has no MAP type: a map is its entries, a list of {key, value}
    star = ", ".join(f"map_entries(t.{ident(c)}) AS {ident(c)}" if str(kind).startswith("MAP(") else f"t.{ident(c)}"
                     for c, kind in keep)
    # A total order (the row's own id last), so rebuilding an export gives byte-identical shards.
    ids = ("source", "source_id", "problem_id", "sample_index", "trace_id", "rollout_id", "example_id",
           "grade_id", "rejected_id", "caption_id", "image_id", "run_id")
    order = ", ".join(f"t.{c}" for c in ids if c in cols) or "1"
    where = f" WHERE {where}" if where else ""
    if imaged and (columns is None or "image" in columns):
        images = f"images@{version}" if version is not None else "images"
        image = "{'bytes': i.bytes, 'path': t.image_id || '.' || lower(i.format)} AS image"
        return f"""SELECT {', '.join(filter(None, (star, image)))}
                   FROM {ref} t LEFT JOIN {images} i USING (image_id){where} ORDER BY {order}"""
    return f"SELECT {star} FROM {ref} t{where} ORDER BY {order}"


def read_table(lake: Lake, table: str, version: str | int | None) -> pa.Table:
    """A table at a version, with images attached where it names them."""
    return lake.query(select(lake, table, version)).to_arrow_table()


def read_batches(lake: Lake, table: str, version: str | int | None, where: str | None = None,
                 params: list | None = None, rows: int = 64, columns: list[str] | None = None) -> pa.RecordBatchReader:
    """The rows `read_table` gives, streamed as Arrow record batches of at most `rows` rows: the caller
    holds one batch at a time, so a table of images larger than memory can be written out."""
    return lake.query(select(lake, table, version, where, columns), params).to_arrow_reader(rows)


def features_for(table: pa.Table | pa.Schema):
    import datasets

    schema = table if isinstance(table, pa.Schema) else table.schema
    features = datasets.Features.from_arrow_schema(schema)
    if "image" in schema.names:
        features["image"] = datasets.Image()
    return features


def dataset(lake: Lake, table: str, version: str | int | None, where: str | None = None, params: list | None = None,
            columns: list[str] | None = None, progress: bool = False):
    """A table at a version (rows matching `where`) as one `datasets.Dataset`, images as the Image feature.
    Built on the Arrow rows as they are, with no cast pass, so it prints nothing (`progress`: a bar of rows read)."""
    import datasets
    from tqdm.auto import tqdm

    reader = read_batches(lake, table, version, where, params, rows=8192, columns=columns)
    features = features_for(reader.schema)
    with tqdm(desc=f"reading {table}", unit=" rows", disable=not progress) as bar:
        batches = [bar.update(b.num_rows) or b for b in reader]
    data = pa.Table.from_batches(batches, schema=reader.schema).cast(features.arrow_schema)
    return datasets.Dataset(data, info=datasets.DatasetInfo(features=features))


def splits(lake: Lake, table: str, snapshot: int) -> tuple[str, dict[str, list[str]]]:
    """The SQL of a row's split and the splits the table has at the snapshot, in push_to_hub's order (train,
    validation, test, then by name), each with the stored values it gathers: publish's rule (a problem's split
    is every row's about it, benchmark rows are test, the rest train). An empty table has a train split."""
    from vlfactory.hub.publish import SPLIT_ORDER, split_name, split_of

    expr = split_of(lake, table, snapshot)
    raws: dict[str, list[str]] = {}
    for (raw,) in lake.query(f"SELECT DISTINCT {expr} FROM {table}@{snapshot} t").fetchall():
        raws.setdefault(split_name(raw), []).append(raw)
    order = sorted(raws, key=lambda n: (SPLIT_ORDER.index(n) if n in SPLIT_ORDER else len(SPLIT_ORDER), n))
    return expr, {name: raws[name] for name in order} or {"train": ["train"]}


def load(lake: Lake, table: str, version: str | int | None, split: str | None = None,
         columns: list[str] | None = None, streaming: bool = False, progress: bool = False):
    """`vlfactory.load`: the table at the version as `datasets.load_dataset` returns a Hub dataset, a
    `DatasetDict` by split (or `IterableDatasetDict`), or one split's."""
    import functools

    import datasets

    snapshot = lake.resolve("latest" if version is None else version)
    expr, found = splits(lake, table, snapshot)
    if split is not None and split not in found:
        raise LakeError(f'unknown split "{split}": {table}@{snapshot} has {", ".join(found)}')
    where = f"list_contains(?, {expr})"
    if streaming:
        features = features_for(read_batches(lake, table, snapshot, "false", columns=columns).schema)
        parts = {name: datasets.IterableDataset.from_generator(
                     functools.partial(_stream, lake.spec, table, snapshot, where, raws, columns), features=features)
                 for name, raws in found.items() if split in (None, name)}
        return parts[split] if split else datasets.IterableDatasetDict(parts)
    parts = {name: dataset(lake, table, snapshot, where, [raws], columns, progress)
             for name, raws in found.items() if split in (None, name)}
    return parts[split] if split else datasets.DatasetDict(parts)


def _stream(spec, table: str, snapshot: int, where: str, raws: list[str], columns: list[str] | None,
            rows: int = 512):
    """A split's rows, read from the lake pinned at `snapshot` a record batch at a time while iterated."""
    with Lake(spec, read_only=True, at=snapshot) as lake:
        for batch in read_batches(lake, table, snapshot, where, [raws], rows, columns):
            yield from batch.to_pylist()


def outside_lake(lake: Lake, out: Path, option: str) -> None:
    """Refuse a destination inside the lake's folder or data path: files there are the catalog's (a shard among
    them is an orphan that gc deletes; deleting theirs breaks the lake)."""
    data = lake.data_path()
    target = Path(os.path.realpath(out))
    for root in [lake.spec.root, *([] if "://" in data else [data])]:
        real = Path(os.path.realpath(root)) if root is not None else None
        if real is not None and (target == real or real in target.parents):
            raise LakeError(f"{option} {out} is inside the lake at {root}: write it somewhere else")


def inside(folder: Path, path: Path) -> Path:
    """`path`, once it is certain to be under `folder` after resolving links (a linked subfolder may point
    anywhere)."""
    real, base = Path(os.path.realpath(path)), Path(os.path.realpath(folder))
    if real != base and base not in real.parents:
        raise LakeError(f"{path} leads outside {folder} (to {real}): not written")
    return path


def export(lake: Lake, table: str, version: str | int | None, out: Path, fmt: str = "parquet",
           shard_rows: int = 5000) -> list[Path]:
    if table not in lake.tables():  # a name, before it becomes part of a path
        raise LakeError(f"unknown table {table!r}; tables: {', '.join(lake.tables())}")
    out = Path(out)
    outside_lake(lake, out, "--to")
    folder = inside(out, out / table)
    (out if fmt == "hf" else folder).mkdir(parents=True, exist_ok=True)  # an unwritable --to fails before the work
    ds = dataset(lake, table, version)
    if fmt == "hf":
        ds.save_to_disk(str(out))
        return [out]
    inside(out, folder)
    manifest = folder / MANIFEST
    try:
        ours = set(json.loads(manifest.read_text())["files"])
    except (OSError, ValueError, KeyError, TypeError):
        ours = set()
    n = max(1, -(-len(ds) // shard_rows))
    names = [f"{table}-{i:05d}-of-{n:05d}.parquet" for i in range(n)]
    for name in names:
        if (folder / name).exists() or (folder / name).is_symlink():
            if name not in ours:
                raise LakeError(f"{folder / name} exists and was not written by vlfactory export: move it, or "
                                "export to another folder")
    paths = []
    for i, name in enumerate(names):  # each shard appears whole: written beside, then renamed into place
        tmp = folder / f".{name}.{os.getpid()}.tmp"
        try:
            ds.shard(num_shards=n, index=i, contiguous=True).to_parquet(str(tmp))
            os.replace(tmp, folder / name)
        finally:
            tmp.unlink(missing_ok=True)
        paths.append(folder / name)
    for stale in sorted(ours - set(names)):  # its own shards of an earlier export, nothing else
        if "/" not in stale and stale != MANIFEST:
            (folder / stale).unlink(missing_ok=True)
    manifest.write_text(json.dumps({"table": table, "files": names}, indent=1) + "\n")
    return paths
