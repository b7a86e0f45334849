"""Supervised fine-tuning on a set version: TRL's SFTTrainer, recorded in the catalog's `trainings` table.

Each `sft` row becomes one chat: the user turn is the image then the prompt
text, the assistant turn the completion (vlfactory.trainers.data). The
trainers YAML holds SFTConfig fields (vlfactory.trainers.config); without one,
a few tiny steps run on any CPU. Images over the YAML's `max_pixels` are shrunk
by the trainer, as LLaMA-Factory does; TRL loads the base model's own processor,
and the checkpoint keeps it (native resolution for whatever runs it next).

    vlfactory train sft --dataset sft@iter1 --model tiny-qwen2.5-vl --output runs/sft-iter1
    python -m vlfactory.trainers.sft --dataset sft@iter1 --model tiny-qwen2.5-vl --output runs/sft-iter1 --lake ./lake

One GPU, and eight (the same entry point; only the main process writes the catalog):

    accelerate launch --num_processes 1 -m vlfactory.trainers.sft --dataset sft@iter1 \\
        --model Qwen/Qwen2.5-VL-7B-Instruct --output runs/sft-iter1 --config recipes/openvlthinker/sft.yaml
    accelerate launch --num_processes 8 -m vlfactory.trainers.sft --dataset sft@iter1 \\
        --model Qwen/Qwen2.5-VL-7B-Instruct --output runs/sft-iter1 --config recipes/openvlthinker/sft.yaml
    # add --config_file with a DeepSpeed ZeRO-3 or FSDP accelerate config to shard a 7B model

Python:

    from vlfactory.trainers.sft import train_sft
    record = train_sft("sft@iter1", "tiny-qwen2.5-vl", "runs/sft-iter1", lake="./lake")
"""

from __future__ import annotations

from vlfactory.trainers.run import Training, main, model_for, train


def train_sft(dataset: str, model: str, output_dir: str, **kwargs) -> Training | None:
    """Fine-tune `model` on the sft set version `dataset`; kwargs: config, lake, data_path, run_id, iteration,
    overwrite, flags (TRL config fields as command-line flags)."""

    return train("sft", sft_trainer, dataset, model, output_dir, **kwargs)


def sft_trainer(model_path: str, extras: dict, args, train_dataset):
    """TRL's SFTTrainer as it is: it loads the model's own processor (the base model's settings)."""
    from trl import SFTTrainer

    return SFTTrainer(model=model_for(model_path, args, extras), args=args, train_dataset=train_dataset)


if __name__ == "__main__":
    main("sft", train_sft)
