"""GRPO on a set version: TRL's GRPOTrainer with the factory's verifier as reward, recorded in the catalog.

Each `rl` row becomes a conversational prompt (the image, then the prompt
text) with its `images`; the gold `answer`, `choices` and `question` reach the
rewards as keyword arguments. Rewards: vlfactory.verify.accuracy_reward (the
same grader that built the sets) and format_reward (`<think>...</think>
<answer>...</answer>`), weighted by the config's `reward_weights` (default
1 and 1); or, with `reward: openvlthinker` in the trainers YAML, the official
reward alone (vlfactory.verify.openvlthinker_reward: mathruler on the
`<answer>`, half credit when nothing stands between `</think>` and `<answer>`).

Generation: TRL's vLLM integration with `use_vllm: true` (`vllm_mode:
colocate` or `server`) in the trainers YAML on GPU machines; otherwise
transformers' generate. The default is off: vLLM's CPU build cannot load a
vision-language model (its multimodal code imports torchvision).

Images: with `min_pixels`/`max_pixels` in the trainers YAML the trainer
resizes every image itself, as EasyR1 does (min = max: every image scaled to
that area), and keeps the base model's processor; the checkpoint carries that
processor, so its evaluations and next-round data run at native resolution.

    vlfactory train grpo --dataset rl@iter1 --model runs/sft-iter1 --output runs/grpo-iter1
    python -m vlfactory.trainers.grpo --dataset rl@iter1 --model runs/sft-iter1 --output runs/grpo-iter1 --lake ./lake

One GPU, and eight (the same entry point; only the main process writes the catalog):

    accelerate launch --num_processes 1 -m vlfactory.trainers.grpo --dataset rl@iter1 \\
        --model runs/sft-iter1 --output runs/grpo-iter1 --config recipes/openvlthinker/grpo_hard.yaml
    accelerate launch --num_processes 8 -m vlfactory.trainers.grpo --dataset rl@iter1 \\
        --model runs/sft-iter1 --output runs/grpo-iter1 --config recipes/openvlthinker/grpo_hard.yaml
    # with use_vllm: true and vllm_mode: colocate, each process also runs its own vLLM engine

Python:

    from vlfactory.trainers.grpo import train_grpo
    record = train_grpo("rl@iter1", "runs/sft-iter1", "runs/grpo-iter1", lake="./lake")
"""

from __future__ import annotations

from vlfactory.trainers.run import Training, main, model_for, train


def train_grpo(dataset: str, model: str, output_dir: str, **kwargs) -> Training | None:
    """GRPO of `model` on the rl set version `dataset`; kwargs: config, lake, data_path, run_id, iteration,
    overwrite, flags (TRL config fields as command-line flags)."""
    return train("grpo", grpo_trainer, dataset, model, output_dir, **kwargs)


def grpo_trainer(model_path: str, extras: dict, args, train_dataset):
    """TRL's GRPOTrainer as it is: it loads the model's own processor (the base model's settings; left padding
    and truncation), which a colocated vLLM also loads from the model's folder, so both see the dataset's
    pre-resized images (vlfactory.trainers.data.prepare) on the same image grid."""
    from trl import GRPOTrainer

    from vlfactory.verify import accuracy_reward, format_reward, openvlthinker_reward

    rewards = [openvlthinker_reward] if extras.get("reward") == "openvlthinker" else [accuracy_reward, format_reward]
    return GRPOTrainer(model=model_for(model_path, args, extras), reward_funcs=rewards, args=args,
                       train_dataset=train_dataset)


if __name__ == "__main__":
    main("grpo", train_grpo)
