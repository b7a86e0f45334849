"""The official OpenVLThinker judge: `grade(..., protocol="openvlthinker")` against the official script's
own logic (evaluation/eval_openvlthinker.py: process_response, the </answer> split, lower-case equality or
mathruler.grader.grade_answer), on a table of hand-written completions; and the official GRPO reward."""

from __future__ import annotations

import pytest
from mathruler.grader import grade_answer

from vlfactory.verify import grade, grade_many, openvlthinker_reward


def official(completion: str, response: str, choices: list[str] | None) -> tuple[bool, str]:
    """eval_openvlthinker.py's main loop for one item, as written there (letters A-J, choices first)."""
    answer = completion
    if answer and "</answer>" in answer:
        answer = answer.split("<answer>")[-1].split("</answer>")[0].strip()
        processed = response
        if choices is not None:
            try:
                processed = ["A", "B", "C", "D", "E", "F", "G", "H", "I", "J"][choices.index(response)]
            except ValueError:
                pass
        return processed.lower() == answer.lower() or grade_answer(processed, answer), answer
    return False, "Failed to extract."


CHOICES = ["3", "5", "7", "9"]
# (completion, gold, choices)
CASES = [
    # tags missing
    ("The answer is \\boxed{14}.", "14", None),
    ("<think>8 * 14 = 112</think> 14", "14", None),
    ("<answer>14", "14", None),
    ("<think>x</think> <answer>14</answer>", "14", None),
    ("14</answer>", "14", None),
    # several <answer> tags: the last one counts
    ("<answer>12</answer> no, <answer>14</answer>", "14", None),
    ("<answer>14</answer> no, <answer>12</answer>", "14", None),
    ("<answer>14</answer><answer>12", "14", None),
    # letters vs option texts
    ("<answer>B</answer>", "5", CHOICES),
    ("<answer>(B)</answer>", "5", CHOICES),
    ("<answer>b</answer>", "5", CHOICES),
    ("<answer>5</answer>", "5", CHOICES),
    ("<answer>B. 5</answer>", "5", CHOICES),
    ("<answer>C</answer>", "5", CHOICES),
    ("<answer>B</answer>", "11", CHOICES),
    ("<answer>Tuesday</answer>", "tuesday", ["Monday", "Tuesday"]),
    ("<answer>tuesday</answer>", "Tuesday", ["Monday", "Tuesday"]),
    # latex fractions, decimals, expressions
    ("<answer>\\frac{1}{2}</answer>", "0.5", None),
    ("<answer>0.5</answer>", "\\frac{1}{2}", None),
    ("<answer>\\dfrac{3}{4}</answer>", "3/4", None),
    ("<answer>2/4</answer>", "1/2", None),
    ("<answer>\\sqrt{8}</answer>", "2\\sqrt{2}", None),
    ("<answer>0.333</answer>", "1/3", None),
    ("<answer>1,000</answer>", "1000", None),
    ("<answer>(1, 2)</answer>", "(1,2)", None),
    ("<answer>[1, 2]</answer>", "(1,2)", None),
    # units and words
    ("<answer>14 feet</answer>", "14", None),
    ("<answer>5 cm</answer>", "5", None),
    ("<answer>30^\\circ</answer>", "30", None),
    ("<answer>$146</answer>", "146", None),
    ("<answer>25%</answer>", "0.25", None),
    ("<answer>Yes</answer>", "yes", None),
    ("<answer>  yes  </answer>", "Yes", None),
    ("<answer>14.0</answer>", "14", None),
    ("<answer></answer>", "14", None),
]


@pytest.mark.parametrize("completion, gold, choices", CASES)
def test_official_protocol_matches_the_official_script(completion, gold, choices):
    want, answer = official(completion, gold, choices)
    got = grade(completion, gold, choices, protocol="openvlthinker")
    assert got.correct == want
    assert got.extracted == (None if answer == "Failed to extract." else answer)
    assert got.reason == ("no_answer" if got.extracted is None else "correct" if want else "incorrect")


def test_the_table_holds_both_verdicts_and_grade_many_agrees():
    verdicts = [official(c, g, ch)[0] for c, g, ch in CASES]
    assert 8 <= sum(verdicts) <= len(CASES) - 8   # a table that can tell a lenient judge from this one
    assert [g.correct for g in grade_many(CASES, protocol="openvlthinker")] == verdicts


def test_the_official_judge_is_stricter_than_vlfactorys():
    # boxed without tags, and an option text where the gold maps to its letter
    assert grade("The answer is \\boxed{14}.", "14").correct
    assert not grade("The answer is \\boxed{14}.", "14", protocol="openvlthinker").correct
    with pytest.raises(ValueError, match="unknown grading protocol"):
        grade("<answer>1</answer>", "1", protocol="lenient")


def test_official_grpo_reward_as_r1v():
    completions = ["<think>7 * 2</think> Twice seven. <answer>14</answer>",  # 1.0
                   "<think>7 * 2</think>\n<answer>14</answer>",              # nothing between: 0.5
                   "<answer>14</answer> <answer>12</answer>",                # the first tag counts: 1.0
                   "<think>a</think> b <answer>\n14\n</answer>",             # multi-line: the whole text, 0.0
                   "14",                                                     # no tags: the whole text: 1.0
                   "<think>x</think> y <answer>\\frac{28}{2}</answer>",     # an integer gold wants an integer: 0.0
                   "<think>x</think> y <answer>\\frac{1}{2}</answer>"]      # mathruler: 1.0
    golds = ["14"] * 6 + ["0.5"]
    assert openvlthinker_reward(completions, answer=golds) == [1.0, 0.5, 1.0, 0.0, 1.0, 0.0, 1.0]
