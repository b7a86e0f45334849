"""Counting scenes: shapes of several colours and sizes to count."""

from __future__ import annotations

import random

from vlfactory.sources.synthetic.draw import BLACK, COLORS, SHAPES, _canvas, _num_choices, _plural, _Retry, fmt

# ---- counting ------------------------------------------------------------------


def _counting(rng: random.Random):
    palette = rng.sample(list(COLORS), rng.randint(2, 4))
    k = rng.randint(5, 16)
    cell, grid, margin = 64, 5, 10
    W = H = margin * 2 + cell * grid
    img, d = _canvas(W, H)
    items = []
    for pos in sorted(rng.sample(range(grid * grid), k)):
        row, col = divmod(pos, grid)
        shape, cname = rng.choice(SHAPES), rng.choice(palette)
        r = rng.randint(14, 24)
        slack = cell // 2 - r - 3
        cx = margin + cell * col + cell // 2 + rng.randint(-slack, slack)
        cy = margin + cell * row + cell // 2 + rng.randint(-slack, slack)
        fill = COLORS[cname]
        if shape == "circle":
            d.ellipse([cx - r, cy - r, cx + r, cy + r], fill=fill, outline=BLACK)
        elif shape == "square":
            d.rectangle([cx - r, cy - r, cx + r, cy + r], fill=fill, outline=BLACK)
        else:
            d.polygon([(cx, cy - r), (cx + r, cy + r), (cx - r, cy + r)], fill=fill, outline=BLACK)
        items.append((cname, shape, cx, cy, r))

    def size(shape: str, r: int) -> str:
        return {"circle": f"radius {r}", "square": f"side {2 * r}", "triangle": f"base {2 * r}, height {2 * r}"}[shape]

    caption = (f"{k} shapes on a white background, each outlined in black, listed row by row from top-left "
               f"(pixel coordinates of centers, image {W}x{H}): "
               + "; ".join(f"{'an' if c[0] in 'aeiou' else 'a'} {c} {s} at ({x}, {y}), {size(s, r)}" for c, s, x, y, r in items) + ".")

    count = lambda pred: sum(1 for it in items if pred(it))  # noqa: E731
    t = rng.randrange(8)
    choices = None
    if t == 0:
        if rng.random() < 0.8:
            cname, shape = rng.choice(items)[:2]
        else:
            cname, shape = rng.choice(palette), rng.choice(SHAPES)
        q, a = f"How many {cname} {_plural(shape)} are there?", fmt(count(lambda it: it[:2] == (cname, shape)))
    elif t == 1:
        shape = rng.choice(SHAPES)
        q, a = f"How many {_plural(shape)} are there?", fmt(count(lambda it: it[1] == shape))
    elif t == 2:
        cname = rng.choice(palette)
        q, a = f"How many {cname} shapes are there?", fmt(count(lambda it: it[0] == cname))
    elif t == 3:
        q, a = "How many shapes are there in total?", fmt(k)
    elif t == 4:
        counts = {c: count(lambda it, c=c: it[0] == c) for c in palette}
        best = max(counts.values())
        if list(counts.values()).count(best) > 1:
            raise _Retry
        q, a = "Which color do the most shapes have?", next(c for c in palette if counts[c] == best)
        choices = sorted(palette, key=list(COLORS).index)
    elif t == 5:
        cname = rng.choice(palette)
        q, a = f"How many shapes are not {cname}?", fmt(count(lambda it: it[0] != cname))
    elif t == 6:
        s1, s2 = rng.sample(SHAPES, 2)
        n1, n2 = count(lambda it: it[1] == s1), count(lambda it: it[1] == s2)
        if n1 == n2:
            raise _Retry
        q, a, choices = f"Are there more {_plural(s1)} than {_plural(s2)}?", "Yes" if n1 > n2 else "No", ["Yes", "No"]
    else:
        cname, shape = rng.choice(items)[:2]
        n = count(lambda it: it[:2] == (cname, shape))
        q, a = f"How many {cname} {_plural(shape)} are there?", fmt(n)
        choices = _num_choices(rng, n, [count(lambda it: it[1] == shape), count(lambda it: it[0] == cname)])
    return q, a, choices, caption, img
