"""Recipes: YAML files parsed into typed configs.

A recipe says where the lake is, which sources to ingest (and which benchmark
sources to keep out of the training data), and how each later stage runs.
Unknown keys and impossible values fail at load time with one line naming the
key and the fix, before anything is written:

    from vlfactory.recipe import load_recipe
    recipe = load_recipe("recipes/quickstart.yaml")

Relative paths inside a recipe are relative to the recipe file. A recipe name
without a path (`quickstart`) is looked up among the recipes shipped with the
package.
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

FORMATS = ("hf", "parquet", "jsonl", "json", "imagefolder", "synthetic")
COLUMN_KEYS = ("question", "answer", "image", "choices", "caption", "id", "split")
SECRET_KEYS = ("api_key", "token", "hf_token", "password", "secret")


class RecipeError(ValueError):
    """A recipe that cannot run; the message names the key and the fix."""


@dataclass
class Source:
    """One dataset mapped onto the factory's schema."""

    name: str
    format: str
    path: str | None = None           # file, folder, glob, or `datasets` path (hf)
    columns: dict[str, str | None] = field(default_factory=dict)  # schema column -> source column or "{template}"
    images_root: str | None = None    # base for relative image paths (default: the data file's folder)
    split: str = "train"              # stored split; for hf also the split loaded
    limit: int | None = None          # read at most this many rows
    # hf only
    subset: str | None = None         # the `name` argument of load_dataset
    data_dir: str | None = None
    data_files: str | list[str] | None = None
    revision: str | None = None
    # synthetic only
    n: int = 200
    seed: int = 0
    kinds: list[str] | None = None
    license: str | None = None        # carried to dataset cards


@dataclass
class SamplingConfig:
    temperature: float = 0.0
    top_p: float = 1.0
    max_tokens: int = 1024
    n: int = 1                        # samples per prompt
    seed: int | None = 0
    stop: list[str] = field(default_factory=list)


@dataclass
class StageConfig:
    """How one generation stage (caption, distil, rollout) calls its model."""

    model: str
    backend: str = "openai"           # openai | vllm | transformers
    model_id: str | None = None       # identity in cache keys (default: model); same across backends
    prompt: str | None = None         # a shipped template name or a file path (default: the stage's own)
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    overwrite: bool = False           # caption: call the model even where the source has a caption
    commit_rows: int = 256            # commit generated rows every N rows...
    commit_seconds: float = 10.0      # ...or every N seconds, whichever comes first
    # openai backend
    base_url: str | list[str] | None = None
    concurrency: int = 64
    timeout_s: float = 600.0
    max_retries: int = 6
    api_key_env: str | None = None    # the NAME of the env var holding the key
    # vllm and transformers backends
    dtype: str = "auto"
    max_model_len: int | None = None
    tensor_parallel_size: int = 1
    gpu_memory_utilization: float = 0.9
    enforce_eager: bool = False
    device: str | None = None         # transformers: cpu, cuda, ... (default: cuda if available)
    batch_size: int = 8               # transformers: prompts per generate() call

    @property
    def identity(self) -> str:
        from vlfactory.models import identity

        return self.model_id or identity(self.model)


BACKENDS = ("openai", "vllm", "transformers")

REFLECTION_KEYWORDS = ["Wait", "But wait", "But the question", "Hmm", "Alternatively", "Let me double-check",
                       "Let me re-check", "Let me verify"]


@dataclass
class VerifyConfig:
    """How the verify stage grades traces and rollouts, and cleans accepted traces for SFT."""

    max_words: int = 2000             # longer completions: too_long
    forbidden_phrases: list[str] = field(default_factory=lambda: [
        "the caption", "the description", "the image description", "described in", "as described"])
    require_format: bool = False      # completions must be <think>...</think> ... <answer>...</answer>
    repetition_ngram: int = 12        # a word n-gram repeated...
    repetition_max: int = 4           # ...more than this many times is a repetition loop
    timeout_s: float = 5.0            # per item, for math-verify
    reflection_keywords: list[str] = field(default_factory=lambda: list(REFLECTION_KEYWORDS))
    clean_max_words: int = 500        # the cleaned reasoning's word cap for SFT
    rel_tol: float = 1e-4


@dataclass
class SFTSetConfig:
    """Which accepted samples become the `sft` set."""

    candidates: str = "traces"        # traces (distillation) | rollouts (self-improvement) | both
    model: str | None = None          # only samples of this model (default: all)
    per_problem: int = 1              # k: at most this many examples per problem
    pick: str = "shortest"            # shortest | random | all
    seed: int = 0
    weights: dict[str, float] | None = None  # per source; balances the mix (default: take everything)
    max_examples: int | None = None
    cleaned: bool = True              # use the cleaned completion (reflection-truncated, capped)
    prompt: str | None = None         # the user turn's template (default: the rollout stage's, else `rollout`)


@dataclass
class RLSetConfig:
    """Which problems the `rl` set keeps, by the policy's pass rate on rollouts."""

    band: list[float] = field(default_factory=lambda: [0.0, 0.75])  # keep pass rates in [lo, hi]
    min_samples: int = 1              # problems with fewer graded rollouts are left out
    model: str | None = None          # whose rollouts count (default: the rollout stage's model)
    prompt: str | None = None         # the GRPO prompt template (default: the rollout stage's, else `rollout`)


@dataclass
class LoopConfig:
    """The iteration loop (`vlfactory iterate`): what to train, with which TRL settings, how often."""

    base_model: str                   # the VLM every SFT starts from (OpenVLThinker: Qwen2.5-VL-7B-Instruct)
    iterations: int = 2
    output_dir: str = "runs"          # checkpoints: OUTPUT/iterK/{sft,grpo}-<config hash> (relative to the cwd)
    sft: dict[str, Any] | str | None = None   # SFTConfig fields, or a trainers YAML file (default: tiny CPU run)
    grpo: dict[str, Any] | str | None = None  # GRPOConfig fields (reward_weights: [accuracy, format])
    benchmarks: list[str] = field(default_factory=list)  # sources to evaluate each iteration's RL model on
    keep_traces: bool = False         # iterations > 1 also keep the distilled traces as SFT candidates
                                      # (OpenVLThinker: no; a weak model with few correct rollouts: yes)
    eval_limit: int | None = None


@dataclass
class LakeConfig:
    catalog: str | None = None        # a folder or a ducklake: URI
    data_path: str | None = None


@dataclass
class Recipe:
    name: str
    sources: list[Source]
    benchmarks: list[Source] = field(default_factory=list)
    lake: LakeConfig = field(default_factory=LakeConfig)
    decontaminate_by: list[str] = field(default_factory=lambda: ["image", "question"])
    caption: StageConfig | None = None
    distil: StageConfig | None = None
    verify: VerifyConfig = field(default_factory=VerifyConfig)
    sft: SFTSetConfig | None = None
    rollout: StageConfig | None = None
    rl: RLSetConfig | None = None
    loop: LoopConfig | None = None
    batch_rows: int = 500             # rows per catalog commit during ingest
    full_decode: bool = False         # inflate every pixel when checking images (default: verify every byte)
    description: str | None = None
    # filled by load_recipe
    text: str = field(default="", repr=False, metadata={"internal": True})
    path: str | None = field(default=None, metadata={"internal": True})

    @property
    def hash(self) -> str:
        return hashlib.sha256(self.text.encode()).hexdigest()[:16]


def shipped_recipes() -> Path:
    import vlfactory.recipes

    return Path(vlfactory.recipes.__file__).parent


def find_recipe(ref: str | Path) -> Path:
    """A recipe path, or the name of a recipe shipped with the package."""
    path = Path(ref)
    if path.exists():
        return path
    for candidate in (shipped_recipes() / f"{ref}.yaml", shipped_recipes() / str(ref)):
        if candidate.is_file():
            return candidate
    raise RecipeError(f"recipe not found: {ref} (a YAML file path, or one of: "
                      f"{', '.join(sorted(p.stem for p in shipped_recipes().glob('*.yaml')))})")


def load_recipe(ref: str | Path) -> Recipe:
    path = find_recipe(ref)
    text = path.read_text()
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f":{mark.line + 1}" if mark else ""
        raise RecipeError(f"{path}{where}: not valid YAML ({getattr(e, 'problem', e)})") from None
    return parse_recipe(raw, text=text, base=path.parent, path=str(path))


def parse_recipe(raw: Any, *, text: str = "", base: Path | None = None, path: str | None = None) -> Recipe:
    where = path or "recipe"
    if not isinstance(raw, dict):
        raise RecipeError(f"{where}: a recipe is a YAML mapping with at least `sources:`")
    _no_secrets(raw, where)
    raw = dict(raw)
    raw.setdefault("name", Path(path).stem if path else "recipe")
    if isinstance(raw.get("lake"), str):
        raw["lake"] = {"catalog": raw["lake"]}
    recipe = _build(Recipe, raw, where)
    recipe.text, recipe.path = text, path
    base = base or Path.cwd()
    names = set()
    for group, sources in (("sources", recipe.sources), ("benchmarks", recipe.benchmarks)):
        for i, src in enumerate(sources):
            _check_source(src, f"{where}: {group}[{i}] ({src.name})", base)
            if src.name in names:
                raise RecipeError(f"{where}: {group}[{i}]: source name {src.name!r} is used twice; names must be unique")
            names.add(src.name)
    if not recipe.sources:
        raise RecipeError(f"{where}: `sources:` is empty; list at least one source")
    bad = set(recipe.decontaminate_by) - {"image", "question"}
    if bad:
        raise RecipeError(f"{where}: decontaminate_by: unknown {sorted(bad)}; use image and/or question")
    for name in ("caption", "distil", "rollout"):
        stage = getattr(recipe, name)
        if stage is not None:
            _check_stage(stage, f"{where}: {name}")
    if recipe.sft is not None:
        if recipe.sft.candidates not in ("traces", "rollouts", "both"):
            raise RecipeError(f"{where}: sft.candidates: {recipe.sft.candidates!r} is not traces, rollouts or both")
        if recipe.sft.pick not in ("shortest", "random", "all"):
            raise RecipeError(f"{where}: sft.pick: {recipe.sft.pick!r} is not shortest, random or all")
        if recipe.sft.per_problem < 1:
            raise RecipeError(f"{where}: sft.per_problem: must be at least 1")
    if recipe.rl is not None:
        lo_hi = recipe.rl.band
        if len(lo_hi) != 2 or not 0 <= lo_hi[0] <= lo_hi[1] <= 1:
            raise RecipeError(f"{where}: rl.band: {lo_hi} must be [lo, hi] with 0 <= lo <= hi <= 1")
        if recipe.rl.min_samples < 1:
            raise RecipeError(f"{where}: rl.min_samples: must be at least 1")
        if recipe.rl.model is None and recipe.rollout is None:
            raise RecipeError(f"{where}: rl.model: missing; name the policy model whose rollouts count, "
                              "or add a rollout: stage")
    if recipe.loop is not None:
        names = {src.name for src in recipe.sources + recipe.benchmarks}
        for b in recipe.loop.benchmarks:
            if b not in names:
                raise RecipeError(f"{where}: loop.benchmarks: {b!r} is not a source or benchmark of the recipe")
        for kind in ("sft", "grpo"):
            value = getattr(recipe.loop, kind)
            if isinstance(value, str) and not (base / value).exists():
                raise RecipeError(f"{where}: loop.{kind}: {base / value} does not exist")
            if isinstance(value, str):
                setattr(recipe.loop, kind, str((base / value).resolve()))
    if recipe.lake.catalog and not recipe.lake.catalog.startswith("ducklake:"):
        recipe.lake.catalog = str((base / recipe.lake.catalog).resolve())
    return recipe


def _check_source(src: Source, where: str, base: Path) -> None:
    if src.format not in FORMATS:
        raise RecipeError(f"{where}: format: {src.format!r} is not one of {', '.join(FORMATS)}")
    unknown = set(src.columns) - set(COLUMN_KEYS)
    if unknown:
        key = sorted(unknown)[0]
        raise RecipeError(f"{where}: columns.{key}: unknown schema column{_hint(key, COLUMN_KEYS)} "
                          f"(map any of {', '.join(COLUMN_KEYS)})")
    if src.format == "synthetic":
        if src.n < 1:
            raise RecipeError(f"{where}: n: must be at least 1")
        return
    if not src.path:
        raise RecipeError(f"{where}: path: missing (the {src.format} data to read)")
    if src.limit is not None and src.limit < 0:
        raise RecipeError(f"{where}: limit: must be >= 0")
    local = _local(src.path, base)
    if src.format == "hf":
        # A hub id (org/name) is not a local path; a local folder or file is.
        if local.exists():
            src.path = str(local)
    else:
        if not any(ch in src.path for ch in "*?[") and not local.exists():
            raise RecipeError(f"{where}: path: {local} does not exist")
        src.path = str(local)
    if src.images_root:
        root = _local(src.images_root, base)
        if not root.is_dir():
            raise RecipeError(f"{where}: images_root: {root} is not a folder")
        src.images_root = str(root)


def _check_stage(stage: StageConfig, where: str) -> None:
    if stage.backend not in BACKENDS:
        raise RecipeError(f"{where}.backend: {stage.backend!r} is not one of {', '.join(BACKENDS)}")
    if stage.backend == "openai" and not stage.base_url:
        raise RecipeError(f"{where}.base_url: missing (the OpenAI-compatible server, e.g. http://127.0.0.1:8000/v1)")
    s = stage.sampling
    checks = [(s.n >= 1, "sampling.n: must be at least 1"), (s.max_tokens >= 1, "sampling.max_tokens: must be at least 1"),
              (s.temperature >= 0, "sampling.temperature: must be >= 0"), (0 < s.top_p <= 1, "sampling.top_p: must be in (0, 1]"),
              (stage.concurrency >= 1, "concurrency: must be at least 1"), (stage.timeout_s > 0, "timeout_s: must be > 0"),
              (stage.commit_rows >= 1, "commit_rows: must be at least 1")]
    for ok, message in checks:
        if not ok:
            raise RecipeError(f"{where}.{message}")


def _local(p: str, base: Path) -> Path:
    path = Path(p).expanduser()
    return path if path.is_absolute() else (base / path).resolve()


def _no_secrets(raw: Any, where: str, trail: str = "") -> None:
    if isinstance(raw, dict):
        for k, v in raw.items():
            if str(k).lower() in SECRET_KEYS:
                raise RecipeError(f"{where}: {trail}{k}: secrets do not belong in recipes (they are stored in the "
                                  f"catalog); put it in an environment variable and name that variable instead")
            _no_secrets(v, where, f"{trail}{k}.")
    elif isinstance(raw, list):
        for i, v in enumerate(raw):
            _no_secrets(v, where, f"{trail}{i}.")


def _hint(key: str, options) -> str:
    close = difflib.get_close_matches(key, list(options), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _build(cls, raw: Any, where: str):
    """Build a dataclass from a mapping, checking keys and simple types."""
    if not isinstance(raw, dict):
        raise RecipeError(f"{where}: expected a mapping for {cls.__name__}, got {type(raw).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls) if not f.metadata.get("internal")}
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for key, value in raw.items():
        if key not in fields:
            raise RecipeError(f"{where}: {key}: unknown key{_hint(str(key), fields)}; "
                              f"known keys: {', '.join(fields)}")
        kwargs[key] = _coerce(hints[key], value, f"{where}: {key}")
    missing = [n for n, f in fields.items() if n not in kwargs
               and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
    if missing:
        raise RecipeError(f"{where}: {missing[0]}: missing (required for {cls.__name__.lower()})")
    return cls(**kwargs)


def _coerce(tp, value: Any, where: str):
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in (a for a in args if a is not type(None)):
            try:
                return _coerce(arg, value, where)
            except RecipeError as e:
                errors.append(str(e))
        raise RecipeError(errors[0])
    if dataclasses.is_dataclass(tp):
        return _build(tp, value, where)
    if origin is list:
        if not isinstance(value, list):
            raise RecipeError(f"{where}: expected a list, got {value!r}")
        return [_coerce(args[0], v, f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise RecipeError(f"{where}: expected a mapping, got {value!r}")
        return {str(k): _coerce(args[1], v, f"{where}.{k}") for k, v in value.items()}
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if tp in (str, int, float, bool) and (type(value) is not tp):
        raise RecipeError(f"{where}: expected {tp.__name__}, got {value!r}")
    return value
