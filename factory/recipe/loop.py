"""A recipe's `loop:` block: what `vlfactory iterate` trains, with which TRL settings, how often. A field added
to one of these configs is a recipe key at once (its type is its check); names it refers to (sources, stages)
are checked against the rest of the recipe in vlfactory.recipe.load._loop."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BeforeValidator, Field

from vlfactory.recipe.fields import FORBID, AtLeast1, Band, Pick, Slug, fail

# The words whose frequency the paper follows across iterations (its figure on reflective behaviour).
TRACKED_KEYWORDS = ["identify", "recall", "given", "provided", "first", "wait", "check", "maybe"]

TrainerSettings = dict[str, Any] | str | None  # TRL config fields, or a trainers YAML file (relative to the recipe)


@dataclass
class LoopConfig:
    """The iteration loop (`vlfactory iterate`): what to train, with which TRL settings, how often."""

    __pydantic_config__ = FORBID
    base_model: str                   # the VLM every SFT starts from (OpenVLThinker: Qwen2.5-VL-7B-Instruct)
    # Teach the base model to see first: SFT on the sources' ground-truth captions (image -> description),
    # SFTConfig fields or a trainers YAML; the model it makes is the base of every iteration. For a base that
    # already reads images (Qwen2.5-VL), leave it out.
    pretrain: TrainerSettings = None
    pretrain_sources: list[str] | None = None  # whose ground-truth captions it learns (default: iteration 1's)
    # pretrained: the caption block runs the pretrained base (it learned to describe images), so the captions the
    # teacher reads are model-made; leave it out for the caption block's own model
    captioner: Literal["pretrained"] | None = None
    iterations: int = 2
    output_dir: str = "runs"          # checkpoints: OUTPUT/iterK/{sft,grpo}-<config hash> (relative to the cwd)
    sft: TrainerSettings = None       # SFTConfig fields, or a trainers YAML file (default: tiny CPU run)
    grpo: TrainerSettings = None      # GRPOConfig fields (reward_weights: [accuracy, format])
    benchmarks: list[str] = field(default_factory=list)  # evaluated for the base model and every SFT and GRPO model
    keep_traces: bool = False         # iterations > 1 also keep the distilled traces as SFT candidates
                                      # (OpenVLThinker: no; a weak model with few correct rollouts: yes)
    eval_limit: int | None = None
    grpo_stages: list[Annotated[GRPOStage, AfterValidator(_one_rl_set)]] = field(default_factory=list)  # several GRPO
                                      # runs in a row (medium, hard)
    schedule: list[IterationPlan] = field(default_factory=list)  # per iteration; the last one repeats
    track_keywords: list[str] = field(default_factory=lambda: list(TRACKED_KEYWORDS))  # the report's curves
    # How each training starts: `accelerate launch` as a child process (default: one process, no config)
    launch: LaunchConfig = field(default_factory=lambda: LaunchConfig())

    def plan(self, k: int) -> IterationPlan:
        """Iteration k's plan (1-based): its entry in `schedule`, else the last entry, else the defaults."""
        return self.schedule[min(k, len(self.schedule)) - 1] if self.schedule else IterationPlan()


def _one_rl_set(stage: GRPOStage) -> GRPOStage:
    if (stage.band is None) == (stage.source is None):
        fail("give its rl set as band: [lo, hi] (pass rates of the SFT model) or source: NAME (every problem of "
             "that source), one of the two")
    return stage


@dataclass
class GRPOStage:
    """One GRPO run of the loop; stages run in order, each from the model the one before made
    (OpenVLThinker: 5 epochs on a "medium" set with the vision tower frozen, then 15 on a "hard" set)."""

    __pydantic_config__ = FORBID
    name: Slug
    band: Band | None = None          # the rl set of this stage: pass rates of the SFT model in [lo, hi]; or
    config: TrainerSettings = None    # GRPOConfig fields or a trainers YAML (default: loop.grpo)
    min_samples: int | None = None    # default: the rl block's
    source: str | None = None         # ... every problem of this source (e.g. the released ydeng9/medium_grpo_only)


@dataclass
class Generator:
    """Which checkpoint writes the next round's data (`loop.schedule[k].generator`, k > 1): a GRPO stage's model
    of the iteration before, at a step checkpoint (OpenVLThinker's generation script: the hard stage's EasyR1
    step 30 = TRL step 120) or its final model; missing (a shorter run), the stage's final model."""

    __pydantic_config__ = FORBID
    stage: str | None = None          # a grpo_stages name (default: the last stage)
    step: Annotated[int, Field(ge=1)] | None = field(default=None, metadata={
        "fix": "a TRL optimizer step with a checkpoint"})  # its checkpoint-<step> folder (default: the final model)


def _generator(value: Any) -> Any:
    if isinstance(value, str) and value != "final":
        fail(f"{value!r}; write final or {{stage: NAME, step: STEPS}}")
    return value


@dataclass
class LaunchConfig:
    """How the loop starts each training: `accelerate launch -m vlfactory.trainers.KIND`, a child process."""

    __pydantic_config__ = FORBID
    num_processes: AtLeast1 = 1       # OpenVLThinker: 8 GPUs
    config_file: str | None = None    # an accelerate config (DeepSpeed ZeRO-3, FSDP), relative to the recipe


@dataclass
class IterationPlan:
    """What one iteration of the loop works on (`loop.schedule`, one entry per iteration)."""

    __pydantic_config__ = FORBID
    sources: list[str] | None = None  # the sources of this iteration (default: all of the recipe's)
    rl_sources: list[str] | None = None  # the RL set's sources (default: the iteration's; OpenVLThinker: Geometry3K,
                                      # GEOS, FigureQA, CLEVR, SuperCLEVR)
    sft_max_examples: int | None = None   # cap of the SFT set (OpenVLThinker iterations 2-3: 5k)
    sft_weights: dict[str, Annotated[float, Field(ge=0)]] | None = None  # per source: the SFT set's mix
    rl_weights: dict[str, Annotated[int, Field(ge=0)]] | None = None  # copies of each problem of a source in GRPO's
                                      # data (default 1; paper Table 2: iteration 3's has more Geometry3K, SuperCLEVR)
    # who writes this round's data: final (default) or {stage, step}
    generator: Annotated[Generator | Literal["final"] | None, BeforeValidator(_generator)] = None
    sft_cleaned: bool | None = None   # cut reflections (default: the sft block for iteration 1, no later:
                                      # the RL model's own answers are kept as they are)
    samples: AtLeast1 | None = None   # k > 1: the previous RL model's samples per problem (default: the rollout block's)
    temperature: float | None = None  # their temperature (OpenVLThinker: near-greedy, one sample)
    pick: Pick | None = None          # which correct sample is kept (default: the sft block's)
    rl_set: Literal["pick", "fixed"] = "pick"  # pick: by the new SFT model's pass rates; fixed: the previous
                                      # iteration's set

