"""The paper's training settings through stock TRL on the tiny Qwen2.5-VL: the vision tower and projector
frozen (OpenVLThinker's SFT and medium GRPO stage), a global batch that holds whatever the process count,
and the official GRPO reward."""

from __future__ import annotations

import pytest
from safetensors.torch import load_file

from test_trainers import CPU, GRPO, SFT, sets_lake, trainings  # noqa: F401 (fixture)
from vlfactory.recipe import RecipeError
from vlfactory.trainers.config import load_config, settings_digest


def weights(folder) -> dict:
    return {k: v for f in sorted(folder.glob("*.safetensors")) for k, v in load_file(str(f)).items()}


def test_frozen_vision_tower_and_projector_stay_as_they_were(sets_lake, lake_dir, tiny_vlm_dir, tmp_path):
    from vlfactory.trainers.sft import train_sft

    out = tmp_path / "sft"
    config = SFT | {"freeze_vision_tower": True, "freeze_multi_modal_projector": True, "global_batch_size": 4}
    record = train_sft("sft@iter1", str(tiny_vlm_dir), str(out), config=config, lake=str(lake_dir))
    assert record.status == "ok"
    before, after = weights(tiny_vlm_dir), weights(out)
    vision = [k for k in before if ".visual." in f".{k}"]
    language = [k for k in before if k.startswith(("model.layers.", "model.language_model.", "lm_head"))]
    assert vision and language and any(".merger." in k for k in vision)
    assert all((before[k] == after[k]).all() for k in vision)                 # frozen: unchanged
    assert any(not (before[k] == after[k]).all() for k in language)           # the rest trained
    row = trainings(lake_dir)[-1]
    assert '"freeze_vision_tower": true' in row["config"] and '"gradient_accumulation_steps": 2' in row["config"]


def test_global_batch_size_sets_accumulation_per_process_count_and_not_the_address():
    one, extras = load_config("sft", CPU | {"global_batch_size": 32, "per_device_train_batch_size": 2}, "o", processes=1)
    eight, _ = load_config("sft", CPU | {"global_batch_size": 32, "per_device_train_batch_size": 2}, "o", processes=8)
    assert (one.gradient_accumulation_steps, eight.gradient_accumulation_steps) == (16, 2)
    assert settings_digest(one, extras) == settings_digest(eight, extras)
    with pytest.raises(RecipeError, match="not a multiple"):
        load_config("sft", CPU | {"global_batch_size": 30, "per_device_train_batch_size": 4}, "o", processes=1)
    with pytest.raises(RecipeError, match="not both"):
        load_config("sft", CPU | {"global_batch_size": 32, "gradient_accumulation_steps": 2}, "o")
    with pytest.raises(RecipeError, match="reward"):
        load_config("sft", CPU | {"reward": "openvlthinker"}, "o")


def test_grpo_with_the_official_reward(sets_lake, lake_dir, tiny_vlm_dir, tmp_path):
    from vlfactory.trainers.grpo import train_grpo

    config = {k: v for k, v in GRPO.items() if k != "reward_weights"} | {"reward": "openvlthinker",
                                                                          "freeze_vision_tower": True}
    record = train_grpo("rl@iter1", str(tiny_vlm_dir), str(tmp_path / "grpo"), config=config, lake=str(lake_dir))
    assert record.status == "ok" and "rewards/openvlthinker_reward/mean" in record.metrics
