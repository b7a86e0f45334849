"""The official OpenVLThinker protocols (github.com/yihedeng9/OpenVLThinker @ 6997b47), verdict for verdict:
the evaluation judge (`protocol="openvlthinker"`, evaluation/eval_openvlthinker.py) against the script's own logic
on hand-written completions; the grader of training data (`openvlthinker-data`, generate_reasoning_thinker.py with
utils/clean_answer.py) and the GRPO reward (r1v.py) on the answer-space table, whose expected values were produced
by running the official files; the Qwen baseline (`qwen-boxed`, run_evaluation.py --model qwen); the LLM judge's
prompt and verdict; and the one list of protocol names that recipes read."""

from __future__ import annotations

import pytest
from mathruler.grader import extract_boxed_content, grade_answer

from vlfactory.prompts import load_template
from vlfactory.recipe import RecipeError, parse_recipe
from vlfactory.verify import (PROMPT_SUFFIXES, PROTOCOLS, clean_answer, grade, grade_many, judge_prompt, judge_verdict,
                              openvlthinker_reward)
from vlfactory.verify.protocols import boxed_content


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


# ---- one answer space: the data grader, the GRPO reward and the evaluation judge ---------------

# gold x choices x <answer> content, each answer in `<think>x</think> because <answer>...</answer>`, and what the
# official code makes of it (computed by running the official files at 6997b47: utils/clean_answer.py, the check of
# generate_reasoning_thinker.py's process_item, r1v.py's compute_score, eval_openvlthinker.py's main loop):
# (gold, choices, answer, clean_answer(answer), generation grader, r1v reward, evaluation judge)
ANSWER_SPACE = [
    # option text, letter, "(B)", "B. text"
    ("5", ["3", "5"], "5", "5", True, 1.0, False),
    ("5", ["3", "5"], "B", "b", False, 0.0, True),
    ("5", ["3", "5"], "(B)", "(b)", False, 0.0, True),
    ("5", ["3", "5"], "B. 5", "b. 5", False, 0.0, False),
    ("5", ["3", "5"], "b", "b", False, 0.0, True),
    ("5", ["3", "5"], "5 (B)", "5", True, 0.0, False),
    ("5", ["3", "5"], "3", "3", False, 0.0, False),
    ("nonlinear", ["linear", "nonlinear"], "nonlinear", "nonlinear", True, 1.0, False),
    ("nonlinear", ["linear", "nonlinear"], "Nonlinear", "nonlinear", True, 1.0, False),
    ("nonlinear", ["linear", "nonlinear"], "Nonlinear.", "nonlinear", True, 0.0, False),
    ("nonlinear", ["linear", "nonlinear"], "The function is nonlinear", "nonlinear", True, 0.0, False),
    ("nonlinear", ["linear", "nonlinear"], "linear", "linear", False, 0.0, False),
    ("nonlinear", ["linear", "nonlinear"], "B. nonlinear", "b. nonlinear", False, 0.0, False),
    # yes/no with trailing words
    ("Yes", ["Yes", "No"], "Yes", "yes", True, 1.0, False),
    ("Yes", ["Yes", "No"], "yes", "yes", True, 1.0, False),
    ("Yes", ["Yes", "No"], "Yes, it is.", "yes", True, 0.0, False),
    ("No", ["Yes", "No"], "No.", "no", True, 0.0, False),
    ("No", ["Yes", "No"], "Yes", "yes", False, 0.0, False),
    ("no", ["yes", "no"], "Not sure, no.", "not sure, no", False, 0.0, False),
    ("no", ["yes", "no"], "No, the bar is shorter.", "no", True, 0.0, False),
    # units inside option texts: clean_answer cuts at a unit word even inside a word; mathruler drops units too,
    # so both official graders take "12 hours" for "12 minutes"
    ("12 hours", ["12 hours", "12 minutes"], "12 hours", "12", True, 1.0, False),
    ("12 minutes", ["12 hours", "12 minutes"], "12 hours", "12", True, 1.0, False),
    ("Tuesday", ["Monday", "Tuesday"], "Tuesday", "tues", True, 1.0, False),
    ("Tuesday", ["Monday", "Tuesday"], "Monday", "mon", False, 0.0, False),
    ("second", ["first", "second"], "second", "", True, 1.0, False),
    ("second", ["first", "second"], "first", "first", False, 0.0, False),
    # " or "
    ("red or blue", ["red or blue", "green"], "red or blue", "red", False, 1.0, False),
    ("2", ["2", "3"], "2 or 3", "2", True, 0.0, False),
    # dashes: a gold with "-" and 5+ characters needs an exact match
    ("-12.5", ["-12.5", "12.5"], "-12.5", "-12.5", True, 1.0, False),
    ("-12.5", ["-12.5", "12.5"], "-12.50", "-12.50", False, 1.0, False),
    ("-12.5", ["-12.5", "12.5"], "12.5", "12.5", False, 0.0, False),
    ("3-methylhexane", ["2-methylhexane", "3-methylhexane"], "3-methylhexane", "3-methylhexane", True, 1.0, False),
    ("3-methylhexane", ["2-methylhexane", "3-methylhexane"], "3-Methylhexane", "3-methylhexane", True, 1.0, False),
    ("3-methylhexane", ["2-methylhexane", "3-methylhexane"], "B", "b", False, 0.0, True),
    ("North-East", ["North-East", "South-West"], "North-East", "north-east", True, 1.0, False),
    ("North-East", ["North-East", "South-West"], "north east", "north east", False, 0.0, False),
    # "no," anywhere means "no" (research 1f's quirk)
    ("piano", ["piano", "violin"], "piano, maybe", "no", False, 0.0, False),
    ("piano", ["piano", "violin"], "Piano", "piano", True, 1.0, False),
    # free answers
    ("yes", None, "Yes, it is.", "yes", True, 0.0, False),
    ("No", None, "No.", "no", True, 0.0, False),
    ("no", None, "Not sure, no.", "not sure, no", False, 0.0, False),
    ("no", None, "no", "no", True, 1.0, True),
    ("yes", None, "Yes,", "yes", True, 0.0, False),
    ("yes", None, "Yes..", "yes.", False, 0.0, False),   # one final period off
    ("30", None, "30 degrees", "30", True, 1.0, True),
    ("30", None, "30°", "30°", False, 0.0, False),
    ("12", None, "12 cm", "12", True, 1.0, True),
    ("12", None, "x = 12", "12", True, 1.0, True),
    ("14", None, "14 feet", "14", True, 1.0, True),
    ("8", None, "8 inches", "8", True, 1.0, True),
    ("7", None, "7 kilograms", "7 kilo", False, 0.0, False),   # "gram" comes before "kilogram" in the list
    ("5", None, "5 (approx", "5 (approx", False, 0.0, False),
    ("3.14", None, "pi ≈ 3.14", "3.14", True, 0.0, False),
    ("15", None, "The total is 15 = 15.0", "15.0", True, 0.0, False),
    ("14", None, "a is 12, b is 14", "14", True, 0.0, False),
    ("2", None, "2 or 3", "2", True, 0.0, False),
    ("piano", None, "piano, maybe", "no", False, 0.0, False),
    ("-12.5", None, "-12.50", "-12.50", False, 1.0, True),
    ("-12.5", None, "-12.5", "-12.5", True, 1.0, True),
    ("-5", None, "-5.0", "-5.0", True, 1.0, True),
    ("3-methylhexane", None, "3-methylhexane", "3-methylhexane", True, 1.0, True),
    ("1-2-3", None, "1 - 2 - 3", "1 - 2 - 3", False, 1.0, True),
    ("1/2", None, "0.5", "0.5", True, 1.0, True),
    ("blue", None, "The color is blue", "blue", True, 0.0, False),
    ("42", None, "42 (approximately)", "42", True, 0.0, False),
    ("2", None, "two", "two", False, 0.0, False),
]
# Whole completions of a multiple-choice problem (gold "5" of ["3", "5"]), same columns (answer: the completion).
COMPLETIONS = [
    ("5", ["3", "5"], "5", None, False, 1.0, False),                                       # no tags
    ("5", ["3", "5"], "The answer is 5", None, False, 0.0, False),
    ("5", ["3", "5"], "<think>x</think> so <answer>5", None, False, 0.0, False),         # no </answer>
    ("5", ["3", "5"], "<think>x</think><answer>5</answer>", "5", True, 0.5, False),      # nothing before <answer>
    ("5", ["3", "5"], "<think>x</think> so <answer>\n5\n</answer>", "5", True, 0.0, False),  # r1v: no DOTALL
    ("5", ["3", "5"], "<answer>3</answer> no, <answer>5</answer>", "5", True, 0.0, False),  # last vs first tag
    ("5", ["3", "5"], "<think>x</think> so <answer>B</answer>", "b", False, 0.0, True),
]
# The multiple-choice rows where the two official graders of training data disagree, and why (the rest agree).
OFFICIAL_DISAGREEMENTS = {
    ("5 (B)", "5"): "clean_answer drops a parenthesis",
    ("Nonlinear.", "nonlinear"): "clean_answer drops a final period",
    ("The function is nonlinear", "nonlinear"): "clean_answer keeps what follows ' is '",
    ("Yes, it is.", "Yes"): "clean_answer reads 'yes,' as yes",
    ("No.", "No"): "clean_answer drops a final period",
    ("No, the bar is shorter.", "no"): "clean_answer reads 'no,' as no",
    ("2 or 3", "2"): "clean_answer keeps what precedes ' or '",
    ("red or blue", "red or blue"): "clean_answer cuts the option's own ' or '; the gold is not cleaned",
    ("-12.50", "-12.5"): "the dash rule: exact match only; mathruler equates them",
    ("5", "5"): "no tags: the grader reads nothing, r1v grades the whole completion",
    ("<think>x</think> so <answer>\n5\n</answer>", "5"): "r1v's regex has no DOTALL: the whole completion",
    ("<answer>3</answer> no, <answer>5</answer>", "5"): "the grader reads the last <answer>, r1v the first",
}


def rows():
    for gold, choices, answer, *want in ANSWER_SPACE:
        yield gold, choices, f"<think>x</think> because <answer>{answer}</answer>", answer, *want
    for gold, choices, completion, *want in COMPLETIONS:
        yield gold, choices, completion, completion, *want


@pytest.mark.parametrize("gold, choices, completion, answer, cleaned, data, reward, judged",
                         list(rows()), ids=lambda v: repr(v)[:24] if isinstance(v, str) else None)
def test_each_protocol_judges_as_the_official_code(gold, choices, completion, answer, cleaned, data, reward, judged):
    got = grade(completion, gold, choices, protocol="openvlthinker-data")
    assert (got.correct, got.extracted) == (data, cleaned)
    assert got.reason == ("no_answer" if cleaned is None else "correct" if data else "incorrect")
    assert openvlthinker_reward([completion], answer=[gold]) == [reward]
    assert grade(completion, gold, choices, protocol="openvlthinker").correct == judged


def test_the_data_grader_and_the_reward_agree_on_multiple_choice_but_where_the_official_code_differs():
    mc = [(gold, choices, completion, answer, data, reward) for gold, choices, completion, answer, _, data, reward, _
          in rows() if choices]
    graded = grade_many([(completion, gold, choices) for gold, choices, completion, *_ in mc],
                        protocol="openvlthinker-data")
    rewards = openvlthinker_reward([completion for _, _, completion, *_ in mc], answer=[gold for gold, *_ in mc])
    disagree = {(answer, gold) for (gold, _, _, answer, *_), g, r in zip(mc, graded, rewards) if g.correct != (r > 0)}
    assert disagree == set(OFFICIAL_DISAGREEMENTS)
    # the answer an option-text prompt asks for (the option's text as written) is paid by both; its letter by neither
    for gold, choices, completion, answer, data, reward in mc:
        if answer == gold and completion != answer and " or " not in gold:
            assert data and reward == 1.0, (gold, answer)
        if answer in ("B", "(B)", "b"):
            assert not data and reward == 0.0, (gold, answer)


def test_the_table_is_the_official_behaviour_including_clean_answer():
    # a check of the table's expected values against the official pieces we do import (mathruler), and of
    # clean_answer against the column: the data grader is clean_answer + the dash rule + equality or grade_answer
    for gold, _, completion, answer, cleaned, data, _, _ in rows():
        if cleaned is None:
            continue
        assert clean_answer(completion.split("<answer>")[-1].split("</answer>")[0].strip()) == cleaned
        dash = "-" in gold and len(gold) >= 5
        assert data == (gold.lower() == cleaned.lower() or not dash and grade_answer(gold, cleaned)), (gold, answer)
    assert sum(r[4] for r in ANSWER_SPACE) not in (0, len(ANSWER_SPACE))


def test_the_rollout_prompt_asks_for_the_options_text():
    template = load_template("openvlthinker")
    text = template.render(question="Is the function linear or nonlinear?", choices=["linear", "nonlinear"])
    assert text == ("Is the function linear or nonlinear?\nOptions:\n- linear\n- nonlinear\nAnswer with the text of "
                    "one option, exactly as written. You FIRST think about the reasoning process as an internal "
                    "monologue and then provide the final answer.")
    assert template.render(question="How many?", choices=None) == ("How many? You FIRST think about the reasoning "
                                                                   "process as an internal monologue and then provide "
                                                                   "the final answer.")
    assert "(A)" not in text and "(A)" in load_template("rollout").render(question="q", choices=["a", "b"])


# ---- qwen-boxed: the official Qwen baseline --------------------------------------------------------

# (completion, gold, choices, run_evaluation.py's verdict, eval_qwen.py@HEAD's verdict), both computed by running
# the official functions (extract_answers + process_ground_truth + check_correctness; eval_qwen.py's main loop)
QWEN = [
    ("The area is 5, so \\boxed{5}.", "5", None, True, True),
    ("\\boxed{B}", "5", ["3", "5"], True, True),                 # the gold becomes its letter
    ("\\boxed{5}", "5", ["3", "5"], False, False),
    ("\\boxed{(B)}", "5", ["3", "5"], True, True),
    ("x = \\boxed{\\frac{1}{2}}", "0.5", None, True, True),   # nested braces
    ("\\boxed{2}, no: \\boxed{3}", "3", None, True, True),    # the last box
    ("Answer: 7", "7", None, True, False),                        # HEAD's fallback: "Answer:" in lower-cased text
    ("So the final answer: B", "5", ["3", "5"], True, False),
    ("7", "7", None, False, True),                                # ... but takes a bare reply whole
    ("", "7", None, False, False),
    ("I see no number.", "None", None, True, True),               # "None" is a candidate without a box
    ("<answer>7</answer>", "7", None, False, False),
    ("\\boxed{7", "7", None, False, True),                      # an unclosed box reads "None"
    ("Answer: \\boxed{12}", "12", None, True, True),
    ("The answer: 30 degrees", "30", None, True, False),
    ("\\boxed{ }", "7", None, False, False),
    ("\\boxed{Yes}", "yes", None, True, True),
    ("The Answer: 4. So \\boxed{5}", "4", None, False, False),
]


@pytest.mark.parametrize("completion, gold, choices, official, head", QWEN, ids=lambda v: repr(v)[:24])
def test_qwen_boxed_is_run_evaluations_qwen_protocol(completion, gold, choices, official, head):
    got = grade(completion, gold, choices, protocol="qwen-boxed")
    assert got.correct == official
    assert got.reason == ("correct" if official else "no_answer" if got.extracted is None else "incorrect")
    assert got.extracted == (boxed_content(completion) or ("answer:" in completion.lower() or None)
                             and completion.lower().split("answer:")[-1].strip() or None)


def test_qwen_boxed_differs_from_head_eval_qwen_only_by_the_fallback_bug():
    differ = [c for c, _, _, official, head in QWEN if official != head]
    assert differ and all("\\boxed{" not in c or c == "\\boxed{7" for c in differ)
    assert PROMPT_SUFFIXES == {"qwen-boxed": "\n\nYour final answer MUST BE put in \\boxed{}"}


@pytest.mark.parametrize("text", ["\\boxed{2} then \\boxed{\\frac{1}{2}}", "\\boxed{7", "no box", "\\boxed{}",
                                  "\\boxed{ a { b } c } d", "x\\boxed{{}}", "\\boxed{\\boxed{3}}", "}\\boxed{a}}",
                                  "\\fbox{3}", "\\boxed {3}"])
def test_boxed_content_is_mathrulers(text):
    assert (boxed_content(text) if boxed_content(text) is not None else "None") == extract_boxed_content(text)


# ---- the LLM judge: prompt and verdict ------------------------------------------------------------

def test_judge_prompt_shows_the_extracted_answer_as_the_official_script():
    template = load_template("mathverse_judge", fields=frozenset({"instruction", "groundtruth", "prediction"}))
    text = judge_prompt(template, "What is x?", "4", "<think>x</think> <answer> x = 4 </answer>")
    assert text.endswith("Instruction: What is x?\nGround-truth Response: 4\nPredicted Response: ['x = 4']")
    assert judge_prompt(template, "Q", "4", "It is 4.").endswith("Predicted Response: ['Failed to extract.']")
    assert judge_verdict("Step by step.\nJudgement: Yes", "<answer>4</answer>") == grade("<answer>4</answer>", "4",
                                                                                          protocol="openvlthinker")
    assert judge_verdict("Judgement: No", "It is 4.").reason == "no_answer"
    assert judge_verdict(None, "<answer>4</answer>").reason == "judge_failed"


# ---- one list of protocols ---------------------------------------------------------------------------

def test_recipes_take_protocol_names_from_the_verifier():
    assert PROTOCOLS == ("vlfactory", "openvlthinker", "openvlthinker-data", "qwen-boxed", "judge")
    judge = {"backend": "openai", "model": "j", "base_url": "http://127.0.0.1:9/v1"}
    for name in PROTOCOLS:
        recipe = parse_recipe({"sources": [{"name": "s", "format": "synthetic"}],
                               "eval": {"protocol": name, "base_protocol": name, "judge": judge}})
        assert recipe.eval_config("s", "m").protocol == name == recipe.eval_config("s", "m", baseline=True).protocol
        if name != "judge":
            assert parse_recipe({"sources": [{"name": "s", "format": "synthetic"}],
                                 "verify": {"protocol": name}}).verify.protocol == name
            assert grade("\\boxed{4} <answer>4</answer>", "4", protocol=name).correct
    with pytest.raises(RecipeError, match="verify.protocol: 'judge' is not one of vlfactory, .*evaluation only"):
        parse_recipe({"sources": [{"name": "s", "format": "synthetic"}], "verify": {"protocol": "judge"}})
    with pytest.raises(RecipeError, match="eval.base_protocol: 'qwen' is not one of vlfactory, openvlthinker, "):
        parse_recipe({"sources": [{"name": "s", "format": "synthetic"}], "eval": {"base_protocol": "qwen"}})
    with pytest.raises(RecipeError, match="eval.judge: missing"):
        parse_recipe({"sources": [{"name": "s", "format": "synthetic"}], "eval": {"base_protocol": "judge"}})
    with pytest.raises(ValueError, match="LLM's verdict"):
        grade("<answer>4</answer>", "4", protocol="judge")


def test_the_base_model_is_graded_by_base_protocol_the_others_as_before():
    recipe = parse_recipe({"sources": [{"name": "s", "format": "synthetic"}, {"name": "t", "format": "synthetic"}],
                           "eval": {"protocol": "openvlthinker", "protocols": {"t": "vlfactory"},
                                    "base_protocol": "qwen-boxed"}})
    assert [recipe.eval_config(b, "m", baseline=True).protocol for b in "st"] == ["qwen-boxed", "qwen-boxed"]
    assert [recipe.eval_config(b, "m").protocol for b in "st"] == ["openvlthinker", "vlfactory"]
    plain = parse_recipe({"sources": [{"name": "s", "format": "synthetic"}], "eval": {"protocol": "openvlthinker"}})
    assert plain.eval_config("s", "m", baseline=True).protocol == "openvlthinker"
