"""The verifier: the case table from the real slices and by hand, odd inputs, time limits,
threads and processes, the TRL rewards, the docstring examples and the command line."""

from __future__ import annotations

import doctest
import multiprocessing
import subprocess
import sys
import threading
import time
from concurrent.futures import ProcessPoolExecutor

import pytest

from verify_cases import Case, dynamath_cases, hard_cases, tabmwp_cases
from vlfactory import verify
from vlfactory.verify import Grade, accuracy_reward, extract_answer, format_reward, grade, grade_many

REASONS = {"correct", "incorrect", "no_answer", "unparsable_gold", "timeout", "error"}
SLOW = "10^{10^{10}}"   # compared with a float, sympy works past any time limit


def check(cases: list[Case]) -> None:
    """Grade all cases in bulk; fail listing every case graded against its expected verdict."""
    got = grade_many([c.item() for c in cases])
    wrong = [f"{c.why}: gold {c.gold!r}, expected {c.correct}, got {g}\n    {c.completion[-120:]!r}"
             for c, g in zip(cases, got) if g.correct != c.correct]
    assert not wrong, f"{len(wrong)} of {len(cases)} cases graded wrong:\n" + "\n".join(wrong[:40])
    assert len(got) == len(cases) > 0 and all(g.reason in REASONS for g in got)


def balanced(cases: list[Case]) -> None:
    """A constant verdict, or an extractor that finds nothing, must fail the table."""
    correct = sum(c.correct for c in cases)
    assert 0.35 < correct / len(cases) < 0.65, (correct, len(cases))


@pytest.fixture(scope="module")
def dynamath_data(shared_data):
    if not (shared_data / "dynamath-seed" / "dataset.json").exists():
        pytest.skip(f"the DynaMath slice is not at {shared_data / 'dynamath-seed'}")
    return shared_data


def test_tabmwp_table(shared_data):
    cases = tabmwp_cases(shared_data)
    assert len(cases) > 5000 and len({c.gold for c in cases}) > 300
    balanced(cases)
    check(cases)


def test_dynamath_table(dynamath_data):
    cases = dynamath_cases(dynamath_data)
    assert len(cases) > 2000
    balanced(cases)
    check(cases)


@pytest.mark.parametrize("case", hard_cases(), ids=lambda c: f"{c.gold[:20]}|{c.why[:40]}")
def test_hard_case(case):
    got = grade(case.completion, case.gold, case.choices, case.question)
    assert got.correct == case.correct, got
    assert got.reason in REASONS


def test_hard_cases_are_both_ways():
    balanced(hard_cases())


def test_extracted_answer():
    assert grade("<think>x</think> <answer> **$\\frac{1}{2}$** </answer>", "0.5").extracted == "\\frac{1}{2}"
    assert grade("no final answer in this long text\n" * 3, "4") == Grade(False, None, "no_answer")
    assert extract_answer("The answer: (B)", ["linear", "nonlinear"]) == "nonlinear"
    assert extract_answer("<answer>nonlinear</answer>", ["linear", "nonlinear"]) == "nonlinear"
    assert extract_answer("<answer>E</answer>", ["linear", "nonlinear"]) == "E"   # names no choice
    assert extract_answer("<think>the answer is 5</think>") is None


# ---- odd inputs: a result with a reason, never an exception -------------------------------

@pytest.mark.parametrize("gold", ["\\frac{", "}{", "\\sqrt{", "", "   "])
def test_unparsable_gold(gold):
    got = grade("<answer>\\frac{1}{2}</answer>", gold)
    assert got == Grade(False, "\\frac{1}{2}", "unparsable_gold")


def test_unparsable_gold_still_matches_itself():
    assert grade("<answer>\\frac{</answer>", "\\frac{").correct   # the exact-match rule


MEGABYTE = 1 << 20


@pytest.mark.parametrize("completion", [
    "x" * MEGABYTE,
    "<answer>" + "9" * MEGABYTE + "</answer>",
    "\\boxed{" * (MEGABYTE // 7),
    "{" * MEGABYTE + "<answer>4</answer>",
    "The answer is " + "1+" * (MEGABYTE // 2) + "1",
    "the answer is 3. " * (MEGABYTE // 17) + "<answer>4</answer>",
    "<think>" + "Wait, " * (MEGABYTE // 6) + "</think> \\boxed{4}",
], ids=["letters", "digits", "open-boxes", "braces", "long-sum", "many-answers", "long-think"])
def test_megabyte_completion(completion):
    start = time.monotonic()
    got = grade(completion, "4", timeout_s=2)
    assert time.monotonic() - start < 10
    assert got.reason in REASONS
    assert got.correct == completion.endswith(("<answer>4</answer>", "\\boxed{4}"))


@pytest.mark.parametrize("completion, gold", [
    ("<answer>4\ud800</answer>", "4"),                  # a lone surrogate
    ("<answer>\x00\x00</answer>", "4"),
    ("<answer>4\u200b</answer>", "4"),                  # a zero-width space
    ("<answer>\u202e4\u202c</answer>", "4"),            # right-to-left override
    ("<answer>\ufeff𝟒</answer>", "4"),                  # BOM, mathematical bold digit
    ("<answer>√2̸</answer>", "\\sqrt{2}"),               # a combining character
    ("<answer>🙂</answer>", "4"),
    (b"<answer>\xff\xfe4</answer>".decode("utf-8", "surrogateescape"), "4"),
    ("<answer>4</answer>", "4\udcff"),
    ("<answer>\\frac{1}{2}</answer>", "½"),
])
def test_odd_unicode(completion, gold):
    got = grade(completion, gold)
    assert isinstance(got, Grade) and got.reason in REASONS


def test_odd_unicode_that_means_a_number():
    assert grade("<answer>𝟒</answer>", "4").correct
    assert grade("<answer>1/2</answer>", "½").correct


def test_odd_types_never_raise():
    assert grade("<answer>4</answer>", 4).correct
    assert grade(None, "4").reason == "error"
    assert grade("<answer>B</answer>", "no", ("yes", "no")).correct


# ---- time limits, threads, processes ------------------------------------------------------

def test_a_pathological_expression_costs_one_timeout():
    start = time.monotonic()
    got = grade_many([("<answer>1.5</answer>", SLOW), ("<answer>\\sqrt{8}</answer>", "2\\sqrt{2}"),
                      ("<answer>4</answer>", "4"), ("<answer>(x+1)^2</answer>", "x^2+2x+1")],
                     workers=2, timeout_s=1)
    assert [g.reason for g in got] == ["timeout", "correct", "correct", "correct"]
    assert time.monotonic() - start < 30
    assert grade("<answer>\\sqrt{8}</answer>", "2\\sqrt{2}").correct   # workers go on


def test_safe_from_threads():
    jobs = [("<answer>\\sqrt{8}</answer>", "2\\sqrt{2}", True), ("<answer>\\{2, 1\\}</answer>", "\\{1, 2\\}", True),
            ("<answer>\\frac{1}{2^{98}}</answer>", "\\frac{1}{2^{99}}", False)] * 3
    results: dict[int, Grade] = {}

    def work(i: int, completion: str, gold: str) -> None:
        results[i] = grade(completion, gold)

    threads = [threading.Thread(target=work, args=(i, c, g)) for i, (c, g, _) in enumerate(jobs)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert [results[i].correct for i in range(len(jobs))] == [ok for _, _, ok in jobs]


@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_safe_from_processes(method):
    grade("<answer>\\sqrt{8}</answer>", "2\\sqrt{2}")   # this process has a worker a fork inherits
    with ProcessPoolExecutor(2, mp_context=multiprocessing.get_context(method)) as pool:
        got = list(pool.map(grade, ["<answer>\\sqrt{8}</answer>", "<answer>\\sqrt{7}</answer>"] * 2,
                            ["2\\sqrt{2}"] * 4))
    assert [g.correct for g in got] == [True, False, True, False]


# ---- the TRL rewards ----------------------------------------------------------------------

def test_accuracy_reward_takes_trl_columns():
    completions = [
        "<think>2 boots at $73</think> <answer>146</answer>",
        [{"role": "assistant", "content": "<think>a</think> <answer>(B)</answer>"}],
        [{"role": "assistant", "content": [{"type": "text", "text": "<answer>smaller than</answer>"}]}],
        "<answer>7</answer>",
        "no answer",
        "<answer>1</answer>",
    ]
    rewards = accuracy_reward(
        completions, answer=["146", "no", "B", "8", "4", "\\frac{"],
        choices=[None, ["yes", "no"], None, None, None, None],
        question=["", "", "The derivative is ____ choice: (A) larger than (B) smaller than", "", "", ""],
        prompts=["p"] * 6, completion_ids=[[1]] * 6, trainer_state=None)
    assert rewards == [1.0, 1.0, 1.0, 0.0, 0.0, None]


def test_accuracy_reward_without_optional_columns():
    assert accuracy_reward(["<answer>0.5</answer>", "\\boxed{3}"], answer=["1/2", "4"]) == [1.0, 0.0]


@pytest.mark.parametrize("completion, score", [
    ("<think>2 + 2</think> so <answer>4</answer>", 1.0),
    ("<think>\n2 + 2\n</think>\n<answer>4</answer>\n", 1.0),
    ([{"role": "assistant", "content": "<think>a</think><answer>4</answer>"}], 1.0),
    ("<answer>4</answer>", 0.0),                                       # no thinking
    ("<think>2 + 2</think> the answer is 4", 0.0),                     # no answer tag
    ("<think>a</think> <answer>4</answer> and more", 0.0),             # text after the answer
    ("<think>a</think> <answer> </answer>", 0.0),                      # an empty answer
    ("<answer>4</answer> <think>a</think>", 0.0),                      # out of order
    ("<think>a</think> <think>b</think> <answer>4</answer>", 0.0),     # twice
    ("<think>a <answer>4</answer></think>", 0.0),                      # answer inside the thinking
])
def test_format_reward(completion, score):
    assert format_reward([completion]) == [score]


# ---- the documentation runs -----------------------------------------------------------------

def test_docstring_examples():
    from vlfactory.verify import extraction, protocols, rewards, rules

    results = [doctest.testmod(m) for m in (verify, extraction, rules, protocols, rewards)]
    assert sum(r.attempted for r in results) >= 9 and sum(r.failed for r in results) == 0


def test_command_line():
    out = subprocess.run([sys.executable, "-m", "vlfactory.verify", "The answer is \\boxed{0.5}", "1/2"],
                         capture_output=True, text=True, check=True).stdout
    assert out.strip() == "Grade(correct=True, extracted='0.5', reason='correct')"
    out = subprocess.run([sys.executable, "-m", "vlfactory.verify", "It is (B).", "Tuesday", "Monday", "Tuesday"],
                         capture_output=True, text=True, check=True).stdout
    assert "correct=True" in out
