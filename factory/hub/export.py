"""Export a table at a version as Parquet shards or a `datasets.Dataset`.

Rows keep their catalog columns; a table with an `image_id` also gets an
`image` column holding the original bytes in the layout of `datasets`'
`Image` feature, so the folder loads with plain
`datasets.load_dataset("parquet", data_dir=DIR)` and images decode from the
exact bytes that were ingested.

    vlfactory export sft@iter1 --to out/            # or: vlfactory export iter1 --table sft --to out/
    vlfactory export iter1 --table sft --to out/ --format hf   # Dataset.save_to_disk
"""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa

from vlfactory.stores.lake import Lake, LakeError

IMAGE_FEATURE = {"_type": "Image"}


def select(lake: Lake, table: str, version: str | int | None, where: str | None = None) -> str:
    """The SQL that reads a table at a version in a total order, images attached where it names them;
    `where` filters on the table's columns as `t.<column>`."""
    if table not in lake.tables():
        raise LakeError(f"unknown table {table!r}; tables: {', '.join(lake.tables())}")
    ref = f"{table}@{version}" if version is not None else table
    cols = lake.query(f"SELECT * FROM {ref} LIMIT 0").columns
    # A total order (the row's own id last), so rebuilding an export gives byte-identical shards.
    ids = ("source", "source_id", "problem_id", "sample_index", "trace_id", "rollout_id", "example_id",
           "grade_id", "rejected_id", "caption_id", "image_id", "run_id")
    order = ", ".join(f"t.{c}" for c in ids if c in cols) or "1"
    where = f" WHERE {where}" if where else ""
    if "image_id" in cols and table != "images":
        images = f"images@{version}" if version is not None else "images"
        return f"""SELECT t.*, {{'bytes': i.bytes, 'path': t.image_id || '.' || lower(i.format)}} AS image
                   FROM {ref} t LEFT JOIN {images} i USING (image_id){where} ORDER BY {order}"""
    return f"SELECT * FROM {ref} t{where} ORDER BY {order}"


def read_table(lake: Lake, table: str, version: str | int | None) -> pa.Table:
    """A table at a version, with images attached where it names them."""
    return lake.query(select(lake, table, version)).to_arrow_table()


def read_batches(lake: Lake, table: str, version: str | int | None, where: str | None = None,
                 params: list | None = None, rows: int = 64) -> pa.RecordBatchReader:
    """The rows `read_table` gives, streamed as Arrow record batches of at most `rows` rows: the caller
    holds one batch at a time, so a table of images larger than memory can be written out."""
    return lake.query(select(lake, table, version, where), params).to_arrow_reader(rows)


def features_for(table: pa.Table | pa.Schema):
    import datasets

    schema = table if isinstance(table, pa.Schema) else table.schema
    features = datasets.Features.from_arrow_schema(schema)
    if "image" in schema.names:
        features["image"] = datasets.Image()
    return features


def dataset(lake: Lake, table: str, version: str | int | None):
    """A table at a version as a `datasets.Dataset`, images as the Image feature (`vlfactory.load`)."""
    import datasets

    data = read_table(lake, table, version)
    return datasets.Dataset(data).cast(features_for(data)) if "image" in data.column_names else datasets.Dataset(data)


def export(lake: Lake, table: str, version: str | int | None, out: Path, fmt: str = "parquet",
           shard_rows: int = 5000) -> list[Path]:
    ds = dataset(lake, table, version)
    out = Path(out)
    if fmt == "hf":
        ds.save_to_disk(str(out))
        return [out]
    folder = out / table
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.glob("*.parquet"):
        old.unlink()
    n = max(1, -(-len(ds) // shard_rows))
    paths = []
    for i in range(n):
        path = folder / f"{table}-{i:05d}-of-{n:05d}.parquet"
        ds.shard(num_shards=n, index=i, contiguous=True).to_parquet(str(path))
        paths.append(path)
    return paths
