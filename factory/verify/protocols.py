"""Grading protocols: which judge decides, by name ("vlfactory", the default rules; "openvlthinker", the
official evaluation script's judge), and `grade` / `grade_many` over them (see vlfactory.verify)."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from vlfactory.verify.pool import TIMEOUT_S, _finish, _finish_all
from vlfactory.verify.rules import REL_TOL, Grade, Job, _judge

log = logging.getLogger("vlfactory.verify")

PROTOCOLS = ("vlfactory", "openvlthinker")
OPTION_LETTERS = "ABCDEFGHIJ"  # the official script's option letters (process_response)


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
