"""Line charts: read a point, find the largest change, compare series."""

from __future__ import annotations

import math
import random
from fractions import Fraction

from vlfactory.sources.synthetic.draw import (
    BLACK,
    COLORS,
    _canvas,
    _exact_or_rounded,
    _font,
    _num_choices,
    _unit_step,
    _value_axis,
    fmt,
)

# ---- line charts -----------------------------------------------------------------

LINE_THEMES = [  # title, axis label, what is measured (for questions)
    ("Museum visitors per year", "Visitors (thousands)", "the number of visitors"),
    ("Trees planted per year", "Trees", "the number of trees planted"),
    ("Bicycles sold per year", "Bicycles", "the number of bicycles sold"),
    ("Rainfall per year", "Rainfall (cm)", "the rainfall"),
]


def _line(rng: random.Random):
    title, axis, what = rng.choice(LINE_THEMES)
    n = rng.randint(4, 7)
    start = rng.randint(2010, 2018)
    years = [str(start + k) for k in range(n)]
    u, values = _unit_step(rng, n)
    step = 5 * u
    ymax = step * math.ceil(max(values) / step)
    cname = rng.choice(["blue", "red", "green", "purple"])

    w, h = 400, 300
    img, d = _canvas(w, h)
    box = (56, 50, w - 24, h - 46)
    d.text((w / 2, 18), title, font=_font(15), fill=BLACK, anchor="mm")
    y = _value_axis(d, box, ymax, step, axis)
    slot = (box[2] - box[0]) / n
    pts = [(box[0] + slot * (k + 0.5), y(v)) for k, v in enumerate(values)]
    d.line(pts, fill=COLORS[cname], width=2)
    for (px, py), yr, v in zip(pts, years, values):
        d.ellipse([px - 4, py - 4, px + 4, py + 4], fill=COLORS[cname])
        d.text((px, py - 7), str(v), font=_font(11), fill=BLACK, anchor="mb")
        d.text((px, box[3] + 8), yr, font=_font(12), fill=BLACK, anchor="mt")
    caption = (f"A line chart titled '{title}' with a {cname} line through {n} labelled points. The value axis "
               f"is labelled '{axis}' and runs from 0 to {ymax}. Points from left to right: "
               + "; ".join(f"{yr} = {v}" for yr, v in zip(years, values)) + ".")

    t = rng.randrange(6)
    choices = None
    if t == 0:
        q, a, choices = f"In which year was {what} highest?", years[values.index(max(values))], list(years)
    elif t == 1:
        q, a, choices = f"In which year was {what} lowest?", years[values.index(min(values))], list(years)
    elif t == 2:
        i, j = sorted(rng.sample(range(n), 2))
        diff = values[j] - values[i]
        q = f"By how much did {what} {'increase' if diff > 0 else 'decrease'} from {years[i]} to {years[j]}?"
        a = fmt(abs(diff))
    elif t == 3:
        q = f"In how many years did {what} increase compared with the year before?"
        a = fmt(sum(values[k] > values[k - 1] for k in range(1, n)))
    elif t == 4:
        i = rng.randrange(n)
        q, a = f"What was {what} in {years[i]}?", fmt(values[i])
        choices = _num_choices(rng, values[i], [v for v in values if v != values[i]])
    else:
        a, how = _exact_or_rounded(Fraction(sum(values), n))
        q = f"What was the average of {what} over the years shown?{how}"
    return q, a, choices, caption, img
