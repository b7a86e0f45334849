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
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from vlfactory.backends import Sampling, backend_config_class
from vlfactory.redact import find_secret, redact
from vlfactory.verify.protocols import PROTOCOLS

FORMATS = ("hf", "parquet", "jsonl", "json", "imagefolder", "synthetic")
COLUMN_KEYS = ("question", "answer", "image", "choices", "caption", "id", "split", "completion")
PICKS = ("most_common",)          # columns.KEY.pick: how one gold is chosen from a list of answers
MAX_IMAGE_BYTES = 64 * 2**20
# Names that become file and folder names (recipe copies, tracking folders, tags, synthetic copies): no
# separators, no leading dot or dash, nothing a shell or SQL would read as code (issue 18).
SLUG = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,99}")
MAX_RECIPE_BYTES = 2**20  # a recipe is settings, not data: PyYAML holds ~100x a file's size while parsing it
MAX_TOKENS = 2**20        # new tokens per request: more than any model's context


def slug(text: str, default: str = "") -> str:
    """`text` made a SLUG, runs of other characters a '-': a recipe's default name from its file's name, a name an
    older lake stored as part of a file name."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", text).lstrip("-_.").rstrip("-")[:100] or default


class RecipeError(ValueError):
    """A recipe that cannot run; the message names the key and the fix."""


@dataclass
class Column:
    """A schema column read from one source column through rules (`columns.KEY` written as a mapping).

    A plain string stays what it was: a column name or a "{template}". The rules apply in this order,
    each to what the one before gave (vlfactory.sources.columns.read_column):

        question: {column: messages, turn: user}       # the content of a chat's one turn of that role
        image: {column: images, index: 0}              # an element of a list (negative counts from the end)
        answer: {column: answers, pick: most_common}   # one gold from a list of annotators' answers
        answer: {column: answer, option_of: options}   # an option's index (0, "0", or a letter "A") -> its text
        answer: {column: solution, tag: answer}        # the text inside the last <answer> ... </answer>
        choices: {column: choices, split: ","}         # a joined string -> a list, items stripped
        question: {column: problem, strip: "<image>"}  # literal markers removed (one, or a list)

    A column missing from the data, or holding the wrong type for a rule, fails at preflight naming
    the key path (columns.answer.option_of); a row whose value breaks a rule (an index out of range,
    an empty list, no tag) is a `rejected` row with the reason.
    """

    column: str
    turn: str | None = None
    index: int | None = None
    pick: str | None = None
    option_of: str | None = None
    tag: str | None = None
    split: str | None = None
    strip: list[str] | str | None = None


@dataclass
class Source:
    """One dataset mapped onto the factory's schema."""

    name: str
    format: str
    path: str | None = None           # file, folder, glob, or `datasets` path (hf)
    # schema column -> a source column, a "{template}", or a Column mapping ({column: images, index: 0})
    columns: dict[str, Column | str | None] = field(default_factory=dict)
    # Row-level rules, applied as rows are read, before `limit`: `explode: qa` makes one row per element of
    # the list-of-objects column `qa` (its keys become columns), then `where: {ques_type: [choose_txt]}`
    # keeps the rows whose value is listed and `where_not: {source: [ai2d]}` drops those whose value is
    # (the others are not part of the source, as another split is not).
    explode: str | None = None
    where: dict[str, list[str | int | bool]] = field(default_factory=dict)
    where_not: dict[str, list[str | int | bool]] = field(default_factory=dict)
    # A source with a `completion` column carries finished chains: each row is also a `traces` row written
    # by this identity (default: vlfactory.sources.readers.source_identity: a hub id and revision, or a local
    # copy's content digest), graded and picked like distilled ones.
    model: str | None = None
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
class GenerationConfig:
    """How one generation stage (caption, distil, rollout) calls its model.

    The backend's own options (base_url, concurrency, dtype, device, batch_size, ...) are written
    flat beside `backend:` in the recipe and parsed into that backend's typed config
    (`options`): OpenAIConfig, VLLMConfig or TransformersConfig. An option of another backend
    fails at load time.
    """

    model: str
    backend: str = "openai"           # openai | vllm | transformers
    revision: str | None = None       # a hub model's revision: part of its identity
    model_id: str | None = None       # identity override, for a served model whose weights we cannot read
    prompt: str | None = None         # a shipped template name or a file path (default: the stage's own)
    sampling: Sampling = field(default_factory=Sampling)
    # Commit generated rows every `commit_seconds`, or sooner once `commit_rows` are waiting: a kill loses
    # at most that much, and each commit's cost (a snapshot, a file, a key check) is paid per batch, not per row.
    commit_rows: int = 8192
    commit_seconds: float = 10.0
    options: Any = field(default=None, metadata={"internal": True})  # the backend's typed config

    @property
    def identity(self) -> str:
        """What the model is, by content (vlfactory.models.identity); every row it writes carries it."""
        from vlfactory.models import identity

        return self.model_id or identity(self.model, self.revision)


@dataclass
class CaptionConfig(GenerationConfig):
    overwrite: bool = False           # call the model even where the source has a caption


@dataclass
class DistilConfig(GenerationConfig):
    # Which captions the reasoner reads: the recipe's caption block (set by Recipe.stage_config).
    captions: CaptionConfig | None = field(default=None, metadata={"internal": True})


# OpenVLThinker's reflection keywords: the ones paper v1 names as examples ("e.g.", section 4.2, Table 3: the
# chain is cut at the first one); its complete list is unpublished.
REFLECTION_KEYWORDS = ["Wait", "But wait", "But the question"]
# The words whose frequency the paper follows across iterations (its figure on reflective behaviour).
TRACKED_KEYWORDS = ["identify", "recall", "given", "provided", "first", "wait", "check", "maybe"]


@dataclass
class VerifyConfig:
    """How the verify stage grades traces and rollouts, and cleans accepted traces for SFT.

    The defaults are OpenVLThinker's: a correct final answer is kept, then cut at the paper's
    reflection keywords. Every stricter filter (word caps, repetition, caption phrases, the
    cleaned chain re-verified) is an opt-in.
    """

    max_words: int | None = None      # opt-in: longer completions are too_long
    forbidden_phrases: list[str] = field(default_factory=list)  # opt-in: e.g. [the caption, the description]
    require_format: bool = False      # completions must be <think>...</think> ... <answer>...</answer>
    repetition_ngram: int = 12        # a word n-gram repeated...
    repetition_max: int | None = None  # opt-in: ...more than this many times is a repetition loop
    timeout_s: float = 5.0            # per item, for math-verify
    reflection_keywords: list[str] = field(default_factory=lambda: list(REFLECTION_KEYWORDS))
    clean_max_words: int | None = None  # opt-in: the paper's "chains under 500 words" variant (not adopted)
    clean_reverify: bool = False      # opt-in: an answer the kept reasoning states must be correct too
    rel_tol: float = 1e-4
    # The verdicts, any of vlfactory.verify.PROTOCOLS but judge: vlfactory's grader, openvlthinker-data (the official
    # grader of training data), openvlthinker (the official evaluation judge), qwen-boxed
    protocol: str = "vlfactory"


@dataclass
class SFTSetConfig:
    """Which accepted samples become the `sft` set."""

    candidates: str = "traces"        # traces (distillation) | rollouts (self-improvement) | both | captions
    model: str | None = None          # only samples of this model (default: all)
    per_problem: int = 1              # k: at most this many examples per problem
    pick: str = "shortest"            # shortest | random | all
    seed: int = 0
    weights: dict[str, float] | None = None  # per source; balances the mix (default: take everything)
    max_examples: int | None = None
    cleaned: bool = True              # use the cleaned completion (reflection-truncated, capped)
    prompt: str | None = None         # the user turn's template (default: the rollout stage's, else `rollout`)
    # Whose grades count: the recipe's verify block (set by Recipe.stage_config).
    verify: VerifyConfig = field(default_factory=VerifyConfig, metadata={"internal": True})


@dataclass
class RLSetConfig:
    """Which problems the `rl` set keeps, by the policy's pass rate on rollouts."""

    band: list[float] = field(default_factory=lambda: [0.0, 0.75])  # keep pass rates in [lo, hi]
    min_samples: int = 1              # problems with fewer graded rollouts are left out
    model: str | None = None          # whose rollouts count (default: the rollout stage's model)
    prompt: str | None = None         # the GRPO prompt template (default: the rollout stage's, else `rollout`)
    # Pass rates come from the current verifier's grades (the verify block), of the policy's rollouts
    # (`model`, else the rollout block's model); both set by Recipe.stage_config.
    verify: VerifyConfig = field(default_factory=VerifyConfig, metadata={"internal": True})
    policy: GenerationConfig | None = field(default=None, metadata={"internal": True})

    @property
    def identity(self) -> str | None:
        """The identity of the policy whose rollouts count."""
        from vlfactory.models import identity

        if self.model:
            return identity(self.model)
        return self.policy.identity if self.policy else None


@dataclass
class IngestConfig:
    """What the ingest stage reads: the recipe's sources, and the benchmarks kept out of them."""

    sources: list[Source]
    benchmarks: list[Source] = field(default_factory=list)
    decontaminate_by: list[str] = field(default_factory=lambda: ["image", "question"])
    batch_rows: int = 500
    full_decode: bool = False
    max_image_bytes: int = MAX_IMAGE_BYTES


# The official prompt formatting per benchmark (OpenVLThinker's evaluation/eval_openvlthinker.py):
# query = the benchmark's text as is (MathVista `query`, MathVerse `query_cot`); hint = format_instruction
# with the options (MathVision, EMMA, MMMU-Pro standard); yes_no (HallusionBench); vision (MMMU-Pro vision).
PROMPT_FORMATS = ("query", "hint", "yes_no", "vision")


@dataclass
class EvalSettings:
    """How benchmarks are evaluated (the recipe's `eval:` block), by `vlfactory eval` and by every
    evaluation of the loop. Without the block: the rollout stage's template, greedy, one sample,
    vlfactory's own grader."""

    protocol: str = "vlfactory"       # one of vlfactory.verify.PROTOCOLS, e.g. openvlthinker, judge (an LLM judge)
    protocols: dict[str, str] = field(default_factory=dict)  # per benchmark, e.g. {mathverse: judge}
    formats: dict[str, str] = field(default_factory=dict)    # per benchmark: query | hint | yes_no | vision
    prompt: str | None = None         # the template of benchmarks without a format (default: the rollout stage's)
    sampling: Sampling | None = None  # decoding; n samples per problem give pass@1..n (default: greedy, n 1)
    judge: GenerationConfig | None = None  # the LLM judge for protocol judge (any backend; openai for a hosted one)
    # The base model's protocol (iteration 0 of the loop), for every benchmark: e.g. qwen-boxed, the official Qwen
    # baseline that the paper's base-model numbers come from (default: the same as the other models')
    base_protocol: str | None = None


@dataclass
class EvalConfig:
    """One evaluation: a model answers a benchmark source from its images, graded like the factory's data."""

    benchmark: Source
    generation: GenerationConfig      # the policy's backend and decoding (near-greedy: temperature 0, n 1)
    verify: VerifyConfig = field(default_factory=VerifyConfig)
    limit: int | None = None          # the first N rows of the benchmark
    iteration: int | None = None
    stage: str | None = None          # which model of the loop: base | sft | grpo (| grpo-<stage>)
    protocol: str = "vlfactory"       # how answers are graded (PROTOCOLS)
    format: str | None = None         # the official prompt formatting (PROMPT_FORMATS), else the template
    judge: GenerationConfig | None = None


@dataclass
class LoopConfig:
    """The iteration loop (`vlfactory iterate`): what to train, with which TRL settings, how often."""

    base_model: str                   # the VLM every SFT starts from (OpenVLThinker: Qwen2.5-VL-7B-Instruct)
    # Teach the base model to see first: SFT on the sources' ground-truth captions (image -> description),
    # SFTConfig fields or a trainers YAML; the model it makes is the base of every iteration. For a base that
    # already reads images (Qwen2.5-VL), leave it out.
    pretrain: dict[str, Any] | str | None = None
    iterations: int = 2
    output_dir: str = "runs"          # checkpoints: OUTPUT/iterK/{sft,grpo}-<config hash> (relative to the cwd)
    sft: dict[str, Any] | str | None = None   # SFTConfig fields, or a trainers YAML file (default: tiny CPU run)
    grpo: dict[str, Any] | str | None = None  # GRPOConfig fields (reward_weights: [accuracy, format])
    benchmarks: list[str] = field(default_factory=list)  # evaluated for the base model and every SFT and GRPO model
    keep_traces: bool = False         # iterations > 1 also keep the distilled traces as SFT candidates
                                      # (OpenVLThinker: no; a weak model with few correct rollouts: yes)
    eval_limit: int | None = None
    grpo_stages: list[GRPOStage] = field(default_factory=list)  # several GRPO runs in a row (medium, hard)
    schedule: list[IterationPlan] = field(default_factory=list)  # per iteration; the last one repeats
    track_keywords: list[str] = field(default_factory=lambda: list(TRACKED_KEYWORDS))  # the report's curves
    # How each training starts: `accelerate launch` as a child process (default: one process, no config)
    launch: LaunchConfig = field(default_factory=lambda: LaunchConfig())

    def plan(self, k: int) -> IterationPlan:
        """Iteration k's plan (1-based): its entry in `schedule`, else the last entry, else the defaults."""
        return self.schedule[min(k, len(self.schedule)) - 1] if self.schedule else IterationPlan()


@dataclass
class GRPOStage:
    """One GRPO run of the loop; stages run in order, each from the model the one before made
    (OpenVLThinker: 5 epochs on a "medium" set with the vision tower frozen, then 15 on a "hard" set)."""

    name: str
    band: list[float] | None = None   # the rl set of this stage: pass rates of the SFT model in [lo, hi]; or
    config: dict[str, Any] | str | None = None  # GRPOConfig fields or a trainers YAML (default: loop.grpo)
    min_samples: int | None = None    # default: the rl block's
    source: str | None = None         # ... every problem of this source (e.g. the released ydeng9/medium_grpo_only)


@dataclass
class Generator:
    """Which checkpoint writes the next round's data (`loop.schedule[k].generator`, k > 1): a GRPO stage's model
    of the iteration before, at a step checkpoint (OpenVLThinker's generation script: the hard stage's EasyR1
    step 30 = TRL step 120) or its final model; missing (a shorter run), the stage's final model."""

    stage: str | None = None          # a grpo_stages name (default: the last stage)
    step: int | None = None           # TRL optimizer steps: its checkpoint-<step> folder (default: the final model)


@dataclass
class LaunchConfig:
    """How the loop starts each training: `accelerate launch -m vlfactory.trainers.KIND`, a child process."""

    num_processes: int = 1            # OpenVLThinker: 8 GPUs
    config_file: str | None = None    # an accelerate config (DeepSpeed ZeRO-3, FSDP), relative to the recipe


@dataclass
class IterationPlan:
    """What one iteration of the loop works on (`loop.schedule`, one entry per iteration)."""

    sources: list[str] | None = None  # the sources of this iteration (default: all of the recipe's)
    rl_sources: list[str] | None = None  # the RL set's sources (default: the iteration's; OpenVLThinker: Geometry3K,
                                      # GEOS, FigureQA, CLEVR, SuperCLEVR)
    sft_max_examples: int | None = None   # cap of the SFT set (OpenVLThinker iterations 2-3: 5k)
    sft_weights: dict[str, float] | None = None  # per source: the SFT set's mix
    rl_weights: dict[str, int] | None = None  # copies of each problem of a source in GRPO's data (default 1; paper
                                      # Table 2: iteration 3's GRPO data has more Geometry3K and SuperCLEVR)
    generator: Generator | str | None = None  # who writes this round's data: final (default) or {stage, step}
    sft_cleaned: bool | None = None   # cut reflections (default: the sft block for iteration 1, no later:
                                      # the RL model's own answers are kept as they are)
    samples: int | None = None        # k > 1: the previous RL model's samples per problem (default: the rollout block's)
    temperature: float | None = None  # their temperature (OpenVLThinker: near-greedy, one sample)
    pick: str | None = None           # which correct sample is kept: shortest | random | all (default: the sft block's)
    rl_set: str = "pick"              # pick: by the new SFT model's pass rates; fixed: the previous iteration's set


@dataclass
class TrackingConfig:
    """Experiment tracking (vlfactory.tracking): off without the block; `--report-to` overrides `backend`."""

    backend: str                      # one of vlfactory.tracking.BACKENDS (accelerate's trackers, report_to names)
    project: str | None = None        # the W&B / trackio project (default: the recipe's name)
    dir: str | None = None            # local files: wandb's dir, TensorBoard's log folder, TRACKIO_DIR (cwd-relative)


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
    caption: CaptionConfig | None = None
    distil: DistilConfig | None = None
    verify: VerifyConfig = field(default_factory=VerifyConfig)
    sft: SFTSetConfig | None = None
    rollout: GenerationConfig | None = None
    rl: RLSetConfig | None = None
    loop: LoopConfig | None = None
    eval: EvalSettings | None = None  # how benchmarks are evaluated (default: EvalSettings())
    tracking: TrackingConfig | None = None  # experiment tracking (default: off)
    batch_rows: int = 500             # rows per catalog commit during ingest
    full_decode: bool = False         # inflate every pixel when checking images (default: verify every byte)
    max_image_bytes: int = MAX_IMAGE_BYTES  # a larger image file is rejected unread (image_too_large)
    description: str | None = None
    # filled by load_recipe
    text: str = field(default="", repr=False, metadata={"internal": True})
    path: str | None = field(default=None, metadata={"internal": True})

    @property
    def hash(self) -> str:
        return hashlib.sha256(self.text.encode()).hexdigest()[:16]

    def stage_config(self, name: str):
        """The typed config of one stage (vlfactory.stages.STAGES), or None when the recipe leaves it out.

        Settings one stage takes from another block are filled in here, once: the captions the
        reasoner reads (caption block), the prompt the sets render (the rollout stage's), the
        verifier whose grades count (verify block).
        """
        rollout_prompt = self.rollout.prompt if self.rollout else None
        if name == "ingest":
            return IngestConfig(self.sources, self.benchmarks, self.decontaminate_by, self.batch_rows,
                                self.full_decode, self.max_image_bytes)
        if name == "distil":
            return dataclasses.replace(self.distil, captions=self.caption) if self.distil else None
        if name == "verify":
            return self.verify
        if name == "sft":
            return dataclasses.replace(self.sft, prompt=self.sft.prompt or rollout_prompt or "rollout",
                                       verify=self.verify) if self.sft else None
        if name == "rl":
            if self.rl is None:
                return None
            return dataclasses.replace(self.rl, prompt=self.rl.prompt or rollout_prompt or "rollout",
                                       policy=self.rollout, verify=self.verify)
        if name in ("caption", "rollout"):
            return getattr(self, name)
        raise RecipeError(f"unknown stage {name!r}")

    def eval_config(self, benchmark: str, model: str, limit: int | None = None,
                    iteration: int | None = None, stage: str | None = None, baseline: bool = False) -> EvalConfig:
        """How `model` is evaluated on the source or benchmark named `benchmark`: the rollout stage's
        backend, the `eval:` block's prompt, decoding and protocol (default: the rollout template,
        greedy, one sample, graded with the recipe's verify settings). `baseline`: `model` is the base
        model (the loop's iteration 0), graded with `eval.base_protocol` when the block sets one."""
        src = next((s for s in self.benchmarks + self.sources if s.name == benchmark), None)
        if src is None:
            known = ", ".join(s.name for s in self.benchmarks + self.sources)
            raise RecipeError(f"--benchmark {benchmark!r} is not a source of the recipe (known: {known})")
        settings = self.eval or EvalSettings()
        base = self.rollout or GenerationConfig(model=model, backend="transformers",
                                                options=backend_config_class("transformers")(model=model))
        sampling = settings.sampling or dataclasses.replace(base.sampling, temperature=0.0, top_p=1.0, n=1)
        gen = dataclasses.replace(base, model=model, model_id=None, revision=None, sampling=sampling,
                                  prompt=settings.prompt or base.prompt)
        protocol = settings.protocols.get(benchmark, settings.protocol)
        if baseline and settings.base_protocol:
            protocol = settings.base_protocol
        return EvalConfig(src, gen, self.verify, limit, iteration, stage, protocol, settings.formats.get(benchmark),
                          settings.judge)


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
    text, raw = _read_yaml(path)
    if isinstance(raw, dict) and "extends" in raw:
        raw = _extended(raw, path, [path.resolve()])
        # The stored and published text is the whole recipe this run used, not just its overrides.
        text = (f"# {path.name}: {text.splitlines()[0].lstrip('# ') if text.startswith('#') else 'a recipe'}\n"
                f"# resolved: the recipes it extends merged with its own keys\n"
                + yaml.safe_dump(raw, sort_keys=False, allow_unicode=True, width=120))
    # resolve(): in a strict editable install a shipped recipe is a symlink into the tree; its
    # relative paths are relative to the real file.
    return parse_recipe(raw, text=text, base=path.resolve().parent, path=str(path))


def _read_yaml(path: Path) -> tuple[str, Any]:
    if not path.is_file():
        raise RecipeError(f"{path}: not a regular file (a recipe is a YAML file)")
    if path.stat().st_size > MAX_RECIPE_BYTES:
        raise RecipeError(f"{path}: {path.stat().st_size:,} bytes, over the {MAX_RECIPE_BYTES:,} a recipe may have "
                          "(a recipe holds settings; put data in files its sources name)")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise RecipeError(f"{path}: not UTF-8 text (byte {e.start})") from None
    try:
        return text, _yaml(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f":{mark.line + 1}" if mark else ""
        raise RecipeError(f"{path}{where}: not valid YAML ({getattr(e, 'problem', e)})") from None
    except RecursionError:
        raise RecipeError(f"{path}: not valid YAML (nested too deep)") from None


def _extended(raw: dict, path: Path, chain: list[Path]) -> dict:
    """A recipe with `extends: OTHER.yaml` is OTHER with this recipe's keys merged over it.

    Mappings merge key by key, except a generation block that names another backend, which replaces
    the base's (its options belong to that backend); a list of named items (sources, benchmarks,
    grpo_stages) merges item by item on `name` (an item that names no existing one is added); any
    other value replaces the base's. Relative paths in both files resolve against the extending recipe's folder, so keep them
    side by side. `extends` names a file relative to this recipe, or a shipped recipe.
    """
    raw = dict(raw)
    ref = raw.pop("extends")
    if not isinstance(ref, str) or not ref:
        raise RecipeError(f"{path}: extends: expected the path of the recipe this one extends, got {ref!r}")
    local = (path.resolve().parent / ref)
    parent = local if local.is_file() else find_recipe(ref)
    if parent.resolve() in chain:
        raise RecipeError(f"{path}: extends: {ref} extends itself ({' -> '.join(p.name for p in chain)})")
    _, base = _read_yaml(parent)
    if not isinstance(base, dict):
        raise RecipeError(f"{parent}: a recipe is a YAML mapping")
    if "extends" in base:
        base = _extended(base, parent, [*chain, parent.resolve()])
    base.pop("name", None)  # the extending recipe is its own recipe (default: its file name)
    return _merged(base, raw)


def _named(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(i, dict) and "name" in i for i in value)


def _merged(base: Any, over: Any) -> Any:
    if isinstance(base, dict) and isinstance(over, dict):
        if "backend" in over and over["backend"] != base.get("backend"):
            return over  # another backend: the block's options are that backend's, none of the base's apply
        return {**base, **{k: _merged(base[k], v) if k in base else v for k, v in over.items()}}
    if _named(base) and _named(over):
        out = {i["name"]: i for i in base}
        for item in over:
            out[item["name"]] = _merged(out[item["name"]], item) if item["name"] in out else item
        return list(out.values())
    return over


def parse_recipe(raw: Any, *, text: str = "", base: Path | None = None, path: str | None = None) -> Recipe:
    where = path or "recipe"
    if not isinstance(raw, dict):
        raise RecipeError(f"{where}: a recipe is a YAML mapping with at least `sources:`")
    _no_secrets(raw, where)
    raw = dict(raw)
    # A name taken from the file's own name is made a slug; a `name:` the recipe gives must be one.
    raw.setdefault("name", slug(Path(path).stem if path else "", "recipe"))
    if isinstance(raw.get("lake"), str):
        raw["lake"] = {"catalog": raw["lake"]}
    recipe = _build(Recipe, raw, where)
    _check_slug(recipe.name, f"{where}: name")
    # The text is stored in the catalog and published: credentials inside values (a URL's
    # user:password@, password= in a lake URI) are masked there; the parsed values keep them.
    recipe.text, recipe.path = redact(text), path
    base = base or Path.cwd()
    names = set()
    for group, sources in (("sources", recipe.sources), ("benchmarks", recipe.benchmarks)):
        for i, src in enumerate(sources):
            _check_slug(src.name, f"{where}: {group}[{i}].name")
            _check_source(src, f"{where}: {group}[{i}] ({src.name})", base)
            if src.name in names:
                raise RecipeError(f"{where}: {group}[{i}]: source name {src.name!r} is used twice; names must be unique")
            names.add(src.name)
    if not recipe.sources:
        raise RecipeError(f"{where}: `sources:` is empty; list at least one source")
    if recipe.batch_rows < 1:
        raise RecipeError(f"{where}: batch_rows: must be at least 1 (rows per catalog commit during ingest)")
    if recipe.max_image_bytes < 1:
        raise RecipeError(f"{where}: max_image_bytes: must be at least 1")
    bad = set(recipe.decontaminate_by) - {"image", "question"}
    if bad:
        raise RecipeError(f"{where}: decontaminate_by: unknown {sorted(bad)}; use image and/or question")
    for name in ("caption", "distil", "rollout"):
        stage = getattr(recipe, name)
        if stage is not None:
            _check_stage(stage, f"{where}: {name}")
    for block in (recipe.caption, recipe.distil, recipe.rollout, recipe.sft, recipe.rl):
        if block is not None and block.prompt:
            block.prompt = _template_ref(block.prompt, base)
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
                _no_secrets(_yaml_file(base / value), str(base / value))
        _check_loop(recipe.loop, names, {s.name for s in recipe.sources}, f"{where}: loop", base)
    if recipe.verify.protocol not in PROTOCOLS or recipe.verify.protocol == "judge":
        graders = ", ".join(p for p in PROTOCOLS if p != "judge")
        raise RecipeError(f"{where}: verify.protocol: {recipe.verify.protocol!r} is not one of {graders} "
                          "(judge, an LLM's verdict, is for evaluation only)")
    if recipe.eval is not None:
        _check_eval(recipe.eval, {src.name for src in recipe.sources + recipe.benchmarks}, f"{where}: eval", base)
    if recipe.tracking is not None and recipe.tracking.project is not None:
        _check_slug(recipe.tracking.project, f"{where}: tracking.project")
    if recipe.tracking is not None:
        from vlfactory.tracking import BACKENDS  # accelerate's trackers

        if recipe.tracking.backend not in BACKENDS:
            raise RecipeError(f"{where}: tracking.backend: {recipe.tracking.backend!r} is not one of "
                              f"{', '.join(BACKENDS)} (leave the block out for no tracking)")
    if recipe.lake.catalog and not recipe.lake.catalog.startswith("ducklake:"):
        recipe.lake.catalog = str(_local(recipe.lake.catalog, base, f"{where}: lake", resolve=True))
    return recipe


def _check_loop(loop: LoopConfig, names: set[str], sources: set[str], where: str, base: Path) -> None:
    for i, stage in enumerate(loop.grpo_stages):
        _check_slug(stage.name, f"{where}.grpo_stages[{i}].name")
        lo_hi = stage.band
        if (lo_hi is None) == (stage.source is None):
            raise RecipeError(f"{where}.grpo_stages[{i}]: give its rl set as band: [lo, hi] (pass rates of the SFT "
                              "model) or source: NAME (every problem of that source), one of the two")
        if stage.source is not None and stage.source not in sources:
            raise RecipeError(f"{where}.grpo_stages[{i}].source: {stage.source!r} is not one of the recipe's "
                              f"sources ({', '.join(sorted(sources))})")
        if lo_hi is not None and (len(lo_hi) != 2 or not 0 <= lo_hi[0] <= lo_hi[1] <= 1):
            raise RecipeError(f"{where}.grpo_stages[{i}].band: {lo_hi} must be [lo, hi] with 0 <= lo <= hi <= 1")
        if isinstance(stage.config, str):
            path = base / stage.config
            if not path.exists():
                raise RecipeError(f"{where}.grpo_stages[{i}].config: {path} does not exist")
            stage.config = str(path.resolve())
            _no_secrets(_yaml_file(path), str(path))
    if len({s.name for s in loop.grpo_stages}) != len(loop.grpo_stages):
        raise RecipeError(f"{where}.grpo_stages: stage names must be unique")
    for i, plan in enumerate(loop.schedule):
        at = f"{where}.schedule[{i}]"
        for key in ("sources", "rl_sources"):
            for name in getattr(plan, key) or []:
                if name not in sources:
                    raise RecipeError(f"{at}.{key}: {name!r} is not one of the recipe's sources "
                                      f"({', '.join(sorted(sources))})")
        for key in ("sft_weights", "rl_weights"):
            for name, weight in (getattr(plan, key) or {}).items():
                if name not in sources:
                    raise RecipeError(f"{at}.{key}: {name!r} is not one of the recipe's sources")
                if weight < 0:
                    raise RecipeError(f"{at}.{key}.{name}: must be >= 0")
        _check_generator(plan.generator, i, loop, at)
        if plan.rl_set not in ("pick", "fixed"):
            raise RecipeError(f"{at}.rl_set: {plan.rl_set!r} is not pick or fixed")
        if plan.pick is not None and plan.pick not in ("shortest", "random", "all"):
            raise RecipeError(f"{at}.pick: {plan.pick!r} is not shortest, random or all")
        if plan.samples is not None and plan.samples < 1:
            raise RecipeError(f"{at}.samples: must be at least 1")
    if loop.schedule and loop.schedule[0].rl_set == "fixed":
        raise RecipeError(f"{where}.schedule[0].rl_set: iteration 1 has no earlier rl set to keep; use pick")
    if loop.launch.num_processes < 1:
        raise RecipeError(f"{where}.launch.num_processes: must be at least 1")
    if loop.launch.config_file is not None:
        path = _local(loop.launch.config_file, base)
        if not path.is_file():
            raise RecipeError(f"{where}.launch.config_file: {path} does not exist (an accelerate config file)")
        loop.launch.config_file = str(path)


def _check_generator(gen: Generator | str | None, i: int, loop: LoopConfig, at: str) -> None:
    if gen is None or gen == "final":
        return
    if isinstance(gen, str):
        raise RecipeError(f"{at}.generator: {gen!r}; write final or {{stage: NAME, step: STEPS}}")
    if i == 0:
        raise RecipeError(f"{at}.generator: iteration 1's data comes from distillation; a generator applies from "
                          "iteration 2 on")
    names = [s.name for s in loop.grpo_stages]
    if gen.stage is not None and gen.stage not in names:
        raise RecipeError(f"{at}.generator.stage: {gen.stage!r} is not one of loop.grpo_stages "
                          f"({', '.join(names) or 'none: leave stage out'})")
    if gen.step is not None and gen.step < 1:
        raise RecipeError(f"{at}.generator.step: must be at least 1 (a TRL optimizer step with a checkpoint)")


def _check_eval(ev: EvalSettings, names: set[str], where: str, base: Path) -> None:
    for key, protocol in [("protocol", ev.protocol), ("base_protocol", ev.base_protocol or "vlfactory"),
                          *((f"protocols.{bench}", p) for bench, p in ev.protocols.items())]:
        if protocol not in PROTOCOLS:
            raise RecipeError(f"{where}: {key}: {protocol!r} is not one of {', '.join(PROTOCOLS)}")
    for key, table in (("protocols", ev.protocols), ("formats", ev.formats)):
        for bench in table:
            if bench not in names:
                raise RecipeError(f"{where}: {key}.{bench}: not a source or benchmark of the recipe")
    for bench, fmt in ev.formats.items():
        if fmt not in PROMPT_FORMATS:
            raise RecipeError(f"{where}: formats.{bench}: {fmt!r} is not one of {', '.join(PROMPT_FORMATS)}")
    if "judge" in [ev.protocol, ev.base_protocol, *ev.protocols.values()] and ev.judge is None:
        raise RecipeError(f"{where}: judge: missing; protocol judge needs a judge model (backend, model, prompt)")
    if ev.prompt:
        ev.prompt = _template_ref(ev.prompt, base)
    if ev.judge is not None:
        _check_stage(ev.judge, f"{where}: judge")
        ev.judge.prompt = _template_ref(ev.judge.prompt or "mathverse_judge", base)
    if ev.sampling is not None and ev.sampling.n < 1:
        raise RecipeError(f"{where}: sampling.n: must be at least 1")


def _check_source(src: Source, where: str, base: Path) -> None:
    if src.format not in FORMATS:
        raise RecipeError(f"{where}: format: {src.format!r} is not one of {', '.join(FORMATS)}")
    unknown = set(src.columns) - set(COLUMN_KEYS)
    if unknown:
        key = sorted(unknown)[0]
        raise RecipeError(f"{where}: columns.{key}: unknown schema column{_hint(key, COLUMN_KEYS)} "
                          f"(map any of {', '.join(COLUMN_KEYS)})")
    for key, col in src.columns.items():
        if isinstance(col, Column):
            _check_column(col, key, f"{where}: columns.{key}")
        elif col is not None and not isinstance(col, str):
            raise RecipeError(f"{where}: columns.{key}: expected a column name, a \"{{template}}\" or a mapping "
                              f"{{column: NAME, ...}}, got {col!r}")
        elif col and ("{" in col or "}" in col):
            _check_template(col, f"{where}: columns.{key}")
    if src.explode is not None and not src.explode:
        raise RecipeError(f"{where}: explode: name the list column whose elements become rows (e.g. explode: qa)")
    for name, values in src.where.items():
        if not values:
            raise RecipeError(f"{where}: where.{name}: an empty list keeps no row; list the values to keep")
    for name, values in src.where_not.items():
        if not values:
            raise RecipeError(f"{where}: where_not.{name}: an empty list drops no row; list the values to drop")
    if src.format == "synthetic":
        if src.n < 1:
            raise RecipeError(f"{where}: n: must be at least 1")
        return
    if not src.path:
        raise RecipeError(f"{where}: path: missing (the {src.format} data to read)")
    if src.limit is not None and src.limit < 0:
        raise RecipeError(f"{where}: limit: must be >= 0")
    local = _local(src.path, base, f"{where}: path")
    if src.format == "hf":
        # A hub id (org/name) is not a local path; a local folder or file is.
        if local.exists():
            src.path = str(local)
    else:
        if not any(ch in src.path for ch in "*?[") and not local.exists():
            raise RecipeError(f"{where}: path: {local} does not exist")
        if local.exists() and not (local.is_file() or local.is_dir()):  # a FIFO or a device would hang or never end
            raise RecipeError(f"{where}: path: {local} is not a regular file or a folder")
        src.path = str(local)
    if src.images_root:
        root = _local(src.images_root, base, f"{where}: images_root")
        if not root.is_dir():
            raise RecipeError(f"{where}: images_root: {root} is not a folder")
        src.images_root = str(root)


def _check_column(col: Column, key: str, where: str) -> None:
    """A Column mapping's rules fit the schema column they fill (the data is checked at preflight)."""
    import re

    checks = [
        (bool(col.column), ".column: name the source column to read"),
        (col.pick is None or col.pick in PICKS, f".pick: {col.pick!r} is not one of {', '.join(PICKS)}"),
        (col.tag is None or re.fullmatch(r"[A-Za-z][\w-]*", col.tag) is not None,
         f".tag: {col.tag!r} is not a tag name (answer, for <answer> ... </answer>)"),
        (col.split is None or col.split != "", ".split: the separator is empty"),
        (col.split is None or key == "choices", ".split: makes a list, which only choices holds"),
        (col.turn is None or col.turn != "", ".turn: name the role (user, assistant, human, gpt)"),
        (not (col.pick and col.index is not None), ": pick and index both choose one element of a list; keep one"),
        (key != "image" or not (col.option_of or col.tag or col.split or col.strip or col.pick),
         ": only column, turn and index apply to an image"),
    ]
    for ok, message in checks:
        if not ok:
            raise RecipeError(f"{where}{message}")
    markers = [col.strip] if isinstance(col.strip, str) else col.strip or []
    if any(not m for m in markers):
        raise RecipeError(f"{where}.strip: an empty marker removes nothing; list the literal text to remove")
    if isinstance(col.strip, str):
        col.strip = [col.strip]


def _check_template(template: str, where: str) -> None:
    """A column template names source columns only: `"tables/{id}.png"`, `"{a} {b}"`."""
    import string

    try:
        fields = [f for _, f, _, _ in string.Formatter().parse(template) if f is not None]
    except ValueError as e:
        raise RecipeError(f"{where}: {template!r} is not a valid template ({e}); write a column as {{name}} and "
                          "a literal brace as {{{{ or }}}}") from None
    for name in fields:
        # {0}, {} or {a.b}/{a[0]} would reach into positional arguments or attributes, not columns.
        if not name or name.isdigit() or any(c in name for c in ".[]"):
            raise RecipeError(f"{where}: {template!r}: {{{name}}} is not a column name; name a column, "
                              "e.g. \"tables/{id}.png\"")


def _template_ref(ref: str, base: Path) -> str:
    """A template reference that no longer depends on the recipe's folder: a shipped name stays a
    name, a file relative to the recipe becomes an absolute path."""
    local = _local(ref, base)
    return str(local) if local.is_file() else ref


def _check_stage(stage: GenerationConfig, where: str) -> None:
    s, o = stage.sampling, stage.options
    checks = [(s.n >= 1, "sampling.n: must be at least 1"),
              (1 <= s.max_tokens <= MAX_TOKENS, f"sampling.max_tokens: must be 1 to {MAX_TOKENS:,} (new tokens per answer)"),
              (s.temperature >= 0, "sampling.temperature: must be >= 0"), (0 < s.top_p <= 1, "sampling.top_p: must be in (0, 1]"),
              (getattr(o, "concurrency", 1) >= 1, "concurrency: must be at least 1"),
              (getattr(o, "timeout_s", 1) > 0, "timeout_s: must be > 0"),
              (getattr(o, "batch_size", 1) >= 1, "batch_size: must be at least 1"),
              (stage.commit_rows >= 1, "commit_rows: must be at least 1")]
    for ok, message in checks:
        if not ok:
            raise RecipeError(f"{where}.{message}")
    from urllib.parse import urlsplit

    urls = getattr(o, "base_url", None) or []
    for url in [urls] if isinstance(urls, str) else urls:
        try:
            parts = urlsplit(url) if isinstance(url, str) else None
            ok = parts is not None and parts.scheme in ("http", "https") and bool(parts.hostname)
        except ValueError:  # a malformed port or IPv6 address
            ok = False
        if not ok:
            raise RecipeError(f"{where}.base_url: {redact(str(url))!r} is not an http:// or https:// URL of a server, "
                              "e.g. http://127.0.0.1:8000/v1")


def _check_slug(name: str, where: str) -> None:
    if not SLUG.fullmatch(name):
        raise RecipeError(f"{where}: {name!r} cannot name a file: use letters, digits, '_', '-' and '.', starting "
                          "with a letter or digit (at most 100)")


def _local(p: str, base: Path, where: str = "path", resolve: bool = False) -> Path:
    path = Path(p).expanduser()
    if path.is_absolute() and not resolve:
        return path
    try:
        return (base / path).resolve()
    except (RuntimeError, OSError) as e:  # a symbolic link loop: Python 3.11 raises RuntimeError
        raise RecipeError(f"{where}: {p}: cannot be resolved ({e})") from None


def _no_secrets(raw: Any, where: str) -> None:
    """Refuse a key that looks like it holds a secret, at any depth (vlfactory.redact.secret_key), and YAML
    that is not a tree (a recursive anchor, an alias bomb)."""
    try:
        key = find_secret(raw)
    except ValueError as e:
        raise RecipeError(f"{where}: {e}") from None
    if key:
        raise RecipeError(f"{where}: {key}: secrets do not belong in recipes (they are stored in the catalog and "
                          "published); put it in an environment variable and name that variable instead")


class _UniqueKeys(yaml.SafeLoader):
    """safe_load that refuses a key given twice in one mapping (PyYAML keeps the last, silently)."""

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            if isinstance(key, typing.Hashable) and key in seen:
                raise yaml.constructor.ConstructorError(None, None, f"duplicate key {key!r}", key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep)


def _yaml(text: str) -> Any:
    return yaml.load(text, Loader=_UniqueKeys)  # noqa: S506 (a SafeLoader)


def _yaml_file(path: Path) -> Any:
    try:
        if path.stat().st_size > MAX_RECIPE_BYTES:
            raise RecipeError(f"{path}: {path.stat().st_size:,} bytes, over the {MAX_RECIPE_BYTES:,} a settings "
                              "file may have")
        return _yaml(path.read_text())
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as e:
        raise RecipeError(f"{path}: {str(e).splitlines()[0]}") from None


def _hint(key: str, options) -> str:
    close = difflib.get_close_matches(key, list(options), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _build_generation(cls, raw: dict, where: str):
    """A generation stage block: its own keys, plus the chosen backend's options written flat beside them."""
    from vlfactory.backends import BACKENDS

    own = {f.name for f in dataclasses.fields(cls) if not f.metadata.get("internal")}
    backend = raw.get("backend", "openai")
    if backend not in BACKENDS:
        raise RecipeError(f"{where}: backend: {backend!r} is not one of {', '.join(BACKENDS)}")
    options_cls = backend_config_class(backend)
    allowed = {f.name for f in dataclasses.fields(options_cls)} - {"model"}
    options = {}
    for key in [k for k in raw if k not in own]:
        if key in allowed:
            options[key] = raw[key]
            continue
        other = [b for b in BACKENDS if b != backend and key in {f.name for f in dataclasses.fields(
            backend_config_class(b))}]
        if other:
            raise RecipeError(f"{where}: {key}: an option of the {other[0]} backend; this stage's backend is "
                              f"{backend} (its options: {', '.join(sorted(allowed))})")
        known = sorted(own | allowed)
        raise RecipeError(f"{where}: {key}: unknown key{_hint(str(key), known)}; known keys: {', '.join(known)}")
    stage = _build_fields(cls, {k: v for k, v in raw.items() if k in own}, where)
    if backend == "openai" and not options.get("base_url"):
        raise RecipeError(f"{where}: base_url: missing (the OpenAI-compatible server, e.g. http://127.0.0.1:8000/v1)")
    stage.options = _build(options_cls, {"model": stage.model, **options}, where)
    return stage


def _build(cls, raw: Any, where: str):
    """Build a dataclass from a mapping, checking keys and simple types."""
    if not isinstance(raw, dict):
        raise RecipeError(f"{where}: expected a mapping for {cls.__name__}, got {type(raw).__name__}")
    if issubclass(cls, GenerationConfig):
        return _build_generation(cls, raw, where)
    return _build_fields(cls, raw, where)


def _build_fields(cls, raw: dict, where: str):
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
    if origin in (list, tuple):
        if not isinstance(value, list):
            raise RecipeError(f"{where}: expected a list, got {value!r}")
        items = [_coerce(args[0], v, f"{where}[{i}]") for i, v in enumerate(value)]
        return items if origin is list else tuple(items)
    if origin is dict:
        if not isinstance(value, dict):
            raise RecipeError(f"{where}: expected a mapping, got {value!r}")
        return {str(k): _coerce(args[1], v, f"{where}.{k}") for k, v in value.items()}
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if tp in (str, int, float, bool) and (type(value) is not tp):
        raise RecipeError(f"{where}: expected {tp.__name__}, got {value!r}")
    return value
