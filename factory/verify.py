"""The verifier: find the final answer in a completion and grade it against the gold answer.

One function, two uses: the verify stage grades traces with `grade_many`, and the GRPO
trainer takes `accuracy_reward` (the same `grade`) as its reward, next to `format_reward`,
which checks the recipe's `<think> ... </think> ... <answer>X</answer>` shape.

    from vlfactory.verify import grade
    grade("<think>7 / 14</think> <answer>\\frac{1}{2}</answer>", "0.5")
    # Grade(correct=True, extracted='\\frac{1}{2}', reason='correct')

    python -m vlfactory.verify 'The answer is \\boxed{0.5}' '1/2'      # grade one completion
    python -m vlfactory.verify 'It is (B).' Tuesday Monday Tuesday     # ... with its choices
    pytest tests/test_verify.py                                         # the table of cases

Finding the answer (`extract_answer`). Only what follows the last `</think>` counts; in it,
the last `<answer>...</answer>` (a missing `</answer>` reads to the end), else the last
`\\boxed{...}` (nested braces; a run like `\\boxed{2}, \\boxed{3}` is one multi-part answer),
else what follows the last "answer is" / "answer:", else a short one-line reply as a whole.
Inside an `<answer>`, a `\\boxed{}` or "the answer is" narrows it further.

Grading (`grade`), first rule that decides:
1. A case-insensitive exact match is correct (OpenVLThinker's rule).
2. Multiple choice, when the problem has `choices` or its question lists them ("(A) x (B) y",
   "A. x" or "A: x" lines): the answer picks a choice by its text or by its letter ("B",
   "(B)", "B.", "Option B"), and the gold names one the same two ways.
3. Texts (words, dates, labels such as "Q1") are only ever equal as text.
4. Plain numbers and lists of them ("1,000", "$146", "25%", "53°", "1/12", "\\frac{1}{2}",
   "(1.000, -4.000)", "5:00") are compared here. Two numbers are equal when they are equal, or
   when they agree to the coarser of their written precisions *and* within a relative
   `rel_tol` (1e-4): "0.3333" passes for 1/3, "2825.36" fails for 2825.35, "7444" fails for
   7443.7691. When the question states a rounding ("two decimal places", "nearest tenth"), the
   answer rounded so equals the gold rounded so (half up or half even), so the exactly rounded
   value passes and a looser one does not. Lists compare in order; "()" and "[]" must agree.
5. Everything else goes to math-verify, gold parsed as gold and the answer as prediction
   (`verify(gold, pred)`): LaTeX, expressions, equations, sets, intervals. When both sides are
   real numbers, rule 4's tolerance decides instead (math-verify's `float_rounding` is a
   count of absolute decimal places, not a relative tolerance, and it calls 1/2^99 equal to
   1/2^98).

Rule 5 runs in worker processes with a time limit per item: math-verify's own timeout uses
SIGALRM, which only works in a main thread and cannot stop sympy inside C code, so a worker
that overruns is killed and replaced instead. A pathological expression costs one worker one
timeout; `grade` is safe to call from threads and from many processes.

Reasons: "correct", "incorrect", "no_answer", "unparsable_gold" (math-verify cannot read the
gold), "timeout", "error" (a worker died, or a bug: logged).

Protocols. The rules above are `protocol="vlfactory"`, the default. `protocol="openvlthinker"` is
the judge of the official evaluation script (OpenVLThinker's evaluation/eval_openvlthinker.py),
verdict for verdict: a completion without "</answer>" is wrong; the answer is the text after the
last "<answer>" up to the "</answer>" after it, stripped; a gold answer that is one of the
`choices` becomes its option letter (`process_response`); correct iff gold and answer are equal
ignoring case, or `mathruler.grader.grade_answer(gold, answer)` agrees (the argument order of the
script). The only difference: mathruler runs in the worker processes with `timeout_s` (the script
has no limit; sympy can hang), so a pathological answer is "timeout", not a hung evaluation.

    grade("<think>x</think> <answer>B</answer>", "5", ["3", "5"], protocol="openvlthinker").correct   # True
"""

from __future__ import annotations

import logging
import math
import os
import re
import subprocess
import sys
import threading
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from fractions import Fraction
from functools import lru_cache
from typing import Any

log = logging.getLogger(__name__)

VERSION = "1"               # bump when a verdict can change: the verify stage regrades on a new version
REL_TOL = 1e-4
TIMEOUT_S = 5.0
MAX_ANSWER_CHARS = 1000     # a longer "answer" is compared as text only: sympy never sees a novel
WORKER_MEMORY = 2 << 30     # bytes of address space per worker: 9^{9^{9}} fails there, not in the machine
WORKER_START_S = 120.0
CHUNK = 32                  # math-verify jobs per message to a worker (grade_many)
PROTOCOLS = ("vlfactory", "openvlthinker")
OPTION_LETTERS = "ABCDEFGHIJ"  # the official script's option letters (process_response)

# ---- finding the answer ------------------------------------------------------------------

_BOX = re.compile(r"\\(?:boxed|fbox)\s*\{")
_BRACE = re.compile(r"[{}]")
_BOX_GAP = re.compile(r"[\s,;$]*(?:(?:and|&)[\s$]*)?")
_ANSWER_IS = re.compile(r"(?i)\banswer\b[\s*]*(?:is\b|:|=)[\s*:]*")
_SENTENCE_END = re.compile(r"(?<!\b(?:Mr|Ms|Dr|St|Mt|Jr|Sr))(?<!\bMrs)\.(?:\s|$)")


@dataclass(frozen=True)
class Grade:
    correct: bool
    extracted: str | None   # the final answer as the completion states it, cleaned; None if none
    reason: str             # correct, incorrect, no_answer, unparsable_gold, timeout, error


def extract_answer(completion: str, choices: Sequence[str] | None = None) -> str | None:
    """The final answer of a completion, cleaned; with `choices`, a letter becomes its choice.

    >>> extract_answer("<think>7 + 5 = 12</think> It costs $12. <answer>\\\\boxed{12}</answer>")
    '12'
    >>> extract_answer("Comparing the rows, the answer is (B).", ["Monday", "Tuesday"])
    'Tuesday'
    """
    answer = _extract(completion)
    if answer is not None and choices:
        choices = [str(c) for c in choices]
        picked = _picked(answer, choices)
        if picked is not None:
            return choices[picked]
    return answer


def _extract(completion: str) -> str | None:
    end = completion.rfind("</think>")
    text = completion[end + len("</think>"):] if end >= 0 else completion
    start = text.rfind("<answer>")
    if start >= 0:
        body = text[start + len("<answer>"):]
        stop = body.find("</answer>")
        span = _narrow(body if stop < 0 else body[:stop], whole=True)
    else:
        span = _narrow(text, whole=False)
    return (_clean(span) or None) if span is not None else None


def stated_answer(text: str) -> str | None:
    """The answer a text states outright, cleaned: its last \\boxed{} run, else what follows its
    last "answer is"; None if it states none. Unlike `extract_answer`, a short text is not an
    answer by itself, and `<think>` tags mean nothing: this reads a piece of reasoning.

    >>> stated_answer("The base is 4, so the area is \\\\boxed{12}. Wait, the base is 5.")
    '12'
    >>> stated_answer("7 * 6 = 42") is None
    True
    """
    span = _stated(text)
    return (_clean(span) or None) if span is not None else None


def _narrow(text: str, whole: bool) -> str | None:
    """The answer inside `text`: a boxed run, else after "answer is", else all of it if `whole` or short."""
    stated = _stated(text)
    if stated is not None:
        return stated
    text = text.strip()
    return text if whole or (len(text) <= 100 and "\n" not in text) else None


def _stated(text: str) -> str | None:
    boxed = _boxed(text)
    if boxed is not None:
        return boxed
    said = None
    for said in _ANSWER_IS.finditer(text):
        pass
    if said is None:
        return None
    rest = text[said.end():].lstrip().split("\n", 1)[0]
    stop = _SENTENCE_END.search(rest)
    return rest[:stop.start()] if stop else rest


def _boxed(text: str) -> str | None:
    """The last \\boxed{...}, or the last run of them separated by commas/"and", joined by ", "."""
    found: list[str] = []
    stop = len(text)
    for box in reversed(list(_BOX.finditer(text))):
        end = _closing(text, box.end(), stop)
        if end is None or (found and not _BOX_GAP.fullmatch(text, end + 1, stop)):
            break
        found.append(text[box.end():end])
        stop = box.start()
    return ", ".join(reversed(found)) if found else None


def _closing(text: str, start: int, stop: int) -> int | None:
    depth = 1
    for brace in _BRACE.finditer(text, start, stop):
        depth += 1 if brace.group() == "{" else -1
        if depth == 0:
            return brace.start()
    return None


_WRAPPER = re.compile(r"\\(?:text|textbf|textit|textrm|mathrm|mathbf|mbox|operatorname)\s*\{([^{}]*)\}")
_MATH_DELIM = re.compile(r"\\[()\[\]]|\$\$")
_TEX_SPACE = re.compile(r"\\[,;:! ]|~|\\(?:left|right)(?![A-Za-z])|\\displaystyle")
_EMPHASIS = re.compile(r"^(\*\*|\*|`)(.+)\1$")   # markdown **bold**, *italic*, `code`
_DEGREE = re.compile(r"\^\s*\{?\s*\\circ\s*\}?|\\circ\b|\\degree\b")


def _clean(s: str) -> str:
    """Strip the wrapping that carries no meaning: math delimiters, \\text{}, markdown, spacing."""
    s = unicodedata.normalize("NFKC", s).replace("\u2212", "-").replace("\u2044", "/").replace("\x00", "")
    s = _WRAPPER.sub(r"\1", _WRAPPER.sub(r"\1", s))
    s = _MATH_DELIM.sub(" ", s.replace("\\$", "\x00"))
    if s.count("$") >= 2:   # math delimiters; a lone "$" is money
        s = s.replace("$", " ")
    s = s.replace("\x00", "$").replace("\\%", "%").replace("\\dfrac", "\\frac").replace("\\tfrac", "\\frac")
    s = _TEX_SPACE.sub(" ", _DEGREE.sub("°", s))
    s = _EMPHASIS.sub(r"\2", " ".join(s.split())).strip()
    return s[:-1].rstrip() if s.endswith(".") else s


_MERIDIEM = re.compile(r"(?<=\d)\s*([ap])\.?\s?m\b\.?")


def _fold(s: str) -> str:
    """For comparing texts: case, spacing and "P.M." vs "pm" do not count."""
    return _MERIDIEM.sub(r" \1m", " ".join(s.casefold().split()))

# ---- multiple choice ---------------------------------------------------------------------

_LETTER = re.compile(r"(?:(?i:option|choice)\s*)?(?:\(([A-Za-z])\)|([A-Z])(?=[.:),]|$))")
_CHOICE_LINE = re.compile(r"^[ \t]*([A-H])[.:)][ \t]+(\S.*?)[ \t]*$", re.M)
_CHOICE_MARK = re.compile(r"\(([A-H])\)")


def _letter(answer: str) -> str | None:
    """The choice letter an answer leads with ("B", "(B) x", "B. x", "Option B"), or its only "(B)"."""
    if m := _LETTER.match(answer):
        return (m[1] or m[2]).upper()
    marks = set(_CHOICE_MARK.findall(answer)) if len(answer) <= 100 else ()
    return marks.pop() if len(marks) == 1 else None


def _picked(answer: str, choices: list[str]) -> int | None:
    """Which choice `answer` names: by its text first, then by its letter."""
    folded = _fold(answer)
    for i, choice in enumerate(choices):
        if _fold(choice) == folded:
            return i
    letter = _letter(answer)
    if letter is not None and ord(letter) - ord("A") < len(choices):
        return ord(letter) - ord("A")
    return None


def _choices_in(question: str) -> list[str]:
    """The choices a question lists itself, as "A. x" / "A: x" lines or inline "(A) x (B) y"."""
    lines = [(m[1], m[2]) for m in _CHOICE_LINE.finditer(question)]
    marks = list(_CHOICE_MARK.finditer(question))
    inline = [(m[1], question[m.end():nxt.start() if nxt else None].strip())
              for m, nxt in zip(marks, marks[1:] + [None])]
    for found in (lines, inline):
        firsts = [i for i, (letter, _) in enumerate(found) if letter == "A"]
        if firsts:
            run = [found[firsts[-1]]]
            for letter, text in found[firsts[-1] + 1:]:
                if ord(letter) != ord(run[-1][0]) + 1:
                    break
                run.append((letter, text))
            if len(run) >= 2:
                return [text for _, text in run]
    return []

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

# ---- grading -------------------------------------------------------------------------------

# Work for a worker process: (the answer as extracted, the function's name in _WORK, its arguments).
Job = tuple


def grade(completion: str, answer: str, choices: Sequence[str] | None = None, question: str | None = None,
          *, rel_tol: float = REL_TOL, timeout_s: float = TIMEOUT_S, protocol: str = "vlfactory") -> Grade:
    """Grade a completion's final answer against the gold `answer`; never raises.

    `choices` (a problem's choice texts) lets an answer name one by letter; without it, choices
    listed in `question` are used. `question` also tells a stated rounding.

    >>> grade("<think>2 boots at $73</think> <answer>$146</answer>", "146")
    Grade(correct=True, extracted='$146', reason='correct')
    >>> grade("The answer is \\\\boxed{B}.", "nonlinear", ["linear", "nonlinear"])
    Grade(correct=True, extracted='B', reason='correct')
    >>> grade("I count 12 first, but the answer is 15.", "12")
    Grade(correct=False, extracted='15', reason='incorrect')
    >>> grade("The answer is \\boxed{15}.", "15", protocol="openvlthinker")   # no </answer>: wrong
    Grade(correct=False, extracted=None, reason='no_answer')
    """
    judged = _safely(_judge_for(protocol), completion, answer, choices, question, rel_tol)
    return judged if isinstance(judged, Grade) else _finish([judged], timeout_s)[0]


def grade_many(items: Iterable[Mapping[str, Any] | Sequence[Any]], workers: int | None = None,
               timeout_s: float = TIMEOUT_S, rel_tol: float = REL_TOL, protocol: str = "vlfactory") -> list[Grade]:
    """Grade many items, in order; each is a mapping with keys completion, answer and optionally
    choices and question (other keys are ignored), or a tuple in that order.

    The cheap rules run here; items that need math-verify go to up to `workers` worker processes
    (default: one per CPU), each with `timeout_s`.

    >>> [g.correct for g in grade_many([("<answer>0.5</answer>", "1/2"), {"completion": "A", "answer": "B"}])]
    [True, False]
    """
    keys = ("completion", "answer", "choices", "question")
    args = [[item.get(k) for k in keys] if isinstance(item, Mapping) else list(item) for item in items]
    judge = _judge_for(protocol)
    results = [_safely(judge, *a, rel_tol=rel_tol) for a in args]
    return _finish_all(results, workers, timeout_s)


def _finish_all(results: list, workers: int | None, timeout_s: float) -> list[Grade]:
    """Send the jobs among `results` to the worker processes; Grades stay as they are."""
    pending = [i for i, r in enumerate(results) if not isinstance(r, Grade)]
    if pending:
        n = min(len(pending), workers or os.cpu_count() or 1)
        # Jobs go out in chunks, so a worker moves on to its next job without a round trip to us;
        # at least 4 chunks per worker keep the load even when some jobs are slow.
        size = max(1, min(CHUNK, len(pending) // (4 * n)))
        chunks = [pending[k:k + size] for k in range(0, len(pending), size)]
        with ThreadPoolExecutor(n) as pool:
            for chunk, graded in zip(chunks, pool.map(lambda c: _finish([results[i] for i in c], timeout_s), chunks)):
                for i, g in zip(chunk, graded):
                    results[i] = g
    return results


def _judge_for(protocol: str):
    if protocol not in PROTOCOLS:
        raise ValueError(f"unknown grading protocol {protocol!r}; protocols: {', '.join(PROTOCOLS)}")
    return _official if protocol == "openvlthinker" else _judge


def _safely(judge, *args, **kwargs) -> Grade | Job:
    try:
        return judge(*args, **kwargs)
    except Exception:
        log.warning("grading failed", exc_info=True)
        return Grade(False, None, "error")


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

# ---- the official OpenVLThinker judge ----------------------------------------------------------


def official_answer(completion: str) -> str | None:
    """The answer as the official evaluation reads it: None without "</answer>", else the text after
    the last "<answer>" up to the "</answer>" after it, stripped.

    >>> official_answer("<think>a</think> <answer>1</answer> then <answer> 2 </answer>")
    '2'
    >>> official_answer("<answer>7") is None
    True
    """
    if "</answer>" not in completion:
        return None
    return completion.split("<answer>")[-1].split("</answer>")[0].strip()


def official_gold(answer: str, choices: Sequence[str] | None) -> str:
    """The gold as the official evaluation compares it: its option letter when it is one of the choices.

    >>> official_gold("5", ["3", "5"]), official_gold("5", None)
    ('B', '5')
    """
    if choices:
        try:
            return OPTION_LETTERS[[str(c) for c in choices].index(answer)]
        except (ValueError, IndexError):
            pass
    return answer


def _official(completion: str, answer: Any, choices: Sequence[str] | None = None, question: str | None = None,
              rel_tol: float = REL_TOL) -> Grade | Job:
    pred = official_answer(completion)
    if pred is None:
        return Grade(False, None, "no_answer")
    gold = official_gold(str(answer), choices)
    if gold.lower() == pred.lower():
        return Grade(True, pred, "correct")
    return pred, "mathruler", gold, pred   # the script calls grade_answer(gold, answer)


def _mathruler_grade(given: str, truth: str) -> tuple[bool, str]:
    from mathruler.grader import grade_answer

    ok = bool(grade_answer(given, truth))
    return ok, "correct" if ok else "incorrect"


_R1V_ANSWER = re.compile(r"<answer>(.*?)</answer>")   # no DOTALL, as in r1v.py


def openvlthinker_reward(completions: list, answer: list[str], **kwargs) -> list[float]:
    """The official GRPO reward (OpenVLThinker's train/easyr1/examples/reward_function/r1v.py): the first
    one-line `<answer>...</answer>` (else the whole completion), correct iff
    `mathruler.grader.grade_answer(given, gold)` or equal ignoring case; 1.0, or 0.5 when nothing
    stands between `</think>` and `<answer>`; 0.0 when wrong. mathruler runs with a time limit.

    >>> openvlthinker_reward(["<think>3 + 4</think> So 7. <answer>7</answer>", "<think>3 + 4</think><answer>7</answer>",
    ...                       "<answer>8</answer>"], answer=["7", "7", "7"])
    [1.0, 0.5, 0.0]
    """
    texts = [_content(c) for c in completions]
    results: list = []
    for text, gold in zip(texts, answer):
        found = _R1V_ANSWER.search(text)
        given = found.group(1).strip() if found else text.strip()
        gold = str(gold)
        ok = given.lower() == gold.lower()
        results.append(Grade(True, given, "correct") if ok else (given, "mathruler", given, gold.strip()))
    graded = _finish_all(results, None, TIMEOUT_S)
    out = []
    for text, g in zip(texts, graded):
        bare = "</think>" in text and "<answer>" in text and not text.split("</think>")[-1].split("<answer>")[0].strip()
        out.append((0.5 if bare else 1.0) if g.correct else 0.0)
    return out


def _finish(jobs: list[Job], timeout_s: float) -> list[Grade]:
    try:
        verdicts = _WORKERS.run(jobs, timeout_s)
    except Exception:
        log.warning("a math-verify worker failed", exc_info=True)
        verdicts = [(False, "error")] * len(jobs)
    return [Grade(correct, job[0], reason) for job, (correct, reason) in zip(jobs, verdicts)]

# ---- math-verify, in worker processes --------------------------------------------------------


@lru_cache(maxsize=4096)
def _parse_gold(gold: str) -> list:
    from math_verify import parse

    return parse(f"${gold}$", fallback_mode="no_fallback", parsing_timeout=None)


def _sympy_grade(gold: str, pred: str, decimals: int | None, rel_tol: str) -> tuple[bool, str]:
    from math_verify import parse, verify

    g = _parse_gold(gold)
    if not g:
        return False, "unparsable_gold"
    # Prose goes in as it is (math-verify finds its last number); anything else is read as LaTeX.
    p = parse(pred if _is_text(pred) else f"${pred}$", fallback_mode="no_fallback", parsing_timeout=None)
    if not p:
        return False, "incorrect"
    g_num, p_num = _real(gold, g[0]), _real(pred, p[0])
    if g_num is not None and p_num is not None:
        ok = _close(g_num, p_num, decimals, Fraction(rel_tol))
    else:
        ok = verify(g, p, timeout_seconds=None)
    return ok, "correct" if ok else "incorrect"


def _real(text: str, expr: Any) -> _Num | None:
    """A real number as rule 4 compares it: as written if plain, else sympy's exact or 30-digit value."""
    if (written := _number(text)) is not None:
        return written
    from sympy import Expr

    if not isinstance(expr, Expr) or not expr.is_number:
        return None
    if expr.is_Rational:
        return _Num(Fraction(int(expr.p), int(expr.q)))
    value = expr.evalf(30)
    digits = str(value)
    if not value.is_Float or abs(int(digits.partition("e")[2] or 0)) > 10000:   # 10^(10^10): no Fraction
        return None
    exact = Fraction(digits)
    # Good to ~30 digits: equivalent forms (sqrt(8), 2*sqrt(2)) agree, different numbers do not.
    return _Num(exact, max(abs(exact), Fraction(1)) * Fraction(1, 10 ** 25))


def _serve(fd: int) -> None:
    """A worker's loop: read lists of jobs from the socket `fd`, answer a verdict per job as it is
    done, until the parent goes."""
    import resource
    from multiprocessing.connection import Connection

    resource.setrlimit(resource.RLIMIT_AS, (WORKER_MEMORY, WORKER_MEMORY))
    # math-verify warns that its signal timeout is off; the parent enforces the limit instead.
    logging.getLogger("math_verify").setLevel(logging.ERROR)
    import math_verify  # noqa: F401  (imported before "ready": the first job's time is its own)

    conn = Connection(fd)
    conn.send("ready")
    while True:
        try:
            jobs = conn.recv()
        except EOFError:
            return
        for job in jobs:
            try:
                verdict = _WORK[job[1]](*job[2:])
            except Exception:   # MemoryError under the limit above, RecursionError, a bug
                log.warning("%s failed on %r", job[1], job[2:4], exc_info=True)
                verdict = False, "error"
            conn.send(verdict)


class _Workers:
    """Worker processes for math-verify: one per concurrent caller, kept for the next job.

    A worker that overruns a job's time limit is killed, not waited for; the next job starts
    a fresh one. Workers are plain subprocesses (`python -c`), so nothing of the caller's
    program is imported into them; each exits when the caller goes away.
    """

    def __init__(self) -> None:
        self._idle: list[tuple[subprocess.Popen, Any]] = []
        self._lock = threading.Lock()

    def forget(self) -> None:
        """In a forked child: the parent's workers are not ours."""
        self._idle, self._lock = [], threading.Lock()

    def run(self, jobs: list[Job], timeout_s: float) -> list[tuple[bool, str]]:
        """Verdicts for `jobs`, in order, each within `timeout_s` of the one before.

        The worker gets them all at once and answers each as it finishes; one that overruns or
        dies is replaced, and the jobs after the one it failed on go to the new worker.
        """
        verdicts: list[tuple[bool, str]] = []
        while len(verdicts) < len(jobs):
            with self._lock:
                worker = self._idle.pop() if self._idle else None
            proc, conn = worker or self._start()
            todo = jobs[len(verdicts):]
            reason = None
            try:
                conn.send(todo)
                for _ in todo:
                    if not conn.poll(timeout_s):
                        reason = "timeout"
                        break
                    verdicts.append(conn.recv())
            except (EOFError, OSError):   # it died: out of memory, or killed from outside
                reason = "error"
            if reason is None:
                with self._lock:
                    self._idle.append((proc, conn))
                break
            proc.kill()
            proc.wait()
            conn.close()
            verdicts.append((False, reason))
        return verdicts

    @staticmethod
    def _start() -> tuple[subprocess.Popen, Any]:
        from multiprocessing import Pipe

        ours, theirs = Pipe()
        fd = theirs.fileno()
        proc = subprocess.Popen([sys.executable, "-c", f"from vlfactory.verify import _serve; _serve({fd})"],
                                pass_fds=[fd], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
        theirs.close()
        try:
            if not ours.poll(WORKER_START_S):
                raise TimeoutError(f"a math-verify worker did not start in {WORKER_START_S:.0f}s")
            ours.recv()
        except BaseException:
            proc.kill()
            proc.wait()
            ours.close()
            raise
        return proc, ours


_WORK = {"math_verify": _sympy_grade, "mathruler": _mathruler_grade}   # what a worker runs, by name
_WORKERS = _Workers()
os.register_at_fork(after_in_child=_WORKERS.forget)

# ---- TRL rewards ---------------------------------------------------------------------------


def accuracy_reward(completions: list, answer: list[str], choices: list | None = None,
                    question: list[str] | None = None, **kwargs) -> list[float | None]:
    """GRPO accuracy reward: 1.0 for a correct final answer, else 0.0; None when the gold is unreadable.

    TRL passes completions as strings or as conversations, and the dataset's columns as lists:
    `answer` (the gold), and `choices` and `question` when the dataset has them.

    >>> accuracy_reward(["<think>3 + 4</think> <answer>7</answer>", "<answer>8</answer>"], answer=["7", "7"])
    [1.0, 0.0]
    >>> accuracy_reward([[{"role": "assistant", "content": "<answer>(B)</answer>"}]],
    ...                 answer=["no"], choices=[["yes", "no"]])
    [1.0]
    """
    n = len(completions)
    rows = zip(map(_content, completions), answer, choices or [None] * n, question or [None] * n)
    return [None if g.reason == "unparsable_gold" else float(g.correct) for g in grade_many(rows)]


def format_reward(completions: list, **kwargs) -> list[float]:
    """1.0 when a completion is `<think> ... </think> ... <answer>X</answer>`: each tag once, X not empty.

    >>> format_reward(["<think>2 + 2 = 4</think> Four. <answer>4</answer>", "<answer>4</answer>",
    ...                [{"role": "assistant", "content": "<think>hm</think><answer></answer>"}]])
    [1.0, 0.0, 0.0]
    """
    return [float(_well_formed(_content(c))) for c in completions]


def _well_formed(text: str) -> bool:
    text = text.strip()
    tags = ("<think>", "</think>", "<answer>", "</answer>")
    if not (text.startswith("<think>") and text.endswith("</answer>")) or any(text.count(t) != 1 for t in tags):
        return False
    start = text.index("<answer>")
    return text.index("</think>") < start and text[start + len("<answer>"):-len("</answer>")].strip() != ""


def _content(completion: Any) -> str:
    """The text of a completion: a string, or the last message of a conversation."""
    if isinstance(completion, str):
        return completion
    content = completion[-1]["content"]
    if isinstance(content, str):
        return content
    return "".join(part.get("text") or "" for part in content)   # [{"type": "text", "text": ...}]


if __name__ == "__main__":
    print(grade(sys.argv[1], sys.argv[2], sys.argv[3:] or None))
