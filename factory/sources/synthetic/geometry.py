"""Geometry figures: rectangles, right triangles and circles with labelled lengths."""

from __future__ import annotations

import math
import random
from fractions import Fraction

from PIL import ImageDraw

from vlfactory.sources.synthetic.draw import BLACK, UNITS, _canvas, _font, _num_choices, _round, fmt

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
