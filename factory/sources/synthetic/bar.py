"""Bar charts: read a value, compare bars, sums and differences."""

from __future__ import annotations

import math
import random

from vlfactory.sources.synthetic.draw import (
    BLACK,
    CITIES,
    COLORS,
    DAYS,
    FRUITS,
    NAMES,
    TEAMS,
    _canvas,
    _font,
    _num_choices,
    _pick_labels,
    _Retry,
    _unit_step,
    _value_axis,
    fmt,
)

# ---- bar charts ----------------------------------------------------------------

BAR_THEMES = [  # title, value axis, label pool, ordered, value units (values are unit * 1..20)
    ("Books read this month", "Books", NAMES, False, (1, 2)),
    ("Votes for favorite fruit", "Votes", FRUITS, False, (1, 2, 5, 10)),
    ("Rainfall by city", "Rainfall (mm)", CITIES, False, (1, 2, 5, 10)),
    ("Cars sold each day", "Cars sold", DAYS, True, (1, 2, 5)),
    ("Points scored by team", "Points", TEAMS, False, (1, 2, 5)),
]


def _bar(rng: random.Random):
    title, axis, pool, ordered, units = rng.choice(BAR_THEMES)
    n = rng.randint(3, 6)
    labels = _pick_labels(rng, pool, n, ordered)
    u, values = _unit_step(rng, n, units)
    labelled = rng.random() < 0.6                 # value printed on each bar, else read from the gridlines
    step = (5 if labelled else 2) * u
    ymax = step * math.ceil(max(values) / step)
    cname = rng.choice(list(COLORS))

    w, h = 120 + 52 * n, 320
    img, d = _canvas(w, h)
    box = (56, 50, w - 16, h - 50)
    d.text((w / 2, 18), title, font=_font(15), fill=BLACK, anchor="mm")
    y = _value_axis(d, box, ymax, step, axis)
    slot = (box[2] - box[0]) / n
    bw = slot * 0.6
    for k, (lab, v) in enumerate(zip(labels, values)):
        cx = box[0] + slot * (k + 0.5)
        top = y(v)
        d.rectangle([round(cx - bw / 2), round(top), round(cx + bw / 2), box[3] - 1], fill=COLORS[cname])
        d.text((cx, box[3] + 8), lab, font=_font(12), fill=BLACK, anchor="mt")
        if labelled:
            d.text((cx, top - 3), str(v), font=_font(11), fill=BLACK, anchor="mb")

    caption = (f"A vertical bar chart titled '{title}' with {n} {cname} bars. The value axis is labelled "
               f"'{axis}' and runs from 0 to {ymax} with gridlines every {step}"
               f"{'; each bar has its value printed above it' if labelled else ''}. "
               f"Bars from left to right: " + "; ".join(f"{l} = {v}" for l, v in zip(labels, values)) + ".")

    hi, lo = values.index(max(values)), values.index(min(values))
    t = rng.randrange(8)
    choices = None
    if t == 0:
        q, a = "What is the value of the tallest bar?", fmt(values[hi])
    elif t == 1:
        q, a = "What is the value of the shortest bar?", fmt(values[lo])
    elif t == 2:
        i, j = rng.sample(range(n), 2)
        if values[i] < values[j]:
            i, j = j, i
        q, a = f"How much larger is the value for {labels[i]} than the value for {labels[j]}?", fmt(values[i] - values[j])
    elif t == 3:
        q, a, choices = "Which category has the smallest value?", labels[lo], list(labels)
    elif t == 4:
        q, a, choices = "Which category has the largest value?", labels[hi], list(labels)
    elif t == 5:
        q, a = "What is the sum of the values of all the bars?", fmt(sum(values))
    elif t == 6:
        gaps = [x for x in range(min(values) + 1, max(values)) if x not in values]   # keep the threshold off every bar
        if not gaps:
            raise _Retry
        thr = rng.choice(gaps)
        q = f"How many bars have a value greater than {thr}?"
        a = fmt(sum(v > thr for v in values))
    else:
        i = rng.randrange(n)
        q, a = f"What is the value for {labels[i]}?", fmt(values[i])
        choices = _num_choices(rng, values[i], [v for v in values if v != values[i]] + [values[i] + u, values[i] - u])
    return q, a, choices, caption, img
