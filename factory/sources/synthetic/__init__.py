"""Synthetic visual-math problems, drawn procedurally so the factory runs with no data.

`generate(n, seed)` yields problem rows shaped like an ingested source row: a
question about a rendered PNG (a bar chart, a table, a geometry figure, a
scene of shapes to count, a line chart, an analog clock), its exact answer,
the choices when the question is multiple choice, and a ground-truth caption
that describes the image fully enough for a text-only reasoner to answer from
it. Use it for smoke tests, demos, CI and the quickstart, anywhere real data
slices are not available.

Answers are right by construction: each one is computed from the same numbers
the picture is drawn from, with exact arithmetic (`fractions.Fraction`), and a
question that needs rounding says so ("Round to one decimal place.", half up).
Integers are written "12", decimals minimally ("3.5", never "3.50").

Output is deterministic: the same (seed, index, kind) gives the same row and
the same PNG bytes on the same Pillow/FreeType build. Item i has its own RNG
derived from (kind, seed, i), so it does not depend on n, and an id such as
"bar-0-3" always names the same problem. Only Pillow is used to draw, with its
built-in font, so nothing has to be downloaded.

The six kinds in KINDS are the default mix. `shapes` (VISION_KINDS, asked for
by name) is the quickstart's: a few large shapes on a gray background and
questions a tiny VLM can learn to answer from the picture on a CPU (how many,
what colour, which is bigger). A source's `split` reaches the generator: a kind
in SPLIT_KINDS keeps its `test` split apart from every other split by content
(`shapes`: no shape set in common, vlfactory.sources.synthetic.shapes), so a
held-out benchmark shares no (question, shapes) combination with training
whatever the seeds; its ids then name the split (`shapes-test-1000-3`). Other
kinds draw the same problems for any split.

    from vlfactory.sources.synthetic import generate
    for row in generate(100, seed=7, kinds=["bar", "table"]):
        ...
"""

from __future__ import annotations

import io
import random
from typing import Any, Callable, Iterator, Sequence

from PIL import Image

from vlfactory.sources.synthetic.bar import _bar
from vlfactory.sources.synthetic.clock import _clock
from vlfactory.sources.synthetic.counting import _counting
from vlfactory.sources.synthetic.draw import COLORS, MAX_SIDE, MIN_SIDE, _png, _Retry, fmt
from vlfactory.sources.synthetic.geometry import _geometry
from vlfactory.sources.synthetic.line import _line
from vlfactory.sources.synthetic.shapes import SHAPE_BG, SHAPE_COLORS, _shapes, held_out, shape_set
from vlfactory.sources.synthetic.table import _table

KINDS = ("bar", "table", "geometry", "counting", "line", "clock")   # the default mix (shipped examples)
# Kinds a tiny VLM can learn on a CPU (the quickstart's): coarse features only. Asked for by name.
VISION_KINDS = ("shapes",)
SPLIT_KINDS = ("shapes",)   # kinds whose `test` split shares no content with their other splits
FIELDS = ("id", "kind", "question", "answer", "choices", "caption", "image")

__all__ = ["KINDS", "VISION_KINDS", "SPLIT_KINDS", "FIELDS", "COLORS", "SHAPE_BG", "SHAPE_COLORS", "generate",
           "make", "fmt", "blank_copy", "held_out", "shape_set"]

# ---- public API --------------------------------------------------------------


def generate(n: int, seed: int = 0, kinds: Sequence[str] | None = None, split: str | None = None) -> Iterator[dict]:
    """Yield n problems; deterministic for a seed (same seed -> identical rows and identical PNG bytes).

    Kinds take turns (item i is of kind `kinds[i % len(kinds)]`), so every kind
    appears once n >= len(kinds). Each row has exactly the keys in FIELDS. `split`
    (a source's: train, test, ...) keeps the test problems of a SPLIT_KINDS kind apart
    from the others by content; None draws from all.
    """
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    ks = tuple(KINDS if kinds is None else kinds)
    if not ks:
        raise ValueError("kinds is empty")
    unknown = [k for k in ks if k not in _MAKERS]
    if unknown:
        raise ValueError(f"unknown kinds {unknown}; known: {', '.join(KINDS + VISION_KINDS)}")
    for i in range(n):
        kind = ks[i % len(ks)]
        yield make(kind, seed, i, split)


def make(kind: str, seed: int, i: int, split: str | None = None) -> dict:
    """The problem with id f"{kind}-{seed}-{i}", or f"{kind}-{split}-{seed}-{i}" for a split of a
    SPLIT_KINDS kind (what `generate` yields at that position)."""
    rng = random.Random(f"vlfactory.synthetic/{kind}/{seed}/{i}")  # the module's old name: ids keep their problems
    maker = _MAKERS[kind]
    split = split if kind in SPLIT_KINDS else None
    for _ in range(100):   # a split draws until the problem falls on its side
        try:
            q = maker(rng) if split is None else maker(rng, split)
            break
        except _Retry:
            continue
    else:  # pragma: no cover - every maker succeeds within a few draws
        raise RuntimeError(f"could not draw a {kind} problem for seed {seed}, index {i}")
    question, answer, choices, caption, img = q
    if choices is not None and answer not in choices:  # pragma: no cover - construction invariant
        raise AssertionError(f"{kind}-{seed}-{i}: answer {answer!r} not among choices {choices}")
    if not (MIN_SIDE <= img.width <= MAX_SIDE and MIN_SIDE <= img.height <= MAX_SIDE):  # pragma: no cover
        raise AssertionError(f"{kind}-{seed}-{i}: image size {img.size} out of range")
    return {"id": f"{kind}-{seed}-{i}" if split is None else f"{kind}-{split}-{seed}-{i}", "kind": kind,
            "question": question, "answer": answer, "choices": choices, "caption": caption, "image": _png(img)}


_MAKERS: dict[str, Callable[[random.Random], Any]] = {
    "bar": _bar, "table": _table, "geometry": _geometry, "counting": _counting, "line": _line, "clock": _clock,
    "shapes": _shapes,
}


# ---- ablation ----------------------------------------------------------------------


def blank_copy(src, folder) -> Any:
    """A jsonl benchmark source holding the synthetic source `src`'s questions and answers with every image
    replaced by an empty canvas of the same size (the shapes' gray background): the blank-image ablation.
    A model that reads the picture loses accuracy on it; one that learned only the questions' prior does not.

        blank = blank_copy(recipe.benchmarks[0], "out/")
        cfg = dataclasses.replace(recipe.eval_config("synthetic-eval", model), benchmark=blank)
    """
    import dataclasses
    import json
    from pathlib import Path

    if src.format != "synthetic":
        raise ValueError(f"{src.name}: blank_copy takes a synthetic source, not {src.format}")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    lines = []
    for row in generate(src.limit if src.limit is not None else src.n, src.seed, src.kinds, src.split):
        size = Image.open(io.BytesIO(row["image"])).size
        name = f"blank-{size[0]}x{size[1]}.png"
        if not (folder / name).exists():
            Image.new("RGB", size, SHAPE_BG).save(folder / name)
        lines.append(json.dumps({"id": row["id"], "question": row["question"], "answer": row["answer"],
                                 "choices": row["choices"], "image": name}) + "\n")
    path = folder / f"{src.name}-blank.jsonl"
    path.write_text("".join(lines))
    return dataclasses.replace(src, name=f"{src.name}-blank", format="jsonl", path=str(path), kinds=None,
                               columns={})
