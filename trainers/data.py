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

Before a set becomes a dataset, `prepare` applies the trainer settings that
shape the data: images resized as the official trainers resize them
(`resize_image`), and problems repeated per source (`source_weights`).
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass
from pathlib import Path

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


def resize_image(image, min_pixels: int | None = None, max_pixels: int | None = None):
    """The image as the official trainers hand it to the processor: scaled down to at most `max_pixels`,
    then up to at least `min_pixels` (both by one factor, sides truncated), then RGB. Verbatim from EasyR1's
    `ImageProcessMixin.process_image` (train/easyr1/verl/utils/dataset.py L57-76 in yihedeng9/OpenVLThinker
    @6997b47, GRPO: min = max = 262144, so every image lands on about that area) and LLaMA-Factory's
    `MMPluginMixin._preprocess_image` (train/llama-factory/src/llamafactory/data/mm_plugin.py L119-138, SFT:
    max 262144, min its default 32 x 32, so in effect only large images shrink). Not copied: the Qwen2-VL
    plugin's floor of 28 pixels a side (L1042-1056), which the processor's own rounding to 28 covers.

    >>> from PIL import Image
    >>> resize_image(Image.new("L", (1000, 500)), 262144, 262144).size   # down to about 512 x 512's area
    (724, 362)
    >>> resize_image(Image.new("RGB", (100, 50)), 262144, 262144).size   # and up
    (724, 362)
    >>> resize_image(Image.new("RGB", (100, 50)), None, 262144).size     # SFT: only down
    (100, 50)
    """
    if max_pixels is not None and image.width * image.height > max_pixels:
        factor = math.sqrt(max_pixels / (image.width * image.height))
        image = image.resize((int(image.width * factor), int(image.height * factor)))
    if min_pixels is not None and image.width * image.height < min_pixels:
        factor = math.sqrt(min_pixels / (image.width * image.height))
        image = image.resize((int(image.width * factor), int(image.height * factor)))
    return image if image.mode == "RGB" else image.convert("RGB")


def prepare(rows: pa.Table, extras: dict) -> pa.Table:
    """The set's rows as the trainer learns from them: each problem repeated per its source's weight
    (`source_weights`, default 1), and every image resized by `resize_image` to the settings'
    [min_pixels, max_pixels] (stored again as PNG, lossless, so the trainer and a colocated vLLM decode the
    same pixels). Without those settings the rows are returned as they are."""
    weights = extras.get("source_weights")
    if weights:
        rows = rows.take(pa.array([i for i, source in enumerate(rows.column("source").to_pylist())
                                   for _ in range(weights.get(source, 1))], pa.int64()))
    lo, hi = extras.get("min_pixels"), extras.get("max_pixels")
    if lo is None and hi is None:
        return rows
    from PIL import Image

    resized = []
    for cell in rows.column("image").to_pylist():
        if cell is None or cell.get("bytes") is None:
            resized.append(cell)
            continue
        image = Image.open(io.BytesIO(cell["bytes"]))
        out = resize_image(image, lo, hi)
        if out is image:  # nothing to do: the original bytes
            resized.append(cell)
            continue
        buffer = io.BytesIO()
        out.save(buffer, format="PNG")
        resized.append({"bytes": buffer.getvalue(), "path": f"{Path(cell.get('path') or 'image').stem}.png"})
    index = rows.column_names.index("image")
    return rows.set_column(index, "image", pa.array(resized, rows.schema.field("image").type))


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
