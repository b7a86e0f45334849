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
what colour, which is bigger).

    from vlfactory.synthetic import generate
    for row in generate(100, seed=7, kinds=["bar", "table"]):
        ...
"""

from __future__ import annotations

import io
import math
import random
from fractions import Fraction
from functools import lru_cache
from typing import Any, Callable, Iterable, Iterator, Sequence

from PIL import Image, ImageDraw, ImageFont

KINDS = ("bar", "table", "geometry", "counting", "line", "clock")   # the default mix (shipped examples)
# Kinds a tiny VLM can learn on a CPU (the quickstart's): coarse features only. Asked for by name.
VISION_KINDS = ("shapes",)
MIN_SIDE, MAX_SIDE = 200, 480          # every image's width and height lie in this range
FIELDS = ("id", "kind", "question", "answer", "choices", "caption", "image")

WHITE, BLACK, GRID, AXIS, HEADER = (255, 255, 255), (0, 0, 0), (225, 225, 225), (60, 60, 60), (228, 232, 240)
COLORS = {
    "red": (214, 48, 49), "blue": (41, 98, 200), "green": (46, 160, 67),
    "yellow": (240, 200, 20), "purple": (136, 72, 178), "orange": (245, 130, 20),
}

NAMES = ["Ava", "Ben", "Cara", "Dev", "Eli", "Fay", "Gus", "Hana", "Ivan", "Jo", "Kai", "Lena"]
FRUITS = ["Apple", "Banana", "Cherry", "Grape", "Kiwi", "Mango", "Peach", "Pear"]
CITIES = ["Oslo", "Lima", "Cairo", "Perth", "Quito", "Riga", "Seoul", "Tunis"]
DAYS = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"]
TEAMS = ["Lions", "Tigers", "Bears", "Hawks", "Wolves", "Sharks", "Eagles"]
STALLS = ["North", "South", "East", "West", "Central", "Harbor"]
UNITS = {"cm": "centimeters", "m": "meters", "in": "inches", "ft": "feet"}


class _Retry(Exception):
    """The drawn parameters cannot make this question well posed; draw again."""


# ---- public API --------------------------------------------------------------

def generate(n: int, seed: int = 0, kinds: Sequence[str] | None = None) -> Iterator[dict]:
    """Yield n problems; deterministic for a seed (same seed -> identical rows and identical PNG bytes).

    Kinds take turns (item i is of kind `kinds[i % len(kinds)]`), so every kind
    appears once n >= len(kinds). Each row has exactly the keys in FIELDS.
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
        yield make(kind, seed, i)


def make(kind: str, seed: int, i: int) -> dict:
    """The problem with id f"{kind}-{seed}-{i}" (what `generate` yields at that position)."""
    rng = random.Random(f"vlfactory.synthetic/{kind}/{seed}/{i}")
    maker = _MAKERS[kind]
    for _ in range(100):
        try:
            q = maker(rng)
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
    return {"id": f"{kind}-{seed}-{i}", "kind": kind, "question": question, "answer": answer,
            "choices": choices, "caption": caption, "image": _png(img)}


# ---- numbers -----------------------------------------------------------------

def fmt(x: int | Fraction) -> str:
    """An exact number as minimal decimal text: 12, 3.5, -0.25. Fractions must terminate."""
    f = Fraction(x)
    if f.denominator == 1:
        return str(f.numerator)
    d, twos, fives = f.denominator, 0, 0
    while d % 2 == 0:
        d, twos = d // 2, twos + 1
    while d % 5 == 0:
        d, fives = d // 5, fives + 1
    if d != 1:
        raise ValueError(f"{f} has no finite decimal form")
    p = max(twos, fives)
    scaled = f * 10 ** p
    digits = str(abs(scaled.numerator)).rjust(p + 1, "0")
    text = (digits[:-p] + "." + digits[-p:]).rstrip("0").rstrip(".")
    return ("-" if f < 0 else "") + text


def _round(x: int | float | Fraction, places: int) -> Fraction:
    """Round half up to `places` decimals. Floats (irrational results) must not sit near a tie."""
    if isinstance(x, float):
        frac = (x * 10 ** places) % 1
        if abs(frac - 0.5) < 1e-6:
            raise _Retry
    q = Fraction(x) * 10 ** places
    return Fraction(math.floor(q + Fraction(1, 2)), 10 ** places)


def _terminates(f: Fraction, max_places: int = 2) -> bool:
    return (f * 10 ** max_places).denominator == 1


_PLACES = {0: "Round to the nearest whole number.", 1: "Round to one decimal place.",
           2: "Round to two decimal places."}


def _exact_or_rounded(f: Fraction, places: int = 1) -> tuple[str, str]:
    """(answer, instruction): exact when it has at most two decimals, else rounded with an instruction."""
    if _terminates(f):
        return fmt(f), ""
    return fmt(_round(f, places)), " " + _PLACES[places]


def _plural(word: str) -> str:
    return word + "es" if word.endswith(("s", "x", "ch")) else word + "s"


def _num_choices(rng: random.Random, answer: int | Fraction, wrong: Iterable = (), k: int = 4) -> list[str]:
    """Multiple-choice options for a numeric answer: plausible mistakes first, then near values."""
    a = Fraction(answer)
    out = [fmt(a)]
    wrong = [Fraction(w) for w in wrong]
    rng.shuffle(wrong)
    for w in wrong:
        if len(out) == k:
            break
        if w >= 0 and _terminates(w, 4) and fmt(w) not in out:
            out.append(fmt(w))
    step = Fraction(1) if abs(a) < 30 or a.denominator != 1 else Fraction(10 ** max(0, len(str(abs(a.numerator))) - 2))
    j = 1
    while len(out) < k:
        for c in rng.sample([a + j * step, a - j * step], 2):
            if len(out) < k and c >= 0 and fmt(c) not in out:
                out.append(fmt(c))
        j += 1
    rng.shuffle(out)
    return out


# ---- drawing -----------------------------------------------------------------

@lru_cache(maxsize=None)
def _font(size: int) -> ImageFont.FreeTypeFont:
    return ImageFont.load_default(size=size)


def _png(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG", optimize=False)   # Pillow writes no time or text chunks unless asked
    return buf.getvalue()


def _canvas(w: int, h: int) -> tuple[Image.Image, ImageDraw.ImageDraw]:
    img = Image.new("RGB", (int(w), int(h)), WHITE)
    return img, ImageDraw.Draw(img)


def _value_axis(d: ImageDraw.ImageDraw, box: tuple[int, int, int, int], ymax: int, step: int,
                axis_label: str) -> Callable[[float], float]:
    """Gridlines, ticks and tick labels for a 0..ymax value axis; returns value -> pixel y."""
    x0, y0, x1, y1 = box
    small = _font(11)

    def y(v: float) -> float:
        return y1 - (y1 - y0) * v / ymax

    for v in range(0, ymax + 1, step):
        yy = round(y(v))
        if v:
            d.line([(x0, yy), (x1, yy)], fill=GRID)
        d.line([(x0 - 4, yy), (x0, yy)], fill=AXIS)
        d.text((x0 - 7, yy), str(v), font=small, fill=AXIS, anchor="rm")
    d.line([(x0, y0 - 4), (x0, y1)], fill=AXIS)
    d.line([(x0, y1), (x1, y1)], fill=AXIS)
    d.text((x0 - 30, y0 - 14), axis_label, font=small, fill=AXIS, anchor="ls")
    return y


def _pick_labels(rng: random.Random, pool: list[str], n: int, ordered: bool) -> list[str]:
    if ordered:                       # e.g. days of the week keep their order
        start = rng.randrange(len(pool) - n + 1)
        return pool[start:start + n]
    return rng.sample(pool, n)


def _unit_step(rng: random.Random, n: int, units: Sequence[int] = (1, 2, 5, 10)) -> tuple[int, list[int]]:
    u = rng.choice(units)
    return u, [u * m for m in rng.sample(range(1, 21), n)]


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


# ---- geometry ------------------------------------------------------------------

TRIPLES = [(3, 4, 5), (5, 12, 13), (8, 15, 17), (7, 24, 25), (20, 21, 29), (9, 40, 41)]


def _triple(rng: random.Random, cap: int = 40) -> tuple[int, int, int]:
    options = [(a * k, b * k, c * k) for a, b, c in TRIPLES for k in (1, 2, 3) if c * k <= cap]
    return rng.choice(options)


def _geometry(rng: random.Random):
    return rng.choice((_rectangle, _right_triangle, _circle))(rng)


def _label_box(d: ImageDraw.ImageDraw, xy: tuple[float, float], text: str, anchor: str) -> None:
    d.text(xy, text, font=_font(14), fill=BLACK, anchor=anchor)


def _rectangle(rng: random.Random):
    unit = rng.choice(list(UNITS))
    if rng.random() < 0.3:
        wv, hv, diag = _triple(rng, 30)
        wv, hv = (wv, hv) if rng.random() < 0.5 else (hv, wv)
    else:
        wv, hv = rng.randint(2, 20), rng.randint(2, 20)
        diag = None
    shape = "square" if wv == hv else "rectangle"
    t = rng.randrange(5)
    hide_h = t == 4                             # the height is asked for, from the area
    W, H = 360, 300
    img, d = _canvas(W, H)
    s = min(220 / wv, 170 / hv)
    pw, ph = wv * s, hv * s
    x0, y0 = (W - pw) / 2 - 20, (H - ph) / 2
    d.rectangle([round(x0), round(y0), round(x0 + pw), round(y0 + ph)], outline=BLACK, width=2, fill=(235, 243, 252))
    m = min(12, pw / 3, ph / 3)
    d.line([(x0 + m, y0 + ph), (x0 + m, y0 + ph - m), (x0, y0 + ph - m)], fill=BLACK)  # right-angle mark
    _label_box(d, (x0 + pw / 2, y0 + ph + 8), f"{wv} {unit}", "mt")
    _label_box(d, (x0 + pw + 8, y0 + ph / 2), "?" if hide_h else f"{hv} {unit}", "lm")
    area = wv * hv
    if hide_h:
        _label_box(d, (x0 + pw / 2, y0 - 8), f"Area = {area} sq {unit}", "mb")
    caption = (f"A {shape} drawn with a right-angle mark at its bottom-left corner. Its bottom side is labelled "
               f"'{wv} {unit}' and its right side is labelled '{'?' if hide_h else f'{hv} {unit}'}'"
               + (f"; the text above it reads 'Area = {area} sq {unit}'." if hide_h else ".")
               + ("" if hide_h else f" It is {wv} {unit} wide and {hv} {unit} tall."))

    choices = None
    if t == 0:
        q, a = f"What is the area of the {shape}, in square {UNITS[unit]}?", fmt(area)
        if rng.random() < 0.5:
            choices = _num_choices(rng, area, [2 * (wv + hv), wv + hv, 2 * area])
    elif t == 1:
        q, a = f"What is the perimeter of the {shape}, in {UNITS[unit]}?", fmt(2 * (wv + hv))
        if rng.random() < 0.5:
            choices = _num_choices(rng, 2 * (wv + hv), [area, wv + hv, 2 * wv + hv])
    elif t in (2, 3):
        d2 = wv * wv + hv * hv
        if diag is not None:
            q, a = f"What is the length of the {shape}'s diagonal, in {UNITS[unit]}?", fmt(diag)
        else:
            q = f"What is the length of the {shape}'s diagonal, in {UNITS[unit]}? Round to one decimal place."
            a = fmt(_round(math.sqrt(d2), 1))
    else:
        q, a = f"The {shape} has an area of {area} square {UNITS[unit]}. What is its height, in {UNITS[unit]}?", fmt(hv)
    return q, a, choices, caption, img


def _right_triangle(rng: random.Random):
    unit = rng.choice(list(UNITS))
    t = rng.randrange(5)
    if t in (3, 4) or rng.random() < 0.4:
        av, bv, cv = _triple(rng)
        av, bv = (av, bv) if rng.random() < 0.5 else (bv, av)
    else:
        av, bv, cv = rng.randint(2, 20), rng.randint(2, 20), None
    # av: vertical leg (left), bv: horizontal leg (bottom), cv: hypotenuse (None if irrational)
    W, H = 360, 300
    img, d = _canvas(W, H)
    s = min(230 / bv, 200 / av)
    pw, ph = bv * s, av * s
    x0, y1 = (W - pw) / 2, (H + ph) / 2
    pts = [(x0, y1 - ph), (x0, y1), (x0 + pw, y1)]
    d.polygon(pts, outline=BLACK, fill=(252, 240, 228), width=2)
    m = min(12, pw / 4, ph / 4)
    d.line([(x0 + m, y1), (x0 + m, y1 - m), (x0, y1 - m)], fill=BLACK)
    lab_a = "?" if t == 3 else f"{av} {unit}"
    lab_b = f"{bv} {unit}"
    lab_c = f"{cv} {unit}" if t == 3 else "?" if t in (1, 2) else ""
    _label_box(d, (x0 - 8, y1 - ph / 2), lab_a, "rm")
    _label_box(d, (x0 + pw / 2, y1 + 8), lab_b, "mt")
    if lab_c:
        _label_box(d, (x0 + pw / 2 + 8, y1 - ph / 2 - 8), lab_c, "ls")
    caption = (f"A right triangle with the right angle (marked) at its bottom-left corner. The vertical leg on "
               f"the left is labelled '{lab_a}', the horizontal leg along the bottom is labelled '{lab_b}', and "
               + (f"the hypotenuse is labelled '{lab_c}'." if lab_c else "the hypotenuse is unlabelled."))

    choices = None
    area = Fraction(av * bv, 2)
    if t == 0:
        q, a = f"What is the area of the triangle, in square {UNITS[unit]}?", fmt(area)
        if rng.random() < 0.5:
            choices = _num_choices(rng, area, [av * bv, av + bv, Fraction(av + bv, 2)])
    elif t in (1, 4):
        if cv is not None:
            q, a = f"What is the length of the hypotenuse, in {UNITS[unit]}?", fmt(cv)
            if t == 4:
                q = f"What is the perimeter of the triangle, in {UNITS[unit]}?"
                a = fmt(av + bv + cv)
        else:
            q = f"What is the length of the hypotenuse, in {UNITS[unit]}? Round to one decimal place."
            a = fmt(_round(math.sqrt(av * av + bv * bv), 1))
    elif t == 2:
        hyp = math.sqrt(av * av + bv * bv)
        if cv is not None:
            q, a = f"What is the perimeter of the triangle, in {UNITS[unit]}?", fmt(av + bv + cv)
        else:
            q = f"What is the perimeter of the triangle, in {UNITS[unit]}? Round to one decimal place."
            a = fmt(_round(av + bv + hyp, 1))
    else:
        q, a = f"What is the length of the leg marked '?', in {UNITS[unit]}?", fmt(av)
        if rng.random() < 0.5:
            choices = _num_choices(rng, av, [cv - bv, cv + bv, bv])
    return q, a, choices, caption, img


def _circle(rng: random.Random):
    unit = rng.choice(list(UNITS))
    r = rng.randint(2, 15)
    show_d = rng.random() < 0.4
    W, H = 320, 280
    img, d = _canvas(W, H)
    cx, cy, R = W / 2, H / 2 + 5, 110
    d.ellipse([cx - R, cy - R, cx + R, cy + R], outline=BLACK, width=2, fill=(232, 246, 236))
    d.ellipse([cx - 3, cy - 3, cx + 3, cy + 3], fill=BLACK)
    if show_d:
        d.line([(cx - R, cy), (cx + R, cy)], fill=BLACK, width=2)
        text = f"d = {2 * r} {unit}"
        _label_box(d, (cx, cy - 6), text, "mb")
    else:
        d.line([(cx, cy), (cx + R, cy)], fill=BLACK, width=2)
        text = f"r = {r} {unit}"
        _label_box(d, (cx + R / 2, cy - 6), text, "mb")
    caption = (f"A circle with its center marked by a dot. A {'diameter' if show_d else 'radius'} is drawn "
               f"{'across the circle through the center' if show_d else 'from the center to the right edge'} "
               f"and labelled '{text}'.")

    pi_314 = rng.random() < 0.5
    how = " Use 3.14 for π." if pi_314 else " Use π and round to one decimal place."
    PI = Fraction(314, 100)
    t = rng.randrange(4)
    choices = None
    if t == 0:
        q = f"What is the area of the circle, in square {UNITS[unit]}?{how}"
        a = fmt(PI * r * r) if pi_314 else fmt(_round(math.pi * r * r, 1))
        if pi_314 and rng.random() < 0.6:
            choices = _num_choices(rng, PI * r * r, [PI * 2 * r, PI * 4 * r * r, PI * r])
    elif t == 1:
        q = f"What is the circumference of the circle, in {UNITS[unit]}?{how}"
        a = fmt(PI * 2 * r) if pi_314 else fmt(_round(math.pi * 2 * r, 1))
        if pi_314 and rng.random() < 0.6:
            choices = _num_choices(rng, PI * 2 * r, [PI * r * r, PI * r, PI * 4 * r])
    elif t == 2:
        q, a = (f"What is the radius of the circle, in {UNITS[unit]}?", fmt(r)) if show_d else \
               (f"What is the diameter of the circle, in {UNITS[unit]}?", fmt(2 * r))
    else:
        q = f"What is the area of a semicircle with the same radius as this circle, in square {UNITS[unit]}?{how}"
        a = fmt(PI * r * r / 2) if pi_314 else fmt(_round(math.pi * r * r / 2, 1))
    return q, a, choices, caption, img


# ---- counting ------------------------------------------------------------------

SHAPES = ("circle", "square", "triangle")


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


# ---- clocks ----------------------------------------------------------------------

def _hhmm(minutes: int) -> str:
    minutes %= 12 * 60
    hh, mm = divmod(minutes, 60)
    return f"{hh or 12}:{mm:02d}"


def _clock(rng: random.Random):
    hh, mm = rng.randint(1, 12), 5 * rng.randrange(12)
    W = H = 260
    img, d = _canvas(W, H)
    cx, cy, R = W / 2, H / 2, 112
    d.ellipse([cx - R, cy - R, cx + R, cy + R], outline=BLACK, width=3, fill=(250, 248, 240))
    for k in range(60):
        th = math.radians(6 * k)
        r0 = R - (12 if k % 5 == 0 else 6)
        d.line([(cx + r0 * math.sin(th), cy - r0 * math.cos(th)), (cx + (R - 2) * math.sin(th), cy - (R - 2) * math.cos(th))],
               fill=BLACK, width=2 if k % 5 == 0 else 1)
    for num in range(1, 13):
        th = math.radians(30 * num)
        d.text((cx + (R - 28) * math.sin(th), cy - (R - 28) * math.cos(th)), str(num), font=_font(17), fill=BLACK, anchor="mm")
    ang_h, ang_m = Fraction((hh % 12) * 30) + Fraction(mm, 2), mm * 6
    for ang, length, width in ((ang_h, 55, 7), (ang_m, 88, 3)):
        th = math.radians(float(ang))
        d.line([(cx, cy), (cx + length * math.sin(th), cy - length * math.cos(th))], fill=BLACK, width=width)
    d.ellipse([cx - 5, cy - 5, cx + 5, cy + 5], fill=BLACK)
    m_at = mm // 5 or 12
    caption = (f"An analog clock face numbered 1 to 12 with minute ticks. The short hour hand points "
               f"{fmt(ang_h)} degrees clockwise from 12"
               + (f" (exactly at {hh})" if mm == 0 else f" ({mm}/60 of the way from {hh} to {hh % 12 + 1})")
               + f"; the long minute hand points at the {m_at} ({ang_m} degrees from 12).")

    now = hh * 60 + mm
    t = rng.randrange(3)
    if t == 0:
        wrong = {_hhmm(now + 60), _hhmm(now - 60), _hhmm(now + 5), _hhmm(now - 5)}
        wrong.add(_hhmm((m_at % 12) * 60 + (hh % 12) * 5))   # the classic slip: hands read the wrong way round
        wrong.discard(_hhmm(now))
        choices = [_hhmm(now)] + rng.sample(sorted(wrong), 3)
        rng.shuffle(choices)
        return "What time does the clock show?", _hhmm(now), choices, caption, img
    if t == 1:
        delta = rng.choice([10, 15, 20, 25, 30, 35, 40, 45, 50, 70, 90, 105, 120])
        return (f"What time will the clock show {delta} minutes later? Answer as h:mm.", _hhmm(now + delta),
                None, caption, img)
    target = rng.randint(1, 12)
    wait = (target * 60 - now) % (12 * 60) or 12 * 60
    return f"How many minutes from the time shown until the clock next shows {target}:00?", fmt(wait), None, caption, img


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
    for row in generate(src.limit if src.limit is not None else src.n, src.seed, src.kinds):
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
