"""The verifier: find the final answer in a completion and grade it against the gold answer.

One function, two uses: the verify stage grades traces with `grade_many`, and the GRPO
trainer takes `accuracy_reward` (the same `grade`) as its reward, next to `format_reward`,
which checks the recipe's `<think> ... </think> ... <answer>X</answer>` shape.

    from vlfactory.verify import grade
    grade("<think>7 / 14</think> <answer>\\frac{1}{2}</answer>", "0.5")
    # Grade(correct=True, extracted='\\frac{1}{2}', reason='correct')

    python -m vlfactory.verify 'The answer is \\boxed{0.5}' '1/2'      # grade one completion
    python -m vlfactory.verify 'It is (B).' Tuesday Monday Tuesday     # ... with its choices
    pytest tests/unit/test_verify.py                                         # the table of cases

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

Protocols (`protocol=`, vlfactory.verify.protocols; `PROTOCOLS` is the one list of their names). The rules
above are "vlfactory", the default. The official OpenVLThinker code (github.com/yihedeng9/OpenVLThinker @ 6997b47)
has three more, reproduced verdict for verdict; mathruler runs in the worker processes with `timeout_s` (the
scripts have no limit; sympy can hang), so a pathological answer is "timeout", not a hung evaluation:

- "openvlthinker-data", the grader of training data (generation/generate_reasoning_thinker.py): no "</answer>" is
  wrong; the text after the last "<answer>" up to "</answer>", stripped, then `clean_answer` (lower case, yes/no
  prefixes, parentheses, " or ", " is ", " = ", units); a gold with "-" and at least 5 characters needs an exact
  match ignoring case; any other gold is equal ignoring case or `mathruler.grader.grade_answer(gold, answer)`. The
  gold is never cleaned nor mapped to a letter: for a multiple-choice problem the option's text is right and its
  letter wrong, as in the GRPO reward (`openvlthinker_reward`, r1v.py).
- "openvlthinker", the evaluation judge (evaluation/eval_openvlthinker.py): the same extraction without cleaning;
  a gold that is one of the `choices` becomes its option letter (`process_response`); correct iff equal ignoring
  case or grade_answer(gold, answer).
- "qwen-boxed", the Qwen baseline (evaluation/run_evaluation.py --model qwen): the prompt ends with
  `PROMPT_SUFFIXES["qwen-boxed"]`; the last \\boxed{} (mathruler's extraction) and the text after the last
  "answer:" are candidates; the gold becomes its option letter; correct iff a candidate equals it ignoring case or
  grade_answer says so.
- "judge", an LLM's verdict (evaluation/verify_mathverse_gpt4.py): `judge_prompt` and `judge_verdict`; the eval
  stage asks the judge model, so `grade` does not take it.

    grade("<think>x</think> <answer>B</answer>", "5", ["3", "5"], protocol="openvlthinker").correct        # True
    grade("<think>x</think> <answer>B</answer>", "5", ["3", "5"], protocol="openvlthinker-data").correct   # False
    python -m vlfactory.verify --protocol openvlthinker-data '<answer>Yes, it is.</answer>' yes
"""

from __future__ import annotations

from vlfactory.verify.extraction import extract_answer, stated_answer
from vlfactory.verify.pool import TIMEOUT_S
from vlfactory.verify.protocols import (JUDGE_FIELDS, OPTION_LETTERS, PROMPT_SUFFIXES, PROTOCOLS, clean_answer, grade,
                                       grade_many, judge_prompt, judge_verdict, official_answer, official_gold)
from vlfactory.verify.rewards import accuracy_reward, format_reward, openvlthinker_reward
from vlfactory.verify.rules import MAX_ANSWER_CHARS, REL_TOL, Grade

VERSION = "1"               # bump when a verdict can change: the verify stage regrades on a new version

__all__ = ["Grade", "grade", "grade_many", "extract_answer", "stated_answer", "official_answer", "official_gold",
           "clean_answer", "judge_prompt", "judge_verdict", "JUDGE_FIELDS", "PROMPT_SUFFIXES",
           "accuracy_reward", "format_reward", "openvlthinker_reward", "PROTOCOLS", "OPTION_LETTERS", "VERSION",
           "REL_TOL", "TIMEOUT_S", "MAX_ANSWER_CHARS", "verdict_identity"]


def verdict_identity(settings) -> tuple[str, str]:
    """What a grade's verdict depends on, as (verifier, settings hash): this verifier's VERSION with
    math-verify's, and the recipe's `verify:` settings (a VerifyConfig: protocol, tolerances, thresholds).

    Every grade carries both; a grade is current while both match, so a new verifier, a new math-verify
    or a changed setting regrades (the verify stage), and the sets, pass rates and evals read only
    current grades. The values are those lakes already hold (tests/stages/test_grading.py pins them).
    """
    import dataclasses
    import hashlib
    import json
    from importlib import metadata

    verifier = f"vlfactory.verify {VERSION} / math-verify {metadata.version('math-verify')}"
    text = json.dumps(dataclasses.asdict(settings), sort_keys=True)
    return verifier, hashlib.sha256(text.encode()).hexdigest()[:16]
