"""The shipped recipes load, and the paper's trainer settings are valid TRL configs."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from vlfactory.recipe import load_recipe, shipped_recipes

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("name", ["quickstart", "tabmwp", "dynamath", "openvlthinker/iterate"])
def test_shipped_recipes_load(name):
    recipe = load_recipe(shipped_recipes() / f"{name}.yaml")
    assert recipe.sources and recipe.text


def test_openvlthinker_settings_match_the_paper_and_trl():
    pytest.importorskip("trl", reason="trl is not installed (the `cpu` or `train` extra)")
    from vlfactory.trainers.config import load_config

    recipe = load_recipe(REPO / "recipes" / "openvlthinker" / "iterate.yaml")
    assert recipe.loop.base_model == "Qwen/Qwen2.5-VL-7B-Instruct" and recipe.distil.sampling.n == 4
    assert recipe.rollout.sampling.n == 5 and recipe.rollout.sampling.top_p == 0.99
    cpu = {"bf16": False, "use_cpu": True, "model_init_kwargs": None}  # this machine has no GPU
    sft, sft_pixels = load_config("sft", yaml.safe_load(Path(recipe.loop.sft).read_text()) | cpu, "/tmp/sft")
    grpo, _ = load_config("grpo", yaml.safe_load(Path(recipe.loop.grpo).read_text()) | cpu, "/tmp/grpo")
    assert sft_pixels["max_pixels"] == 262144
    assert sft.learning_rate == 5e-7 and sft.lr_scheduler_type == "cosine" and sft.num_train_epochs == 1
    assert grpo.learning_rate == 1e-6 and grpo.beta == 0.01 and grpo.num_generations == 5
    assert grpo.max_completion_length == 2048 and grpo.weight_decay == 0.01 and grpo.max_grad_norm == 1.0
