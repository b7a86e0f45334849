"""The paper's training settings through stock TRL on the tiny Qwen2.5-VL: the vision tower and projector
frozen (OpenVLThinker's SFT and medium GRPO stage), a global batch that holds whatever the process count,
and the official GRPO reward."""

from __future__ import annotations

import json

import pytest
from safetensors.torch import load_file

from test_trainers import (CPU, PLANTED, SFT, answer_probability, logged, planted_rl,  # noqa: F401 (sets_lake: a fixture)
                           sets_lake, trainings)
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


def test_grpo_with_the_official_reward_raises_the_rewarded_answer(sets_lake, lake_dir, tiny_vlm_r1_dir, tmp_path):
    """The planted task (test_trainers.PLANTED) with `reward: openvlthinker`, the reward the recipes' GRPO
    stages use (vlfactory.verify.openvlthinker_reward), and the vision tower frozen: the gold "Yes" is one of
    the wired model's four answers; after 3 steps its probability has risen from 0.25 to over 0.5 and the reward
    the trainer logged rose. A constant reward leaves it at 0.25."""
    from vlfactory.trainers.grpo import train_grpo

    dataset = planted_rl(lake_dir, "Yes")
    before = answer_probability(tiny_vlm_r1_dir, lake_dir, "Yes")
    config = PLANTED | {"reward": "openvlthinker", "freeze_vision_tower": True}
    record = train_grpo(dataset, str(tiny_vlm_r1_dir), str(tmp_path / "grpo"), config=config, lake=str(lake_dir))
    after = answer_probability(tmp_path / "grpo", lake_dir, "Yes")
    assert before == pytest.approx(0.25, abs=0.01) and after > 0.5, (before, after)
    reward = logged(lake_dir, "rewards/openvlthinker_reward/mean")
    assert len(reward) == 3 and reward[-1] > reward[0], reward
    assert record.status == "ok" and json.loads(trainings(lake_dir)[-1]["config"])["reward"] == "openvlthinker"


def test_grpo_yamls_hold_easyr1s_settings_in_trl_terms():
    """grpo_medium.yaml and grpo_hard.yaml as stock GRPOConfigs: EasyR1's constant learning rate, no vLLM
    importance-sampling correction, the dual clip (delta), its loss aggregation (bnpo over micro-batches of 2),
    its KL as it is, checkpoints every 10 rollout batches, and the hard stage's vision tower trained."""
    from pathlib import Path

    import yaml

    folder = Path(__file__).resolve().parents[2] / "recipes" / "openvlthinker"
    cpu = {"bf16": False, "use_cpu": True, "model_init_kwargs": None, "use_vllm": False}
    stages = {}
    for name in ("medium", "hard"):
        stages[name] = load_config("grpo", yaml.safe_load((folder / f"grpo_{name}.yaml").read_text()) | cpu, "o",
                                   processes=8)
    for args, extras in stages.values():
        assert args.lr_scheduler_type == "constant" and args.warmup_steps == 0 and args.learning_rate == 1e-6
        assert args.vllm_importance_sampling_correction is False and args.use_bias_correction_kl is False
        assert (args.delta, args.epsilon, args.epsilon_high, args.beta) == (3.0, 0.2, 0.3, 0.01)
        assert args.loss_type == "bnpo" and args.per_device_train_batch_size == 2
        assert args.gradient_accumulation_steps == 40            # 640 completions = 2 x 8 GPUs x 40
        assert args.generation_batch_size // (640 // 5) // 5 == 4  # 4 optimizer steps per rollout batch of 512
        assert (args.save_strategy, args.save_steps, args.save_total_limit) == ("steps", 40, 10)  # save_freq 10
        assert (extras["min_pixels"], extras["max_pixels"]) == (262144, 262144)
    assert stages["medium"][1]["freeze_vision_tower"] and stages["medium"][1]["freeze_multi_modal_projector"]
    assert not stages["hard"][1].get("freeze_vision_tower") and not stages["hard"][1].get("freeze_multi_modal_projector")
    assert (stages["medium"][0].num_train_epochs, stages["hard"][0].num_train_epochs) == (5, 15)


def test_source_weights_repeat_a_sources_problems(sets_lake, lake_dir):
    from vlfactory.stores.lake import Lake
    from vlfactory.trainers.data import prepare, read_set

    with Lake(lake_dir, read_only=True) as lake:
        _, rows = read_set(lake, "rl@iter1", "rl")
    assert prepare(rows, {"source_weights": {"syn": 2}}).num_rows == 2 * rows.num_rows
    assert prepare(rows, {"source_weights": {"syn": 0}}).num_rows == 0
    assert prepare(rows, {"source_weights": {"other": 3}}).num_rows == rows.num_rows  # default 1
    with pytest.raises(RecipeError, match="source_weights"):
        load_config("grpo", CPU | {"source_weights": {"syn": 1.5}}, "o")
    with pytest.raises(RecipeError, match="source_weights"):
        load_config("sft", CPU | {"source_weights": {"syn": 2}}, "o")
