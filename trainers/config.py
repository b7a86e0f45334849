"""Trainer settings: a YAML mapping of TRL config fields, parsed into a stock SFTConfig or GRPOConfig.

The file is flat: every key is a field of TRL's config class (and of
transformers' TrainingArguments beneath it), so TRL's documentation is its
reference, plus a few keys TRL's configs lack (`EXTRA_KEYS`):

- `min_pixels`, `max_pixels`: the image resolution, for the processor;
- `freeze_vision_tower`, `freeze_multi_modal_projector`: parameters left out of
  training (OpenVLThinker's SFT freezes both, its medium GRPO stage the whole
  vision side);
- `global_batch_size`: examples (SFT) or completions (GRPO) per optimizer step
  whatever the number of processes: gradient accumulation is derived from it,
  per_device_train_batch_size x processes x accumulation = global_batch_size;
- `reward` (GRPO): `vlfactory` (the factory's verifier plus the format
  reward, weighted by reward_weights) or `openvlthinker` (the official r1v.py
  reward).

An unknown key fails with one line naming it; `output_dir` comes from
`--output`, not from the file.

    # recipes/openvlthinker/sft.yaml (an example)
    learning_rate: 5.0e-7
    lr_scheduler_type: cosine
    warmup_steps: 0.1            # a fraction of the steps
    per_device_train_batch_size: 4
    gradient_accumulation_steps: 1
    num_train_epochs: 1
    bf16: true
    model_init_kwargs: {dtype: bfloat16}
    max_pixels: 262144           # the processor's: images are resized to at most this many pixels

    from vlfactory.trainers.config import load_config
    args, extras = load_config("sft", "recipes/openvlthinker/sft.yaml", "runs/sft-iter1")

Without a file, `TINY` applies: a few quick steps of a tiny model on a CPU.
On a machine without a GPU a file must say `use_cpu: true` (TRL defaults to bf16).
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import re
from collections.abc import Mapping
from pathlib import Path

import yaml

from vlfactory.recipe import RecipeError
from vlfactory.redact import find_secret

# Used when no trainers YAML is given: tiny models, a few steps, any machine.
TINY = {
    "sft": {"per_device_train_batch_size": 2, "num_train_epochs": 1, "learning_rate": 1e-4, "logging_steps": 1,
            "bf16": False, "gradient_checkpointing": False, "save_strategy": "no", "report_to": "none"},
    "grpo": {"per_device_train_batch_size": 4, "num_generations": 4, "max_completion_length": 32,
             "num_train_epochs": 1, "learning_rate": 1e-5, "logging_steps": 1, "bf16": False,
             "gradient_checkpointing": False, "save_strategy": "no", "report_to": "none",
             # TRL's vLLM integration needs a GPU build of vLLM: set use_vllm: true (and vllm_mode) in a recipe.
             "use_vllm": False},
}

PROCESSOR_KEYS = ("min_pixels", "max_pixels")  # AutoProcessor.from_pretrained kwargs (Qwen2-VL image processors)
EXTRA_KEYS = PROCESSOR_KEYS + ("freeze_vision_tower", "freeze_multi_modal_projector", "global_batch_size", "reward")
REWARDS = ("vlfactory", "openvlthinker")


# YAML 1.2 reads `5e-7` as a number; PyYAML (YAML 1.1, also behind recipes' inline configs) reads a string.
_EXPONENT = re.compile(r"^[-+]?(?:\d[\d_]*(?:\.[\d_]*)?|\.\d[\d_]*)[eE][-+]?\d+$")


def settings_digest(args, extras: Mapping) -> str:
    """A digest of the resolved settings (every TRL config value, defaults included, and the extra keys),
    not of the file that named them: editing a trainers YAML changes it, moving the file does not; nor
    does the number of processes, when the file gives a global batch size."""
    import hashlib
    import json

    values = json.loads(args.to_json_string())
    values.pop("output_dir", None)  # where, not what
    if "global_batch_size" in extras:  # the accumulation it implies depends on the processes
        values.pop("gradient_accumulation_steps", None)
    text = json.dumps([type(args).__name__, values, dict(extras)], sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def config_class(kind: str):
    from trl import GRPOConfig, SFTConfig

    return {"sft": SFTConfig, "grpo": GRPOConfig}[kind]


def load_config(kind: str, source: str | Path | Mapping | None, output_dir: str | Path,
                processes: int | None = None) -> tuple:
    """(SFTConfig or GRPOConfig, the extra keys) from a YAML file, a mapping, or None (TINY). With
    `global_batch_size`, gradient accumulation follows from `processes` (default: $WORLD_SIZE, else 1).

    >>> args, extras = load_config("sft", {"learning_rate": "5e-7", "bf16": False, "max_pixels": 262144}, "out")
    >>> args.learning_rate, extras
    (5e-07, {'max_pixels': 262144})
    >>> args, _ = load_config("sft", {"global_batch_size": 32, "per_device_train_batch_size": 2, "bf16": False},
    ...                       "out", processes=8)
    >>> args.gradient_accumulation_steps
    2
    """
    cls = config_class(kind)
    where = str(source) if isinstance(source, (str, Path)) else f"{kind} config"
    if source is None:
        values = TINY[kind]
    elif isinstance(source, Mapping):
        values = source
    else:
        try:
            values = yaml.safe_load(Path(source).read_text()) or {}
        except (OSError, yaml.YAMLError) as e:
            raise RecipeError(f"{where}: {str(e).splitlines()[0]}") from None
        if not isinstance(values, Mapping):
            raise RecipeError(f"{where}: expected a mapping of {cls.__name__} fields")
    try:
        secret = find_secret(dict(values))
    except ValueError as e:
        raise RecipeError(f"{where}: {e}") from None
    if secret:  # the resolved settings are stored with the training and the file may be published
        raise RecipeError(f"{where}: {secret}: secrets do not belong in trainer settings; the Hub token comes "
                          "from HF_TOKEN or `hf auth login`")
    known = {f.name for f in dataclasses.fields(cls) if f.init} | set(EXTRA_KEYS)
    for key in values:
        if key == "output_dir":
            raise RecipeError(f"{where}: output_dir is set by --output; remove it from the file")
        if key not in known:
            close = difflib.get_close_matches(str(key), known, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise RecipeError(f"{where}: unknown {cls.__name__} field {key!r}{hint}")
    values = {k: float(v) if isinstance(v, str) and _EXPONENT.match(v) else v for k, v in values.items()}
    extras = {k: v for k, v in values.items() if k in EXTRA_KEYS}
    fields = {k: v for k, v in values.items() if k not in extras}
    if extras.get("reward", "vlfactory") not in REWARDS or ("reward" in extras and kind != "grpo"):
        raise RecipeError(f"{where}: reward: {extras['reward']!r}; a GRPO file may say {' or '.join(REWARDS)}")
    if "global_batch_size" in extras:
        if "gradient_accumulation_steps" in fields:
            raise RecipeError(f"{where}: give global_batch_size or gradient_accumulation_steps, not both")
        per_device = fields.get("per_device_train_batch_size", cls.per_device_train_batch_size)
        processes = processes or int(os.environ.get("WORLD_SIZE", "1"))
        steps, rest = divmod(int(extras["global_batch_size"]), per_device * processes)
        if rest or steps < 1:
            raise RecipeError(f"{where}: global_batch_size {extras['global_batch_size']} is not a multiple of "
                              f"per_device_train_batch_size {per_device} x {processes} processes")
        fields["gradient_accumulation_steps"] = steps
    try:
        return cls(output_dir=str(output_dir), **fields), extras
    except (TypeError, ValueError) as e:
        raise RecipeError(f"{where}: {str(e).strip().splitlines()[0]}") from None
