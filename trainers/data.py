"""A set version from the catalog, as the chat dataset TRL trains on.

`sft@iter1`, `sft@42` or `iter1` name a table at a tag or snapshot; the rows
are read at that snapshot (images too), so an old version trains on exactly
the rows it held, whatever later iterations wrote. Images come from the
catalog's original bytes and decode lazily into PIL images (datasets' Image
feature).

    from vlfactory.stores.lake import Lake
    from vlfactory.trainers.data import read_set, sft_dataset
    with Lake("./lake", read_only=True) as lake:
        ref, rows = read_set(lake, "sft@iter1", "sft")
    ds = sft_dataset(rows)   # columns: example_id, images, messages
"""

from __future__ import annotations

from dataclasses import dataclass

import pyarrow as pa

from vlfactory.hub.export import read_table
from vlfactory.stores.lake import Lake, LakeError

KEYS = {"sft": "example_id", "rl": "problem_id"}  # a set's row key, also its training order


@dataclass(frozen=True)
class SetVersion:
    dataset: str       # as the user wrote it: sft@iter1
    table: str         # sft | rl
    snapshot_id: int   # what the version resolved to when the training started
    digest: str        # what the set held at that snapshot (Lake.digest): a training's data, by content


def read_set(lake: Lake, dataset: str, table: str) -> tuple[SetVersion, pa.Table]:
    """The rows of `table` at the version `dataset` names, in key order, with an `image` column of bytes."""
    name, _, version = dataset.rpartition("@")
    if name and name != table:
        raise LakeError(f"{dataset}: this trainer reads the {table!r} table; write {table}@VERSION")
    snapshot = lake.resolve(version)
    ref = SetVersion(dataset, table, snapshot, lake.digest(table, snapshot))
    rows = read_table(lake, table, ref.snapshot_id).sort_by(KEYS[table])
    if rows.num_rows == 0:
        raise LakeError(f"{dataset}: {table} held no rows at snapshot {ref.snapshot_id}")
    return ref, rows


def _images(rows: pa.Table) -> pa.Array:
    """One image per row, as a list column: datasets' `images` layout."""
    image = rows.column("image").combine_chunks()
    return pa.ListArray.from_arrays(pa.array(range(len(image) + 1), pa.int32()), image)


def _user(prompt: str) -> dict:
    return {"role": "user", "content": [{"type": "image", "text": None}, {"type": "text", "text": prompt}]}


def _dataset(columns: dict):
    import datasets

    table = pa.table(columns)
    features = datasets.Features.from_arrow_schema(table.schema)
    features["images"] = datasets.List(datasets.Image())  # same Arrow layout: a type, not a rewrite
    return datasets.Dataset(table, info=datasets.DatasetInfo(features=features))


def sft_dataset(rows: pa.Table):
    """`messages`: the user turn (image, then the prompt text) and the assistant turn (the completion)."""
    messages = [[_user(p), {"role": "assistant", "content": [{"type": "text", "text": c}]}]
                for p, c in zip(rows.column("prompt").to_pylist(), rows.column("completion").to_pylist())]
    return _dataset({"example_id": rows.column("example_id"), "images": _images(rows),
                     "messages": pa.array(messages)})


def rl_dataset(rows: pa.Table):
    """`prompt`: the conversational user turn; `answer`, `choices`, `question` reach the rewards as kwargs."""
    prompts = [[_user(p)] for p in rows.column("prompt").to_pylist()]
    return _dataset({"problem_id": rows.column("problem_id"), "images": _images(rows), "prompt": pa.array(prompts),
                     **{c: rows.column(c) for c in ("answer", "choices", "question")}})
