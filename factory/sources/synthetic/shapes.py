"""Shapes, the quickstart's kind: a few large shapes on gray; how many, what colour, which is bigger."""

from __future__ import annotations

import random

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


def _shapes(rng: random.Random):
    t = rng.randrange(3)
    k = (rng.randint(1, 4), 1, 2)[t]
    colors = rng.sample(SHAPE_COLORS, k)
    kinds = [rng.choice(SHAPES) for _ in range(k)]
    if t == 2:   # one big, one small: the size difference is plain at any resolution
        radii = [rng.randint(38, 46), rng.randint(16, 24)]
    else:
        radii = [rng.randint(24, 42) for _ in range(k)]
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
    # every caption differs (sizes and centres in pixels): the reasoner's requests are one per problem
    listed = sorted(zip(colors, kinds, radii, centers), key=lambda it: SHAPE_COLORS.index(it[0]))
    names = [f"a {'big' if r >= BIG_RADIUS else 'small'} {c} {s} of radius {r} at ({x}, {y})"
             for c, s, r, (x, y) in listed]
    caption = (f"{k} shape{'s' if k > 1 else ''} on a gray {side}x{side} background: "
               + (names[0] if k == 1 else ", ".join(names[:-1]) + " and " + names[-1]) + ".")
    if t == 0:
        return "How many shapes are there?", fmt(k), None, caption, img
    if t == 1:
        return "What color is the shape?", colors[0], list(SHAPE_COLORS), caption, img
    first, second = colors if rng.random() < 0.5 else colors[::-1]
    return f"Which shape is bigger, the {first} one or the {second} one?", colors[0], None, caption, img
