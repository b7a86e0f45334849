"""What every synthetic kind shares: colours and label pools, exact numbers as text, multiple-choice
options, and drawing helpers (Pillow only, its built-in font)."""

from __future__ import annotations

import io
import math
import random
from fractions import Fraction
from functools import lru_cache
from typing import Callable, Iterable, Sequence

from PIL import Image, ImageDraw, ImageFont

MIN_SIDE, MAX_SIDE = 200, 480          # every image's width and height lie in this range


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

SHAPES = ("circle", "square", "triangle")


class _Retry(Exception):
    """The drawn parameters cannot make this question well posed; draw again."""


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
