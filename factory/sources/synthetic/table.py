"""Tables: look up, compare and combine values in a rendered table."""

from __future__ import annotations

import math
import random
from fractions import Fraction

from vlfactory.sources.synthetic.draw import (
    AXIS,
    BLACK,
    DAYS,
    HEADER,
    MIN_SIDE,
    NAMES,
    STALLS,
    TEAMS,
    _canvas,
    _exact_or_rounded,
    _font,
    _num_choices,
    _pick_labels,
    _Retry,
    fmt,
)

# ---- tables --------------------------------------------------------------------

TABLE_THEMES = [  # title, label header, label pool, ordered, numeric columns, value range
    ("Fruit sold at the market", "Stall", STALLS, False, ["Apples", "Oranges", "Pears"], (5, 60)),
    ("Quiz scores", "Student", NAMES, False, ["Quiz 1", "Quiz 2", "Quiz 3"], (40, 100)),
    ("Season results", "Team", TEAMS, False, ["Wins", "Losses", "Draws"], (0, 30)),
    ("Tickets sold", "Day", DAYS, True, ["Adult", "Child", "Senior"], (10, 250)),
    ("Books borrowed", "Library", STALLS, False, ["Fiction", "Science", "History"], (20, 400)),
]


def _table(rng: random.Random):
    title, head, pool, ordered, colpool, (lo_v, hi_v) = rng.choice(TABLE_THEMES)
    nrows, ncols = rng.randint(3, 6), rng.randint(1, 3)            # ncols numeric columns + the label column
    rows = _pick_labels(rng, pool, nrows, ordered)
    cols = colpool[:ncols] if rng.random() < 0.5 else sorted(rng.sample(colpool, ncols), key=colpool.index)
    data = [rng.sample(range(lo_v, hi_v + 1), nrows) for _ in cols]  # distinct within a column: unique max/min
    cell = lambda r, c: data[c][r]  # noqa: E731

    f, fh = _font(14), _font(15)
    header = [head] + cols
    body = [[rows[r]] + [str(cell(r, c)) for c in range(ncols)] for r in range(nrows)]
    widths = [max(f.getlength(t) for t in col) + 24 for col in zip(header, *body)]
    rh = 26
    tw, th = sum(widths), rh * (nrows + 1)
    w = max(MIN_SIDE + 40, math.ceil(tw) + 40, math.ceil(fh.getlength(title)) + 30)
    h = max(MIN_SIDE, th + 60)
    img, d = _canvas(w, h)
    x0, y0 = round((w - tw) / 2), 40
    d.text((w / 2, 20), title, font=fh, fill=BLACK, anchor="mm")
    d.rectangle([x0, y0, x0 + tw, y0 + rh], fill=HEADER)
    for r, line in enumerate([header] + body):
        x = x0
        for c, (text, cw) in enumerate(zip(line, widths)):
            anchor, tx = ("lm", x + 10) if c == 0 else ("rm", x + cw - 10)
            d.text((tx, y0 + rh * r + rh / 2), text, font=f, fill=BLACK, anchor=anchor)
            x += cw
    for r in range(nrows + 2):
        d.line([(x0, y0 + rh * r), (x0 + tw, y0 + rh * r)], fill=AXIS)
    x = x0
    for cw in [0] + widths:
        x += cw
        d.line([(round(x), y0), (round(x), y0 + th)], fill=AXIS)

    caption = (f"A table titled '{title}' with a header row and {nrows} rows, as pipe-separated text:\n"
               + "\n".join(" | ".join(line) for line in [header] + body))

    c = rng.randrange(ncols)
    col, vals = cols[c], data[c]
    t = rng.randrange(8)
    choices = None
    if t == 0:
        q, a = f"What is the total of the {col} column?", fmt(sum(vals))
    elif t == 1:
        i, j = rng.sample(range(nrows), 2)
        if vals[i] < vals[j]:
            i, j = j, i
        q, a = f"In the {col} column, how much larger is the value for {rows[i]} than for {rows[j]}?", fmt(vals[i] - vals[j])
    elif t == 2:
        q, a, choices = f"Which {head.lower()} has the largest {col} value?", rows[vals.index(max(vals))], list(rows)
    elif t == 3:
        q, a, choices = f"Which {head.lower()} has the smallest {col} value?", rows[vals.index(min(vals))], list(rows)
    elif t == 4:
        a, how = _exact_or_rounded(Fraction(sum(vals), nrows))
        q = f"What is the mean of the {col} column?{how}"
    elif t == 5:
        if ncols < 2:
            raise _Retry
        r = rng.randrange(nrows)
        q, a = f"What is the total across all numeric columns for {rows[r]}?", fmt(sum(data[k][r] for k in range(ncols)))
    elif t == 6:
        r = rng.randrange(nrows)
        q, a = f"What is the {col} value for {rows[r]}?", fmt(vals[r])
        choices = _num_choices(rng, vals[r], [v for v in vals if v != vals[r]]
                               + [data[k][r] for k in range(ncols) if k != c])
    else:
        q, a = f"What is the difference between the largest and smallest values in the {col} column?", fmt(max(vals) - min(vals))
    return q, a, choices, caption, img
