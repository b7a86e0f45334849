"""The verifier's case table: (gold, completion, expected verdict) rows.

Most rows are built from the real slices in ../shared/data: each gold written the ways a
model writes it (bare, boxed, after "the answer is", with its unit, another spelling, as a
letter or as the choice's text) must grade correct; the same completion with the number
nudged, another choice, or the gold appearing only before a different final answer must not.
The rest are written by hand: what math-verify's users report (equivalent forms, close but
wrong numbers, multi-part answers, letters vs texts) and what the verifier's rules promise
(the tolerance, a stated rounding).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

DATA = Path(__file__).resolve().parents[3] / "shared" / "data"


@dataclass(frozen=True)
class Case:
    gold: str
    completion: str
    correct: bool
    choices: tuple[str, ...] | None = None
    question: str | None = None
    why: str = ""

    def item(self) -> dict:
        return {"completion": self.completion, "answer": self.gold, "question": self.question,
                "choices": list(self.choices) if self.choices is not None else None}


# How models write a final answer; each problem gets two of them, in turn.
SURFACES = [
    lambda a: f"<think>Reading the table row by row and adding.</think> The total follows. <answer>{a}</answer>",
    lambda a: f"First compare the values.\n\nTherefore, the final answer is \\boxed{{{a}}}.",
    lambda a: f"Looking at the figure carefully, the answer is {a}.",
    lambda a: f"<think>Check the values again.</think>\n<answer>\\boxed{{{a}}}</answer>",
    lambda a: f"{a}",
]


def surfaces(k: int, answer: str) -> list[str]:
    return [SURFACES[k % len(SURFACES)](answer), SURFACES[(k + 2) % len(SURFACES)](answer)]


def said_before(answer: str, final: str) -> str:
    """`answer` appears mid-text; `final` is what the completion concludes."""
    return (f"<think>One row reads {answer}, which is tempting, but the question asks for something "
            f"else.</think> Recomputing gives {final}. <answer>{final}</answer>")


def nudged(gold: str) -> str:
    """The same number with its last digit changed: a near miss that must never pass."""
    digits = [i for i, ch in enumerate(gold) if ch.isdigit()]
    i = digits[-1]
    return gold[:i] + str((int(gold[i]) + 1) % 10) + gold[i + 1:]


def other(items: list[str], gold: str) -> str:
    return next(x for x in items if x.casefold() != gold.casefold())


# ---- TabMWP ------------------------------------------------------------------------------

def tabmwp_cases(data: Path = DATA) -> list[Case]:
    problems = json.loads((data / "tabmwp-dev1k" / "problems.json").read_text())
    cases: list[Case] = []
    for k, (pid, p) in enumerate(sorted(problems.items())):
        gold, choices, unit = p["answer"], p["choices"], p["unit"]
        if choices:
            cases += _choice_cases(k, gold, tuple(choices), pid)
        else:
            cases += _number_cases(k, gold, unit, pid)
    return cases


def _choice_cases(k: int, gold: str, choices: tuple[str, ...], pid: str) -> list[Case]:
    i = choices.index(gold)
    letter, wrong = chr(65 + i), (i + 1) % len(choices)
    yes = [*surfaces(k, gold), SURFACES[k % 5](f"({letter})"), SURFACES[(k + 1) % 5](letter),
           f"<answer>{letter}. {gold}</answer>", f"The answer is Option {letter}.",
           f"<answer>{gold.upper()}</answer>"]
    no = [*surfaces(k, choices[wrong]), SURFACES[k % 5](f"({chr(65 + wrong)})"),
          f"<answer>{chr(65 + len(choices))}</answer>",            # a letter past the last choice
          said_before(gold, choices[wrong])]
    return ([Case(gold, c, True, choices, why=f"tabmwp {pid}: the choice") for c in yes]
            + [Case(gold, c, False, choices, why=f"tabmwp {pid}: another choice") for c in no])


def _number_cases(k: int, gold: str, unit: str | None, pid: str) -> list[Case]:
    plain = gold.replace(",", "")
    value = Fraction(plain)
    yes = surfaces(k, gold)
    if "," in gold:
        yes.append(f"<answer>{plain}</answer>")
    elif abs(value) >= 1000 and value.denominator == 1:
        yes.append(f"<answer>{int(value):,}</answer>")
    if "/" in gold:
        num, den = gold.split("/")
        yes += [f"<answer>\\frac{{{num}}}{{{den}}}</answer>", f"The answer is {float(value):.6g}."]
    elif "." in gold:
        yes.append(f"<answer>{gold.rstrip('0').rstrip('.')}</answer>")
    if unit == "$":
        yes += [f"<answer>${gold}</answer>", f"It costs \\${gold}, so the answer is \\${gold}."]
    elif unit and re.fullmatch(r"[A-Za-z ]+", unit):
        yes.append(f"<answer>{gold} {unit}</answer>")

    wrongs = [nudged(gold), str(value + 1) if value.denominator > 1 else str(int(value) * 10 + 1)]
    if "/" in gold:
        num, den = gold.split("/")
        wrongs.append(f"{int(num) + 1}/{den}")
        if abs(round(value, 2) - value) > Fraction(1, 1000) * abs(value):   # far outside 1e-4
            wrongs.append(f"{float(value):.2f}")
    no = [SURFACES[(k + j) % 5](w) for j, w in enumerate(wrongs)] + [said_before(gold, wrongs[0])]
    yes.append(said_before(wrongs[0], gold))
    return ([Case(gold, c, True, why=f"tabmwp {pid}: the number") for c in yes]
            + [Case(gold, c, False, why=f"tabmwp {pid}: a near miss") for c in no])


# ---- DynaMath ----------------------------------------------------------------------------

def dynamath_choices(question: str) -> list[str]:
    """The choice texts a DynaMath question lists ("(A) x (B) y", or "A: x" / "A. x" lines)."""
    lines = re.findall(r"^([A-H])[:.] (.*\S)", question, re.M)
    if lines:
        return [text for _, text in lines]
    tail = question[question.rindex("(A)"):]
    return [t.strip() for t in re.split(r"\([A-H]\)", tail)[1:]]


def dynamath_cases(data: Path = DATA) -> list[Case]:
    problems = json.loads((data / "dynamath-seed" / "dataset.json").read_text())
    texts = sorted({p["answer"] for p in problems.values() if p["answer_type"] == "text"})
    cases: list[Case] = []
    for k, (pid, p) in enumerate(sorted(problems.items(), key=lambda kv: int(kv[0]))):
        gold, question, kind = p["answer"], p["question"], p["answer_type"]
        case = lambda c, ok, why: Case(gold, c, ok, question=question, why=f"dynamath {pid}: {why}")  # noqa: E731
        if kind == "multiple choice":
            choices = dynamath_choices(question)
            i = ord(gold) - 65
            wrong = (i + 1) % len(choices)
            cases += [case(c, True, "the letter") for c in
                      [*surfaces(k, f"({gold})"), SURFACES[k % 5](gold), f"<answer>{gold}. {choices[i]}</answer>"]]
            cases += [case(c, False, "another letter") for c in
                      [*surfaces(k, f"({chr(65 + wrong)})"), said_before(f"({gold})", f"({chr(65 + wrong)})")]]
            if all(choices) and not any(re.fullmatch(r"[A-Z]", c) for c in choices):   # no texts, or letters
                cases.append(case(SURFACES[k % 5](choices[i]), True, "the choice's text"))
                if choices[wrong] != choices[i]:
                    cases.append(case(SURFACES[k % 5](choices[wrong]), False, "another choice's text"))
        elif re.fullmatch(r"-?\d+(\.\d+)?", gold):
            noisy = len(gold) > 15                                    # "-15.700000000000001"
            base = repr(round(float(gold), 10)) if noisy else gold
            yes = [*surfaces(k, gold), f"<answer>{base if noisy else gold + ('0' if '.' in gold else '.0')}</answer>"]
            no = [SURFACES[k % 5](nudged(base)), said_before(gold, nudged(base))]
            cases += [case(c, True, "the number") for c in yes] + [case(c, False, "a near miss") for c in no]
        else:
            cases += _dynamath_text_cases(k, gold, texts, case)
    return cases


def _dynamath_text_cases(k: int, gold: str, texts: list[str], case) -> list[Case]:
    if m := re.fullmatch(r"(\d+):(\d+)", gold):                      # a clock time: 5:0 is 5:00
        h, mi = int(m[1]), int(m[2])
        return [case(SURFACES[k % 5](f"{h}:{mi:02d}"), True, "the time"),
                case(SURFACES[k % 5](f"{h}:{(mi + 1) % 60:02d}"), False, "a minute off")]
    if re.fullmatch(r"[(\[].*[)\]]|\d+(, \d+)+", gold):              # points and lists, in order
        parts = re.split(r",\s*", gold.strip("()[]"))
        spaced = gold.replace(", ", ",")
        out = [case(SURFACES[k % 5](gold), True, "the list"), case(SURFACES[(k + 1) % 5](spaced), True, "the list")]
        if parts != parts[::-1]:
            out.append(case(SURFACES[k % 5](gold.replace(", ".join(parts), ", ".join(parts[::-1]))), False,
                            "the list reversed"))
        out.append(case(SURFACES[k % 5](gold.replace(parts[0], nudged(parts[0]), 1)), False, "one part off"))
        return out
    if "=" in gold:                                                  # "y = -3"
        lhs, rhs = (s.strip() for s in gold.split("="))
        return [case(SURFACES[k % 5](f"{lhs}={rhs}"), True, "the equation"),
                case(SURFACES[k % 5](rhs), True, "the equation's value"),
                case(SURFACES[k % 5](f"{lhs} = {nudged(rhs)}"), False, "another equation")]
    return [case(SURFACES[k % 5](gold), True, "the text"),
            case(SURFACES[(k + 1) % 5](gold.swapcase()), True, "the text in another case"),
            case(SURFACES[k % 5](other(texts, gold)), False, "another text")]


# ---- by hand -----------------------------------------------------------------------------

def A(answer: str) -> str:  # noqa: N802 (reads as a table)
    return f"<think>Working it out.</think> <answer>{answer}</answer>"


YN = ("yes", "no")
ROUND2 = "What is the value? Round your answer to two decimal places."
TENTH = "Give the length to the nearest tenth."
SLOPE = ("The derivative of f(x) at x=-2 is ____ that at x=2  choice: (A) larger than (B) smaller than "
         "(C) equal to")
SETS = ("What is the intersection of sets A and B?\nA: [2, 8, 10, 12, 13, 17, 19]\n"
        "B: [1, 2, 8, 10, 11, 12, 13, 16, 17, 18, 19]\nC: [1, 11, 16, 18]\nD: [3, 4, 6]\n")
GROUPS = "Which group has the largest Y value?\nA. Group 1\nB. Group 2\nC. Group 3"

HARD: list[Case] = [
    # -- finding the answer
    Case("12", "We add 5 and 7.\n\\boxed{12}", True, why="boxed"),
    Case("0.5", A("\\boxed{\\frac{1}{2}}"), True, why="nested braces in a box"),
    Case("3", "Draft: \\boxed{3}. Wait, recount: \\boxed{4}", False, why="the last box counts"),
    Case("4", "<think>maybe \\boxed{3}</think> <answer>4</answer>", True, why="the answer tag, not the draft"),
    Case("3", "<think>maybe \\boxed{3}</think> <answer>4</answer>", False, why="a draft in the thinking"),
    Case("5", "<think>the answer is 5</think>", False, why="nothing after the thinking"),
    Case("7", "<think>3 + 4</think> <answer>7", True, why="a stop string cut </answer>"),
    Case("73", "Thus the number is **73**.\n\n---\n\n✅ Final Answer: **73**", True, why="markdown (Math-Verify #76)"),
    Case("12", "The first row has 12 cars and the second 3, so the answer is 15.", False,
         why="the gold only mid-text before another final answer"),
    Case("15", "The first row has 12 cars and the second 3, so the answer is 15.", True, why="answer is"),
    Case("2.5", "So the answer is 2.5. Let me double-check: yes.", True, why="a sentence after the answer"),
    Case("68, 27, 20", "Left, bottom, right: \\boxed{68}, \\boxed{27}, and \\boxed{20}.", True,
         why="a run of boxes is one multi-part answer"),
    Case("20", "Left, bottom, right: \\boxed{68}, \\boxed{27}, and \\boxed{20}.", False, why="... not its last part"),
    Case("4", "The answer: 4", True, why="answer colon"),
    Case("4", "4", True, why="a bare reply"),
    Case("4", "I am not sure about this one, the table seems to be cut off on the right side of the image "
              "and several values are unreadable, so I cannot say for certain what the total would be here.",
         False, why="a long reply with no answer"),
    # -- OpenVLThinker's exact match, texts
    Case("Tuesday", A("tuesday"), True, why="case does not count"),
    Case("Tuesday", A("On Tuesday"), False, why="texts match whole"),
    Case("DE", A("ED"), False, why="labels are text, not D*E"),
    Case("Q1", A("Q2"), False, why="labels are text"),
    Case("Q1", A("Q"), False, why="labels are text, not Q*1"),
    Case("12/12/2011", A("1/2011"), False, why="a date is not 12/12/2011 = 1/2011"),
    Case("12/12/2011", A("12/12/2011"), True, why="a date"),
    Case("13:18", A("13:18"), True, why="a time"),
    Case("12:00", A("1:00"), False, why="times (Math-Verify #14 reads both as zoo)"),
    Case("5:0", A("5:00"), True, why="5:0 is 5:00"),
    # -- numbers: spellings, units, percentages
    Case("146", A("$146"), True, why="money"),
    Case("146", A("\\$146.00"), True, why="money in LaTeX with cents"),
    Case("146", A("146 dollars"), True, why="a unit word"),
    Case("146", A("146.5"), False, why="not the money"),
    Case("6,830", A("6830"), True, why="thousands"),
    Case("6830", A("6,830"), True, why="thousands"),
    Case("6,830", A("6,831"), False, why="thousands, one off"),
    Case("6,830", A("683"), False, why="a digit lost"),
    Case("33336", A("33337"), False, why="within 1e-4 relative, but integers are exact"),
    Case("53", A("53°"), True, why="degrees"),
    Case("53", A("53^\\circ"), True, why="degrees in LaTeX"),
    Case("53", A("53^{\\circ}"), True, why="degrees in LaTeX"),
    Case("12", A("12 cm^2"), True, why="an area unit"),
    Case("12", A("12\\text{ cm}"), True, why="a unit in \\text"),
    Case("12", A("12 pi"), False, why="pi is not a unit"),
    Case("2", A("2x"), False, why="a variable is not a unit"),
    Case("25%", A("25\\%"), True, why="percent"),
    Case("25%", A("25"), True, why="percent, as math-verify: 25% == 25"),
    Case("25%", A("0.25"), True, why="percent as a fraction of one"),
    Case("25%", A("0.26"), False, why="percent, wrong"),
    Case("-5", A("−5"), True, why="a unicode minus"),
    Case("12", A("１２"), True, why="full-width digits"),
    # -- fractions, decimals and the tolerance
    Case("1/2", A("0.5"), True, why="fraction vs decimal"),
    Case("0.5", A("\\frac{1}{2}"), True, why="decimal vs LaTeX fraction"),
    Case("0.5", A("\\dfrac{1}{2}"), True, why="dfrac"),
    Case("1/3", A("0.3333"), True, why="within 1e-4 relative"),
    Case("1/3", A("0.333"), False, why="outside 1e-4 relative"),
    Case("1/3", A("0.33333"), True, why="within 1e-4 relative"),
    Case("47/88", A("0.5341"), True, why="within 1e-4 relative"),
    Case("47/88", A("0.53"), False, why="looser than asked"),
    Case("8.20", A("8.2"), True, why="trailing zero"),
    Case("2825.35", A("2825.36"), False, why="a cent off: within 1e-4 relative, not at the written precision"),
    Case("7443.7691", A("7443.769"), True, why="rounded, within 1e-4 relative"),
    Case("7443.7691", A("7444"), False, why="rounded to an integer, unasked"),
    Case("7443.7691", A("7443.7692"), False, why="last digit off"),
    Case("0.886", A("0.8861"), False, why="agrees at three places but outside 1e-4 relative"),
    Case("-15.700000000000001", A("-15.7"), True, why="float noise in the gold"),
    Case("5.000000000000001", A("5"), True, why="float noise in the gold"),
    Case("20.0", A("20"), True, why="float vs integer"),
    Case("20.0", A("20.04"), False, why="close, wrong"),
    Case("4620", A("4620.3"), False, why="an integer gold, a decimal off it"),
    # -- stated rounding
    Case("3.14159", A("3.14"), True, question=ROUND2, why="the exactly rounded value"),
    Case("3.14159", A("3.142"), True, question=ROUND2, why="more precise, rounds the same"),
    Case("3.14159", A("3.1"), False, question=ROUND2, why="looser than asked"),
    Case("3.14159", A("3.15"), False, question=ROUND2, why="rounded wrong"),
    Case("3.14159", A("3.14"), False, why="no rounding asked: outside 1e-4"),
    Case("3.14159", A("3.1"), False, question="Answer with a decimal number.", why="a decimal is not one place"),
    Case("2.0944", A("2.1"), True, question=TENTH, why="nearest tenth"),
    Case("2.0944", A("2"), False, question=TENTH, why="nearest tenth, looser"),
    Case("0.125", A("0.13"), True, question=ROUND2, why="a tie, half up"),
    Case("0.125", A("0.12"), True, question=ROUND2, why="a tie, half even"),
    Case("47/88", A("0.53"), True, question=ROUND2, why="a fraction rounded as asked"),
    # -- math-verify: LaTeX vs plain, equivalent forms, structures
    Case("\\frac{2\\pi}{3}", A("2.0944"), True, why="an irrational gold, a decimal answer"),
    Case("2.0944", A("\\frac{2\\pi}{3}"), True, why="a decimal gold, an exact answer"),
    Case("\\frac{2\\pi}{3}", A("2.09"), False, why="looser than 1e-4"),
    Case("2\\sqrt{2}", A("\\sqrt{8}"), True, why="equivalent radicals"),
    Case("\\frac{\\sqrt{3}}{2}", A("0.8660"), True, why="a radical as a decimal"),
    Case("\\frac{\\sqrt{3}}{2}", A("\\frac{\\sqrt{2}}{2}"), False, why="another radical"),
    Case("3\\sqrt{3}", A("3*sqrt(3)"), True, why="LaTeX vs plain"),
    Case("x^2+2x+1", A("(x+1)^2"), True, why="equivalent polynomials"),
    Case("x^2+2x+1", A("(x-1)^2"), False, why="another polynomial"),
    Case("\\frac{1}{2^{99}}", A("\\frac{1}{2^{98}}"), False, why="tiny values (Math-Verify #14 says equal)"),
    Case("\\frac{1}{2004!}", A("\\frac{1}{2006!}"), False, why="tiny values (Math-Verify #14 says equal)"),
    Case("1 - \\frac{1}{\\mathrm{e}}", A("1 + \\frac{1}{e}"), False, why="\\mathrm{e} (Math-Verify #14)"),
    Case("1 - \\frac{1}{\\mathrm{e}}", A("1-e^{-1}"), True, why="\\mathrm{e}"),
    Case("\\pm 2021", A("2021"), False, why="half of plus-minus"),
    Case("\\text{13}", A("13"), True, why="\\text around a number (Math-Verify #37)"),
    Case("y = -3", A("y=-3"), True, why="an equation"),
    Case("y = -3", A("-3"), True, why="an assignment's value"),
    Case("y = -3", A("x = -3"), False, why="another variable"),
    Case("x = 0", A("x=0"), True, why="an equation"),
    Case("5", A("x = 5"), True, why="an answer written as an assignment"),
    Case("\\{1, 2\\}", A("\\{2, 1\\}"), True, why="sets ignore order"),
    Case("\\{1, 2\\}", A("\\{1, 3\\}"), False, why="another set"),
    Case("(1, 2]", A("(1,2]"), True, why="an interval"),
    Case("(1, 2]", A("(1, 2)"), False, why="open vs half-open"),
    Case("[1, 2]", A("(1, 2)"), False, why="closed vs open"),
    Case("(-\\infty, 3)", A("(-\\infty,3)"), True, why="an unbounded interval"),
    Case("m \\geq \\sqrt{2}", A("[\\sqrt{2}, \\infty)"), True,
         why="an inequality answered as an interval: only verify(gold, pred) says so (Math-Verify #25)"),
    Case("\\frac{1}{2}", A("50\\%"), True, why="a percentage of a LaTeX fraction"),
    Case("146", A("The total cost is 146 dollars, not 150"), False, why="prose: its last number counts"),
    # -- multi-part answers
    Case("68, 27, 20", A("68,27,20"), True, why="parts"),
    Case("68, 27, 20", A("20, 27, 68"), False, why="parts in another order (math-verify reads a set)"),
    Case("68, 27, 20", A("68, 27"), False, why="a part missing"),
    Case("(4, 3)", A("4, 3"), True, why="a point without parentheses"),
    Case("(4, 3)", A("(3, 4)"), False, why="a point reversed"),
    Case("(1.000, -4.000)", A("(1, -4)"), True, why="a point, fewer decimals"),
    Case("(0.886, -0.465)", A("\\left(0.886, -0.465\\right)"), True, why="\\left( \\right)"),
    Case("[1, 6, 2, 0, 5]", A("[1, 6, 2, 5, 0]"), False, why="a sequence out of order"),
    Case("[1, 2]", A("[1,2]"), True, why="a list"),
    # -- multiple choice: letters and texts, both ways
    Case("no", A("(B)"), True, YN, why="letter in parentheses"),
    Case("no", A("B"), True, YN, why="bare letter"),
    Case("no", A("B. no"), True, YN, why="letter and text"),
    Case("no", A("No."), True, YN, why="the text"),
    Case("no", A("A"), False, YN, why="the other letter"),
    Case("no", A("yes"), False, YN, why="the other text"),
    Case("no", A("C"), False, YN, why="no such choice"),
    Case("no", A("(A) no"), False, YN, why="a letter and a text that disagree: the letter names it"),
    Case("no", A("Bob"), False, YN, why="a word is not a letter"),
    Case("no", A("It is (B)"), True, YN, why="the only letter in a short answer"),
    Case("no", A("Not (A), but (B)"), False, YN, why="two letters name no choice"),
    Case("B", A("smaller than"), True, question=SLOPE, why="a choice's text for a letter gold"),
    Case("B", A("larger than"), False, question=SLOPE, why="another choice's text"),
    Case("B", A("(B) smaller than"), True, question=SLOPE, why="letter and text"),
    Case("B", A("(A)"), False, question=SLOPE, why="another letter"),
    Case("A", A("[2, 8, 10, 12, 13, 17, 19]"), True, question=SETS, why="a listed choice's text"),
    Case("A", A("[1, 11, 16, 18]"), False, question=SETS, why="another listed choice's text"),
    Case("B", A("Group 2"), True, question=GROUPS, why="an 'A. x' line"),
    Case("B", A("Group 3"), False, question=GROUPS, why="an 'A. x' line"),
    Case("2:10 P.M.", A("2:10 pm"), True, ("2:50 P.M.", "2:10 P.M.", "11:55 A.M."), why="P.M. vs pm"),
    Case("2:10 P.M.", A("2:50 pm"), False, ("2:50 P.M.", "2:10 P.M.", "11:55 A.M."), why="another time"),
    Case("D", A("(D)"), True, why="a letter gold without choices"),
    Case("D", A("Node D"), False, why="a letter gold without choices"),
]


def hard_cases() -> list[Case]:
    return HARD
