"""Grading protocols: which judge decides, by name, and `grade` / `grade_many` over them (see vlfactory.verify).

    vlfactory            the factory's own rules (rules.py), the default
    openvlthinker        the official evaluation judge (evaluation/eval_openvlthinker.py)
    openvlthinker-data   the official generation grader of training data (generation/generate_reasoning_thinker.py
                         with utils/clean_answer.py)
    qwen-boxed           the official Qwen baseline (evaluation/run_evaluation.py --model qwen), with its prompt
                         suffix (PROMPT_SUFFIXES)
    judge                an LLM's verdict (evaluation/verify_mathverse_gpt4.py): `judge_prompt` renders what the
                         judge reads, `judge_verdict` reads its reply; the call to the judge model is a generation
                         (vlfactory.stages.eval), so `grade` does not take it

Official files are cited at github.com/yihedeng9/OpenVLThinker commit 6997b47 (2025-07-23). `PROTOCOLS` is the
one list of these names: recipes (vlfactory.recipe) and the eval stage read it. mathruler, like math-verify,
runs in the worker processes with the time limit (the official scripts have none; sympy can hang).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from vlfactory.verify.extraction import _closing
from vlfactory.verify.pool import TIMEOUT_S, _finish, _finish_all
from vlfactory.verify.rules import REL_TOL, Grade, Job, _judge

log = logging.getLogger("vlfactory.verify")

OPTION_LETTERS = "ABCDEFGHIJ"  # the official scripts' option letters (process_response)


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
    >>> grade("<think>x</think> <answer>Yes, it is.</answer>", "yes", protocol="openvlthinker-data")
    Grade(correct=True, extracted='yes', reason='correct')
    >>> grade("So the area is \\\\boxed{12}.", "12", protocol="qwen-boxed")
    Grade(correct=True, extracted='12', reason='correct')
    """
    judged = _safely(_judge_for(protocol), completion, answer, choices, question, rel_tol)
    return judged if isinstance(judged, Grade) else _finish([judged], timeout_s)[0]


def grade_many(items: Iterable[Mapping[str, Any] | Sequence[Any]], workers: int | None = None,
               timeout_s: float = TIMEOUT_S, rel_tol: float = REL_TOL, protocol: str = "vlfactory") -> list[Grade]:
    """Grade many items, in order; each is a mapping with keys completion, answer and optionally
    choices and question (other keys are ignored), or a tuple in that order.

    The cheap rules run here; items that need math-verify or mathruler go to up to `workers` worker
    processes (default: one per CPU), each with `timeout_s`.

    >>> [g.correct for g in grade_many([("<answer>0.5</answer>", "1/2"), {"completion": "A", "answer": "B"}])]
    [True, False]
    """
    keys = ("completion", "answer", "choices", "question")
    args = [[item.get(k) for k in keys] if isinstance(item, Mapping) else list(item) for item in items]
    judge = _judge_for(protocol)
    results = [_safely(judge, *a, rel_tol=rel_tol) for a in args]
    return _finish_all(results, workers, timeout_s)


def _judge_for(protocol: str):
    if protocol == "judge":
        raise ValueError("protocol 'judge' is an LLM's verdict: the eval stage asks the judge model "
                         "(vlfactory.stages.eval); grade() takes " + ", ".join(_RULES))
    if protocol not in _RULES:
        raise ValueError(f"unknown grading protocol {protocol!r}; protocols: {', '.join(PROTOCOLS)}")
    return _RULES[protocol]


def _safely(judge, *args, **kwargs) -> Grade | Job:
    try:
        return judge(*args, **kwargs)
    except Exception:
        log.warning("grading failed", exc_info=True)
        return Grade(False, None, "error")


# ---- openvlthinker: the official evaluation judge ------------------------------------------------


def official_answer(completion: str) -> str | None:
    """The answer as the official scripts read it: None without "</answer>", else the text after
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
    """evaluation/eval_openvlthinker.py, verdict for verdict: no "</answer>" is wrong; the gold becomes its option
    letter (process_response); correct iff equal ignoring case or mathruler.grader.grade_answer(gold, answer)."""
    pred = official_answer(completion)
    if pred is None:
        return Grade(False, None, "no_answer")
    gold = official_gold(str(answer), choices)
    if gold.lower() == pred.lower():
        return Grade(True, pred, "correct")
    return pred, "mathruler", gold, pred   # the script calls grade_answer(gold, answer)


# ---- openvlthinker-data: the official generation grader -------------------------------------------

_UNITS = ("degree", "cm", "centimeter", "meter", "mile", "second", "minute", "hour", "day", "week", "month", "year",
          "foot", "feet", "inch", "yard", "liter", "gram", "kilogram", "ounce", "pound")


def clean_answer(answer: str) -> str:
    """The official cleaning of a predicted answer (utils/clean_answer.py), rule for rule, in its order: lower
    case; one trailing period off; "yes," or "yes. " anywhere makes "yes", else "no," or "no. " makes "no"; what
    precedes a "(" when a ")" follows somewhere and that is not blank; what precedes the first " or "; what follows
    the last " is ", then " = ", then " ≈ "; then for each unit word of its list, in order, what precedes the
    word's first occurrence, even inside another word. The quirks are the official behaviour:

    >>> [clean_answer(a) for a in ("Yes, it is.", "No.", "(B)", "42 (approximately)", "2 or 3", "The color is blue")]
    ['yes', 'no', '(b)', '42', '2', 'blue']
    >>> [clean_answer(a) for a in ("x = 12", "30 degrees", "piano, maybe", "Tuesday", "second", "Not sure, no.")]
    ['12', '30', 'no', 'tues', '', 'not sure, no']
    """
    answer = answer.lower().removesuffix(".")
    if "yes," in answer or "yes. " in answer:
        return "yes"
    if "no," in answer or "no. " in answer:
        return "no"
    head = answer.split("(")[0].strip()
    if "(" in answer and ")" in answer and head:
        answer = head
    if " or " in answer:
        answer = answer.split(" or ")[0].strip()
    for sign in (" is ", " = ", " ≈ "):
        if sign in answer:
            answer = answer.split(sign)[-1].strip()
    for unit in _UNITS:
        if unit in answer:
            answer = answer.split(unit)[0].strip()
    return answer


def _official_data(completion: str, answer: Any, choices: Sequence[str] | None = None, question: str | None = None,
                   rel_tol: float = REL_TOL) -> Grade | Job:
    """generation/generate_reasoning_thinker.py (extract_answer_from_reasoning, process_item), verdict for verdict:
    no "</answer>" is wrong; the answer is `official_answer` then `clean_answer`; a gold with a "-" and at least 5
    characters needs an exact match ignoring case; any other is correct iff equal ignoring case or
    mathruler.grader.grade_answer(gold, answer) (the script's argument order). The gold is never cleaned and
    never mapped to a letter: `choices` play no part, so an option's text is right and its letter is wrong.

    >>> [grade(f"<answer>{a}</answer>", "5", ["3", "5"], protocol="openvlthinker-data").correct for a in ("5", "B")]
    [True, False]
    >>> [grade(f"<answer>{a}</answer>", g, protocol="openvlthinker-data").correct
    ...  for a, g in (("-12.50", "-12.5"), ("3-Methylhexane", "3-methylhexane"), ("12 cm", "12"))]
    [False, True, True]
    """
    pred = official_answer(completion)
    if pred is None:
        return Grade(False, None, "no_answer")
    pred, gold = clean_answer(pred), str(answer)
    if gold.lower() == pred.lower():
        return Grade(True, pred, "correct")
    if "-" in gold and len(gold) >= 5:
        return Grade(False, pred, "incorrect")
    return pred, "mathruler", gold, pred


# ---- qwen-boxed: the official Qwen baseline --------------------------------------------------------

# What the official Qwen script appends to every prompt (run_evaluation.py ModelType.QWEN prompt_suffix, the
# same as eval_qwen.py's since 883a500); the eval stage appends it after the benchmark's official formatting.
PROMPT_SUFFIXES = {"qwen-boxed": "\n\nYour final answer MUST BE put in \\boxed{}"}


def boxed_content(text: str) -> str | None:
    """What mathruler.grader.extract_boxed_content reads (the last "\\boxed{" up to its matching brace, stripped),
    but None where it returns the string "None" (no box, or one never closed). Ours, so that grading does not
    import sympy (mathruler's module imports it: 0.26 s); tests/unit/test_protocols.py checks it against mathruler's.

    >>> boxed_content("\\\\boxed{2} then \\\\boxed{ \\\\frac{1}{2} }"), boxed_content("\\\\boxed{7")
    ('\\\\frac{1}{2}', None)
    """
    start = text.rfind("\\boxed{")
    if start < 0:
        return None
    start += len("\\boxed{")
    end = _closing(text, start, len(text))
    return text[start:end].strip() if end is not None else None


def _qwen_boxed(completion: str, answer: Any, choices: Sequence[str] | None = None, question: str | None = None,
                rel_tol: float = REL_TOL) -> Grade | Job:
    """The official Qwen baseline judge: evaluation/run_evaluation.py --model qwen (added in 78ce312, the same at
    6997b47): extract_answers, process_ground_truth (the gold becomes its option letter), check_correctness
    (correct iff some candidate equals the gold ignoring case or grade_answer(gold, candidate)). `extracted` is the
    boxed content, else the "answer:" text, else None (then the reason is no_answer).

    Why this version, of those the repository has held (its README names eval_qwen.py for Qwen2.5-VL):
    - eval_qwen.py at b048b07 (2025-03-20) and 9e29873 (03-27), presumably the paper v1's base-model numbers:
      suffix "... \\boxed{}." with a period; the first box by the non-greedy regex `r"\\\\boxed\\{(.+?)\\}"`, cut at
      the first "}" (\\boxed{\\frac{1}{2}} reads "\\frac{1"), else the whole completion; b048b07 gave the
      options hint to MathVerse instead of MathVision, 9e29873 fixed that. 3957e62 (05-09) took mathruler's
      extract_boxed_content, with no fallback.
    - eval_qwen.py from 883a500 (06-30) to HEAD 6997b47: this suffix (no period), extract_boxed_content, and an
      "answer:" fallback with a bug: `reasoning.lower().split("Answer:")` looks for a capital "A" in lower-cased
      text, so it never splits and the fallback is the whole lower-cased completion ("Answer: 7" fails for a
      gold 7, a bare "7" passes).
    - run_evaluation.py --model qwen (78ce312, the same at HEAD), this protocol: the same suffix and extraction,
      with the fallback as intended (the last "answer:", any case). That script gives format_instruction's
      "Hint: ..." to every benchmark, MathVista and MathVerse included; here the prompt is the recipe's
      (`eval.formats`: eval_qwen.py's `query` for MathVista and MathVerse, `hint` for MathVision), and the
      suffix follows it.
    A quirk kept: without a box, the string "None" is a candidate, so a gold "None" is matched by any completion
    without a box.

    >>> [grade(c, "5", ["3", "5"], protocol="qwen-boxed").correct
    ...  for c in ("\\\\boxed{B}", "\\\\boxed{5}", "So the final Answer: B", "\\\\boxed{(B)}")]
    [True, False, True, True]
    >>> grade("The answer is 7.", "7", protocol="qwen-boxed")
    Grade(correct=False, extracted=None, reason='no_answer')
    """
    if not completion:
        return Grade(False, None, "no_answer")   # "Failed to generate."
    boxed = boxed_content(completion)
    lower = completion.lower()
    said = lower.split("answer:")[-1].strip() if "answer:" in lower else None
    # extract_answers' candidates: mathruler's boxed content ("None" without a box; an empty box adds none), then
    # the "answer:" text
    candidates = (["None"] if boxed is None else [boxed] if boxed else []) + ([said] if said is not None else [])
    extracted = boxed or said or None
    if not candidates:
        return Grade(False, None, "no_answer")   # "Failed to extract."
    gold = official_gold(str(answer), choices)
    if any(gold.lower() == c.lower() for c in candidates):
        return Grade(True, extracted, "correct")
    return extracted, "mathruler_any", gold, candidates, "incorrect" if extracted else "no_answer"


# ---- judge: an LLM's verdict (the official MathVerse judging) ---------------------------------------

JUDGE_FIELDS = frozenset({"instruction", "groundtruth", "prediction"})
NO_ANSWER = "Failed to extract."   # what the official evaluation writes when there is no </answer>


def judge_prompt(template, question: str, answer: str, completion: str) -> str:
    """What the judge model reads about one completion (evaluation/verify_mathverse_gpt4.py): `template` (any object
    with `render(**fields)` over JUDGE_FIELDS, e.g. recipes/prompts/mathverse_judge.txt, the script's PROMPT) with
    the benchmark's instruction, the gold, and the answer eval_openvlthinker.py extracted ("Failed to extract."
    without "</answer>") in a one-element list, as the script shows it: it wraps every string answer in a list.

    >>> class T:
    ...     def render(self, **f): return "{instruction} | {groundtruth} | {prediction}".format(**f)
    >>> judge_prompt(T(), "What is x?", "4", "<think>a</think> <answer> x = 4 </answer>")
    "What is x? | 4 | ['x = 4']"
    >>> judge_prompt(T(), "What is x?", "4", "It is 4.")
    "What is x? | 4 | ['Failed to extract.']"
    """
    extracted = official_answer(completion)
    return template.render(instruction=question, groundtruth=answer,
                           prediction=str([extracted if extracted is not None else NO_ANSWER]))


def judge_says_correct(reply: str) -> bool:
    """The official MathVerse verdict: "Yes" after the first "Judgement: ", or the whole reply "Yes" without it.

    >>> [judge_says_correct(r) for r in ("Step by step...\\nJudgement: Yes", "Judgement: No", "Yes", "Yes, it is")]
    [True, False, True, False]
    """
    found = reply.find("Judgement: ")
    return reply == "Yes" if found == -1 else "Yes" in reply[found + len("Judgement: "):]


def judge_verdict(reply: str | None, completion: str) -> Grade:
    """The Grade of one completion from the judge's `reply` (None: the judge failed to answer); `extracted` is the
    answer the judge was shown (None when there was none)."""
    extracted = official_answer(completion)
    if reply is None:
        return Grade(False, extracted, "judge_failed")
    ok = judge_says_correct(reply)
    return Grade(ok, extracted, "correct" if ok else "no_answer" if extracted is None else "incorrect")


_RULES = {"vlfactory": _judge, "openvlthinker": _official, "openvlthinker-data": _official_data,
          "qwen-boxed": _qwen_boxed}
PROTOCOLS = (*_RULES, "judge")   # every protocol: those `grade` takes, and the LLM judge (evaluation only)
