"""The OpenVLThinker recipes' sources, mapped from their Hub cards, ingest their local fixtures through the `hf`
source path; the column rules each fail the way they promise.

The mapping under test is the shipped one: each test reads recipes/openvlthinker/iterate.yaml (or released.yaml)
and only points each source's `path` at its fixture folder (recipes/openvlthinker/fixtures/, FIXTURE_OF there).
What each row should become is computed here from the fixture's Parquet files, read with pyarrow, not through
vlfactory's reader.

    .venv/bin/python -m pytest -q tests/stages/test_sources_from_cards.py
"""

from __future__ import annotations

import doctest
import hashlib
import importlib.util
import io
import re
import sys
from collections import Counter
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml

from vlfactory.stores.lake import Lake

REPO = Path(__file__).resolve().parents[2]
RECIPES = REPO / "recipes" / "openvlthinker"
FIXTURES = RECIPES / "fixtures"
_spec = importlib.util.spec_from_file_location("make_fixtures", FIXTURES / "make_fixtures.py")
make_fixtures = sys.modules.setdefault("make_fixtures", importlib.util.module_from_spec(_spec))
_spec.loader.exec_module(make_fixtures)
FIXTURE_OF, GOLDS, LETTER_GOLDS = make_fixtures.FIXTURE_OF, make_fixtures.GOLDS, make_fixtures.LETTER_GOLDS


@pytest.fixture(autouse=True)
def _own_datasets_cache(tmp_path, monkeypatch):
    """`datasets` caches what it loads; this test's loads go to its own folder (a shared cache can answer with
    an earlier run's rows for a same-shaped folder)."""
    import datasets

    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(tmp_path / "hf-datasets"))


def shipped(recipe: str, block: str) -> list[dict]:
    """A block (sources, benchmarks) of a shipped recipe, as written."""
    return yaml.safe_load((RECIPES / recipe).read_text())[block]


def on_fixtures(entries: list[dict]) -> list[dict]:
    return [{**e, "path": str(FIXTURES / FIXTURE_OF[e["name"]])} for e in entries]


def write_recipe(path: Path, sources: list[dict], extra: str = "") -> Path:
    path.write_text(yaml.safe_dump({"name": path.stem, "sources": sources}, sort_keys=False) + extra)
    return path


def parquet(folder: str, split: str) -> list[dict]:
    files = sorted((FIXTURES / folder).rglob(f"{split}-*.parquet"))
    assert files, f"{folder} has no {split} files"
    return [r for f in files for r in pq.read_table(f).to_pylist()]


def flat(output: str) -> str:
    """CLI output with the terminal's line wrapping undone."""
    return " ".join(output.split())


def sha(image: dict) -> str:
    return hashlib.sha256(image["bytes"]).hexdigest()


def majority(answers: list[str]) -> str:
    """The answer (case and end punctuation aside) at least half of the annotators gave, as first spelled."""
    norm = [a.strip(" .").lower() for a in answers]
    top, n = Counter(norm).most_common(1)[0]
    assert n * 2 >= len(answers)  # the fixture's answers have a clear majority: this oracle needs no tie rule
    return next(a.strip(" .") for a, m in zip(answers, norm) if m == top)


def tagged(text: str) -> str:
    return re.fullmatch(r"<answer>\s*(.*?)\s*</answer>", text).group(1)


# What each source's rows must become: (question, gold answer, choices, sha256 of the image), from the raw rows.
EXPECTED = {
    "figureqa": lambda: [(qa["question"], qa["answer"], None, sha(r["image"]))
                         for r in parquet("figureqa", "train") for qa in r["qa"]],
    "geos": lambda: [(r["problem"].replace("<image>", "").strip(), r["answer"], None, sha(r["decoded_image"]))
                     for r in parquet("sft_seed", "train") if r["source"] == "geos"],
    "geometry3k": lambda: [(r["problem"].replace("<image>", "").strip(), r["answer"], r["choices"], sha(r["images"][0]))
                           for r in parquet("geometry3k", "train")],
    "tabmwp": lambda: [(r["question"], r["answer"], r["options"] or None, sha(r["image"]))
                       for r in parquet("tabmwp", "train")],
    "vizwiz": lambda: [(r["question"], majority(r["answers"]), None, sha(r["image"])) for r in parquet("vizwiz", "val")],
    "ai2d": lambda: [(r["question"], r["options"][int(r["answer"])], r["options"], sha(r["image"]))
                     for r in parquet("ai2d", "test")],
    "clevr": lambda: [(r["problem"], tagged(r["solution"]), None, sha(r["image"])) for r in parquet("clevr", "train")],
    "superclevr": lambda: [(r["problem"], tagged(r["solution"]), None, sha(r["image"]))
                           for r in parquet("superclevr", "train")],
    "iconqa": lambda: [(r["question"], r["answer"], [c.strip() for c in r["choices"].split(",")] if r["choices"] else None,
                        sha(r["query_image"])) for r in parquet("iconqa", "val") if r["ques_type"] != "choose_img"],
    "mapqa": lambda: [(r["problem"].replace("<image>", "").strip(), r["answer"], None, sha(r["decoded_image"]))
                      for r in parquet("sft_seed", "train") if r["source"] == "mapqa"],
    "scienceqa": lambda: [(f"{r['hint']}\n{r['question']}".strip(), r["choices"][r["answer"]], r["choices"], sha(r["image"]))
                          for r in parquet("scienceqa", "train")],
    "mathvista": lambda: [(r["query"], r["answer"], r["choices"], sha(r["decoded_image"]))
                          for r in parquet("mathvista", "testmini")],
    "mathverse": lambda: [(r["query_cot"], r["answer"], None, sha(r["image"])) for r in parquet("mathverse", "testmini")],
    "mathvision": lambda: [(r["question"], r["answer"], r["options"] or None, sha(r["decoded_image"]))
                           for r in parquet("mathvision", "test")],
    "mathvision-mini": lambda: [(r["question"], r["answer"], r["options"] or None, sha(r["decoded_image"]))
                                for r in parquet("mathvision", "testmini")],
}


def stored(lake_dir: Path) -> dict[str, list[tuple]]:
    with Lake(lake_dir) as lake:
        rows = lake.query("""SELECT p.source, p.question, p.answer, p.choices, p.image_id, i.bytes
                             FROM problems p JOIN images i USING (image_id)""").fetchall()
    out: dict[str, list[tuple]] = {}
    for source, question, answer, choices, image_id, data in rows:
        assert hashlib.sha256(data).hexdigest() == image_id  # stored byte-exact
        out.setdefault(source, []).append((question, answer, choices, image_id, data))
    return out


def assert_images_decode(rows: list[tuple]) -> None:
    from PIL import Image

    for *_, data in rows:
        with Image.open(io.BytesIO(data)) as im:
            im.load()
            assert 64 <= im.width <= 96 and 16 <= im.height <= 96, im.size  # drawn small: the repository stays small


def test_every_source_of_the_recipe_ingests_its_fixture_with_the_shipped_mapping(cli, lake_dir, tmp_path):
    sources = on_fixtures(shipped("iterate.yaml", "sources"))
    recipe = write_recipe(tmp_path / "fixtures.yaml", sources)
    recipe.write_text(recipe.read_text() + yaml.safe_dump({"benchmarks": on_fixtures(shipped("iterate.yaml",
                                                                                             "benchmarks"))}))
    out = flat(cli("ingest", recipe).output)
    got = stored(lake_dir)
    assert set(got) == {s["name"] for s in sources} == {"figureqa", "geos", "geometry3k", "tabmwp", "vizwiz", "ai2d",
                                                        "clevr", "superclevr", "iconqa", "mapqa", "scienceqa"}
    for name in got:
        expected = EXPECTED[name]()
        # every row read became a problem: none rejected, none lost
        assert f"{name}: read {len(expected)} = ingested {len(expected)} + already in lake 0 + rejected 0" in out, out
        assert sorted(((q, a, c, i) for q, a, c, i, _ in got[name]), key=repr) == sorted(expected, key=repr), name
        for question, answer, choices, *_ in got[name]:
            assert "<image>" not in question and "<answer>" not in answer
            if choices:  # multiple choice: the gold is an option's text, never its index
                assert isinstance(choices, list) and answer in choices, (name, answer, choices)
        golds = [a for _, a, *_ in got[name]]
        assert sum(a in GOLDS for a in golds) >= len(golds) - 1, (name, golds)  # vizwiz: one "unanswerable"
        assert_images_decode(got[name])
    assert len(got["figureqa"]) == 12 and len(got["iconqa"]) == 12
    assert "iconqa: read 12" in out and "3 rows left out by where" in out          # choose_img left out
    assert "geos: read 12" in out and "20 rows left out by where" in out           # sft_seed's other labels
    assert "unanswerable" in [a for _, a, *_ in got["vizwiz"]]


def test_benchmarks_map_from_their_fixtures(cli, lake_dir, tmp_path):
    benchmarks = on_fixtures(shipped("iterate.yaml", "benchmarks"))
    out = flat(cli("ingest", write_recipe(tmp_path / "benchmarks.yaml", benchmarks)).output)  # as sources, to see the rows
    got = stored(lake_dir)
    assert set(got) == {"mathvista", "mathverse", "mathvision", "mathvision-mini"}
    for name, rows in got.items():
        expected = EXPECTED[name]()
        assert len(expected) == 8 and f"{name}: read 8 = ingested 8" in out, out
        assert sorted(((q, a, c, i) for q, a, c, i, _ in rows), key=repr) == sorted(expected, key=repr), name
        assert_images_decode(rows)
    for _, answer, choices, *_ in got["mathvista"]:  # MathVista's multiple-choice golds are option texts
        assert answer in GOLDS and (choices is None or answer in choices)
    for name in ("mathvision", "mathvision-mini"):  # MathVision's are letters
        for _, answer, choices, *_ in got[name]:
            assert answer in (LETTER_GOLDS if choices else GOLDS), (answer, choices)


def test_released_sets_are_problems_and_the_sft_set_is_traces_graded_and_picked(cli, lake_dir, tmp_path):
    from vlfactory.recipe import load_recipe

    from vlfactory.sources.readers import source_identity

    on_hub = {s.name: s for s in load_recipe(RECIPES / "released.yaml").sources}
    assert source_identity(on_hub["sft_iter3"]) == "hf:ydeng9/OpenVLThinker-sft-iter3"  # whose chains, on the Hub
    sources = on_fixtures(shipped("released.yaml", "sources"))
    recipe = write_recipe(tmp_path / "released.yaml", sources, "sft: {candidates: traces, per_problem: 1}\n")
    out = flat(cli("run", recipe, "--stage", "ingest", "--stage", "verify", "--stage", "sft").output)
    seed = [r for r in parquet("sft_seed", "train") if r["source"] not in ("scienceqa", "ai2d")]  # the official filter
    assert f"sft_seed: read {len(seed)} = ingested {len(seed)}" in out and "4 rows left out by where" in out
    for name, n in (("grpo_medium", 12), ("grpo_medium_test", 4), ("grpo_hard", 12), ("grpo_hard_test", 4)):
        assert f"{name}: read {n} = ingested {n} + already in lake 0 + rejected 0" in out, out
    raw = parquet("sft_iter3", "train")
    assert "sft_iter3: read 12 = ingested 12 + already in lake 0 + rejected 0; 12 new traces" in out
    # a local copy is known by its content, not by where it lies: a copy elsewhere is the same source
    import dataclasses
    import shutil

    local = {s.name: s for s in load_recipe(recipe).sources}["sft_iter3"]
    model = source_identity(local)
    assert model.startswith("hf:sft_iter3@sha256:") and str(FIXTURES) not in model
    shutil.copytree(FIXTURES / "sft_iter3", tmp_path / "elsewhere" / "sft_iter3")
    assert source_identity(dataclasses.replace(local, path=str(tmp_path / "elsewhere" / "sft_iter3"))) == model
    with Lake(lake_dir) as lake:
        by_source = dict(lake.query("SELECT source, count(*) FROM problems GROUP BY source").fetchall())
        assert by_source == {"sft_seed": len(seed), "sft_iter3": 12, "grpo_medium": 12, "grpo_medium_test": 4,
                             "grpo_hard": 12, "grpo_hard_test": 4}
        for name, folder, split in (("grpo_hard", "grpo_hard", "train"), ("grpo_medium_test", "medium_grpo_only", "test")):
            rows = lake.query("SELECT question, answer, image_id FROM problems WHERE source = ?", [name]).fetchall()
            assert sorted(rows) == sorted((r["problem"].replace("<image>", "").strip(), r["answer"], sha(r["images"][0]))
                                          for r in parquet(folder, split))
        traces = lake.query("""SELECT t.model, t.completion, t.answer, t.backend, p.question, p.answer, p.image_id
                               FROM traces t JOIN problems p USING (problem_id)""").fetchall()
        expected = {(r["messages"][1]["content"], r["messages"][0]["content"].replace("<image>", ""),
                     tagged(r["messages"][1]["content"].split("</think>")[-1].strip()), sha(r["images"][0])) for r in raw}
        assert {(t[1], t[4], t[5], t[6]) for t in traces} == expected
        assert {t[0] for t in traces} == {model} and all(t[2] == t[5] and t[3] == "dataset" for t in traces)
        assert lake.query("SELECT kind, name, path FROM models WHERE model_id = ?", [model]).fetchall() == [
            ("dataset", "sft_iter3", str(FIXTURES / "sft_iter3"))]   # named by its folder, found where it was read
        # verify graded every chain like a distilled trace; the sft set took them, attributed to the dataset
        grades = lake.query("SELECT accepted, grade_reason FROM grades WHERE ref_table = 'traces'").fetchall()
        assert sorted(grades) == [(True, "correct")] * 12
        sft = lake.query("SELECT from_table, model, completion FROM sft").fetchall()
        assert len(sft) == 12 and {(s[0], s[1]) for s in sft} == {("traces", model)}
        counts = {t: lake.count(t) for t in ("problems", "traces", "images", "rejected")}
    again = cli("ingest", recipe).output  # a rerun adds nothing, chains included
    assert "nothing new" in again and "new traces" not in again
    with Lake(lake_dir) as lake:
        assert {t: lake.count(t) for t in counts} == counts


# ---- the column rules on inputs that break them --------------------------------------------------------


def hf_folder(root: Path, rows: list[dict], features: dict) -> Path:
    """A local dataset shaped as a Hub repo (data/train-00000-of-00001.parquet) written by `datasets`."""
    import datasets

    (root / "data").mkdir(parents=True)
    ds = datasets.Dataset.from_list(rows, features=datasets.Features(features))
    ds.to_parquet(str(root / "data" / "train-00000-of-00001.parquet"))
    return root


def png(seed: int) -> dict:
    return make_fixtures.shapes(2, seed, 64)


@pytest.fixture()
def mixed(tmp_path) -> Path:
    """Two rows with a column of each kind a rule might meet."""
    import datasets as d

    features = {"q": d.Value("string"), "s": d.Value("string"), "img": d.Image(), "imgs": d.List(d.Image()),
                "opts": d.List(d.Value("string")), "idx": d.Value("string"), "kind": d.Value("string"),
                "msgs": d.List({"role": d.Value("string"), "content": d.Value("string")})}
    rows = [{"q": f"Q{k}?", "s": "plain", "img": png(k), "imgs": [png(k)], "opts": ["No", "Yes"], "idx": "1",
             "kind": "ab"[k], "msgs": [{"role": "user", "content": "<image>Q?"}]} for k in range(2)]
    return hf_folder(tmp_path / "mixed", rows, features)


PREFLIGHT = {  # a mapping over the `mixed` data -> the one line that says what is wrong, before any write
    "columns: {image: {column: img, index: 0}}": "columns.image.index: column 'img' is an image, not a list",
    "columns: {answer: {column: idx, option_of: s}}": "columns.answer.option_of: column 's' is a string, not a list of options",
    "columns: {answer: {column: opts, option_of: opts}}":
        "columns.answer.option_of: column 'opts' is a list, not an option index (an int or a digit string)",
    "columns: {answer: {column: idx, option_of: optionz}}": "columns.answer.option_of: 'optionz' is not a column of the data",
    "columns: {answer: {column: answerz, tag: answer}}": "columns.answer.column: 'answerz' is not a column of the data",
    "columns: {answer: {column: opts, tag: answer}}": "columns.answer.tag: column 'opts' is a list, not a string",
    "columns: {answer: {column: s, pick: most_common}}": "columns.answer.pick: column 's' is a string, not a list of answers",
    "columns: {question: {column: opts, strip: '<image>'}}": "columns.question.strip: column 'opts' is a list, not a string",
    "columns: {choices: {column: opts, split: ','}}": "columns.choices.split: column 'opts' is a list, not a string to split",
    "columns: {question: {column: s, turn: user}}": "columns.question.turn: column 's' is a string, not a list of chat turns",
    "explode: s": "explode: column 's' is a string, not a list of objects whose keys become columns",
    "explode: nope": "explode: 'nope' is not a column of the data",
    "where: {nope: [a]}": "where.nope: 'nope' is not a column of the data",
    "where: {opts: [a]}": "where.opts: column 'opts' is a list; where compares single values",
    "where: {kind: [zz]}": "where: none of its 2 rows has kind in ['zz']; the data holds kind: 'a' (1), 'b' (1)",
    "where_not: {kind: [a, b]}": "where: none of its 2 rows has kind not in ['a', 'b']",
    # caught when the recipe loads
    "columns: {answer: {column: opts, pick: mode}}": "columns.answer.pick: 'mode' is not one of most_common",
    "columns: {question: {column: s, split: ','}}": "columns.question.split: makes a list, which only choices holds",
    "columns: {image: {column: imgs, tag: answer}}": "columns.image: only column, turn and index apply to an image",
    "columns: {answer: {column: opts, optoin_of: opts}}": "optoin_of: unknown key (did you mean 'option_of'?)",
}


@pytest.mark.parametrize("rule", PREFLIGHT)
def test_a_rule_that_does_not_fit_the_data_fails_before_any_write(cli, lake_dir, tmp_path, mixed, rule):
    keys = yaml.safe_load("{" + rule + "}")
    source = {"name": "mixed", "format": "hf", "path": str(mixed), **keys,
              "columns": {"question": "q", "answer": "idx", **keys.get("columns", {})}}
    res = cli("ingest", write_recipe(tmp_path / "bad.yaml", [source]), ok=False)
    assert res.exit_code == 2, res.output
    errors = [line for line in res.output.splitlines() if "error" in line]  # datasets' progress lines aside
    assert len(errors) == 1 and PREFLIGHT[rule] in errors[0], res.output
    assert "source mixed:" in errors[0] or "sources[0]" in errors[0]  # it names the source
    assert not lake_dir.exists()  # nothing was written, not even an empty lake


def test_rows_that_break_a_rule_are_rejected_with_the_reason(cli, lake_dir, tmp_path):
    import datasets as d

    s = d.Value("string")
    folders = {
        "opt": hf_folder(tmp_path / "opt", [{"q": f"Q{k}", "img": png(k), "opts": ["No", "Yes"], "idx": idx}
                                            for k, idx in enumerate(["1", "7", "xyz", "-1", "B"])],
                         {"q": s, "img": d.Image(), "opts": d.List(s), "idx": s}),
        "index": hf_folder(tmp_path / "index", [{"q": f"Q{k}", "a": "2", "imgs": imgs}
                                                for k, imgs in enumerate([[png(10)], []])],
                           {"q": s, "a": s, "imgs": d.List(d.Image())}),
        "pick": hf_folder(tmp_path / "pick", [{"q": f"Q{k}", "img": png(20 + k), "answers": a} for k, a in
                                              enumerate([["3", "2 ", "2."], [], ["", " . "]])],
                          {"q": s, "img": d.Image(), "answers": d.List(s)}),
        "tag": hf_folder(tmp_path / "tag", [{"q": f"Q{k}", "img": png(30 + k), "sol": sol} for k, sol in
                                            enumerate(["<answer> 3 </answer>", "3"])],
                         {"q": s, "img": d.Image(), "sol": s}),
        "turn": hf_folder(tmp_path / "turn", [{"img": png(40 + k), "a": "2", "msgs": [{"role": r, "content": f"<image>Q{k}"}
                                                                                     for r in roles]}
                                              for k, roles in enumerate([["user", "assistant"], ["user", "user"], ["system"]])],
                          {"img": d.Image(), "a": s, "msgs": d.List({"role": s, "content": s})}),
        "explode": hf_folder(tmp_path / "explode", [{"img": png(50 + k), "qa": qa} for k, qa in
                                                    enumerate([[{"question": "Q0", "answer": "No"}, {"question": "Q1", "answer": "2"}], []])],
                             {"img": d.Image(), "qa": d.List({"question": s, "answer": s})}),
    }
    recipe = write_recipe(tmp_path / "rules.yaml", [
        {"name": "opt", "format": "hf", "path": str(folders["opt"]),
         "columns": {"question": "q", "image": "img", "answer": {"column": "idx", "option_of": "opts"}}},
        {"name": "index", "format": "hf", "path": str(folders["index"]),
         "columns": {"question": "q", "answer": "a", "image": {"column": "imgs", "index": 0}}},
        {"name": "pick", "format": "hf", "path": str(folders["pick"]),
         "columns": {"question": "q", "image": "img", "answer": {"column": "answers", "pick": "most_common"}}},
        {"name": "tag", "format": "hf", "path": str(folders["tag"]),
         "columns": {"question": "q", "image": "img", "answer": {"column": "sol", "tag": "answer"}}},
        {"name": "turn", "format": "hf", "path": str(folders["turn"]),
         "columns": {"question": {"column": "msgs", "turn": "user", "strip": "<image>"}, "answer": "a", "image": "img"}},
        {"name": "explode", "format": "hf", "path": str(folders["explode"]), "explode": "qa", "columns": {"image": "img"}},
    ])
    cli("ingest", recipe)
    with Lake(lake_dir) as lake:
        problems = lake.query("SELECT source, source_id, question, answer FROM problems ORDER BY 1, 2").fetchall()
        rejected = lake.query("SELECT source, reason, detail FROM rejected ORDER BY source, ref_id").fetchall()
    assert problems == [("explode", "0/0", "Q0", "No"), ("explode", "0/1", "Q1", "2"), ("index", "0", "Q0", "2"),
                        ("opt", "0", "Q0", "Yes"), ("opt", "4", "Q4", "Yes"), ("pick", "0", "Q0", "2"),
                        ("tag", "0", "Q0", "3"), ("turn", "0", "Q0", "2")]
    reasons = Counter((r[0], r[1]) for r in rejected)
    assert reasons == Counter({("opt", "option_out_of_range"): 2, ("opt", "bad_option_index"): 1,
                              ("index", "index_out_of_range"): 1, ("pick", "empty_list"): 2, ("tag", "no_tag"): 1,
                              ("turn", "ambiguous_turn"): 1, ("turn", "no_turn"): 1, ("explode", "empty_list"): 1})
    details = "\n".join(r[2] for r in rejected)
    for line in ("columns.answer.option_of: index '7' but 'opts' has 2 options",
                 "columns.answer.option_of: 'xyz' is not an option index (0, 1, ... or A, B, ...)",
                 "columns.image.index: 'imgs' has 0 elements, no index 0",
                 "columns.answer.pick: 'answers' holds no answer",
                 "columns.answer.tag: no <answer> ... </answer> in '3'",
                 "columns.question.turn: 2 turns with role 'user' (roles: user, user)",
                 "explode: column 'qa' is an empty list: no row to make"):
        assert line in details, details


def test_a_chain_source_keeps_one_trace_per_distinct_completion(cli, lake_dir, tmp_path):
    import datasets as d

    s = d.Value("string")
    chat = lambda chain: [{"content": "<image>How many?", "role": "user"}, {"content": chain, "role": "assistant"}]  # noqa: E731
    one, two = "<think>two</think><answer>2</answer>", "<think>one and one</think>\n<answer>2</answer>"
    folder = hf_folder(tmp_path / "sft", [{"messages": chat(c), "images": [png(60)]} for c in (one, one, two)],
                       {"messages": d.List({"content": s, "role": s}), "images": d.List(d.Image())})
    sources = [{**e, "path": str(folder), "model": "hf:org/sft@abc"} for e in shipped("released.yaml", "sources")
               if e["name"] == "sft_iter3"]
    recipe = write_recipe(tmp_path / "sft.yaml", sources)
    out = flat(cli("ingest", recipe).output)
    assert "read 3 = ingested 1 + already in lake 0 + rejected 1 (duplicate 1); 2 new traces" in out, out
    with Lake(lake_dir) as lake:
        rows = lake.query("SELECT sample_index, model, completion, answer FROM traces ORDER BY 1").fetchall()
        assert rows == [(0, "hf:org/sft@abc", one, "2"), (1, "hf:org/sft@abc", two, "2")]
        assert lake.query("SELECT reason, detail FROM rejected").fetchall() == [
            ("duplicate", "sft_iter3:1: same problem and completion as sft_iter3:0")]
    again = flat(cli("ingest", recipe).output)  # a rerun adds no trace
    assert "read 3 = ingested 0 + already in lake 1 + rejected 1 (duplicate 1) done" in again, again
    with Lake(lake_dir) as lake:
        assert lake.count("traces") == 2 and lake.count("rejected") == 1


def test_the_column_rules_doctests():
    from vlfactory.sources import columns

    assert doctest.testmod(columns).failed == 0
