"""Publish: the dry-run folder loads with plain `datasets` byte-exact and its card names every config;
the upload reaches a stand-in for the Hub's HTTP API (tests/hub_stub.py) with the token only in the
Authorization header; a missing or rejected token is one line."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml

from hub_stub import HubStub
from test_reports import RECIPE, build_lake, vlf
from vlfactory.stores.lake import Lake

TOKEN = "hf_FakeTokenForTheStub0123456789abcdef"
TABLES = ("problems", "sft", "rl", "traces", "rejected")


@pytest.fixture(scope="module")
def small_lake(tmp_path_factory) -> Path:
    return build_lake(tmp_path_factory.mktemp("publish"))


def front_matter(card: str) -> dict:
    assert card.startswith("---\n")
    return yaml.safe_load(card.split("---\n")[1])


def test_dry_run_folder_loads_with_plain_datasets(small_lake, tmp_path):
    import datasets

    out = tmp_path / "set"
    args = ["publish", "iter2", "--repo", "org/vl-set", *(f"--table={t}" for t in TABLES), "--lake", small_lake]
    assert "dry run: nothing uploaded" in vlf(*args, "--dry-run", out).output
    card = (out / "README.md").read_text()
    meta = front_matter(card)
    assert [c["config_name"] for c in meta["configs"]] == list(TABLES)
    assert all(c["data_files"] == [{"split": "train", "path": f"{c['config_name']}/*.parquet"}]
               for c in meta["configs"])
    assert meta["license"] == ["cc-by-4.0", "mit"] and meta["size_categories"] == ["n<1K"]
    assert "visual-question-answering" in meta["task_categories"]
    with Lake(small_lake, read_only=True) as lake:
        snapshot = lake.resolve("iter2")
        counts = {t: lake.count(t, snapshot) for t in TABLES}
        columns = {t: lake.query(f"SELECT * FROM {t} LIMIT 0").columns for t in TABLES}
    for table in TABLES:
        ds = datasets.load_dataset("parquet", data_dir=str(out / table), split="train")
        assert len(ds) == counts[table] and set(columns[table]) <= set(ds.column_names)
        if "image_id" in columns[table]:
            assert isinstance(ds.features["image"], datasets.Image) and ds[0]["image"].size[0] > 0
            for row in ds.cast_column("image", datasets.Image(decode=False)):
                assert hashlib.sha256(row["image"]["bytes"]).hexdigest() == row["image_id"]
    (recipe,) = (out / "recipes").iterdir()
    assert recipe.read_text() == RECIPE and recipe.stem in card  # the recipe, by name and hash
    for text in ("## Funnel", "## Rejection reasons", "bad_image", "## Length statistics", "Think. {question}",
                 "max_words: 300", "band:", f"snapshot {snapshot}", "CC-BY-4.0", "`reasoner`", "0.95",
                 'load_dataset("org/vl-set", "sft", split="train")', "vlfactory publish iter2 --repo org/vl-set"):
        assert text in card, text
    again = vlf(*args, "--dry-run", out, ok=False)
    assert again.exit_code == 2 and "not empty" in again.output
    empty = vlf("publish", "iter2", "--repo", "org/x", "--table", "trainings", "--dry-run", tmp_path / "e",
                "--lake", small_lake, ok=False)
    assert empty.exit_code == 2 and "no rows" in empty.output
    assert "ORG/NAME" in vlf("publish", "iter2", "--repo", "nope", "--table", "sft", "--dry-run", tmp_path / "f",
                             "--lake", small_lake, ok=False).output


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
        assert [c["config_name"] for c in front_matter(hub.files["README.md"].decode())["configs"]] == ["sft", "rl"]
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
                assert pq.read_table(arrived).sort_by("problem_id") == pq.read_table(local).sort_by("problem_id")
        paths = {(c.method, c.path) for c in hub.calls}
        assert {("GET", "/api/whoami-v2"), ("POST", "/api/repos/create"),
                ("POST", "/datasets/org/vl-set.git/info/lfs/objects/batch")} <= paths
        public = [c for c in hub.calls if c.path.startswith("/lfs/") or c.path == "/api/agent-harnesses"]
        assert public and all(c.authorization is None for c in public)  # the token goes only where it is needed
        assert all(c.authorization == f"Bearer {TOKEN}" for c in hub.calls if c not in public)
        # a later publish of fewer tables leaves no stale shards behind
        assert publish(small_lake, home, "--table", "sft", **env).returncode == 0
        assert {p.split("/")[0] for p in hub.files if p.endswith(".parquet")} == {"sft"}
        assert any(op["key"] == "deletedFile" for op in hub.commits[-1])
    # the token is in no file and no output
    for out in (done.stdout, done.stderr):
        assert TOKEN not in out
    for content in hub.files.values():
        assert TOKEN.encode() not in content
    for root in (tmp_path, small_lake):
        for path in root.rglob("*"):
            assert not path.is_file() or TOKEN.encode() not in path.read_bytes(), path


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
