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
training whose output folder records the same data snapshot finished is not
run again. A rerun after a crash continues from the first incomplete step.
The lake is opened per step and closed while training, since a local lake
admits one process at a time and the trainers open it themselves.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib
import json
from pathlib import Path

from vlfactory.recipe import Recipe, RecipeError, SFTSetConfig, StageConfig
from vlfactory.stores.lake import Lake, LakeSpec


class Loop:
    def __init__(self, recipe: Recipe, spec: LakeSpec, say=print, limit: int | None = None):
        if recipe.loop is None:
            raise RecipeError(f"{recipe.path or 'recipe'}: loop: missing (base_model, iterations, ...) for iterate")
        if recipe.rollout is None or recipe.rl is None:
            raise RecipeError(f"{recipe.path or 'recipe'}: iterate needs rollout: and rl: sections")
        self.recipe, self.spec, self.say, self.limit = recipe, spec, say, limit
        self.cfg = recipe.loop
        self.run_id: str | None = None
        self.out = Path(self.cfg.output_dir).resolve()  # relative to the working directory, like ./lake

    def lake(self) -> Lake:
        lake = Lake(self.spec)
        lake.run_id = self.run_id
        return lake

    # ---- steps ---------------------------------------------------------------------

    def stage(self, name: str, recipe: Recipe) -> None:
        module = {"ingest": "ingest", "caption": "caption", "distil": "distil", "verify": "grading",
                  "sft": "sftset", "rollout": "rollout", "rl": "rlset"}[name]
        with self.lake() as lake:
            if name == "ingest":
                from vlfactory.ingest import ingest

                for tally in ingest(lake, recipe):
                    self.say(tally.line())
                return
            stats = importlib.import_module(f"vlfactory.{module}").run(lake, recipe, limit=self.limit)
            self.say(stats.line())

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
        """Train unless the output folder already holds this exact training, finished."""
        config = getattr(self.cfg, kind)
        digest = hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()[:8]
        output = self.out / f"iter{iteration}" / f"{kind}-{digest}"
        with self.lake() as lake:
            snapshot = lake.resolve(dataset.rpartition("@")[2])
        record = output / "vlfactory_training.json"
        if record.exists():
            done = json.loads(record.read_text())
            if done.get("status") == "ok" and done.get("snapshot_id") == snapshot and done.get("base_model") == model:
                self.say(f"{kind} iter{iteration}: done before ({output}), skipped")
                return str(output)
        trainer = importlib.import_module(f"vlfactory.trainers.{kind}")
        result = getattr(trainer, f"train_{kind}")(dataset, model, str(output), config=config,
                                                   lake=self.spec.catalog, data_path=self.spec.data_path,
                                                   run_id=self.run_id, iteration=iteration)
        self.say(result.line())
        return str(output)

    def evaluate(self, model: str, iteration: int) -> None:
        from vlfactory.evaluate import evaluate

        for name in self.cfg.benchmarks:
            with self.lake() as lake:
                done = lake.con.execute("SELECT accuracy FROM lake.evals WHERE model = ? AND benchmark = ? "
                                        "AND iteration = ?", [model, name, iteration]).fetchone()
                if done:
                    self.say(f"eval {name} iter{iteration}: done before ({100 * done[0]:.1f}%), skipped")
                    continue
                self.say(evaluate(lake, self.recipe, model, name, limit=self.cfg.eval_limit,
                                  iteration=iteration).line())

    # ---- the loop ------------------------------------------------------------------

    def iteration(self, k: int, previous_policy: str | None) -> str:
        r = self.recipe
        self.say(f"== iteration {k} ==")
        if k == 1:
            sft_recipe = dataclasses.replace(r, sft=dataclasses.replace(r.sft or SFTSetConfig(), candidates="traces"))
            for name in ("ingest", "caption", "distil", "verify"):
                if name != "distil" or r.distil is not None:
                    self.stage(name, r)
        else:
            # The previous RL model answers from the images; its verified answers are this round's SFT data.
            writer = dataclasses.replace(r, rollout=self.rollout_config(previous_policy))
            self.stage("rollout", writer)
            self.stage("verify", writer)
            sft_recipe = dataclasses.replace(r, sft=dataclasses.replace(
                r.sft or SFTSetConfig(), candidates="both" if self.cfg.keep_traces else "rollouts",
                model=writer.rollout.identity))
        self.stage("sft", sft_recipe)
        self.tag_set("sft", f"iter{k}-sft")
        sft_model = self.train("sft", f"sft@iter{k}-sft", self.cfg.base_model, k)

        # Pass rates of the SFT model pick the RL set.
        measured = dataclasses.replace(r, rollout=self.rollout_config(sft_model))
        measured = dataclasses.replace(measured, rl=dataclasses.replace(r.rl, model=measured.rollout.identity))
        self.stage("rollout", measured)
        self.stage("verify", measured)
        self.stage("rl", measured)
        self.tag_set("rl", f"iter{k}-rl")
        policy = self.train("grpo", f"rl@iter{k}-rl", sft_model, k)
        self.evaluate(policy, k)
        with self.lake() as lake:
            if f"iter{k}" not in lake.tags():
                self.say(f"tagged iter{k} -> snapshot {lake.tag(f'iter{k}')}")
        return policy

    def rollout_config(self, model: str) -> StageConfig:
        return dataclasses.replace(self.recipe.rollout, model=model, model_id=None)

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

