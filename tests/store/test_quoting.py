"""Strings from recipes, paths and command lines are data where they meet SQL (issue 18 items 1 and 15).

A lake path, a data path, a tag, a table name or a source name holding `'`, `"`, `;`, a newline or a NUL
either works as the name it is or is refused with one line; none of them runs as SQL. The catalog and
DATA_PATH reach DuckDB's ATTACH through `stores.sqltext.literal`, the one quoting function.

    .venv/bin/python -m pytest -q -p no:cacheprovider tests/store/test_quoting.py
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

import vlfactory
from vlfactory.recipe import RecipeError
from vlfactory.stores.lake import Lake, LakeError
from vlfactory.stores.sqltext import literal

HOSTILE = ["o'brien", 'say "hi"', "a;b -- c", "new\nline", "x' AS lake; --"]


def _source(root: Path, n: int = 4, name: str = "sums") -> Path:
    rows = [{"id": str(i), "question": f"What is {i} + {i}?", "answer": str(2 * i)} for i in range(n)]
    data = root / "rows.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    recipe = root / "r.yaml"
    recipe.write_text(f"sources:\n  - {{name: {name}, format: jsonl, path: {json.dumps(str(data))}}}\n")
    return recipe


def test_literal_doubles_quotes_and_refuses_nul():
    assert literal("o'brien") == "'o''brien'"
    with pytest.raises(ValueError, match="NUL"):
        literal("a\x00b")


def test_a_lake_uri_that_carries_sql_runs_none_of_it(tmp_path, monkeypatch):
    """The issue's attack: a `lake:` whose quote closes ATTACH's string and appends a COPY ... TO."""
    monkeypatch.delenv("VLFACTORY_LAKE", raising=False)
    monkeypatch.delenv("VLFACTORY_DATA_PATH", raising=False)
    marker = tmp_path / "pwn.sh"
    evil = (f"ducklake:sqlite:{tmp_path}/x.sqlite' AS lake (DATA_PATH '{tmp_path}/d/'); "
            f"COPY (SELECT 'echo pwned') TO '{marker}' (HEADER false); DETACH lake; "
            f"ATTACH 'ducklake:sqlite:{tmp_path}/x.sqlite")
    with pytest.raises(LakeError):  # a new URI lake needs a data path: refused, as any such lake is
        Lake(evil)
    assert not marker.exists()
    with Lake(evil, data_path=str(tmp_path / "data")) as lake:  # it is just a strange file name
        assert lake.count("problems") == 0
    assert not marker.exists()
    recipe = _source(tmp_path)
    recipe.write_text(recipe.read_text() + f"lake: {json.dumps(evil)}\n")
    monkeypatch.setenv("VLFACTORY_DATA_PATH", str(tmp_path / "data"))
    vlfactory.run(recipe, ["ingest"], say=None)  # the recipe's lake: key, as the issue wrote it
    assert not marker.exists()
    with Lake(evil, read_only=True) as lake:
        assert lake.count("problems") == 4


@pytest.mark.parametrize("name", HOSTILE)
def test_lake_folders_and_data_paths_with_quotes_semicolons_and_newlines_work(tmp_path, monkeypatch, name):
    monkeypatch.delenv("VLFACTORY_LAKE", raising=False)
    monkeypatch.delenv("VLFACTORY_DATA_PATH", raising=False)
    recipe = _source(tmp_path, n=40)  # more rows than DuckLake inlines into the catalog: they go to Parquet files
    folder = tmp_path / name / "lake"
    vlfactory.run(recipe, ["ingest"], lake=folder, say=None)
    with Lake(folder, read_only=True) as lake:
        assert lake.count("problems") == 40
        assert lake.query("SELECT count(*) FROM problems").fetchone() == (40,)
    uri = f"ducklake:sqlite:{tmp_path / name / 'catalog.sqlite'}"
    vlfactory.run(recipe, ["ingest"], lake=uri, data_path=str(tmp_path / name / "data"), say=None)
    with Lake(uri, read_only=True) as lake:
        assert lake.count("problems") == 40
        files = lake._data_files()
        assert files and all(name in f for f in files)


def test_a_nul_in_a_lake_path_is_one_line(tmp_path):
    for spec, data in ((f"{tmp_path}/a\x00b", None), (f"ducklake:sqlite:{tmp_path}/c.sqlite", f"{tmp_path}/d\x00")):
        with pytest.raises(LakeError) as e:
            Lake(spec, data_path=data)
        assert "NUL" in str(e.value) and "\n" not in str(e.value)


@pytest.fixture(scope="module")
def _small_origin(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("small")
    vlfactory.run(_source(root), ["ingest"], lake=root / "lake", tag="v1", say=None)
    return root / "lake"


@pytest.fixture()
def small(_small_origin, tmp_path, monkeypatch) -> Path:
    """Four problems tagged v1: the module's lake copied, so each attack meets a lake of its own."""
    monkeypatch.delenv("VLFACTORY_LAKE", raising=False)
    shutil.copytree(_small_origin, tmp_path / "lake")
    return tmp_path / "lake"


@pytest.mark.parametrize("tag", ["v1'; DROP TABLE problems; --", 'v"1', "v;1", "v\n1", "v\x001", "²"])
def test_hostile_tags_are_refused_in_one_line(small, tag):
    with Lake(small) as lake:
        with pytest.raises(LakeError) as e:
            lake.tag(tag)
        assert "\n" not in str(e.value)
        with pytest.raises(LakeError) as e:  # as a version to read: not a tag, not a snapshot number
            lake.resolve(tag)
        assert "\n" not in str(e.value).replace(repr(tag), "")
        assert lake.count("problems") == 4 and set(lake.tags()) == {"v1"}


@pytest.mark.parametrize("table", ["problems; DROP TABLE problems", 'problems"', "problems'", "problems\n", "a\x00"])
def test_hostile_table_names_are_unknown_tables(cli, small, table, monkeypatch):
    monkeypatch.setenv("VLFACTORY_LAKE", str(small))
    for args in (("show", "v1", "--table", table), ("diff", "v1", "latest", "--table", table),
                 ("export", "v1", "--table", table, "--to", str(small.parent / "out"))):
        res = cli(*args, ok=False)
        assert res.exit_code == 2, (args, res.output)
        assert res.output.startswith("error: unknown table") and len(res.output.strip().splitlines()) == 1, res.output
    with Lake(small, read_only=True) as lake:
        assert lake.count("problems") == 4


@pytest.mark.parametrize("name", ["a'b", 'a"b', "a;b", "a\nb", "a\x00b", "../up", "/abs", "-dash", "."])
def test_hostile_source_names_are_refused_at_load(tmp_path, name):
    from vlfactory.recipe import load_recipe

    recipe = _source(tmp_path, name=json.dumps(name))
    with pytest.raises(RecipeError) as e:
        load_recipe(recipe)
    assert "name" in str(e.value) and "\n" not in str(e.value)
