"""The vlfactory judge's rules (protocol "vlfactory"): the verdict type, numbers with their written
precision, texts, and the first-rule-that-decides judge that sends the rest to math-verify (see vlfactory.verify)."""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction
from functools import lru_cache
from typing import Any

from vlfactory.verify.extraction import _choices_in, _clean, _extract, _fold, _letter, _picked

log = logging.getLogger("vlfactory.verify")

REL_TOL = 1e-4
MAX_ANSWER_CHARS = 1000     # a longer "answer" is compared as text only: sympy never sees a novel


@dataclass(frozen=True)


class Grade:
    correct: bool
    extracted: str | None   # the final answer as the completion states it, cleaned; None if none
    reason: str             # correct, incorrect, no_answer, unparsable_gold, timeout, error


# ---- numbers -----------------------------------------------------------------------------

_UNIT_WORD = r"(?:(?!(?:pi|sqrt|[A-Za-z])(?![\w'’./^-]))[A-Za-z][\w'’./^-]*|[mgslhL](?![\w'’./^-]))"
_NUMBER = re.compile(rf"""
    (?P<sign>[-+])?\s*(?:[$€£¥₹]\s*)?(?P<sign2>[-+])?
    (?: \\frac\{{(?P<fn>\d+)\}}\{{(?P<fd>\d+)\}}
      | (?P<n>\d+)\s*/\s*(?P<d>\d+)
      | (?P<int>\d{{1,3}}(?:,\d{{3}})+|\d+)(?:\.(?P<dec>\d*))?
      | \.(?P<dec0>\d+) )
    \s*(?P<pct>%|percent\b)?
    (?:\s*°\s*[CF]?|(?:cm|mm|km|m|kg|g|mg|ml|s|h|hr|min|ft|in|yd|mi|lbs?|oz)[23]?(?![A-Za-z])|(?:\s+{_UNIT_WORD})+)?
""", re.X)
_LIST_SPLIT = re.compile(r"\s*[,;]\s*(?!\d{3}(?!\d))")
_PAIR = re.compile(r"(\d{1,2}):(\d{1,2})")                    # clock times: 5:0 == 5:00
_BRACKETS = {"(": ")", "[": "]"}
_MATHY = re.compile(r"[\d\\π√∞]")


@dataclass(frozen=True)


class _Num:
    value: Fraction
    step: Fraction | None = None    # 10^-k when written with k decimals; None when exact
    percent: bool = False

    def readings(self) -> list[tuple[Fraction, Fraction | None]]:
        """As written, and for a percentage also as a fraction of one (25% is 25 and 0.25)."""
        out = [(self.value, self.step)]
        if self.percent:
            out.append((self.value / 100, self.step / 100 if self.step else None))
        return out


@lru_cache(maxsize=65536)


def _number(s: str) -> _Num | None:
    m = _NUMBER.fullmatch(s) if len(s) <= 100 else None
    if m is None or not (m["fd"] or m["d"] or m["int"] or m["dec0"]):
        return None
    if m["fd"] or m["d"]:
        den = int(m["fd"] or m["d"])
        if den == 0:
            return None
        value, step = Fraction(int(m["fn"] or m["n"]), den), None
    else:
        whole, dec = (m["int"] or "0").replace(",", ""), m["dec"] or m["dec0"] or ""
        if len(dec) > 12:   # a float's noise, as in DynaMath's "-15.700000000000001": read the float
            x = float(f"{whole}.{dec}")
            snapped = repr(round(x, 12))
            if "e" not in snapped and abs(float(snapped) - x) <= 1e-9 * x:
                whole, _, dec = snapped.partition(".")
        value = Fraction(int(whole + dec), 10 ** len(dec))
        step = Fraction(1, 10 ** len(dec)) if dec else None
    negative = "-" in (m["sign"] or "", m["sign2"] or "")
    return _Num(-value if negative else value, step, bool(m["pct"]))


def _numbers(s: str) -> tuple[str, list[_Num]] | None:
    """`s` as numbers with their bracket: ("", [n]), ("(", [a, b]), ("[", ...), (":", [h, m])."""
    if len(s) > MAX_ANSWER_CHARS:
        return None
    if (n := _number(s)) is not None:
        return "", [n]
    if pair := _PAIR.fullmatch(s):
        return ":", [_Num(Fraction(int(pair[1]))), _Num(Fraction(int(pair[2])))]
    opener = s[0] if s[:1] in _BRACKETS and s.endswith(_BRACKETS[s[0]]) else ""
    parts = _LIST_SPLIT.split(s[1:-1].strip() if opener else s)
    nums = [_number(p) for p in parts]
    if any(n is None for n in nums):
        return None
    return ("" if len(nums) == 1 else opener), nums


def _same_numbers(gold: tuple[str, list[_Num]], pred: tuple[str, list[_Num]],
                  decimals: int | None, rel_tol: Fraction) -> bool:
    (g_kind, g_nums), (p_kind, p_nums) = gold, pred
    kinds_agree = g_kind == p_kind or (":" not in (g_kind, p_kind) and "" in (g_kind, p_kind))
    return (kinds_agree and len(g_nums) == len(p_nums)
            and all(_close(g, p, decimals, rel_tol) for g, p in zip(g_nums, p_nums)))


def _close(gold: _Num, pred: _Num, decimals: int | None, rel_tol: Fraction) -> bool:
    return any(_near(g, gs, p, ps, decimals, rel_tol)
               for g, gs in gold.readings() for p, ps in pred.readings())


def _near(g: Fraction, g_step: Fraction | None, p: Fraction, p_step: Fraction | None,
          decimals: int | None, rel_tol: Fraction) -> bool:
    if g == p:
        return True
    if decimals is not None and _rounded(g, decimals) & _rounded(p, decimals):
        return True
    steps = [s for s in (g_step, p_step) if s is not None]
    if not steps:   # two exact values that differ
        return False
    diff = abs(g - p)
    return 2 * diff <= max(steps) and diff <= rel_tol * abs(g)


def _rounded(x: Fraction, decimals: int) -> set[Fraction]:
    scaled, unit = x * 10 ** decimals, Fraction(1, 10 ** decimals)
    half_up = math.floor(abs(scaled) + Fraction(1, 2)) * (1 if x >= 0 else -1)
    return {round(scaled) * unit, half_up * unit}


_WORD_NUMBER = {"zero": 0, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6}
_NEAREST = {"integer": 0, "whole number": 0, "tenth": 1, "hundredth": 2, "thousandth": 3, "cent": 2}
_DECIMALS = re.compile(r"(?i)\b(\d|zero|one|two|three|four|five|six)\s+decimal(?:s|\s+places?|\s+digits?)\b"
                       r"|\bnearest\s+(integer|whole number|tenth|hundredth|thousandth|cent)s?\b")


def _stated_decimals(question: str | None) -> int | None:
    """The rounding a question asks for: "two decimal places" -> 2, "nearest tenth" -> 1."""
    m = _DECIMALS.search(question or "")
    if m is None:
        return None
    if m[1]:
        return int(m[1]) if m[1].isdigit() else _WORD_NUMBER[m[1].lower()]
    return _NEAREST[m[2].lower()]

# ---- texts ---------------------------------------------------------------------------------

_FUNCTIONS = r"sin|cos|tan|cot|sec|csc|log|ln|exp|sqrt|pi|inf|infty|and|or|arcsin|arccos|arctan|mod|max|min"
_WORDY = re.compile(rf"(?<![\\A-Za-z])(?!(?:{_FUNCTIONS})(?![A-Za-z]))[A-Za-z]{{2,}}|[A-Za-z]\d"
                    r"|\d{1,4}[/.-]\d{1,2}[/.-]\d{2,4}|\d\s*[AaPp]\.?\s?[Mm]\b")


def _is_text(s: str) -> bool:
    """Words, dates or labels ("Q1"), as opposed to mathematics (math-verify would read "DE" as D*E)."""
    return "\\" not in s and _WORDY.search(s) is not None


# Work for a worker process: (the answer as extracted, the function's name in _WORK, its arguments).
Job = tuple


def _judge(completion: str, answer: Any, choices: Sequence[str] | None = None, question: str | None = None,
           rel_tol: float = REL_TOL) -> Grade | Job:
    """Everything but math-verify: a Grade, or the job to send to a worker."""
    pred = _extract(completion)
    if pred is None:
        return Grade(False, None, "no_answer")
    gold = _clean(str(answer))
    if not gold:
        return Grade(False, pred, "unparsable_gold")

    def verdict(ok: bool) -> Grade:
        return Grade(ok, pred, "correct" if ok else "incorrect")

    if _fold(pred) == _fold(gold):
        return verdict(True)
    options = [str(c) for c in choices] if choices is not None else _choices_in(question or "")
    gold_pick = _picked(gold, options) if options else None
    pick = _picked(pred, options) if gold_pick is not None else None
    if pick is not None:   # an answer that names no choice is graded by the rules below
        return verdict(pick == gold_pick or _fold(options[pick]) == _fold(options[gold_pick]) != "")
    if len(gold) == 1 and "A" <= gold <= "Z":
        return verdict(_letter(pred) == gold)
    if _is_text(gold):
        return verdict(False)
    tol = str(rel_tol)
    decimals = _stated_decimals(question)
    gold_nums, pred_nums = _numbers(gold), _numbers(pred)
    if gold_nums is not None and pred_nums is not None:
        return verdict(_same_numbers(gold_nums, pred_nums, decimals, Fraction(tol)))
    if len(pred) > MAX_ANSWER_CHARS or (gold_nums is not None and not _MATHY.search(pred)):
        return verdict(False)
    if gold_nums is not None and gold_nums[0] == ":":   # math-verify reads 5:0 as 5/0
        return verdict(False)
    return pred, "math_verify", gold, pred, decimals, tol
