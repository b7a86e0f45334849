"""Recipes: YAML files parsed into typed configs, with a JSON Schema for editors.

A recipe says where the lake is, which sources to ingest (and which benchmark
sources to keep out of the training data), and how each later stage runs.
The package holds the typed configs: plain dataclasses that the stages take and
derive from one another (`dataclasses.replace`), the recipe itself and the
stages' sets here, sources in .source, generation blocks in .generation, the
loop in .loop, the field types they share in .fields. Their annotations are the
recipe's schema: .load reads YAML into them through pydantic, which derives the
checks and the JSON Schema from them. Unknown keys and impossible values fail at
load time with one line naming the key path and the fix, before anything is
written:

    from vlfactory.recipe import load_recipe
    recipe = load_recipe("recipes/quickstart.yaml")

    vlfactory recipe schema > recipe.schema.json   # editors validate and complete recipe YAML

Relative paths inside a recipe are relative to the recipe file. A recipe name
without a path (`quickstart`) is looked up among the recipes shipped with the
package. A field added to a config is a recipe key at once: its type is its check
(Field(ge=1), a Literal of its choices), its comment its documentation.
"""

from __future__ import annotations

import dataclasses
import hashlib
from dataclasses import dataclass, field
from typing import Annotated, Literal

from pydantic import AfterValidator, BeforeValidator, Field

from vlfactory.backends import backend_config_class
from vlfactory.recipe.fields import FORBID, MAX_TOKENS, SLUG, AtLeast1, Band, Decoding, Internal, Pick, Slug, fail, slug
from vlfactory.recipe.generation import Caption, CaptionConfig, Distil, DistilConfig, Generation, GenerationConfig
from vlfactory.recipe.loop import (
    TRACKED_KEYWORDS,
    Generator,
    GRPOStage,
    IterationPlan,
    LaunchConfig,
    LoopConfig,
    TrainerSettings,
)
from vlfactory.recipe.source import COLUMN_KEYS, FORMATS, MAX_IMAGE_BYTES, PICKS, Column, Columns, Source, _source
from vlfactory.verify.protocols import PROTOCOLS

GRADERS = tuple(p for p in PROTOCOLS if p != "judge")  # verify.protocol: an LLM's verdict is for evaluation only
MAX_RECIPE_BYTES = 2**20  # a recipe is settings, not data: PyYAML holds ~100x a file's size while parsing it


class RecipeError(ValueError):
    """A recipe that cannot run; the message names the key and the fix."""



# OpenVLThinker's reflection keywords: the ones paper v1 names as examples ("e.g.", section 4.2, Table 3: the
# chain is cut at the first one); its complete list is unpublished.
REFLECTION_KEYWORDS = ["Wait", "But wait", "But the question"]


@dataclass
class VerifyConfig:
    """How the verify stage grades traces and rollouts, and cleans accepted traces for SFT.

    The defaults are OpenVLThinker's: a correct final answer is kept, then cut at the paper's
    reflection keywords. Every stricter filter (word caps, repetition, caption phrases, the
    cleaned chain re-verified) is an opt-in.
    """

    __pydantic_config__ = FORBID
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
    protocol: Literal[GRADERS] = field(default="vlfactory", metadata={
        "fix": "judge, an LLM's verdict, is for evaluation only"})



@dataclass
class SFTSetConfig:
    """Which accepted samples become the `sft` set."""

    __pydantic_config__ = FORBID
    candidates: Literal["traces", "rollouts", "both"] = "traces"  # distillation | self-improvement | both
    model: str | None = None          # only samples of this model (default: all)
    per_problem: AtLeast1 = 1         # k: at most this many examples per problem
    pick: Pick = "shortest"
    seed: int = 0
    weights: dict[str, float] | None = None  # per source; balances the mix (default: take everything)
    max_examples: int | None = None
    cleaned: bool = True              # use the cleaned completion (reflection-truncated, capped)
    prompt: str | None = None         # the user turn's template (default: the rollout stage's, else `rollout`)
    # Whose grades count: the recipe's verify block (set by Recipe.stage_config).
    verify: Internal[VerifyConfig] = field(default_factory=VerifyConfig)


@dataclass
class RLSetConfig:
    """Which problems the `rl` set keeps, by the policy's pass rate on rollouts."""

    __pydantic_config__ = FORBID
    band: Band = field(default_factory=lambda: [0.0, 0.75])  # keep pass rates in [lo, hi]
    min_samples: AtLeast1 = 1         # problems with fewer graded rollouts are left out
    model: str | None = None          # whose rollouts count (default: the rollout stage's model)
    prompt: str | None = None         # the GRPO prompt template (default: the rollout stage's, else `rollout`)
    # Pass rates come from the current verifier's grades (the verify block), of the policy's rollouts
    # (`model`, else the rollout block's model); both set by Recipe.stage_config.
    verify: Internal[VerifyConfig] = field(default_factory=VerifyConfig)
    policy: Internal[GenerationConfig | None] = None

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
Protocol = Literal[PROTOCOLS]


@dataclass
class EvalSettings:
    """How benchmarks are evaluated (the recipe's `eval:` block), by `vlfactory eval` and by every
    evaluation of the loop. Without the block: the rollout stage's template, greedy, one sample,
    vlfactory's own grader."""

    __pydantic_config__ = FORBID
    protocol: Protocol = "vlfactory"  # one of vlfactory.verify.PROTOCOLS, e.g. openvlthinker, judge (an LLM judge)
    protocols: dict[str, Protocol] = field(default_factory=dict)  # per benchmark, e.g. {mathverse: judge}
    formats: dict[str, Literal[PROMPT_FORMATS]] = field(default_factory=dict)  # per benchmark
    prompt: str | None = None         # the template of benchmarks without a format (default: the rollout stage's)
    sampling: Decoding | None = None  # decoding; n samples per problem give pass@1..n (default: greedy, n 1)
    judge: Generation | None = None   # the LLM judge for protocol judge (any backend; openai for a hosted one)
    # The base model's protocol (iteration 0 of the loop), for every benchmark: e.g. qwen-boxed, the official Qwen
    # baseline that the paper's base-model numbers come from (default: the same as the other models')
    base_protocol: Protocol | None = None


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


def _backend(name: str) -> str:
    from vlfactory.tracking import BACKENDS  # accelerate's trackers

    if name not in BACKENDS:
        fail(f"{name!r} is not one of {', '.join(BACKENDS)} (leave the block out for no tracking)")
    return name


@dataclass
class TrackingConfig:
    """Experiment tracking (vlfactory.tracking): off without the block; `--report-to` overrides `backend`."""

    __pydantic_config__ = FORBID
    backend: Annotated[str, AfterValidator(_backend)]  # one of vlfactory.tracking.BACKENDS (report_to names)
    project: Slug | None = None       # the W&B / trackio project (default: the recipe's name)
    dir: str | None = None            # local files: wandb's dir, TensorBoard's log folder, TRACKIO_DIR (cwd-relative)


@dataclass
class LakeConfig:
    __pydantic_config__ = FORBID
    catalog: str | None = None        # a folder or a ducklake: URI
    data_path: str | None = None


@dataclass
class Recipe:
    __pydantic_config__ = FORBID
    name: Slug
    sources: Annotated[list[Annotated[Source, AfterValidator(_source)]], Field(min_length=1)] = field(metadata={
        "fix": "list at least one source"})
    benchmarks: list[Annotated[Source, AfterValidator(_source)]] = field(default_factory=list)
    # `lake: FOLDER` is short for `lake: {catalog: FOLDER}`
    lake: Annotated[LakeConfig, BeforeValidator(lambda v: {"catalog": v} if isinstance(v, str) else v,
                                                json_schema_input_type=str | LakeConfig)] = field(
        default_factory=LakeConfig)
    decontaminate_by: list[Literal["image", "question"]] = field(default_factory=lambda: ["image", "question"])
    caption: Caption | None = None
    distil: Distil | None = None
    verify: VerifyConfig = field(default_factory=VerifyConfig)
    sft: SFTSetConfig | None = None
    rollout: Generation | None = None
    rl: RLSetConfig | None = None
    loop: LoopConfig | None = None
    eval: EvalSettings | None = None  # how benchmarks are evaluated (default: EvalSettings())
    tracking: TrackingConfig | None = None  # experiment tracking (default: off)
    batch_rows: AtLeast1 = 500        # rows per catalog commit during ingest
    full_decode: bool = False         # inflate every pixel when checking images (default: verify every byte)
    max_image_bytes: AtLeast1 = MAX_IMAGE_BYTES  # a larger image file is rejected unread (image_too_large)
    description: str | None = None
    # filled by load_recipe
    text: Internal[str] = field(default="", repr=False)
    path: Internal[str | None] = None

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
        gen = base.with_model(model, sampling=sampling, prompt=settings.prompt or base.prompt)
        protocol = settings.protocols.get(benchmark, settings.protocol)
        if baseline and settings.base_protocol:
            protocol = settings.base_protocol
        return EvalConfig(src, gen, self.verify, limit, iteration, stage, protocol, settings.formats.get(benchmark),
                          settings.judge)

    def loop_ingest_config(self) -> IngestConfig:
        """What `iterate` ingests: the sources its schedule, GRPO stages and pretraining use (every source without a
        schedule), so a recipe that extends another and runs other sources (released.yaml) does not read the ones
        it leaves."""
        cfg, loop = self.stage_config("ingest"), self.loop
        if not loop.schedule:
            return cfg
        used = {s for plan in loop.schedule for s in (plan.sources or [src.name for src in cfg.sources])}
        used |= {s for plan in loop.schedule for s in plan.rl_sources or []}
        used |= {st.source for st in loop.grpo_stages if st.source} | set(loop.pretrain_sources or [])
        return dataclasses.replace(cfg, sources=[src for src in cfg.sources if src.name in used])

    def rollout_by(self, model: str, plan: IterationPlan | None = None) -> GenerationConfig:
        """The rollout block with `model` answering (the loop's SFT model, for pass rates); with an iteration's
        plan, that plan's samples and temperature (how the previous RL model writes the next round's data)."""
        cfg = self.rollout.with_model(model)
        if plan is None:
            return cfg
        sampling = dataclasses.replace(
            cfg.sampling, n=plan.samples or cfg.sampling.n,
            temperature=cfg.sampling.temperature if plan.temperature is None else plan.temperature)
        return dataclasses.replace(cfg, sampling=sampling)



# The loader reads YAML into the types above and those imported here (it imports them: after them, here).
from vlfactory.recipe.load import _extended, _merged, find_recipe, load_recipe, parse_recipe, schema, shipped_recipes

__all__ = [  # the configs the stages take, what loads them, and the names the code around them uses
    "COLUMN_KEYS",
    "FORMATS",
    "GRADERS",
    "MAX_IMAGE_BYTES",
    "MAX_RECIPE_BYTES",
    "MAX_TOKENS",
    "PICKS",
    "PROMPT_FORMATS",
    "REFLECTION_KEYWORDS",
    "SLUG",
    "TRACKED_KEYWORDS",
    "CaptionConfig",
    "Column",
    "Columns",
    "DistilConfig",
    "EvalConfig",
    "EvalSettings",
    "GRPOStage",
    "GenerationConfig",
    "Generator",
    "IngestConfig",
    "IterationPlan",
    "LakeConfig",
    "LaunchConfig",
    "LoopConfig",
    "RLSetConfig",
    "Recipe",
    "RecipeError",
    "SFTSetConfig",
    "Source",
    "TrackingConfig",
    "TrainerSettings",
    "VerifyConfig",
    "_extended",
    "_merged",
    "find_recipe",
    "load_recipe",
    "parse_recipe",
    "schema",
    "shipped_recipes",
    "slug",
]
