"""Publish: the dry-run folder is what `push_to_hub` writes (config/split shard names, shards by size,
`dataset_info` and `configs` in the card) and `datasets.load_dataset` of it gives the version's rows per split,
images included; the card says what was published, with sample rows, models by identity and runnable
reproduce commands; the upload reaches a stand-in for the Hub's HTTP API (tests/support/hub_stub.py) on a branch,
as a pull request, with a commit message, the token only in the Authorization header; a missing or rejected
token is one line."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

import test_reports
from hub_stub import HubStub
from test_reports import build_lake, vlf
from vlfactory.stores import schema
from vlfactory.stores.lake import Lake

TOKEN = "hf_FakeTokenForTheStub0123456789abcdef"
TABLES = ("problems", "sft", "rl", "traces", "rejected")
RECIPE = test_reports.RECIPE.replace("seed: 2, license: MIT", "seed: 2, split: test, license: MIT")  # a test split
SHARD = 20_000  # --max-shard-size 20KB: several shards per split of the tables with images


@pytest.fixture(scope="module")
def small_lake(tmp_path_factory) -> Path:
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(test_reports, "RECIPE", RECIPE)
        return build_lake(tmp_path_factory.mktemp("publish"))


def front_matter(card: str) -> dict:
    assert card.startswith("---\n")
    return yaml.safe_load(card.split("---\n")[1])


def split_rows(lake_dir: Path, table: str) -> dict[str, list[dict]]:
    """The table's rows at iter2 with images, by the split of the problem each row is about (else train)."""
    import vlfactory

    rows = vlfactory.table(f"{table}@iter2", lake=lake_dir).to_pylist()
    with Lake(lake_dir, read_only=True) as lake:
        of = dict(lake.query("SELECT problem_id, split FROM problems@iter2").fetchall())
    out: dict[str, list[dict]] = {}
    for r in rows:
        out.setdefault(of.get(r.get("problem_id"), "train"), []).append(r)
    return out


def test_dry_run_folder_is_what_push_to_hub_writes_and_loads_back(small_lake, tmp_path):
    import datasets

    out = tmp_path / "set"
    args = ["publish", "iter2", "--repo", "org/vl-set", *(f"--table={t}" for t in TABLES), "--lake", small_lake,
            "--max-shard-size", "20KB"]
    assert "dry run: nothing uploaded" in vlf(*args, "--dry-run", out).output
    card = (out / "README.md").read_text()
    meta = front_matter(card)
    expected = {t: split_rows(small_lake, t) for t in TABLES}
    assert set(expected["problems"]) == {"train", "test"} and set(expected["rejected"]) == {"train"}
    configs = {c["config_name"]: c for c in meta["configs"]}
    infos = {i["config_name"]: i for i in meta["dataset_info"]}
    assert set(configs) == set(infos) == set(TABLES) and configs["problems"].get("default") is True
    for table in TABLES:
        splits = [s for s in ("train", "test") if s in expected[table]]
        assert configs[table]["data_files"] == [{"split": s, "path": f"{table}/{s}-*"} for s in splits]
        info = infos[table]
        assert [(s["name"], s["num_examples"]) for s in info["splits"]] == [(s, len(expected[table][s])) for s in splits]
        files = sorted((out / table).iterdir())
        assert info["download_size"] == sum(f.stat().st_size for f in files) > 0
        assert info["dataset_size"] == sum(s["num_bytes"] for s in info["splits"]) > 0
        for split in splits:  # SPLIT-0000i-of-0000N, i = 0..N-1, each shard at most 20KB of Arrow data or one row
            shards = [f for f in files if f.name.startswith(f"{split}-")]
            names = [re.fullmatch(rf"{split}-(\d{{5}})-of-(\d{{5}})\.parquet", f.name) for f in shards]
            assert all(names) and [(int(m[1]), int(m[2])) for m in names] == [(i, len(shards)) for i in range(len(shards))]
            data = [pq.read_table(f) for f in shards]
            assert all(t.num_rows == 1 or t.nbytes <= SHARD for t in data)
            assert sum(t.num_rows for t in data) == len(expected[table][split])
            if table == "sft":
                assert len(shards) > 1  # cut by size, not by rows
        # the folder as the Hub serves it (the card's configs), through a cache of this test's own: with the
        # shared cache, load_dataset returned an earlier run's rows (another run_id) for a same-shaped folder
        ds = datasets.load_dataset(str(out), table, cache_dir=str(tmp_path / "hf-cache"))
        assert set(ds) == set(splits)
        features = datasets.Features._from_yaml_list(info["features"])
        for split in splits:
            assert ds[split].features == features
            if "image" in features:
                assert isinstance(features["image"], datasets.Image) and ds[split][0]["image"].size[0] > 0
            got = ds[split].cast_column("image", datasets.Image(decode=False)) if "image" in features else ds[split]
            assert got.to_list() == expected[table][split]  # content and order, image bytes included
    (recipe,) = (out / "recipes").iterdir()
    assert recipe.read_text() == RECIPE and recipe.stem in card  # the recipe, by name and hash
    with Lake(small_lake, read_only=True) as lake:
        snapshot = lake.resolve("iter2")
    for text in ("## Funnel", "## Rejection reasons", "bad_image", "## Length statistics", "Think. {question}",
                 "max_words: 300", "band:", f"snapshot {snapshot}", "CC-BY-4.0", "`reasoner`", "0.95",
                 "and the completions written for them (distil: `reasoner`; rollout: `policy-1`, `policy-2`)", "## Sample rows", "What time does the clock show?",
                 'load_dataset("org/vl-set", "sft")  # sft["train"], sft["test"]',
                 "hf download org/vl-set --repo-type dataset --include 'recipes/*'",
                 f"vlfactory iterate recipes/{recipe.name}\n", f"vlfactory run recipes/{recipe.name} --stage ingest",
                 "vlfactory publish iter2 --repo org/vl-set --table problems --table sft"):
        assert text in card, text
    assert str(tmp_path.parent) not in card and str(small_lake) not in card  # no local path
    again = vlf(*args, "--dry-run", out, ok=False)
    assert again.exit_code == 2 and "not empty" in again.output
    empty = vlf("publish", "iter2", "--repo", "org/x", "--table", "trainings", "--dry-run", tmp_path / "e",
                "--lake", small_lake, ok=False)
    assert empty.exit_code == 2 and "no rows" in empty.output
    assert "ORG/NAME" in vlf("publish", "iter2", "--repo", "nope", "--table", "sft", "--dry-run", tmp_path / "f",
                             "--lake", small_lake, ok=False).output
    size = vlf("publish", "iter2", "--repo", "org/x", "--table", "sft", "--dry-run", tmp_path / "g",
               "--max-shard-size", "lots", "--lake", small_lake, ok=False)
    assert size.exit_code == 2 and "--max-shard-size 'lots'" in size.output and not (tmp_path / "g").exists()


def test_card_says_rules_wrote_the_chains_when_they_did(cli, lake_dir, tmp_path):
    """The quickstart's teacher is rules, not a model: the card names it by identity and says what its chains are."""
    from vlfactory.models import identity

    recipe = tmp_path / "rules.yaml"
    recipe.write_text("name: rules-card\nsources:\n  - {name: syn, format: synthetic, kinds: [shapes], n: 4, seed: 0}\n"
                      "distil: {backend: rules, model: caption-reasoner, sampling: {temperature: 0.0, max_tokens: 96}}\n")
    cli("run", recipe)
    cli("publish", "latest", "--repo", "org/rules", "--table", "traces", "--dry-run", tmp_path / "out")
    card = " ".join((tmp_path / "out" / "README.md").read_text().split())
    rules = identity("caption-reasoner")
    assert f"and the completions written for them (distil: `{rules}` (caption-reasoner))" in card
    assert f"`{rules}` is not a model but rules (vlfactory.backends.rules)" in card


def test_card_says_what_was_published_and_names_models_by_identity(small_lake, tmp_path):
    import vlfactory

    folder = "/home/someone/models/reasoner-7b"  # where a model was read from: never in a card
    with Lake(small_lake) as lake, lake.transaction("models the stages used"):
        lake.insert("models", pa.Table.from_pylist([
            {"model_key": "k1", "model_id": "reasoner", "name": folder, "kind": "folder"},
            {"model_key": "k2", "model_id": "captioner", "name": "Qwen/Qwen2.5-VL-3B-Instruct", "kind": "hub"}],
            schema=schema.MODELS))
    out = tmp_path / "problems-only"
    vlf("publish", "latest", "--repo", "org/problems", "--table", "problems", "--dry-run", out, "--lake", small_lake)
    card = (out / "README.md").read_text()
    assert "without reasoning traces" in card and "wrote for them" not in card
    assert "No config here holds text a model wrote" in card
    assert "`captioner` (Qwen/Qwen2.5-VL-3B-Instruct)" in card and "`reasoner` (a local folder)" in card
    assert folder not in card
    assert "#   distil: reasoner (a local folder)" in card  # the reproduce block names the models too
    # the default shard size: one shard per split, the whole split
    assert sorted(p.name for p in (out / "problems").iterdir()) == ["test-00000-of-00001.parquet",
                                                                    "train-00000-of-00001.parquet"]
    assert len(pq.read_table(out / "problems" / "train-00000-of-00001.parquet")) == \
        vlfactory.table("problems", lake=small_lake).column("split").to_pylist().count("train")


def publish(lake: Path, home: Path, *args: str, **env: str) -> subprocess.CompletedProcess:
    """`vlfactory publish` in a fresh process: huggingface_hub reads HF_ENDPOINT when imported."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGING"))}
    return subprocess.run([sys.executable, "-m", "vlfactory.cli", "publish", "iter2", "--repo", "org/vl-set", *args,
                           "--lake", str(lake)], capture_output=True, text=True, timeout=600,
                          env=clean | {"HF_HOME": str(home), "HF_HUB_DISABLE_XET": "1", **env})


def test_upload_reaches_the_hub_api_with_the_token_only_in_headers(small_lake, tmp_path):
    home = tmp_path / "hf-home"  # an empty login cache
    with HubStub(TOKEN) as hub:
        env = {"HF_ENDPOINT": hub.url, "HF_TOKEN": TOKEN}
        done = publish(small_lake, home, "--table", "sft", "--table", "rl", "--private", **env)
        assert done.returncode == 0, done.stderr
        assert f"uploaded to {hub.url}/datasets/org/vl-set" in done.stdout
        assert hub.repos["org/vl-set"]["type"] == "dataset" and hub.repos["org/vl-set"]["visibility"] == "private"
        assert {"README.md", "recipes"} <= {p.split("/")[0] for p in hub.files}
        assert {p.split("/")[0] for p in hub.files if p.endswith(".parquet")} == {"sft", "rl"}
        configs = front_matter(hub.files["README.md"].decode())["configs"]  # by name, as datasets sorts them
        assert [(c["config_name"], c.get("default")) for c in configs] == [("rl", None), ("sft", True)]
        # what arrived is what a dry run writes
        vlf("publish", "iter2", "--repo", "org/vl-set", "--table", "sft", "--table", "rl", "--dry-run",
            tmp_path / "dry", "--lake", small_lake)
        dry = {p.relative_to(tmp_path / "dry").as_posix(): p for p in (tmp_path / "dry").rglob("*") if p.is_file()}
        assert set(dry) == set(hub.files)
        assert hub.files["README.md"] == dry["README.md"].read_bytes()
        for path, local in dry.items():
            if path.endswith(".parquet"):
                arrived = tmp_path / "arrived.parquet"
                arrived.write_bytes(hub.files[path])
                assert pq.read_table(arrived) == pq.read_table(local)
        paths = {(c.method, c.path) for c in hub.calls}
        assert {("GET", "/api/whoami-v2"), ("POST", "/api/repos/create"),
                ("POST", "/datasets/org/vl-set.git/info/lfs/objects/batch")} <= paths
        public = [c for c in hub.calls if c.path.startswith("/lfs/") or c.path == "/api/agent-harnesses"]
        assert public and all(c.authorization is None for c in public)  # the token goes only where it is needed
        assert all(c.authorization == f"Bearer {TOKEN}" for c in hub.calls if c not in public)
        # a later publish of fewer tables would leave rl out of its card: refused, unless --replace drops it
        commits = len(hub.commits)
        fewer = publish(small_lake, home, "--table", "sft", **env)
        assert fewer.returncode == 2 and "--replace" in fewer.stderr and len(hub.commits) == commits, fewer.stderr
        assert publish(small_lake, home, "--table", "sft", "--replace", **env).returncode == 0
        assert {p.split("/")[0] for p in hub.files if p.endswith(".parquet")} == {"sft"}
        assert any(op["key"] == "deletedFile" for op in hub.commits[-1].ops)
    # the token is in no file and no output
    for out in (done.stdout, done.stderr):
        assert TOKEN not in out
    for content in hub.files.values():
        assert TOKEN.encode() not in content
    for root in (tmp_path, small_lake):
        for path in root.rglob("*"):
            assert not path.is_file() or TOKEN.encode() not in path.read_bytes(), path


def test_revision_pull_request_and_commit_message_reach_the_hub(small_lake, tmp_path):
    home = tmp_path / "hf-home"
    with HubStub(TOKEN) as hub:
        env = {"HF_ENDPOINT": hub.url, "HF_TOKEN": TOKEN}
        first = publish(small_lake, home, "--table", "sft", "--commit-message", "sft of iter2, first cut", **env)
        assert first.returncode == 0, first.stderr
        assert (hub.commits[-1].revision, hub.commits[-1].summary) == ("main", "sft of iter2, first cut")
        main = dict(hub.files)
        assert {p for p in main if p.endswith(".parquet")} == {"sft/train-00000-of-00001.parquet",
                                                               "sft/test-00000-of-00001.parquet"}
        branch = publish(small_lake, home, "--table", "rl", "--revision", "dev", "--replace", **env)
        assert branch.returncode == 0, branch.stderr
        assert ("POST", "/api/datasets/org/vl-set/branch/dev") in {(c.method, c.path) for c in hub.calls}
        assert hub.files == main  # main untouched
        assert {p.split("/")[0] for p in hub.refs["dev"] if p.endswith(".parquet")} == {"rl"}  # stale sft gone
        assert hub.commits[-1].revision == "dev" and hub.commits[-1].summary.startswith("vlfactory publish iter2")
        pr = publish(small_lake, home, "--table", "problems", "--create-pr", "--replace", **env)
        assert pr.returncode == 0, pr.stderr
        assert f"opened pull request {hub.url}/datasets/org/vl-set/discussions/1" in pr.stdout
        assert hub.commits[-1].create_pr and hub.commits[-1].revision == "refs/pr/1" and hub.files == main
        assert front_matter(hub.refs["refs/pr/1"]["README.md"].decode())["configs"][0]["config_name"] == "problems"
        again = publish(small_lake, home, "--table", "problems", "--revision", "refs/pr/1", "--commit-message",
                        "update the PR", **env)  # a later push onto the open pull request
        assert again.returncode == 0, again.stderr
        assert (hub.commits[-1].revision, hub.commits[-1].summary) == ("refs/pr/1", "update the PR")
        assert not any("/branch/refs" in c.path for c in hub.calls)  # a PR ref is not a branch to create
        both = publish(small_lake, home, "--table", "sft", "--create-pr", "--revision", "dev", **env)
    assert both.returncode == 2 and both.stderr.strip().splitlines() == [
        "error: --create-pr opens a pull request against main: drop --revision dev"]


def test_missing_or_rejected_token_is_one_line(small_lake, tmp_path):
    with HubStub(TOKEN) as hub:
        missing = publish(small_lake, tmp_path / "empty-home", "--table", "sft", HF_ENDPOINT=hub.url)
        assert hub.calls == []  # nothing sent without a token
        wrong = "hf_NotTheRightToken42"
        rejected = publish(small_lake, tmp_path / "empty-home", "--table", "sft", HF_ENDPOINT=hub.url,
                           HF_TOKEN=wrong)
        assert "/api/whoami-v2" in [c.path for c in hub.calls] and not hub.repos and not hub.files
    assert missing.returncode == 2 and missing.stdout == ""
    assert missing.stderr.strip().splitlines() == [
        "error: no Hugging Face token: set HF_TOKEN or run `hf auth login` (the token needs write access)"]
    assert rejected.returncode == 2 and rejected.stdout == ""
    (line,) = rejected.stderr.strip().splitlines()
    assert line.startswith("error: the Hub rejected the Hugging Face token (401 Unauthorized)") and wrong not in line


def test_publish_keeps_what_it_did_not_write_and_asks_before_dropping_a_config(small_lake, tmp_path):
    """Issue 18 item 18: publish deleted every Parquet file of the repo and rewrote its configs; the README's own
    `publish iter2 --table sft` would have dropped a published rl config. It now deletes only what a publish
    wrote (its manifest) and the stale shards of the splits it publishes, and refuses to drop a config unless
    --replace."""
    home = tmp_path / "hf-home"
    with HubStub(TOKEN) as hub:
        env = {"HF_ENDPOINT": hub.url, "HF_TOKEN": TOKEN}
        assert publish(small_lake, home, "--table", "sft", "--table", "rl", **env).returncode == 0
        manifest = json.loads(hub.files[".vlfactory-manifest.json"])
        assert set(manifest["files"]) == set(hub.files) - {".vlfactory-manifest.json"}
        # someone else's files in the repo: a note, a licence, a file in sft's folder, a stale shard of a split
        hub.refs["main"] |= {"LICENSE": b"mine", "sft/notes.txt": b"mine",
                             "sft/train-00007-of-00009.parquet": b"an old shard that would join the split"}
        res = publish(small_lake, home, "--table", "sft", **env)
        assert res.returncode == 2 and "rl" in res.stderr and len(res.stderr.strip().splitlines()) == 1, res.stderr
        again = publish(small_lake, home, "--table", "sft", "--table", "rl", **env)  # the same configs: fine
        assert again.returncode == 0, again.stderr
        deleted = {op["value"]["path"] for op in hub.commits[-1].ops if op["key"] == "deletedFile"}
        assert deleted == {"sft/train-00007-of-00009.parquet"}
        assert hub.files["LICENSE"] == hub.files["sft/notes.txt"] == b"mine"
        hub.refs["main"]["extra/data.parquet"] = b"someone's config"
        dropped = publish(small_lake, home, "--table", "sft", "--replace", **env)
        assert dropped.returncode == 0, dropped.stderr
        assert not [p for p in hub.files if p.startswith("rl/")]  # a publish wrote those: dropped
        assert hub.files["extra/data.parquet"] == b"someone's config" and hub.files["LICENSE"] == b"mine"


def test_published_recipe_copies_leave_the_lake_out(tmp_path):
    from vlfactory.hub.publish import without_lake

    text = "name: x\nlake:\n  catalog: ducklake:sqlite:/tmp/x' ; evil\n  data_path: /tmp/d\nsources: []\n"
    assert without_lake(text) == ("name: x\n# lake: left out by vlfactory publish (rebuild with --lake, or "
                                  "$VLFACTORY_LAKE)\nsources: []\n")
    assert without_lake("lake: ./lake\nname: y\n").endswith("name: y\n") and "./lake" not in without_lake(
        "lake: ./lake\nname: y\n")


def test_an_sft_set_with_rows_that_are_not_well_formed_is_not_published(small_lake, tmp_path):
    """Issue 18 item 19: the quickstart's sft@iter2 held 41 of 563 rows without </think> or <answer> (its verify
    ran with require_format: false), one of them the card's first sample."""
    import shutil

    lake = tmp_path / "lake"
    shutil.copytree(small_lake, lake)
    with Lake(lake) as lk:
        n = lk.count("sft")
        with lk.transaction("an sft row without its tags"):
            lk.con.execute("UPDATE lake.sft SET completion = 'The answer is 4.' WHERE example_id = "
                           "(SELECT min(example_id) FROM lake.sft)")
        lk.tag("broken")
    res = vlf("publish", "broken", "--repo", "org/x", "--table", "sft", "--dry-run", tmp_path / "out", "--lake", lake,
              ok=False)
    assert res.exit_code == 2 and f"1 of {n} rows" in res.output and "require_format: true" in res.output
    assert len(res.output.strip().splitlines()) == 1 and not (tmp_path / "out").exists()
    vlf("publish", "broken", "--repo", "org/x", "--table", "rl", "--dry-run", tmp_path / "rl", "--lake", lake)
    vlf("publish", "iter2", "--repo", "org/x", "--table", "sft", "--dry-run", tmp_path / "ok", "--lake", lake)


def test_the_cards_reproduce_block_runs_as_written_on_a_fresh_lake(tmp_path):
    """Issue 18 item 17: the block is run by bash as a reader would paste it, against the stand-in Hub: it downloads
    the recipe copies, rebuilds the version in a new lake, tags and publishes it."""
    recipe = tmp_path / "made.yaml"
    recipe.write_text("name: made\nlake: /somewhere/else\n"
                      "sources:\n  - {name: syn, format: synthetic, n: 6, seed: 3}\n")
    lake = tmp_path / "lake"
    vlf("ingest", recipe, "--lake", lake)
    vlf("tag", "v1", "--lake", lake)
    home = tmp_path / "hf-home"
    with HubStub(TOKEN) as hub:
        env = {"HF_ENDPOINT": hub.url, "HF_TOKEN": TOKEN}
        done = subprocess.run([sys.executable, "-m", "vlfactory.cli", "publish", "v1", "--repo", "org/made", "--table",
                               "problems", "--lake", str(lake)], capture_output=True, text=True, timeout=600,
                              env=os.environ | {"HF_HOME": str(home), "HF_HUB_DISABLE_XET": "1", **env})
        assert done.returncode == 0, done.stderr
        card = hub.files["README.md"].decode()
        block = card.split("## Reproduce it")[1].split("```bash\n")[1].split("\n```")[0]
        assert "vlfactory run recipes/made-" in block and "/somewhere/else" not in hub.files[
            next(p for p in hub.files if p.startswith("recipes/"))].decode()
        work = tmp_path / "reader"
        work.mkdir()
        fresh = tmp_path / "fresh-lake"
        clean = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGING", "VLFACTORY_"))}
        bindir = str(Path(sys.executable).parent)
        ran = subprocess.run(["bash", "-e", "-c", block], cwd=work, capture_output=True, text=True, timeout=600,
                             env=clean | {"PATH": f"{bindir}:{clean['PATH']}", "HF_HOME": str(tmp_path / "reader-hf"),
                                          "HF_HUB_DISABLE_XET": "1", "VLFACTORY_LAKE": str(fresh), **env})
        assert ran.returncode == 0, ran.stdout + ran.stderr
        assert len(hub.commits) == 2 and hub.commits[-1].summary.startswith("vlfactory publish v1")
    with Lake(lake, read_only=True) as a, Lake(fresh, read_only=True) as b:
        rows = "SELECT problem_id, question, answer, image_id FROM problems@v1 ORDER BY 1"
        assert a.query(rows).fetchall() == b.query(rows).fetchall() and b.count("problems") == 6
