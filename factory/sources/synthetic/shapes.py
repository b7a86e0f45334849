"""Shapes, the quickstart's kind: a few large shapes on gray; how many, what colour, which is bigger.

Its train and test splits never share a set of shapes: a problem's shape set (each shape's colour,
kind and size class, positions and exact radii aside) is held out when `held_out` says so, and
`split="test"` draws only held-out sets, any other split only the others (`split=None`: all). So
no held-out problem has a training twin with the same shapes elsewhere on the canvas, under any
question, whatever the seeds.
"""

from __future__ import annotations

import random
import re
from collections.abc import Iterable

from vlfactory.sources.synthetic.draw import COLORS, SHAPES, _canvas, _Retry, fmt

# ---- shapes (the quickstart's kind) --------------------------------------------------
#
# What a tiny VLM trained on a CPU can learn to see (measured, NOTES.md and bench/loop.py): a few
# large shapes of distinct colours on a mid-gray background, and questions whose answer is in
# coarse, position-free features: a colour, a count, which of two is bigger. Gray is about the
# mean the image processor subtracts, so the background is near zero and the shapes carry the
# signal (on white, the background dominated every patch and the model learned only the
# question's prior). Positions are random and never asked about: a Qwen2.5-VL vision tower has
# no absolute position, so "which corner" is hard for a tiny one.

SHAPE_BG = (128, 128, 128)
SHAPE_COLORS = ("red", "blue", "green", "yellow")
BIG_RADIUS = 32                              # a shape of radius >= 32 px is "big" in the caption
_CAPTIONED = re.compile(r"an? (big|small) (\w+) (circle|square|triangle)")


def held_out(shapes: Iterable[tuple[str, str, bool]]) -> bool:
    """Whether a set of (colour, kind, big) shapes belongs to the test split: the sum of their colour,
    kind and size indices is divisible by 3. About a third of the sets, spread evenly over colours,
    kinds, sizes and counts (each colour's single shapes: 2 of its 6 (kind, size) pairs)."""
    return sum(SHAPE_COLORS.index(c) + SHAPES.index(k) + int(big) for c, k, big in shapes) % 3 == 0


def shape_set(caption: str) -> tuple[tuple[str, str, str], ...]:
    """The shape set a `shapes` caption describes, as sorted (size class, colour, kind): what a held-out
    problem shares with no training problem.

    >>> shape_set("2 shapes on a gray background: a big red circle and a small blue square.")
    (('big', 'red', 'circle'), ('small', 'blue', 'square'))
    """
    return tuple(sorted(_CAPTIONED.findall(caption)))


def _place(rng: random.Random, radii: list[int], side: int) -> list[tuple[int, int]]:
    for _ in range(200):
        out: list[tuple[int, int, int]] = []
        for r in radii:
            x, y = rng.randint(r + 2, side - r - 2), rng.randint(r + 2, side - r - 2)
            if all(max(abs(x - ox), abs(y - oy)) > r + orr + 4 for ox, oy, orr in out):
                out.append((x, y, r))
        if len(out) == len(radii):
            return [(x, y) for x, y, _ in out]
    raise _Retry


def _shapes(rng: random.Random, split: str | None = None):
    t = rng.randrange(3)
    k = (rng.randint(1, 4), 1, 2)[t]
    colors = rng.sample(SHAPE_COLORS, k)
    kinds = [rng.choice(SHAPES) for _ in range(k)]
    if t == 2:   # one big, one small: the size difference is plain at any resolution
        radii = [rng.randint(38, 46), rng.randint(16, 24)]
    else:        # big or small, never near the line between them: a size class a captioner can learn
        radii = [rng.choice((rng.randint(20, 25), rng.randint(36, 42))) for _ in range(k)]
    if split is not None and held_out(zip(colors, kinds, (r >= BIG_RADIUS for r in radii))) != (split == "test"):
        raise _Retry   # a shape set of the other split
    side = 224
    img, d = _canvas(side, side)
    d.rectangle([0, 0, side, side], fill=SHAPE_BG)
    centers = _place(rng, radii, side)
    for shape, cname, (cx, cy), r in zip(kinds, colors, centers, radii):
        fill = COLORS[cname]
        if shape == "circle":
            d.ellipse([cx - r, cy - r, cx + r, cy + r], fill=fill)
        elif shape == "square":
            d.rectangle([cx - r, cy - r, cx + r, cy + r], fill=fill)
        else:
            d.polygon([(cx, cy - r), (cx + r, cy + r), (cx - r, cy + r)], fill=fill)
    # What a caption model can learn to say (the quickstart's captioner learns this grammar): each shape's
    # size class, colour and kind, in colour order. No pixel sizes or positions: a tiny VLM trained on
    # them wrote one position for every shape and lost accuracy on the rest. Two images can read the same.
    listed = sorted(zip(colors, kinds, radii), key=lambda it: SHAPE_COLORS.index(it[0]))
    names = [f"a {'big' if r >= BIG_RADIUS else 'small'} {c} {s}" for c, s, r in listed]
    caption = (f"{k} shape{'s' if k > 1 else ''} on a gray background: "
               + (names[0] if k == 1 else ", ".join(names[:-1]) + " and " + names[-1]) + ".")
    # Every question lists its valid answers, in an order of its own: chance is one over the choices, and
    # two problems whose images read the same are still two problems to a text reasoner (the factory sends
    # one request per distinct prompt).
    if t == 0:
        question, answer, choices = "How many shapes are there?", fmt(k), ["1", "2", "3", "4"]
    elif t == 1:
        question, answer, choices = "What color is the shape?", colors[0], list(SHAPE_COLORS)
    else:
        first, second = colors if rng.random() < 0.5 else colors[::-1]
        question, answer, choices = f"Which shape is bigger, the {first} one or the {second} one?", colors[0], list(colors)
    rng.shuffle(choices)
    return question, answer, choices, caption, img
