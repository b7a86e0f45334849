"""The built wheel is the whole package: every module and recipe file, and it runs on its own.

Editable installs import from the source tree, so a package that pyproject.toml forgets still
imports there while a wheel silently lacks it (issue 9: the wheel had no vlfactory/backends, so a
normal install could not run caption, distil, rollout or eval). These tests build the wheel the
way `pip wheel .` does and check it against the tree:

- every package directory (holding an __init__.py), module and recipe or prompt file under the
  directories pyproject.toml maps into `vlfactory` is in the wheel (cheap: one build);
- (slow) the wheel, installed non-editable with its core dependencies in a clean venv (no torch,
  transformers, trl or vllm), imports every module, ships the recipes and prompt templates, runs
  `vlfactory --help`, and runs ingest, caption, distil and verify from a working directory
  outside the repository against an OpenAI-compatible server on loopback (tests/support/fault_server.py,
  which answers a chat request whose content is plain text, as distil sends it; answer_server.py
  reads only content parts, as rollout sends them), then writes the report with its plots.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

from fault_server import FaultServer

REPO = Path(__file__).resolve().parents[2]
DATA_SUFFIXES = (".yaml", ".txt")  # recipe files and prompt templates, shipped as package data
HEAVY = ("torch", "transformers", "trl", "vllm")  # the optional extras: never imported at module top level
# Not part of a build: local state, and setuptools' build/ (a stale build/lib leaks modules into a
# wheel whose package list lacks them, which would hide exactly the bug these tests look for).
NOT_SOURCE = shutil.ignore_patterns(".git", ".venv", "build", "dist", "*.egg-info", "__pycache__", ".pytest_cache",
                                    "lake", "runs")


def expected_files() -> set[str]:
    """The paths the wheel must hold: each mapped directory's packages, their modules, and the data files."""
    config = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    # Each mapped directory is walked on its own (stores/ is vlfactory.stores, not under factory/); its
    # subdirectories holding an __init__.py are subpackages that must be listed too (factory/backends).
    roots = {name: REPO / d for name, d in config["package-dir"].items()}
    out = set()
    for name, root in roots.items():
        assert root.is_dir(), f"pyproject maps {name} to {root}, which is not a directory"
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames[:] = [d for d in dirnames if d != "__pycache__"]
            here = Path(dirpath)
            rel = here.relative_to(root)
            dest = Path(*name.split("."), rel)
            if "__init__.py" in filenames:
                out |= {(dest / f).as_posix() for f in filenames if f.endswith(".py")}
            if name == "vlfactory.recipes":
                out |= {(dest / f).as_posix() for f in filenames if f.endswith(DATA_SUFFIXES)}
    return out


def modules_of(files: set[str]) -> set[str]:
    """Dotted module names of the .py paths in `files` (a package is its __init__)."""
    names = set()
    for f in files:
        if f.endswith(".py"):
            parts = f[:-3].split("/")
            names.add(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return names


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """The wheel `pip wheel .` builds from a clean copy of the tree (no build/ cache, and nothing
    written into the shared working tree)."""
    root = tmp_path_factory.mktemp("wheel")
    src = root / "src"
    shutil.copytree(REPO, src, ignore=NOT_SOURCE, symlinks=True)
    out = root / "dist"
    res = subprocess.run([sys.executable, "-m", "pip", "wheel", ".", "--no-deps", "-q", "-w", str(out)], cwd=src,
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stdout + res.stderr
    (whl,) = out.glob("vlfactory-*.whl")
    return whl


def test_every_package_module_and_recipe_file_is_in_the_wheel(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    expected = expected_files()
    packages = sorted(f.rsplit("/", 1)[0] for f in expected if f.endswith("/__init__.py"))
    assert "vlfactory/backends" in packages and "vlfactory/recipes/openvlthinker/iterate.yaml" in expected
    missing = sorted(expected - names)
    assert not missing, (f"the wheel lacks {missing}: list each package (directory with an __init__.py) in "
                         f"pyproject.toml's [tool.setuptools] packages")


# ---- slow: a clean venv with the wheel installed, run from outside the repository ----

def clean_env() -> dict[str, str]:
    """This process's environment minus whatever could point Python at the source tree or a lake."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "VLFACTORY_LAKE", "VLFACTORY_DATA_PATH")}
    env["PYTHONNOUSERSITE"] = "1"
    return env


@pytest.fixture(scope="module")
def venv(wheel, tmp_path_factory) -> Path:
    """A fresh venv (no system site-packages) with the wheel and its core dependencies installed."""
    root = tmp_path_factory.mktemp("venv") / "venv"
    # sys.executable is the project's venv; `-m venv` bases the new one on the base interpreter,
    # so nothing from the project's site-packages (its editable install included) is visible there.
    subprocess.run([sys.executable, "-m", "venv", str(root)], check=True, timeout=300, env=clean_env())
    # --no-compile: byte-compiling every dependency (sympy, pandas, pyarrow...) more than doubles the
    # install time; the few modules the test imports compile as they load.
    res = subprocess.run([str(root / "bin" / "python"), "-m", "pip", "install", "-q", "--no-compile",
                          "--disable-pip-version-check", str(wheel)],
                         capture_output=True, text=True, timeout=1800, env=clean_env())
    assert res.returncode == 0, res.stdout + res.stderr
    return root


def vpython(venv: Path, code: str, cwd: Path, *args: str) -> str:
    """Run `code` (with `args` in sys.argv[1:]) by the venv's interpreter in `cwd`, outside the
    repository; its stdout."""
    res = subprocess.run([str(venv / "bin" / "python"), "-c", code, *args], cwd=cwd, capture_output=True, text=True,
                         timeout=300, env=clean_env())
    assert res.returncode == 0, res.stdout + res.stderr
    return res.stdout


WALK = r"""
import importlib, importlib.util, json, pkgutil, sys, traceback
import vlfactory

failed = {}
def onerror(name):
    failed[name] = traceback.format_exc(limit=-3)
seen = ["vlfactory"]
for m in pkgutil.walk_packages(vlfactory.__path__, "vlfactory.", onerror=onerror):
    seen.append(m.name)
    try:
        importlib.import_module(m.name)
    except Exception:
        failed[m.name] = traceback.format_exc(limit=-3)
print(json.dumps({"file": vlfactory.__file__, "modules": seen, "failed": failed, "heavy": sorted(
    h for h in sys.argv[1:] if importlib.util.find_spec(h) is not None or h in sys.modules)}))
"""


@pytest.mark.slow
def test_the_installed_wheel_imports_everything_and_runs_the_stages(venv, tmp_path):
    work = tmp_path / "work"  # the working directory of every command: not the repo, so nothing imports from it
    work.mkdir()

    # (a) every module imports, from the venv, without the heavy extras
    res = subprocess.run([str(venv / "bin" / "python"), "-c", WALK, *HEAVY], cwd=work, capture_output=True,
                         text=True, timeout=600, env=clean_env())
    assert res.returncode == 0, res.stderr
    walk = json.loads(res.stdout)
    assert Path(walk["file"]).resolve().is_relative_to(venv.resolve()), walk["file"]
    assert walk["heavy"] == [], f"the clean venv has {walk['heavy']}: the import check would prove nothing"
    assert not walk["failed"], "modules that do not import without the extras:\n" + "\n".join(
        f"{name}:\n{tb}" for name, tb in walk["failed"].items())
    # the walk only finds what was installed: compare with the tree, so a package left out of the wheel fails here
    missing = sorted(modules_of(expected_files()) - set(walk["modules"]))
    assert not missing, f"modules in the tree but not in the installed package: {missing}"
    where = vpython(venv, "import vlfactory, sys; print(vlfactory.__file__)", work).strip()
    assert Path(where).resolve().is_relative_to(venv.resolve()) and not Path(where).resolve().is_relative_to(REPO)

    # (b) the shipped recipes and templates are inside the installed package, and load by name
    out = json.loads(vpython(venv, """
import json, pathlib, vlfactory.recipes
from vlfactory.prompts import load_template
from vlfactory.recipe import load_recipe
root = pathlib.Path(vlfactory.recipes.__file__).parent
print(json.dumps({"root": str(root), "files": sorted(p.relative_to(root).as_posix() for p in root.rglob("*")
                                                     if p.suffix in (".yaml", ".txt")),
                  "recipe": load_recipe("quickstart").name, "template": load_template("reason").hash}))
""", work))
    assert Path(out["root"]).resolve().is_relative_to(venv.resolve())
    shipped = {f.removeprefix("vlfactory/recipes/") for f in expected_files() if f.endswith((".yaml", ".txt"))}
    assert {"quickstart.yaml", "prompts/reason.txt", "openvlthinker/iterate.yaml"} <= shipped <= set(out["files"])
    assert out["recipe"] == "quickstart" and out["template"]

    # (c) the console script
    cli = str(venv / "bin" / "vlfactory")
    res = subprocess.run([cli, "--help"], cwd=work, capture_output=True, text=True, timeout=120, env=clean_env())
    assert res.returncode == 0 and "run" in res.stdout, res.stdout + res.stderr

    # (d) real stages: ingest, caption (the synthetic source's own captions), distil over HTTP, verify
    lake = tmp_path / "lake"
    recipe = work / "wheel.yaml"

    def recipe_text(url: str) -> str:
        return f"""
name: wheel
sources: [{{name: s, format: synthetic, n: 6, seed: 0}}]
distil:
  backend: openai
  model: reasoner
  base_url: {url}
  concurrency: 2
  timeout_s: 10
  max_retries: 0
  sampling: {{temperature: 0.7, max_tokens: 64, n: 2, seed: 1}}
"""

    def run(*args: str) -> subprocess.CompletedProcess:
        res = subprocess.run([cli, *args], cwd=work, capture_output=True, text=True, timeout=600, env=clean_env())
        assert res.returncode == 0, f"vlfactory {' '.join(args)} exited {res.returncode}:\n{res.stdout}{res.stderr}"
        return res

    # Ingest and caption first, to know the prompts distil must send: rendered by the installed package
    # from its own template and the captions it wrote.
    recipe.write_text(recipe_text("http://127.0.0.1:9/v1"))
    run("run", str(recipe), "--lake", str(lake), "--stage", "ingest", "--stage", "caption")
    planned = json.loads(vpython(venv, """
import json, sys
from vlfactory.prompts import load_template
from vlfactory.stores.lake import Lake
template = load_template("reason")
with Lake(sys.argv[1]) as lake:
    rows = lake.query("SELECT p.problem_id, p.question, p.choices, c.caption FROM problems p "
                      "JOIN captions c USING (problem_id) ORDER BY p.problem_id").fetchall()
print(json.dumps({r[0]: template.render(caption=r[3], question=r[1], choices=r[2]) for r in rows}))
""", work, str(lake)))
    assert len(planned) == 6

    with FaultServer() as server:  # answers each request with n echoes of its prompt
        recipe.write_text(recipe_text(server.url))
        run("run", str(recipe), "--lake", str(lake))  # every stage the recipe configures
    assert sorted(server.prompts()) == sorted(planned.values())
    assert all(h.behaviour == "ok" and h.body["n"] == 2 for h in server.hits)

    counts = json.loads(vpython(venv, """
import json, sys
from vlfactory.stores.lake import Lake
with Lake(sys.argv[1]) as lake:
    q = lambda sql: lake.query(sql).fetchall()
    print(json.dumps({"traces": q("SELECT problem_id, count(*) FROM traces GROUP BY ALL"),
                      "grades": q("SELECT count(*) FROM grades WHERE ref_table = 'traces'")[0][0]}))
""", work, str(lake)))
    # the lake, not the stage lines (whose wording may change): 2 samples of each problem, each graded
    assert dict(counts["traces"]) == {pid: 2 for pid in planned}
    assert counts["grades"] == 12

    # (e) the report, with its plots, from the core install alone (the SVG is written by vlfactory itself)
    run("report", "--lake", str(lake), "--out", str(work / "report.html"))
    assert (work / "report.html").read_text().count('<svg class="plot"') >= 3
