"""The OpenVLThinker loop: distil, fine-tune, reinforce, let the model write the next round's data.

    vlfactory iterate recipes/quickstart.yaml

Iteration 1 builds SFT data by distillation (caption -> reasoner -> verify ->
sft set), fine-tunes the base model, measures pass rates with rollouts of
that model to pick the RL set, runs GRPO from the SFT model, and evaluates.
Iteration k > 1 builds its SFT data from the verified rollouts of iteration
k-1's RL model and fine-tunes the *base* model again, as OpenVLThinker does,
then RL and eval. Tags name every step's data: `iterK-sft`, `iterK-rl`,
`iterK`.

Every step is resumable: generation stages skip what the lake holds, sets
that did not change are not rewritten (so their tags stay put), and a
checkpoint lives at OUTPUT/{sft,grpo}-<address>, the address a digest
of (the set's rows, base model identity, resolved trainer settings): the same
training is found finished and skipped, a different one (new data, another
base model, an edited trainers YAML) gets its own folder. A rerun after a
crash continues from the first incomplete step. Models are known by content
(vlfactory.models.identity), so rollouts and evals of a retrained model are
never served from the cache of an older one.
The lake is opened per step and closed while training, since a local lake
admits one process at a time and the trainers open it themselves.
"""

from __future__ import annotations

import dataclasses
import importlib
from pathlib import Path

from vlfactory.recipe import GenerationConfig, Recipe, RecipeError, SFTSetConfig
from vlfactory.stages import Scope, StageResult, run_stage
from vlfactory.stores.lake import Lake, LakeSpec


class Loop:
    def __init__(self, recipe: Recipe, spec: LakeSpec, say=print, limit: int | None = None):
        if recipe.loop is None:
            raise RecipeError(f"{recipe.path or 'recipe'}: loop: missing (base_model, iterations, ...) for iterate")
        if recipe.rollout is None or recipe.rl is None:
            raise RecipeError(f"{recipe.path or 'recipe'}: iterate needs rollout: and rl: sections")
        self.recipe, self.spec, self.say = recipe, spec, say
        self.scope = Scope.of(recipe, limit)
        self.cfg = recipe.loop
        self.run_id: str | None = None
        self.out = Path(self.cfg.output_dir).resolve()  # relative to the working directory, like ./lake

    def lake(self) -> Lake:
        lake = Lake(self.spec)
        lake.run_id = self.run_id
        return lake

    # ---- steps ---------------------------------------------------------------------

    def stage(self, name: str, config) -> StageResult:
        with self.lake() as lake:
            result = run_stage(lake, name, config, self.scope)
        self.say(result.line())
        return result

    def tag_set(self, table: str, tag: str) -> int:
        """Tag the set's current content, unless the tag already names the same rows."""
        with self.lake() as lake:
            tags = lake.tags()
            if tag in tags and not lake.differs(table, f"lake.{table} AT (VERSION => {int(tags[tag])})"):
                return tags[tag]
            snap = lake.tag(tag, force=True)
            rows = lake.count(table)
        if rows == 0:
            raise RecipeError(f"{tag}: the {table} set is empty; see the verify funnel above "
                              f"(`vlfactory sql \"SELECT reason, count(*) FROM rejected GROUP BY ALL\"`)")
        self.say(f"tagged {tag} -> snapshot {snap} ({rows} {table} rows)")
        return snap

    def train(self, kind: str, dataset: str, model: str, iteration: int) -> str:
        """Train into the folder addressed by (the set's content, base model identity, settings); a training
        found finished there is skipped."""
        from vlfactory.models import identity
        from vlfactory.trainers.config import load_config, settings_digest
        from vlfactory.trainers.run import address

        config = getattr(self.cfg, kind)
        settings = settings_digest(*load_config(kind, config, self.out))
        table, _, version = dataset.rpartition("@")
        with self.lake() as lake:
            data = lake.digest(table, lake.resolve(version))
        # No iteration in the path: the same training in a later iteration is the same checkpoint.
        output = self.out / f"{kind}-{address(data, identity(model), settings)}"
        trainer = importlib.import_module(f"vlfactory.trainers.{kind}")
        result = getattr(trainer, f"train_{kind}")(dataset, model, str(output), config=config,
                                                   lake=self.spec.catalog, data_path=self.spec.data_path,
                                                   run_id=self.run_id, iteration=iteration)
        self.say(f"{kind} iter{iteration}: done before ({output}), skipped" if result.reused else result.line())
        return str(output)

    def evaluate(self, model: str, iteration: int) -> None:
        from vlfactory import evaluate

        for name in self.cfg.benchmarks:
            cfg = self.recipe.eval_config(name, model, limit=self.cfg.eval_limit, iteration=iteration)
            with self.lake() as lake:
                result = evaluate.run(lake, cfg).value
            if result.done_before:
                self.say(f"eval {name} iter{iteration}: done before ({100 * result.accuracy:.1f}%), skipped")
            else:
                self.say(result.line())

    # ---- the loop ------------------------------------------------------------------

    def iteration(self, k: int, previous_policy: str | None) -> str:
        r = self.recipe
        self.say(f"== iteration {k} ==")
        sft = r.stage_config("sft") or SFTSetConfig(prompt=r.rollout.prompt or "rollout", verify=r.verify)
        if k == 1:
            for name in ("ingest", "caption", "distil", "verify"):
                if name != "distil" or r.distil is not None:
                    self.stage(name, r.stage_config(name))
            sft = dataclasses.replace(sft, candidates="traces")
        else:
            # The previous RL model answers from the images; its verified answers are this round's SFT data.
            self.stage("rollout", self.rollout_config(previous_policy))
            self.stage("verify", r.verify)
            sft = dataclasses.replace(sft, candidates="both" if self.cfg.keep_traces else "rollouts",
                                      model=previous_policy)
        self.stage("sft", sft)
        self.tag_set("sft", f"iter{k}-sft")
        sft_model = self.train("sft", f"sft@iter{k}-sft", self.cfg.base_model, k)

        # Pass rates of the SFT model (its rollouts, graded by the verifier) pick the RL set.
        self.stage("rollout", self.rollout_config(sft_model))
        self.stage("verify", r.verify)
        self.stage("rl", dataclasses.replace(r.stage_config("rl"), model=sft_model))
        self.tag_set("rl", f"iter{k}-rl")
        policy = self.train("grpo", f"rl@iter{k}-rl", sft_model, k)
        self.evaluate(policy, k)
        with self.lake() as lake:
            if f"iter{k}" not in lake.tags():
                self.say(f"tagged iter{k} -> snapshot {lake.tag(f'iter{k}')}")
        return policy

    def rollout_config(self, model: str) -> GenerationConfig:
        return dataclasses.replace(self.recipe.rollout, model=model, model_id=None, revision=None)

    def run(self, iterations: int | None = None) -> list[str]:
        with self.lake() as lake:
            self.run_id = lake.start_run("iterate", self.recipe.text, self.recipe.name)
        policies, status, error = [], "failed", None
        try:
            for k in range(1, (iterations or self.cfg.iterations) + 1):
                policies.append(self.iteration(k, policies[-1] if policies else None))
            status = "ok"
        except BaseException as e:
            error = f"{type(e).__name__}: {e}"
            raise
        finally:
            with self.lake() as lake:
                lake.end_run(status, {"iterations": len(policies)}, error=error)
        return policies
