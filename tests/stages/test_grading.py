"""The verify stage on a real catalog with the real verifier: every reason, the funnel, cleaning,
regrading by time travel, idempotent reruns, limits, crash and resume, and inputs that must not
crash it (a deleted problem, replacement characters, a megabyte completion, an unreadable gold)."""

from __future__ import annotations

import doctest
import json
import shutil
from dataclasses import dataclass
from importlib import metadata

import pyarrow as pa
import pytest

from conftest import cli_at
from vlfactory import verify
from vlfactory.stages import verify as grading
from vlfactory.recipe import VerifyConfig, load_recipe
from vlfactory.stages import Scope, StageResult
from vlfactory.stores import schema
from vlfactory.stores.lake import Lake

RECIPE = """sources:
  - {name: s, format: synthetic, n: 10}
verify: {max_words: 200, require_format: true, clean_max_words: 60, repetition_max: 4, clean_reverify: true,
         forbidden_phrases: [the caption, the description]}
"""
WORDY = " ".join(f"step {i} adds one more shape to the count." for i in range(40))   # 360 words, no loop
ROWS = " ".join(f"Row {i} of the table holds eight." for i in range(12))                # 84 words, no loop
MEGABYTE = 1 << 20

# (problem source_id, sample_index, completion, finish_reason, the reasons expected)
TRACES = [
    # geometry-0-2: "The rectangle has an area of 112 square feet. What is its height?" gold 14
    ("geometry-0-2", 0, "<think>\nThe width is 8 feet, so the height is 112 / 8 = 14.\nWait, let me check: "
                        "8 * 14 = 112. Yes.\n</think>\n<answer>14</answer>", "stop", []),
    ("geometry-0-2", 1, "<think>\nThe width is 8. Waiter tables are 8 wide too. So 112 / 8 = 14.\n</think>\n"
                        "<answer>14</answer>", "stop", []),
    ("geometry-0-2", 2, "<think>\nThe width is 7, so the answer is 16.\nBut wait, the width is 8: "
                        "112 / 8 = 14.\n</think>\n<answer>14</answer>", "stop", []),
    ("geometry-0-2", 3, "<think>\n112 / 8 = 15.\n</think>\n<answer>15</answer>", "stop", ["incorrect"]),
    ("geometry-0-2", 4, "<think>\nthe width is 8 feet, so the height is 112 / 8 = 14.\nWait, let me check:  "
                        "8 * 14 = 112.   Yes.\n</think>\n<answer>14</answer>", "stop", ["duplicate"]),
    ("geometry-0-2", 5, f"<think>\n{ROWS} So 112 / 8 = 14.\n</think>\n<answer>14</answer>", "stop", []),  # > 60 words
    # counting-0-3: "How many shapes are there in total?" gold 8
    ("counting-0-3", 0, "<think>\nCounting the shapes: 1, 2, 3", "length", ["truncated", "no_answer", "format_error"]),
    ("counting-0-3", 1, f"<think>\n{WORDY}\n</think>\n<answer>8</answer>", "stop", ["too_long"]),
    ("counting-0-3", 2, "<think>\n" + "I count the circles and the squares again and I still get eight. " * 5
                        + "\n</think>\n<answer>8</answer>", "stop", ["repetition"]),
    ("counting-0-3", 3, "<think>\nThe description lists 8 shapes.\n</think>\n<answer>8</answer>", "stop",
     ["mentions_caption"]),
    ("counting-0-3", 4, "There are 8 shapes, so the answer is 8.", "stop", ["format_error"]),
    ("counting-0-3", 5, "<think>\nI see 8 shapes \ufffd\ufffd.\n</think>\n<answer>8</answer>", "stop",
     ["invalid_text"]),
    ("counting-0-3", 6, "<think>\n3 circles and 4 squares: 7.\n</think>\n<answer>7</answer>", "length",
     ["truncated", "incorrect"]),
    # geometry-0-8: "What is the diameter of the circle, in feet?" gold 4; a megabyte of reasoning
    ("geometry-0-8", 0, "<think>\n" + "The radius is two feet. " * (MEGABYTE // 24) + "\n</think>\n<answer>4</answer>",
     "stop", ["repetition", "too_long"]),
    # hand-made problems: one deleted from `problems`, one whose gold math-verify cannot read
    ("gone", 0, "<think>\n2 + 2\n</think>\n<answer>4</answer>", "stop", ["problem_missing"]),
    ("zz-bad-gold", 0, "<think>\nhalf\n</think>\n<answer>\\frac{1}{2}</answer>", "stop", ["unparsable_gold"]),
]
ROLLOUTS = [
    ("geometry-0-2", 0, "<think>\n112 / 8 = 14\n</think>\n<answer>\\boxed{14}</answer>", "stop", []),
    ("geometry-0-2", 1, "<think>\n112 / 8 = 14\n</think>\n<answer>\\boxed{14}</answer>", "stop", ["duplicate"]),
    ("geometry-0-2", 2, "<think>\n112 / 7 = 16\n</think>\n<answer>16</answer>", "stop", ["incorrect"]),
]


def _rows(lake: Lake, samples, table: str) -> list[dict]:
    ids = dict(lake.query("SELECT source_id, problem_id FROM problems").fetchall()) | {"gone": "gone-problem"}
    id_col = grading.TABLES[table]
    return [{id_col: f"{table[0]}-{sid}-{i}", "problem_id": ids[sid], "sample_index": i, "model": "r1",
             "completion": text, "finish_reason": finish, "request_key": f"{table[0]}-{sid}-{i}"}
            for sid, i, text, finish, _ in samples]


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """The synthetic source ingested, a problem with an unreadable gold, and the samples above: built once for
    the module (each test grades a copy, `lake`)."""
    root = tmp_path_factory.mktemp("grading")
    recipe = root / "r.yaml"
    recipe.write_text(RECIPE)
    cli_at(root / "lake", "ingest", recipe)
    with Lake(root / "lake") as lk:
        bad = {"problem_id": "bad-gold-problem", "source": "s", "source_id": "zz-bad-gold", "split": "train",
               "question": "What is half of one?", "answer": "\\frac{"}
        with lk.transaction("test samples"):
            lk.insert("problems", pa.Table.from_pylist([bad], schema=schema.PROBLEMS))
            lk.insert("traces", pa.Table.from_pylist(_rows(lk, TRACES, "traces"), schema=schema.TRACES))
            lk.insert("rollouts", pa.Table.from_pylist(_rows(lk, ROLLOUTS, "rollouts"), schema=schema.ROLLOUTS))
    return root


@pytest.fixture()
def lake(built, lake_dir):
    """A copy of the module's lake for this test (a lake folder is portable), and its recipe."""
    shutil.copytree(built / "lake", lake_dir)
    return lake_dir, load_recipe(built / "r.yaml")


@dataclass
class Verified:
    """The verify stage's result, by the names these tests read."""

    result: StageResult

    def __getattr__(self, name):
        r = self.result
        return {"graded": r.written, "samples": r.wanted, "current": r.cached, "regraded": r.extra["regraded"],
                "funnels": r.value, "settings_hash": r.notes[0].split()[-1]}[name]

    def line(self) -> str:
        return self.result.line()

    def counts(self) -> dict:
        return self.result.counts()


def verify_stage(lake_dir, recipe, limit=None) -> Verified:
    with Lake(lake_dir) as lk:
        return Verified(grading.run(lk, recipe.verify, Scope.of(recipe, limit)))


def test_every_reason_lands_in_grades_and_rejected(lake):
    lake_dir, recipe = lake
    stats = verify_stage(lake_dir, recipe)
    assert stats.graded == stats.samples == len(TRACES) + len(ROLLOUTS) and stats.regraded == 0
    with Lake(lake_dir) as lk:
        grades = {r[0]: r[1:] for r in lk.query(
            "SELECT ref_id, reasons, accepted, grade_reason, source, words FROM grades").fetchall()}
        rejected = {r[0]: r[1:] for r in lk.query(
            "SELECT ref_id, reason, reasons, detail, payload, source FROM rejected WHERE stage = 'verify'").fetchall()}
    expected = {f"t-{sid}-{i}": want for sid, i, *_, want in TRACES}
    expected |= {f"r-{sid}-{i}": want for sid, i, *_, want in ROLLOUTS}
    assert {ref: g[0] for ref, g in grades.items()} == expected
    assert {ref for ref, g in grades.items() if g[1]} == {ref for ref, want in expected.items() if not want}
    assert set(rejected) == {ref for ref, want in expected.items() if want}
    for ref, (reason, reasons, detail, payload, source) in rejected.items():
        assert reason == reasons[0] and reasons == expected[ref]
        assert "\n" not in detail and ref in detail and reason in detail
        assert len(payload) < 2000 and json.loads(payload)["problem_id"]
        assert source == (None if ref == "t-gone-0" else "s")
    assert "same text as t-geometry-0-2-0" in rejected["t-geometry-0-2-4"][2]   # the lowest sample_index stays
    assert grades["t-zz-bad-gold-0"][2] == "unparsable_gold"
    assert grades["t-gone-0"][2] is None and grades["t-gone-0"][3] is None
    assert grades["t-geometry-0-8-0"][4] > MEGABYTE // 6    # the megabyte was read, counted and graded

    # the funnel: generated -> first reasons -> accepted, per table and source
    traces, rollouts, gone = stats.funnels[("traces", "s")], stats.funnels[("rollouts", "s")], \
        stats.funnels[("traces", "(no problem)")]
    assert (traces.generated, traces.accepted, traces.cleaned_ok) == (15, 4, 2)
    assert traces.first == {"invalid_text": 1, "unparsable_gold": 1, "truncated": 2, "repetition": 2,
                            "too_long": 1, "incorrect": 1, "format_error": 1, "mentions_caption": 1, "duplicate": 1}
    assert traces.applies["too_long"] == 2 and traces.applies["incorrect"] == 2 and traces.applies["no_answer"] == 1
    assert (gone.generated, gone.first) == (1, {"problem_missing": 1})
    assert (rollouts.generated, rollouts.accepted, rollouts.first) == (3, 1, {"duplicate": 1, "incorrect": 1})
    line = stats.line()
    assert "traces of s: 15 generated" in line and "- truncated" in line and "= accepted" in line
    assert stats.counts()["traces.s.truncated"] == 2 and stats.counts()["rollouts.s.accepted"] == 1


def test_cleaning_cuts_at_reflections_and_reverifies(lake):
    lake_dir, recipe = lake
    verify_stage(lake_dir, recipe)
    with Lake(lake_dir) as lk:
        rows = {r[0]: r[1:] for r in lk.query(
            "SELECT ref_id, cleaned, cleaned_ok, cleaned_words, words FROM grades WHERE accepted").fetchall()}
        original = lk.query("SELECT completion FROM traces WHERE trace_id = 't-geometry-0-2-0'").fetchone()[0]
    cut, waiter, fixed_by_reflection = rows["t-geometry-0-2-0"], rows["t-geometry-0-2-1"], rows["t-geometry-0-2-2"]
    assert cut[0] == "<think>\nThe width is 8 feet, so the height is 112 / 8 = 14.\n</think>\n<answer>14</answer>"
    assert cut[1] and cut[2] < cut[3]
    assert "Wait" in original    # the original stays as it was; the cleaned text is beside it
    assert "Waiter tables are 8 wide too. So 112 / 8 = 14." in waiter[0] and waiter[1]
    # "the answer is 16" before "But wait": the cleaned text still ends in <answer>14</answer>, yet fails
    assert fixed_by_reflection[0] == "<think>\nThe width is 7, so the answer is 16.\n</think>\n<answer>14</answer>"
    assert not fixed_by_reflection[1]
    assert rows["r-geometry-0-2-0"][0].endswith("<answer>\\boxed{14}</answer>") and rows["r-geometry-0-2-0"][1]
    assert not rows["t-geometry-0-2-5"][1] and rows["t-geometry-0-2-5"][2] > 60    # over clean_max_words
    assert grading.clean("<think>one two. Hmm, three</think><answer>3</answer>", "3", ["Hmm"])[1] == "one two."
    assert grading.clean("<think>The answer: Alternatively  wait</think>", "3", ["Wait"])[1].endswith("wait")
    assert doctest.testmod(grading).failed == 0


def test_rerun_grades_nothing_and_a_new_verifier_regrades_with_time_travel(lake, monkeypatch):
    lake_dir, recipe = lake
    first = verify_stage(lake_dir, recipe)
    with Lake(lake_dir) as lk:
        before = lk.current_snapshot()
        old_rejected = lk.count("rejected")
    again = verify_stage(lake_dir, recipe)
    assert again.graded == 0 and again.current == first.samples and "nothing new" in again.line()
    assert again.funnels == first.funnels
    with Lake(lake_dir) as lk:
        assert lk.current_snapshot() == before    # nothing written

    monkeypatch.setattr(verify, "VERSION", "2-test")
    new = verify_stage(lake_dir, recipe)
    assert new.graded == new.regraded == first.samples and "regraded" in new.line()
    with Lake(lake_dir) as lk:
        now = lk.query("SELECT DISTINCT verifier FROM grades").fetchall()
        then = lk.query(f"SELECT DISTINCT verifier FROM grades@{before}").fetchall()
        assert now == [(verify.verdict_identity(recipe.verify)[0],)] and "2-test" in now[0][0]
        assert len(then) == 1 and then[0][0].startswith("vlfactory.verify 1 ")
        assert lk.count("grades") == lk.count("grades", before) == first.samples
        assert lk.count("rejected") == old_rejected    # the old verify rejections were replaced, not added to
        assert lk.query(f"SELECT count(*) FROM rejected@{before} WHERE stage = 'verify'").fetchone()[0] == \
            lk.query("SELECT count(*) FROM rejected WHERE stage = 'verify'").fetchone()[0]

    # changed settings regrade too, and change verdicts
    recipe.verify.max_words = 10_000
    looser = verify_stage(lake_dir, recipe)
    assert looser.graded == first.samples and looser.settings_hash != new.settings_hash
    assert looser.funnels[("traces", "s")].applies["too_long"] == 1    # only the megabyte now
    assert looser.funnels[("traces", "s")].accepted == 5


def test_verdict_identity_is_what_lakes_hold():
    """A verdict's identity moved into vlfactory.verify with the values lakes already hold, so their grades stay
    current: the default settings' hash, another settings' hash, and the verifier's name."""
    verifier, settings = verify.verdict_identity(VerifyConfig())
    assert verifier == f"vlfactory.verify {verify.VERSION} / math-verify {metadata.version('math-verify')}"
    assert verify.VERSION == "1" and settings == "2fb6eafdc984b8b6"
    assert verify.verdict_identity(VerifyConfig(rel_tol=1e-3, protocol="openvlthinker-data"))[1] == "dcbc28c968fb42e3"


def test_limit_then_the_rest_and_a_crash_loses_one_batch(lake, monkeypatch):
    lake_dir, recipe = lake
    # problems in order: bar-0-0, bar-0-6, clock-0-5, counting-0-3, counting-0-9, geometry-0-2, ...
    first = verify_stage(lake_dir, recipe, limit=4)
    assert first.graded == first.samples == 7     # the samples of counting-0-3 only
    assert set(first.funnels) == {("traces", "s")}

    monkeypatch.setattr(grading, "BATCH", 3)
    commits = []
    real_commit = grading.commit

    def crash_on_third(*args):
        if len(commits) == 2:
            raise KeyboardInterrupt   # a crash in the middle of the stage
        commits.append(real_commit(*args))
        return commits[-1]

    monkeypatch.setattr(grading, "commit", crash_on_third)
    with pytest.raises(KeyboardInterrupt):
        verify_stage(lake_dir, recipe)
    with Lake(lake_dir) as lk:
        assert lk.count("grades") == 7 + 2 * 3
    monkeypatch.setattr(grading, "commit", real_commit)
    rest = verify_stage(lake_dir, recipe)
    assert rest.current == 13 and rest.graded == len(TRACES) + len(ROLLOUTS) - 13 and rest.regraded == 0


def test_cli_prints_the_funnel_and_records_counts(lake, cli, tmp_path):
    lake_dir, recipe = lake
    out = cli("run", recipe.path, "--stage", "verify").output
    assert "verify: graded 19 samples" in out and "traces of s: 15 generated" in out
    with Lake(lake_dir) as lk:
        counts = lk.query("SELECT counts FROM runs WHERE command = 'run verify' ORDER BY started_at DESC "
                          "LIMIT 1").fetchone()[0]
    assert counts["verify.written"] == 19 and counts["verify.traces.s.accepted"] == 4
    assert "nothing new" in cli("run", recipe.path, "--stage", "verify").output


def test_invalid_utf8_cannot_enter_the_lake(lake):
    """Only its decoded form, U+FFFD, can (the invalid_text reason): DuckDB refuses the bytes."""
    lake_dir, _ = lake
    raw = pa.array([b"<answer>\xff\xfe8</answer>"], pa.binary())
    bad = pa.Array.from_buffers(pa.string(), 1, raw.buffers())   # unvalidated, as a buggy writer might
    row = pa.table({"trace_id": ["t-raw"], "completion": bad})
    with Lake(lake_dir) as lk, pytest.raises(Exception, match="(?i)unicode|utf"):
        with lk.transaction("invalid utf-8"):
            lk.insert("traces", row)


def test_grade_many_chunks_survive_a_timeout_in_the_middle():
    """grade_many sends math-verify jobs in chunks: a job that overruns costs one timeout, the rest
    of its chunk goes to a fresh worker."""
    items = [("<answer>\\sqrt{8}</answer>", "2\\sqrt{2}")] * 20
    items[5] = ("<answer>1.5</answer>", "10^{10^{10}}")
    got = verify.grade_many(items, workers=1, timeout_s=1)
    assert [g.reason for g in got] == ["correct"] * 5 + ["timeout"] + ["correct"] * 14
