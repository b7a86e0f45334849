"""The OpenVLThinker loop: distil, fine-tune, reinforce, let the model write the next round's data.

    vlfactory iterate recipes/quickstart.yaml

The base model is evaluated first (iteration 0). Iteration 1 builds SFT data by
distillation (caption -> reasoner -> verify -> sft set), fine-tunes the base
model, measures pass rates with rollouts of that model to pick the RL set, runs
GRPO from the SFT model (one run, or the recipe's `grpo_stages` in a row, each
on its own pass-rate band or on every problem of a named source, e.g.
OpenVLThinker's "medium" then "hard"), and evaluates the SFT model and every
GRPO model on every loop benchmark. Iteration k > 1 builds its SFT data from
the verified answers of iteration k-1's RL model, or of the checkpoint the plan
names (`generator`; its own sampling: OpenVLThinker takes one near-greedy
sample, kept as written) and fine-tunes the *base* model again, as
OpenVLThinker does, then RL (on a re-picked or a fixed set) and eval.
`loop.schedule` says per iteration which sources, SFT cap and weights, GRPO's
weights per source, how the next round is sampled and by whom, and whether the
RL set is fixed. Every training runs as the paper's did: `accelerate launch`
of the trainer in a child process, with `loop.launch`'s process count and
accelerate config (vlfactory.trainers.launch). Tags name every step's data:
`iterK-sft`, `iterK-rl` (`iterK-rl-<stage>`), `iterK`. At the end a table gives each model's
held-out accuracy with a 95% (Wilson) interval.

Every step is resumable: generation stages skip what the lake holds, sets
that did not change are not rewritten (so their tags stay put), and a
checkpoint lives at OUTPUT/{sft,grpo}-<address>, the address a digest
of (the set's rows, base model identity, resolved trainer settings): the same
training is found finished and skipped, a different one (new data, another
base model, an edited trainers YAML) gets its own folder. A rerun after a
crash continues from the first incomplete step; an evaluation done before is
recorded for its iteration without generating. Models are known by content
(vlfactory.models.identity), so rollouts and evals of a retrained model are
never served from the cache of an older one.
The lake is opened per step and closed while training, since a local lake
admits one process at a time and the trainers open it themselves.
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
from pathlib import Path

from vlfactory import tracking
from vlfactory.recipe import GRPOStage, IterationPlan, Recipe, RecipeError, SFTSetConfig
from vlfactory.stages import Scope, StageResult, run_stage
from vlfactory.stores import runs
from vlfactory.stores.lake import Lake, LakeSpec


class Steps:
    """The loop's steps, each resumable and said as it starts and ends: a stage, a set's tag, a training, an
    evaluation. Each opens the lake for itself and closes it after: a local lake admits one process at a time,
    and a training's child process opens it too."""

    def __init__(self, recipe: Recipe, spec: LakeSpec, say=print, limit: int | None = None, progress=None):
        self.recipe, self.spec, self.say = recipe, spec, say
        self.progress = progress          # progress(stage) -> a context manager yielding a Progress callback (the CLI's)
        self.k, self.t0 = 0, time.perf_counter()  # the iteration under way; when the loop started
        self.scope = Scope.of(recipe, limit)
        self.cfg = recipe.loop
        self.run_id: str | None = None
        self.out = Path(self.cfg.output_dir).resolve()  # relative to the working directory, like ./lake
        self.evals: list[dict] = []       # every evaluation of this run, for the closing table

    def lake(self) -> Lake:
        lake = Lake(self.spec)
        lake.run_id = self.run_id
        return lake

    def started(self, step: str) -> float:
        """Say a step is starting: its iteration and the loop's elapsed time (also where no terminal shows a bar)."""
        self.say(f"iter{self.k} {step}: started at {_clock(time.perf_counter() - self.t0)}")
        return time.perf_counter()

    def ended(self, step: str, since: float, reused: bool) -> None:
        now = time.perf_counter()
        self.say(f"iter{self.k} {step}: {'reused (done before), ' if reused else 'done in '}{now - since:.1f}s, "
                 f"{_clock(now - self.t0)} elapsed")

    def stage(self, name: str, config, scope: Scope | None = None) -> StageResult:
        since = self.started(name)
        with self.lake() as lake, self.progress(name) if self.progress else contextlib.nullcontext() as callback:
            result = run_stage(lake, name, config, scope or self.scope, callback)
        self.say(result.line())
        self.ended(name, since, reused=not (result.written or result.rejected or result.failed))
        return result

    def tag_set(self, table: str, tag: str) -> None:
        """Tag the set's current content, unless the tag already names the same rows."""
        with self.lake() as lake:
            snap, moved = lake.tag_if_changed(tag, table)
            rows = lake.count(table) if moved else None
        if not moved:
            return
        if rows == 0:
            raise RecipeError(f"{tag}: the {table} set is empty; see the verify funnel above "
                              f"(`vlfactory sql \"SELECT reason, count(*) FROM rejected GROUP BY ALL\"`)")
        self.say(f"tagged {tag} -> snapshot {snap} ({rows} {table} rows)")

    def keep_tag(self, old: str, new: str) -> None:
        """A fixed set: `new` names what `old` named."""
        with self.lake() as lake:
            if old not in lake.tags():
                raise RecipeError(f"rl_set: fixed keeps the set tagged {old}, which this lake lacks")
            snap = lake.tag(new, old, note=f"the fixed rl set of {old}", force=True)
        self.say(f"tagged {new} -> snapshot {snap} (the fixed rl set of {old})")

    def source_set(self, source: str, tag: str) -> None:
        """A GRPO stage's rl set from a source's problems (`grpo_stages[i].source`), tagged."""
        from vlfactory.stages import rl

        since = self.started(f"rl from {source}")
        with self.lake() as lake:
            result = rl.from_source(lake, self.recipe.stage_config("rl"), Scope((source,), self.scope.limit))
        self.say(result.line())
        self.tag_set("rl", tag)
        self.ended(f"rl from {source}", since, reused=not result.written)

    def train(self, kind: str, dataset: str, model: str, iteration: int, config=None,
              weights: dict[str, int] | None = None) -> str:
        """Train into the folder addressed by (the set's content, base model identity, settings), through
        `accelerate launch` in a child process as `loop.launch` says; a training found finished there is
        skipped without launching. `weights`: GRPO's copies per source (the plan's rl_weights)."""
        from vlfactory.trainers.config import read_settings
        from vlfactory.trainers.launch import launch_training

        settings = read_settings(kind, config if config is not None else getattr(self.cfg, kind))
        if weights:
            settings["source_weights"] = weights
        since = self.started(f"train {kind}")
        # No iteration in the path: the same training in a later iteration is the same checkpoint.
        result = launch_training(kind, dataset, model, settings, self.out, self.spec, launch=self.cfg.launch,
                                 lake_args=self.spec_args(), run_id=self.run_id, iteration=iteration)
        self.say(f"{kind} iter{iteration}: done before ({result.output_dir}), skipped" if result.reused
                 else result.line())
        self.ended(f"train {kind}", since, result.reused)
        return result.output_dir

    def spec_args(self) -> dict:
        """This lake as a trainer opens it: a lake folder by its folder (a moved or copied folder's catalog
        still names the data path where it was made), anything else by its catalog and data path."""
        if self.spec.root is not None:
            return {"lake": str(self.spec.root), "data_path": None}
        return {"lake": self.spec.catalog, "data_path": self.spec.data_path}

    def evaluate(self, model: str, iteration: int, stage: str) -> None:
        """`model` on every loop benchmark, recorded as (iteration, stage) in `evals`."""
        from vlfactory.stages import eval as evaluate

        for name in self.cfg.benchmarks:
            cfg = self.recipe.eval_config(name, model, limit=self.cfg.eval_limit, iteration=iteration, stage=stage,
                                          baseline=iteration == 0)   # eval.base_protocol (the paper's baseline)
            since = self.started(f"eval {name} {stage}")
            with self.lake() as lake:
                result = evaluate.run(lake, cfg).value
            if result.done_before:
                self.say(f"eval {name} iter{iteration} {stage}: done before ({100 * result.accuracy:.1f}%), skipped")
            else:
                self.say(f"iter{iteration} {stage}: {result.line()}")
            self.ended(f"eval {name} {stage}", since, result.done_before)
            tracking.log_eval(name, stage, iteration, result.accuracy, result.problems)
            self.evals.append({"model": model, "identity": result.model, "iteration": iteration, "stage": stage,
                               "benchmark": name, "accuracy": result.accuracy, "problems": result.problems,
                               "samples": result.samples_per_problem})


class Loop(Steps):
    """The paper's steps in the paper's order: pretraining (optional), the base model's evaluation, then per
    iteration SFT data, SFT, eval, rl sets, GRPO stages, eval, tag (`iteration`)."""

    def __init__(self, recipe: Recipe, spec: LakeSpec, say=print, limit: int | None = None, progress=None):
        if recipe.loop is None:
            raise RecipeError(f"{recipe.path or 'recipe'}: loop: missing (base_model, iterations, ...) for iterate")
        if recipe.rollout is None or recipe.rl is None:
            raise RecipeError(f"{recipe.path or 'recipe'}: iterate needs rollout: and rl: sections")
        super().__init__(recipe, spec, say, limit, progress)
        self.base = self.cfg.base_model   # what every SFT starts from: the base model, or the pretrained one
        self.made: dict[int, dict[str, str]] = {}  # per iteration, each GRPO stage's final model, in order

    def pretrain(self) -> str:
        """Teach the base model to see before the loop (`loop.pretrain`): SFT on the ground-truth captions of
        `loop.pretrain_sources` (default: iteration 1's), image -> description, recorded like any training
        (`sft@pretrain`, iteration 0). The model it makes is the base every iteration's SFT starts from, is
        evaluated as iteration 0 and, with `loop.captioner: pretrained`, is the caption model."""
        r = self.recipe
        self.say("== pretraining: the base model learns to see (image -> ground-truth caption) ==")
        sources = self.cfg.pretrain_sources or self.cfg.plan(1).sources
        scope = Scope(tuple(sources), self.scope.limit) if sources else self.scope
        self.stage("ingest", r.stage_config("ingest"))
        self.stage("caption", None, scope)   # the ground-truth captions it learns from; no model yet
        self.stage("sft", SFTSetConfig(candidates="captions", prompt="describe", cleaned=False), scope)
        self.tag_set("sft", "pretrain")
        return self.train("sft", "sft@pretrain", self.cfg.base_model, 0, self.cfg.pretrain)

    def iteration(self, k: int, previous_policy: str | None) -> str:
        """One round: SFT data (distilled in iteration 1, the previous RL model's verified answers after), the sft
        set, SFT from the base model, eval; the SFT model's pass rates, the rl sets, GRPO stage by stage, eval; the
        round's tag. Returns the round's final policy."""
        r, plan = self.recipe, self.cfg.plan(k)
        self.k = k
        tracking.note(iteration=k)
        self.say(f"== iteration {k} ==")
        scope = Scope(tuple(plan.sources), self.scope.limit) if plan.sources else self.scope
        sft = r.stage_config("sft") or SFTSetConfig(prompt=r.rollout.prompt or "rollout", verify=r.verify)
        sft = dataclasses.replace(sft, pick=plan.pick or sft.pick,
                                  max_examples=plan.sft_max_examples or sft.max_examples,
                                  weights=plan.sft_weights or sft.weights)
        if k == 1:  # SFT data by distillation: captions, the reasoner's traces, their verdicts
            self.stage("ingest", r.loop_ingest_config())   # every source an iteration uses, whichever it is
            captions = self.caption_config()
            self.stage("caption", captions, scope)
            if r.distil is not None:
                self.stage("distil", dataclasses.replace(r.stage_config("distil"), captions=captions), scope)
            self.stage("verify", r.verify, scope)
            sft = dataclasses.replace(sft, candidates="traces",
                                      cleaned=sft.cleaned if plan.sft_cleaned is None else plan.sft_cleaned)
        else:
            # The previous RL model (or the checkpoint the plan names) answers from the images; its verified
            # answers are this round's SFT data, kept as written unless the plan says otherwise.
            writer = self.generator(k, plan) if k - 1 in self.made else previous_policy
            self.stage("rollout", r.rollout_by(writer, plan), scope)
            self.stage("verify", r.verify, scope)
            sft = dataclasses.replace(sft, candidates="both" if self.cfg.keep_traces else "rollouts",
                                      model=writer, cleaned=bool(plan.sft_cleaned))
        self.stage("sft", sft, scope)                    # the sft set, SFT from the base model, eval
        self.tag_set("sft", f"iter{k}-sft")
        sft_model = self.train("sft", f"sft@iter{k}-sft", self.base, k)
        self.evaluate(sft_model, k, "sft")

        stages = self.cfg.grpo_stages or [GRPOStage("", r.rl.band, self.cfg.grpo, r.rl.min_samples)]
        rl_scope = Scope(tuple(plan.rl_sources), self.scope.limit) if plan.rl_sources else scope
        if plan.rl_set == "pick" and any(st.source is None for st in stages):
            # Pass rates of the SFT model (its rollouts, graded by the verifier) pick the RL sets.
            self.stage("rollout", r.rollout_by(sft_model), rl_scope)
            self.stage("verify", r.verify, rl_scope)
        policy, self.made[k] = sft_model, {}
        for i, st in enumerate(stages):  # GRPO stage by stage, each from the one before's model, then eval
            tag = self.rl_set(k, st, plan, sft_model, rl_scope)
            policy = self.train("grpo", f"rl@{tag}", policy, k, st.config if st.config is not None else self.cfg.grpo,
                                weights=plan.rl_weights)
            self.made[k][st.name] = policy
            self.evaluate(policy, k, "grpo" if i == len(stages) - 1 else f"grpo-{st.name}")
        with self.lake() as lake:  # the round's tag
            if f"iter{k}" not in lake.tags():
                self.say(f"tagged iter{k} -> snapshot {lake.tag(f'iter{k}')}")
        return policy

    def caption_config(self):
        """The caption block; with `loop.captioner: pretrained` its model is the pretrained base, which
        learned image -> description on the pretraining captions (images of their own)."""
        cfg = self.recipe.stage_config("caption")
        if cfg is not None and self.cfg.captioner == "pretrained":
            cfg = cfg.with_model(self.base)
        return cfg

    def rl_set(self, k: int, st: GRPOStage, plan: IterationPlan, sft_model: str, scope: Scope) -> str:
        """GRPO stage `st`'s set, tagged (the tag returned): the set of the iteration before (`rl_set: fixed`), a
        named source's problems, or the problems whose pass rate by the SFT model lies in the stage's band."""
        r, tag = self.recipe, f"iter{k}-rl" + (f"-{st.name}" if st.name else "")
        if plan.rl_set == "fixed":
            self.keep_tag(f"iter{k - 1}-rl" + (f"-{st.name}" if st.name else ""), tag)
        elif st.source is not None:
            self.source_set(st.source, tag)
        else:
            rl = dataclasses.replace(r.stage_config("rl"), model=sft_model, band=st.band,
                                     min_samples=st.min_samples or r.rl.min_samples)
            self.stage("rl", rl, scope)
            self.tag_set("rl", tag)
        return tag

    def generator(self, k: int, plan: IterationPlan) -> str:
        """The model that writes iteration k's data: iteration k-1's final RL model (`final`, the default), or
        the plan's `{stage, step}`: that GRPO stage's checkpoint-<step>, else (a shorter run, or rotated out
        by save_total_limit) the stage's final model. The step checkpoint is named in `models` with the
        training that made it, so the data's `model` identity leads back to it."""
        made, gen = self.made[k - 1], plan.generator
        if gen is None or gen == "final":
            return list(made.values())[-1]
        stage = gen.stage if gen.stage is not None else list(made)[-1]
        final = made[stage]
        label = f"the {stage} stage" if stage else "the GRPO model"
        if gen.step is None:
            self.say(f"iter{k} generator: {label}'s final model {final}")
            return final
        checkpoint = Path(final) / f"checkpoint-{gen.step}"
        if not (checkpoint / "config.json").is_file():
            self.say(f"iter{k} generator: no step-{gen.step} checkpoint of {label} ({checkpoint}: a run shorter "
                     f"than {gen.step} steps, or save_steps/save_total_limit left none); its final model {final} "
                     "instead")
            return final
        from vlfactory.models import identity
        from vlfactory.trainers.run import name_model, read_record

        model_id, made_by = identity(str(checkpoint)), (read_record(final) or {}).get("training_id")
        with self.lake() as lake, lake.transaction(f"model {model_id}: step {gen.step} of training {made_by}"):
            name_model(lake, model_id, str(checkpoint), made_by, self.run_id)
        self.say(f"iter{k} generator: {label}'s step-{gen.step} checkpoint {checkpoint} ({model_id}, made by "
                 f"training {made_by})")
        return str(checkpoint)

    def run(self, iterations: int | None = None) -> list[str]:
        policies: list[str] = []
        with runs.recorded(self.lake, "iterate", self.recipe.text, self.recipe.name) as run:
            self.run_id, run.counts["iterations"] = run.run_id, 0
            with tracking.for_run(self.recipe, self.run_id, "iterate"):
                if self.cfg.pretrain is not None:
                    self.base = self.pretrain()
                self.evaluate(self.base, 0, "base")
                for k in range(1, (iterations or self.cfg.iterations) + 1):
                    policies.append(self.iteration(k, policies[-1] if policies else None))
                    run.counts["iterations"] = len(policies)
            if self.evals:
                self.say(evals_table(self.evals))
        return policies


def _clock(seconds: float) -> str:
    return time.strftime("%H:%M:%S", time.gmtime(seconds))


def evals_table(rows: list[dict]) -> str:
    """The loop's models side by side: held-out accuracy with a 95% Wilson interval over the problems."""
    from vlfactory.reports.evals import wilson_interval

    head = ["model", "identity", "iteration", "stage", "benchmark", "accuracy", "95% CI", "problems"]
    lines = [head]
    for r in rows:
        lo, hi = wilson_interval(r["accuracy"], r["problems"])
        size = f"{r['problems']}" + (f" x {r['samples']}" if r["samples"] > 1 else "")
        lines.append([Path(r["model"]).name, r["identity"], str(r["iteration"]), r["stage"], r["benchmark"],
                      f"{100 * r['accuracy']:.1f}%", f"[{100 * lo:.1f}, {100 * hi:.1f}]", size])
    widths = [max(len(line[i]) for line in lines) for i in range(len(head))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(line, widths)).rstrip() for line in lines)
