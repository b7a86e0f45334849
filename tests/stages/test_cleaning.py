"""OpenVLThinker's cleaning on R1-style text, through the real verify and sft stages on a real catalog:
the chain is cut at the paper's keywords only, every line before the cut stays, the justification and
the final answer after `</think>` stay, "the description" is no reason to reject, and the sft set
picks the shortest correct chain as written, before cleaning."""

from __future__ import annotations

import pyarrow as pa
import pytest

from vlfactory.stages import verify as grading
from vlfactory.stages import sft as sftset
from vlfactory.recipe import REFLECTION_KEYWORDS, VerifyConfig, parse_recipe
from vlfactory.stages import Scope
from vlfactory.stores import schema
from vlfactory.stores.lake import Lake

BEFORE = """Okay, let's see. The description says the width is 8 feet and the area is 112 square feet.
First, I recall that area = width × height. Hmm, 112 / 8 = 14. Alternatively: 8 × 14 = 112."""
AFTER = """Wait, is the width really 8? The description mentions 8 feet, yes, and the picture shows a rectangle
whose longer side is vertical, so the height should be larger than the width, which 14 is.

But wait, maybe the 112 is the perimeter and not the area. Then 2 × (8 + h) = 112, so h = 48. No, the
question says area, so the perimeter reading does not apply here at all.
So the height is 14 feet."""
JUSTIFICATION = "The area is width times height, so the height is 112 / 8 = 14 feet."
R1 = f"<think>\n{BEFORE}\n\n{AFTER}\n</think>\n\n{JUSTIFICATION}\n\n<answer>14</answer>"
# Shorter as written than R1, longer than R1 once R1 is cleaned: the paper keeps this one.
PLAIN = ("<think>\nThe description gives a width of 8 feet and an area of 112 square feet. Since the area of "
         "a rectangle is its width times its height, the height is the area divided by the width: 112 divided "
         "by 8, which is 14. Checking the product: 8 times 14 is 112, as it should be, so the height is 14 "
         "feet.\n</think>\nSo the height is 14 feet.\n<answer>14</answer>")


def test_clean_keeps_every_line_before_the_first_paper_keyword_and_the_answer():
    cleaned, kept = grading.clean(R1, "14", REFLECTION_KEYWORDS)
    assert kept == BEFORE   # "Hmm" and "Alternatively" are not the paper's keywords
    assert cleaned == f"<think>\n{BEFORE}\n</think>\n{JUSTIFICATION}\n\n<answer>14</answer>"
    assert "Wait" not in cleaned and "perimeter" not in cleaned
    # a completion without an <answer> tag gets the extracted answer
    assert grading.clean("<think>a. Wait, b</think> The answer is 3.", "3", ["Wait"])[0] == \
        "<think>\na.\n</think>\nThe answer is 3.\n<answer>3</answer>"


@pytest.fixture()
def lake(cli, lake_dir, tmp_path):
    """One problem (gold 14) on a real image, and two correct traces: R1 and PLAIN."""
    recipe = tmp_path / "r.yaml"
    recipe.write_text("sources:\n  - {name: s, format: synthetic, n: 1}\n")
    cli("ingest", recipe)
    with Lake(lake_dir) as lk:
        image_id = lk.query("SELECT image_id FROM images LIMIT 1").fetchone()[0]
        problem = {"problem_id": "p-rect", "source": "s", "source_id": "rect", "split": "train", "image_id": image_id,
                   "question": "The rectangle has an area of 112 square feet. What is its height?", "answer": "14"}
        traces = [{"trace_id": f"t{i}", "problem_id": "p-rect", "sample_index": i, "model": "r1", "completion": text,
                   "finish_reason": "stop", "request_key": f"t{i}"} for i, text in enumerate([R1, PLAIN])]
        with lk.transaction("test"):
            lk.insert("problems", pa.Table.from_pylist([problem], schema=schema.PROBLEMS))
            lk.insert("traces", pa.Table.from_pylist(traces, schema=schema.TRACES))
    return lake_dir


def test_paper_defaults_accept_the_description_and_pick_shortest_before_cleaning(lake):
    recipe = parse_recipe({"sources": [{"name": "s", "format": "synthetic"}], "sft": {"pick": "shortest"}})
    assert recipe.verify == VerifyConfig() and recipe.verify.forbidden_phrases == []
    scope = Scope(("s",))
    with Lake(lake) as lk:
        grading.run(lk, recipe.verify, scope)
        grades = dict(lk.query("SELECT ref_id, accepted FROM grades").fetchall())
        words = dict(lk.query("SELECT ref_id, cleaned_words FROM grades").fetchall())
        stats = sftset.run(lk, recipe.stage_config("sft"), scope).value
        chosen = lk.query("SELECT from_id, completion FROM sft").fetchall()
    assert grades == {"t0": True, "t1": True}   # "the description" is no reason to reject
    assert len(R1.split()) > len(PLAIN.split()) and words["t0"] < words["t1"]
    assert stats.examples == 1 and chosen[0][0] == "t1"   # shortest as written, not shortest after cleaning
    assert chosen[0][1].endswith("So the height is 14 feet.\n<answer>14</answer>")


def test_stricter_filters_are_opt_in(lake):
    recipe = parse_recipe({"sources": [{"name": "s", "format": "synthetic"}],
                           "verify": {"forbidden_phrases": ["the description"], "max_words": 100}})
    with Lake(lake) as lk:
        grading.run(lk, recipe.verify, Scope(("s",)))
        reasons = dict(lk.query("SELECT ref_id, reasons FROM grades").fetchall())
    assert reasons == {"t0": ["too_long", "mentions_caption"], "t1": ["mentions_caption"]}


def test_the_official_judge_can_grade_the_training_data(lake):
    with Lake(lake) as lk:
        boxed = {"trace_id": "t2", "problem_id": "p-rect", "sample_index": 2, "model": "r1", "finish_reason": "stop",
                 "completion": "<think>112 / 8 = 14</think> The height is \\boxed{14}.", "request_key": "t2"}
        with lk.transaction("a boxed answer without tags"):
            lk.insert("traces", pa.Table.from_pylist([boxed], schema=schema.TRACES))
    verdicts = {}
    for protocol in ("vlfactory", "openvlthinker"):
        recipe = parse_recipe({"sources": [{"name": "s", "format": "synthetic"}], "verify": {"protocol": protocol}})
        with Lake(lake) as lk:
            grading.run(lk, recipe.verify, Scope(("s",)))
            verdicts[protocol] = dict(lk.query("SELECT ref_id, grade_reason FROM grades").fetchall())
    assert verdicts["vlfactory"] == {"t0": "correct", "t1": "correct", "t2": "correct"}
    assert verdicts["openvlthinker"] == {"t0": "correct", "t1": "correct", "t2": "no_answer"}   # no </answer>
