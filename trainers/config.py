"""Trainer settings: a YAML mapping of TRL config fields, parsed by TRL's own TrlParser into a stock SFTConfig or GRPOConfig.

The file is flat: every key is a field of TRL's config class (and of
transformers' TrainingArguments beneath it), so TRL's documentation is its
reference, plus a few keys TRL's configs lack (`FactoryArguments`):

- `min_pixels`, `max_pixels`: the trainer resizes every image itself into
  [min_pixels, max_pixels] pixels before the processor sees it, as the official
  trainers do (EasyR1's `process_image`, GRPO: min = max, every image scaled
  up or down to that area; LLaMA-Factory's `_preprocess_image`, SFT: only
  images over `image_max_pixels` shrink). The processor keeps the base model's
  settings, so the saved checkpoint carries the base processor (evaluations
  and the next round's data run at native resolution) while the trainer's
  processor and a colocated vLLM see the same pre-resized images, hence the
  same image grid (vlfactory.trainers.data.resize_image);
- `freeze_vision_tower`, `freeze_multi_modal_projector`: parameters left out of
  training (OpenVLThinker's SFT freezes both, its medium GRPO stage the whole
  vision side);
- `global_batch_size`: examples (SFT) or completions (GRPO) per optimizer step
  whatever the number of processes: gradient accumulation is derived from it,
  per_device_train_batch_size x processes x accumulation = global_batch_size;
- `reward` (GRPO): `vlfactory` (the factory's verifier plus the format
  reward, weighted by reward_weights) or `openvlthinker` (the official r1v.py
  reward);
- `source_weights` (GRPO): how many times each problem of a source is in the
  training data, e.g. {geometry3k: 2} (default 1; 0 leaves a source out): a
  larger share of the GRPO updates for some sources (the loop's `rl_weights`).

An unknown key fails with one line naming it; `output_dir` comes from
`--output`, not from the file. Command-line flags (`--learning_rate 1e-5`)
override the file's values, as with any TRL script.

    # recipes/openvlthinker/sft.yaml (an example)
    learning_rate: 5.0e-7
    lr_scheduler_type: cosine
    warmup_steps: 0.1            # a fraction of the steps
    per_device_train_batch_size: 4
    gradient_accumulation_steps: 1
    num_train_epochs: 1
    bf16: true
    model_init_kwargs: {dtype: bfloat16}
    max_pixels: 262144           # images over this many pixels are shrunk to it (the processor is the base model's)

    from vlfactory.trainers.config import load_config
    args, extras = load_config("sft", "recipes/openvlthinker/sft.yaml", "runs/sft-iter1")

Without a file, `TINY` applies: a few quick steps of a tiny model on a CPU.
On a machine without a GPU a file must say `use_cpu: true` (TRL defaults to bf16).
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
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

REWARDS = ("vlfactory", "openvlthinker")


@dataclass
class FactoryArguments:
    """The keys a trainers YAML may hold beyond TRL's config fields (see the module docstring)."""

    min_pixels: int | None = field(default=None, metadata={"help": "images under this many pixels are scaled up "
                                                                   "to it by the trainer (EasyR1's min_pixels)"})
    max_pixels: int | None = field(default=None, metadata={"help": "images over this many pixels are scaled down "
                                                                   "to it by the trainer (EasyR1's max_pixels, "
                                                                   "LLaMA-Factory's image_max_pixels)"})
    freeze_vision_tower: bool = field(default=False, metadata={"help": "keep the vision tower out of training"})
    freeze_multi_modal_projector: bool = field(default=False, metadata={"help": "keep the projector (merger) out"})
    global_batch_size: int | None = field(default=None, metadata={
        "help": "examples (SFT) or completions (GRPO) per optimizer step whatever the process count"})
    reward: str | None = field(default=None, metadata={"help": f"GRPO: {' or '.join(REWARDS)} (default vlfactory)"})
    source_weights: dict[str, int] | str | None = field(default=None, metadata={
        "help": "GRPO: copies of each problem of a source in the training data, JSON: {\"geometry3k\": 2}"})


FACTORY_KEYS = tuple(f.name for f in dataclasses.fields(FactoryArguments))


def settings_digest(args, extras: Mapping, processes: int = 1) -> str:
    """A digest of the resolved settings (every TRL config value, defaults included, and the extra keys),
    not of the file that named them: editing a trainers YAML changes it, moving the file does not; nor
    does the number of processes, when the file gives a global batch size (without one, the processes
    multiply the batch: more than one is part of the digest)."""
    import hashlib

    values = json.loads(args.to_json_string())
    values.pop("output_dir", None)  # where, not what
    values.pop("steps_per_generation", None)  # GRPO: generation_batch_size / the processes' batch
    if "global_batch_size" in extras:  # the accumulation it implies depends on the processes
        values.pop("gradient_accumulation_steps", None)
    elif processes > 1:
        values["processes"] = processes
    text = json.dumps([type(args).__name__, values, dict(extras)], sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def config_class(kind: str):
    from trl import GRPOConfig, SFTConfig

    return {"sft": SFTConfig, "grpo": GRPOConfig}[kind]


def read_settings(kind: str, source: str | Path | Mapping | None) -> dict:
    """The settings as a mapping: a trainers YAML file's, a recipe's inline mapping, or TINY for None;
    checked for secrets and for `output_dir`."""
    where = str(source) if isinstance(source, (str, Path)) else f"{kind} config"
    if source is None:
        values = TINY[kind]
    elif isinstance(source, Mapping):
        values = source
    else:
        values = _read_file(kind, Path(source), [])
    try:
        secret = find_secret(dict(values))
    except ValueError as e:
        raise RecipeError(f"{where}: {e}") from None
    if secret:  # the resolved settings are stored with the training and the file may be published
        raise RecipeError(f"{where}: {secret}: secrets do not belong in trainer settings; the Hub token comes "
                          "from HF_TOKEN or `hf auth login`")
    if "output_dir" in values:
        raise RecipeError(f"{where}: output_dir is set by --output; remove it from the file")
    return dict(values)


def _read_file(kind: str, path: Path, chain: list[Path]) -> dict:
    """A trainers YAML's mapping; with `extends: OTHER.yaml` (relative to this file), OTHER's mapping with this
    file's keys over it (vlfactory.recipe's merge: mappings key by key), e.g. a CPU rehearsal of the paper's
    settings that changes only hardware keys and step budgets."""
    from vlfactory.recipe import _merged

    try:
        values = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as e:
        raise RecipeError(f"{path}: {str(e).splitlines()[0]}") from None
    if not isinstance(values, Mapping):
        raise RecipeError(f"{path}: expected a mapping of {config_class(kind).__name__} fields")
    if "extends" not in values:
        return dict(values)
    values = dict(values)
    parent = path.resolve().parent / str(values.pop("extends"))
    if parent.resolve() in chain or parent.resolve() == path.resolve():
        raise RecipeError(f"{path}: extends: {parent.name} extends itself")
    return _merged(_read_file(kind, parent, [*chain, path.resolve()]), values)


def load_config(kind: str, source: str | Path | Mapping | None, output_dir: str | Path,
                processes: int | None = None, flags: Sequence[str] = ()) -> tuple:
    """(SFTConfig or GRPOConfig, the extra keys given) from a YAML file, a mapping, or None (TINY), with
    command-line `flags` over them, through TRL's TrlParser (the file's values become the parser's defaults,
    as `TrlParser.parse_args_and_config` does with `--config`). With `global_batch_size`, gradient
    accumulation follows from `processes` (default: $WORLD_SIZE, else 1).

    >>> args, extras = load_config("sft", {"learning_rate": "5e-7", "bf16": False, "max_pixels": 262144}, "out")
    >>> args.learning_rate, extras
    (5e-07, {'max_pixels': 262144})
    >>> args, _ = load_config("sft", {"global_batch_size": 32, "per_device_train_batch_size": 2, "bf16": False},
    ...                       "out", processes=8, flags=["--learning_rate", "1e-5"])
    >>> args.gradient_accumulation_steps, args.learning_rate
    (2, 1e-05)
    """
    from trl import TrlParser

    cls = config_class(kind)
    where = str(source) if isinstance(source, (str, Path)) else f"{kind} config"
    values = read_settings(kind, source)
    known = {f.name for f in dataclasses.fields(cls) if f.init} | set(FACTORY_KEYS)
    for key in values:
        if key not in known:
            close = difflib.get_close_matches(str(key), known, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise RecipeError(f"{where}: unknown {cls.__name__} field {key!r}{hint}")
    parser = TrlParser([FactoryArguments, cls], exit_on_error=False, allow_abbrev=False)
    parser.set_defaults_with_config(**values)
    flags = [*flags, "--output_dir", str(output_dir)]
    try:
        given, _ = parser.parse_known_args(flags)  # the resolved values, before any dataclass is built
        if given.global_batch_size is not None:
            if "gradient_accumulation_steps" in values or given.gradient_accumulation_steps != 1:
                raise RecipeError(f"{where}: give global_batch_size or gradient_accumulation_steps, not both")
            processes = processes or int(os.environ.get("WORLD_SIZE", "1"))
            per_device = given.per_device_train_batch_size
            steps, rest = divmod(int(given.global_batch_size), per_device * processes)
            if rest or steps < 1:
                raise RecipeError(f"{where}: global_batch_size {given.global_batch_size} is not a multiple of "
                                  f"per_device_train_batch_size {per_device} x {processes} processes")
            parser.set_defaults(gradient_accumulation_steps=steps)
        if kind == "grpo" and given.generation_batch_size is None:
            # GRPOConfig derives it from the processes it runs in: fixed here from `processes`, so the loop's
            # digest of the settings (one process) is the launched trainer's (N processes).
            processes = processes or int(os.environ.get("WORLD_SIZE", "1"))
            accumulation = parser.get_default("gradient_accumulation_steps")
            per_step = given.steps_per_generation or (accumulation if given.global_batch_size else
                                                      given.gradient_accumulation_steps)
            parser.set_defaults(generation_batch_size=given.per_device_train_batch_size * processes * per_step,
                                steps_per_generation=None)
        own, args = parser.parse_args_into_dataclasses(flags)
    except (argparse.ArgumentError, TypeError, ValueError) as e:
        raise RecipeError(f"{where}: {str(e).strip().splitlines()[0]}") from None
    extras = {k: getattr(own, k) for k in FACTORY_KEYS
              if k in values or getattr(own, k) != FactoryArguments.__dataclass_fields__[k].default}
    if isinstance(extras.get("source_weights"), str):  # a flag: JSON
        try:
            extras["source_weights"] = json.loads(extras["source_weights"])
        except ValueError:
            raise RecipeError(f"{where}: source_weights: not a JSON mapping of source to copies") from None
    if extras.get("reward", "vlfactory") not in REWARDS or ("reward" in extras and kind != "grpo"):
        raise RecipeError(f"{where}: reward: {extras['reward']!r}; a GRPO file may say {' or '.join(REWARDS)}")
    weights = extras.get("source_weights")
    if weights is not None and (kind != "grpo" or not isinstance(weights, Mapping) or not all(
            isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in weights.values())):
        raise RecipeError(f"{where}: source_weights: {weights!r}; a GRPO file may give a mapping of source to "
                          "copies (whole numbers >= 0)")
    return args, extras
