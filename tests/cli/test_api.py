"""The Python API: load/table/frame read any TABLE@VERSION as the export does, `load` as `datasets.load_dataset`
gives a Hub dataset (a DatasetDict by split, `split=`, `columns=`, `streaming=True`, silent), run gives the same
lake and results as the CLI, and `import vlfactory` stays light."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

import vlfactory
from answer_server import AnswerServer
from vlfactory.prompts import load_template
from vlfactory.stores.lake import Lake, LakeError
from workbench import build, recipe_text


@pytest.fixture(scope="module")
def wb(tmp_path_factory):
    return build(tmp_path_factory.mktemp("api"))


def test_load_is_the_export_with_images(wb, tmp_path, cli):
    import datasets

    dd = vlfactory.load("sft@iter1", lake=wb.lake)
    assert isinstance(dd, datasets.DatasetDict) and list(dd) == ["train"]  # the workbench's sources are train
    ds = vlfactory.load("sft@iter1", lake=wb.lake, split="train")
    assert isinstance(ds, datasets.Dataset) and isinstance(ds.features["image"], datasets.Image)
    assert ds.to_list() == dd["train"].to_list()
    with Lake(wb.lake, read_only=True) as lake:
        n = lake.count("sft", lake.resolve("iter1"))
        sizes = dict(lake.query("SELECT image_id, [width, height] FROM images").fetchall())
    assert len(ds) == n > 0
    for row in ds.select(range(3)):
        assert list(row["image"].size) == sizes[row["image_id"]]  # decoded from the stored bytes
    # the same rows, in the same order, as `vlfactory export` loaded back by datasets
    cli("export", "sft@iter1", "--to", tmp_path / "out", "--lake", wb.lake)
    exported = datasets.load_dataset("parquet", data_dir=str(tmp_path / "out" / "sft"), split="train")
    assert exported.remove_columns("image").to_list() == ds.remove_columns("image").to_list()
    assert [r["bytes"] for r in exported.cast_column("image", datasets.Image(decode=False))["image"]] == \
           [r["bytes"] for r in ds.cast_column("image", datasets.Image(decode=False))["image"]]
    # other ways to name a version; a table without images loads without an image column
    assert vlfactory.load("iter1", table="sft", lake=wb.lake, split="train")[0]["example_id"] == ds[0]["example_id"]
    grades = vlfactory.load("grades", lake=wb.lake, split="train")
    assert "image" not in grades.column_names


SPLITS = """name: splits
sources:
  - {name: charts, format: synthetic, n: 7, seed: 1, kinds: [bar, counting]}
  - {name: held, format: synthetic, n: 5, seed: 9, split: test}
"""


def test_load_like_load_dataset(tmp_path, capfd):
    """A DatasetDict by the data's own splits, one split, only some columns, or streamed in batches; nothing
    printed (datasets' progress bars included), images decoded from the stored bytes either way."""
    import datasets

    (tmp_path / "r.yaml").write_text(SPLITS)
    vlfactory.run(tmp_path / "r.yaml", ["ingest"], lake=tmp_path / "lake", say=None)
    capfd.readouterr()
    dd = vlfactory.load("problems", lake=tmp_path / "lake")
    assert isinstance(dd, datasets.DatasetDict) and list(dd) == ["train", "test"]
    assert (dd["train"].num_rows, dd["test"].num_rows) == (7, 5)
    assert set(dd["test"]["source"]) == {"held"} and dd["test"][0]["image"].size[0] > 0
    test = vlfactory.load("problems", lake=tmp_path / "lake", split="test", columns=["question", "image"])
    assert isinstance(test, datasets.Dataset) and test.column_names == ["question", "image"]
    assert test["question"] == dd["test"]["question"]
    streamed = vlfactory.load("problems", lake=tmp_path / "lake", streaming=True)
    assert isinstance(streamed, datasets.IterableDatasetDict) and list(streamed) == ["train", "test"]
    one = vlfactory.load("problems", lake=tmp_path / "lake", split="train", streaming=True)
    assert isinstance(one, datasets.IterableDataset)
    rows = list(one)
    assert [r["problem_id"] for r in rows] == dd["train"]["problem_id"]
    assert rows[0]["image"].tobytes() == dd["train"][0]["image"].tobytes()
    assert capfd.readouterr() == ("", "")  # no progress bar, no banner
    with pytest.raises(LakeError, match='unknown split "validation": problems@.* has train, test'):
        vlfactory.load("problems", lake=tmp_path / "lake", split="validation")
    with pytest.raises(LakeError, match="problems has no column 'nope'"):
        vlfactory.load("problems", lake=tmp_path / "lake", columns=["question", "nope"])


def test_frame_without_polars_is_one_line(wb, monkeypatch):
    monkeypatch.setitem(sys.modules, "polars", None)  # as in the core install: import polars fails
    with pytest.raises(ModuleNotFoundError) as e:
        vlfactory.frame("problems", wb.lake)
    assert "\n" not in str(e.value) and "pip install 'vlfactory[polars]'" in str(e.value)


def test_table_and_frame_read_any_version(wb):
    with Lake(wb.lake, read_only=True) as lake:
        snap = lake.resolve("iter1")
        counts = {v: lake.count("traces", s) for v, s in (("iter1", snap), ("latest", None))}
        ids = sorted(r[0] for r in lake.query("SELECT trace_id FROM traces@iter1").fetchall())
        # an open Lake works too, and stays open
        assert vlfactory.table("traces@iter1", lake).num_rows == counts["iter1"]
        assert lake.count("traces") == counts["latest"]
    assert counts["latest"] > counts["iter1"] > 0
    t = vlfactory.table("traces@iter1", wb.lake)
    assert sorted(t.column("trace_id").to_pylist()) == ids and "image" not in t.column_names
    assert vlfactory.table(f"traces@{snap}", wb.lake).equals(t)
    assert vlfactory.table("traces", wb.lake).num_rows == counts["latest"]
    df = vlfactory.frame("problems", wb.lake)
    assert df.height == len(wb.problems) and df["image"].struct.field("bytes").bin.size().min() > 0
    with pytest.raises(LakeError, match="unknown table 'nope'"):
        vlfactory.table("nope", wb.lake)
    with pytest.raises(LakeError, match="unknown version 'v9'"):
        vlfactory.load("sft@v9", lake=wb.lake)
    with pytest.raises(LakeError, match="not both"):
        vlfactory.table("sft@iter1", wb.lake, table="sft")


def rows(lake_dir, tables: tuple[str, ...]) -> dict[str, list[tuple]]:
    """Tables' rows less what says when and how fast they were written."""
    out = {}
    with Lake(lake_dir, read_only=True) as lake:
        for table in tables:
            cols = [c for c in lake.query(f"SELECT * FROM {table} LIMIT 0").columns
                    if c not in ("run_id", "created_at", "latency_s")]
            out[table] = sorted(lake.query(f"SELECT {', '.join(cols)} FROM {table}").fetchall(), key=repr)
    return out


def test_run_from_python_equals_the_cli(tmp_path, cli, lake_dir):
    """The same recipe, once through vlfactory.run and once through `vlfactory run`: the same rows, and the
    StageResults are what the CLI printed and the runs table recorded."""
    from vlfactory.sources.synthetic import generate

    rows_in = [*generate(8, seed=1, kinds=["bar", "counting"]), *generate(6, seed=2)]  # workbench.SOURCES
    template = load_template("reason")
    answers = {template.render(question=r["question"], choices=r["choices"], caption=r["caption"]):
               [f"<think>It is {r['answer']}.</think> <answer>{r['answer']}</answer>", "<answer>x</answer>"]
               for r in rows_in}
    recipe, api_lake, lines = tmp_path / "r.yaml", tmp_path / "api-lake", []
    with AnswerServer(answers) as server:
        recipe.write_text(recipe_text(server.url))
        result = vlfactory.run(recipe, lake=api_lake, limit=5, tag="t1", say=lines.append)
        out = cli("run", recipe, "--limit", "5", "--tag", "t1").output
    assert lines[0] == f"lake: {api_lake.resolve()}"
    # every stage the recipe configures, in order
    assert [r.stage for r in result.results] == ["ingest", "caption", "distil", "verify", "sft"]
    assert result["distil"].written == 10 and result["distil"].requests == 5 and result.failed == 0
    for r in result.results:  # the CLI printed the same stage lines (timings aside)
        head = r.line().splitlines()[0].split(" in ")[0]
        assert head in " ".join(out.split()), head
    assert lines[-1].startswith("done in") and any(line.startswith("tagged t1 -> snapshot") for line in lines)
    tables = ("problems", "captions", "traces", "grades", "sft", "rejected")
    assert rows(api_lake, tables) == rows(lake_dir, tables)
    with Lake(api_lake, read_only=True) as lake:
        run = lake.query("SELECT command, status, counts FROM runs WHERE run_id = ?", [result.run_id]).fetchone()
        assert result.tag == "t1" and lake.digest("sft", lake.resolve("t1")) == lake.digest("sft")
    assert run[0] == "run ingest,caption,distil,verify,sft" and run[1] == "ok"
    assert run[2]["distil.written"] == 10 and run[2]["sft.written"] == result["sft"].written == 5
    with pytest.raises(KeyError, match="'rollout' did not run"):
        result["rollout"]
    with pytest.raises(ValueError, match="unknown stage 'distill'"):
        vlfactory.run(recipe, ["distill"], lake=api_lake, say=None)


def test_evaluate_is_the_eval_command(tmp_path, cli, lake_dir):
    """api.evaluate answers a benchmark through the recipe's server, overrides its max_tokens, stores accuracy
    in `evals` as one recorded `eval` run and says each benchmark's line; `vlfactory eval` on the same lake then
    finds it done before: the command is this function."""
    from PIL import Image

    from vlfactory import api
    from vlfactory.recipe import RecipeError

    rows = [{"id": f"q{i}", "question": f"How many dots are in box {i}?", "answer": str(10 + i), "image": f"{i}.png"}
            for i in range(3)]
    for i in range(3):
        Image.new("RGB", (32, 32), (60 * i, 90, 200)).save(tmp_path / f"{i}.png")
    (tmp_path / "bench.json").write_text(json.dumps(rows))
    template = load_template("rollout")
    answers = {template.render(question=r["question"], choices=None):
               [f"<think>count</think><answer>{r['answer'] if i < 2 else 'nonsense'}</answer>"]
               for i, r in enumerate(rows)}
    with AnswerServer(answers) as server:
        recipe = tmp_path / "eval.yaml"
        recipe.write_text(f"""
sources: [{{name: synthetic, format: synthetic, n: 2}}]
benchmarks: [{{name: bench, format: json, path: {json.dumps(str(tmp_path / 'bench.json'))}}}]
rollout: {{backend: openai, model: ignored, base_url: "{server.url}", max_retries: 0, sampling: {{max_tokens: 64}}}}
""")
        lines = []
        results = api.evaluate("policy-v1", "bench", recipe, lake=lake_dir, max_tokens=32, say=lines.append)
        assert len(server.hits) == 3 and all(image for _, image in server.hits)
        again = cli("eval", "--model", "policy-v1", "--benchmark", "bench", "--recipe", recipe, "--max-tokens", "32")
        assert len(server.hits) == 3  # done before: nothing sent
    assert [r.line() for r in results] == lines == ["eval bench: 2/3 correct = 66.7% (policy-v1)"]
    assert "eval bench: done before: 2/3 correct = 66.7% (policy-v1)" in again.output
    with Lake(lake_dir, read_only=True) as lake:
        runs = lake.query("SELECT command, status, counts FROM runs ORDER BY started_at").fetchall()
        model, correct, sampling = lake.query("SELECT model, correct, sampling FROM evals").fetchone()
    assert [(c, s) for c, s, _ in runs] == [("eval", "ok"), ("eval", "ok")]
    assert (runs[0][2]["eval.bench.requests"], runs[1][2]["eval.bench.requests"]) == (3, 0)
    assert (model, correct) == ("policy-v1", 2)
    assert json.loads(sampling)["max_tokens"] == 32  # the override, not the recipe's 64
    (tmp_path / "local.yaml").write_text("sources: [{name: synthetic, format: synthetic, n: 2}]\n")
    with pytest.raises(RecipeError, match="--backend openai needs a base_url"):  # before the lake is touched
        api.evaluate("policy-v1", "synthetic", tmp_path / "local.yaml", lake=tmp_path / "none", backend="openai")
    assert not (tmp_path / "none").exists()


def test_versions_is_what_versions_json_prints(wb):
    """api.versions: the snapshots `vlfactory versions --format json` prints, as Python values, oldest first,
    with the tags naming them and the rows of every table as the catalog counts them."""
    from conftest import cli_at

    from vlfactory import api, sqlout

    shown = api.versions(wb.lake, last=5)
    printed = json.loads(cli_at(wb.lake, "versions", "--format", "json", "--last", "5").output)
    assert printed == json.loads(json.dumps([sqlout.jsonable(v) for v in shown], default=str))
    everything = api.versions(wb.lake, last=None)
    assert everything[-5:] == shown and list(shown[0]) == list(api.VERSION_FIELDS)
    with Lake(wb.lake, read_only=True) as lake:
        iter1, latest = lake.resolve("iter1"), lake.current_snapshot()
        assert len(everything) == len(lake.snapshots())
        assert everything[-1]["rows"] == {t: n for t, n in lake.row_counts([latest])[latest].items() if n}
        assert everything[-1]["rows"]["traces"] == lake.count("traces")
    assert [v["snapshot"] for v in everything] == sorted(v["snapshot"] for v in everything)
    assert "iter1" in next(v["tags"] for v in everything if v["snapshot"] == iter1)


def test_import_vlfactory_is_light():
    code = """
import json, sys
import vlfactory
light = [m for m in ("duckdb", "datasets", "torch", "transformers", "pyarrow", "polars") if m in sys.modules]
names = sorted(n for n in dir(vlfactory) if not n.startswith("_"))
run = vlfactory.run
from vlfactory import stages  # submodules still import as before
try:
    vlfactory.nope
    missing = False
except AttributeError:
    missing = True
print(json.dumps({"loaded": light, "names": names, "run": run.__module__, "missing": missing,
                  "heavy": [m for m in ("datasets", "torch", "transformers") if m in sys.modules]}))
"""
    out = json.loads(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout)
    assert out["loaded"] == [] and out["heavy"] == [] and out["missing"]
    assert out["run"] == "vlfactory.api" and {"load", "table", "frame", "run", "iterate", "diff"} <= set(out["names"])
