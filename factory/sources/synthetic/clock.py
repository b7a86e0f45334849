"""Analog clocks: read the time, and times before or after it."""

from __future__ import annotations

import math
import random
from fractions import Fraction

from vlfactory.sources.synthetic.draw import BLACK, _canvas, _font, fmt

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
