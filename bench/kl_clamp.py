"""Would EasyR1's clamp on the per-token KL change anything? k3 of a quickstart GRPO model against its SFT model.

    python bench/kl_clamp.py --lake DIR                  # iteration 1's GRPO model of a finished quickstart lake
    python bench/kl_clamp.py --lake DIR --train-lr 1e-4 1e-6 --beta 0.01   # also GRPO trained here at each lr

On a busy machine set OMP_NUM_THREADS=1: at load 11 on 2 cores a 48-step GRPO training took 562 s with
torch's 2 threads (they spin waiting for each other) and 57 s with one. The figures do not depend on it.

OpenVLThinker's GRPO (EasyR1) adds β x the per-token k3 estimator of KL(policy || reference) to the loss,
clamped at ±10: `compute_kl(..., "low_var_kl")`, verl/trainer/core_algos.py L394-423 in hiyouga/EasyR1
@fb24593e017a96b75203096bd60468055e73975d (the tree OpenVLThinker vendors as train/easyr1):

    kl = ref_log_probs - log_probs;  kld = exp(kl) - kl - 1;  clamp(kld, -10, 10)

(EasyR1 @b44b311 also clamps `kl` to ±20 before the exp.) TRL's GRPOTrainer computes the same k3 without
the clamp and has no knob for one, so the loop's GRPO keeps pulling back the tokens that moved most. This
bench measures how often the clamp would bind: it reads, from the lake's `trainings` table, iteration K's
GRPO model and the SFT model it started from (its `base_model`) and the rl set it trained on, samples N of
those prompts x k completions from the GRPO model as TRL samples them during training (transformers
generate with the training's temperature, top_p, top_k and max_completion_length, the image token
suppressed as TRL suppresses it; the prompt built by TRL's `prepare_multimodal_messages` and the
processor's chat template), scores every completion token under both models, and prints per model: tokens, the share with k3 > 10,
the largest k3, and the mean k3 as TRL has it (no clamp) and as EasyR1 would (clamped), with their ratio.

`--train-lr LR ...` first trains GRPO from the same SFT model on the same rl set here, once per lr, with
the recipe's `loop.grpo` settings and `--beta`/`--steps` over them (TRL, in this process, into a copy of the
lake so the original gets no `trainings` rows), and measures each model the same way beside the lake's.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path

CLAMP = 10.0   # EasyR1's bound on the per-token k3


def k3(logp, ref_logp):
    """The per-token k3 estimator of KL(policy || reference) as TRL's GRPOTrainer computes it (no clamp);
    EasyR1's `low_var_kl` is `k3(...).clamp(-CLAMP, CLAMP)`.

    >>> import torch
    >>> [round(x, 4) for x in k3(torch.tensor([-1.0, -0.1, -5.0]), torch.tensor([-1.0, -3.0, -0.1])).tolist()]
    [0.0, 1.955, 128.3898]
    """
    kl = ref_logp - logp
    return kl.exp() - kl - 1


def models(lake_dir: Path, iteration: int) -> tuple[str, str, str, dict]:
    """Iteration K's GRPO model, the SFT model it started from, its rl set version and its settings, as the
    lake's `trainings` table records them; exits with one line when the lake or the training is missing."""
    from vlfactory.stores.lake import Lake, LakeError

    try:
        with Lake(lake_dir, read_only=True) as lake:
            row = lake.query("""SELECT output_dir, base_model, dataset, config FROM trainings
                                WHERE kind = 'grpo' AND iteration = ? AND status = 'ok'
                                ORDER BY started_at DESC LIMIT 1""", [iteration]).fetchone()
    except LakeError as e:   # no lake there
        sys.exit(f"kl_clamp: {e}" + ("" if lake_dir.exists() else f"; a quickstart lake: vlfactory iterate quickstart "
                                                                    f"--lake {lake_dir}"))
    if row is None:
        sys.exit(f"kl_clamp: {lake_dir} has no finished GRPO training of iteration {iteration} (no rl set trained): "
                 f"run vlfactory iterate quickstart --lake {lake_dir} to the end")
    output, base, dataset, config = row
    config = json.loads(config) if isinstance(config, str) else dict(config)
    for folder in (output, base):
        if not Path(folder).is_dir():
            sys.exit(f"kl_clamp: the lake names {folder}, which is gone (the runs folder was moved or deleted)")
    return output, base, dataset, config


def measure(policy: str, reference: str, examples: list[dict], k: int, settings: dict, seed: int,
            batch: int) -> dict:
    """Sample k completions per example from `policy` as TRL samples them and score every completion token
    under `policy` and `reference`: the k3 figures over all those tokens."""
    import torch
    import transformers as tf
    from trl.data_utils import prepare_multimodal_messages

    from vlfactory.models import register_processors

    register_processors()
    processor = tf.AutoProcessor.from_pretrained(policy)   # every checkpoint carries the base processor
    processor.tokenizer.padding_side = "left"
    tok = processor.tokenizer
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    net = tf.AutoModelForImageTextToText.from_pretrained(policy, dtype=torch.float32).eval()
    ref = tf.AutoModelForImageTextToText.from_pretrained(reference, dtype=torch.float32).eval()
    eos = net.generation_config.eos_token_id
    eos = [eos] if isinstance(eos, int) else list(eos or [])
    eos = eos if tok.eos_token_id in eos else [tok.eos_token_id, *eos]
    image_token = net.config.image_token_id
    generation = tf.GenerationConfig(   # TRL's own generation config for transformers generate (GRPOTrainer)
        max_new_tokens=settings["max_completion_length"], do_sample=True, pad_token_id=tok.pad_token_id,
        bos_token_id=tok.bos_token_id, eos_token_id=eos, temperature=settings["temperature"],
        top_p=settings["top_p"], top_k=settings["top_k"], min_p=settings["min_p"],
        repetition_penalty=settings["repetition_penalty"], suppress_tokens=[image_token], disable_compile=True)
    torch.manual_seed(seed)
    values, completions = [], 0
    conversations = [prepare_multimodal_messages(e["prompt"], images=e["images"]) for e in examples for _ in range(k)]
    for start in range(0, len(conversations), batch):
        inputs = processor.apply_chat_template(conversation=conversations[start:start + batch],
                                               add_generation_prompt=True, tokenize=True, return_dict=True,
                                               return_tensors="pt", processor_kwargs={"padding": True})
        with torch.no_grad():
            out = net.generate(**inputs, generation_config=generation)
        prompt_len = inputs["input_ids"].shape[1]
        completion = out[:, prompt_len:]
        # TRL's completion mask: every token up to and including the first end-of-sequence token
        is_eos = torch.isin(completion, torch.tensor(eos))
        first = torch.where(is_eos.any(1), is_eos.int().argmax(1), torch.full_like(is_eos[:, 0], completion.shape[1],
                                                                                    dtype=torch.long))
        mask = torch.arange(completion.shape[1]).unsqueeze(0) <= first.unsqueeze(1)
        full = {**inputs, "input_ids": out, "attention_mask": torch.cat([inputs["attention_mask"], mask.long()], 1)}
        if "mm_token_type_ids" in inputs:   # per-token: the completion holds no image
            full["mm_token_type_ids"] = torch.cat([inputs["mm_token_type_ids"], torch.zeros_like(completion)], 1)
        with torch.no_grad():
            logps = [_token_logps(m, full, completion, settings["temperature"]) for m in (net, ref)]
        values.append(k3(*logps)[mask])
        completions += completion.shape[0]
    kl = torch.cat(values).double()
    return {"completions": completions, "tokens": kl.numel(), "over": int((kl > CLAMP).sum()), "max": float(kl.max()),
            "mean": float(kl.mean()), "clamped": float(kl.clamp(-CLAMP, CLAMP).mean())}


def _token_logps(model, inputs: dict, completion, temperature: float):
    """Log-probabilities of the completion tokens, as GRPOTrainer computes them (logits over temperature)."""
    import torch

    logits = model(**inputs, logits_to_keep=completion.shape[1] + 1).logits[:, :-1] / temperature
    return torch.log_softmax(logits.float(), -1).gather(-1, completion.unsqueeze(-1)).squeeze(-1)


def train(lake_copy: Path, dataset: str, sft: str, settings: dict, out: Path) -> tuple[str, int, bool]:
    """GRPO of the SFT model on the rl set with `settings`, in this process (a finished one in `out` is reused);
    (its folder, its optimizer steps, reused)."""
    from vlfactory.trainers.grpo import train_grpo

    record = train_grpo(dataset, sft, str(out), config=settings, lake=str(lake_copy))
    return record.output_dir, int(record.metrics.get("step", 0)), record.reused


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lake", required=True, help="a lake `vlfactory iterate quickstart` made")
    parser.add_argument("--iteration", type=int, default=1)
    parser.add_argument("--n", type=int, default=100, help="rl prompts, drawn at random (seeded) from the set")
    parser.add_argument("--k", type=int, default=4, help="completions per prompt")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch", type=int, default=32, help="sequences per generate call")
    parser.add_argument("--train-lr", type=float, nargs="*", default=[],
                        help="also train GRPO from the SFT model at each of these learning rates, and measure each")
    parser.add_argument("--beta", type=float, default=None, help="the KL coefficient of those trainings "
                                                                 "(default: the recipe's)")
    parser.add_argument("--steps", type=int, default=None, help="their optimizer steps (default: the recipe's epochs)")
    parser.add_argument("--recipe", default="quickstart", help="whose loop.grpo settings those trainings use")
    parser.add_argument("--keep", default=None, help="train in this folder and keep it (default: a temporary one)")
    a = parser.parse_args()

    from vlfactory.stores.lake import Lake, LakeError
    from vlfactory.trainers.data import prepare, read_set, rl_dataset

    lake_dir = Path(a.lake).resolve()
    grpo, sft, dataset, config = models(lake_dir, a.iteration)
    try:
        with Lake(lake_dir, read_only=True) as lake:
            _, rows = read_set(lake, dataset, "rl")
    except LakeError as e:   # the rl set's tag or rows are gone
        sys.exit(f"kl_clamp: the rl set {dataset} that {grpo} trained on: {e}")
    data = rl_dataset(prepare(rows, {k: config.get(k) for k in ("min_pixels", "max_pixels")}))
    picked = sorted(random.Random(a.seed).sample(range(len(data)), min(a.n, len(data))))
    examples = [data[i] for i in picked]
    print(f"lake {lake_dir}: iteration {a.iteration}'s GRPO model {grpo}\n  started from the SFT model {sft};\n"
          f"  {len(examples)} of the {len(data)} prompts of {dataset} x {a.k} completions at temperature "
          f"{config['temperature']} (top_p {config['top_p']}, top_k {config['top_k']}, at most "
          f"{config['max_completion_length']} tokens), seed {a.seed}", flush=True)

    steps = int(json.loads(Path(grpo, "vlfactory_training.json").read_text())["metrics"].get("step", 0))
    runs = [(f"the loop's (lr {config['learning_rate']:g}, beta {config['beta']:g}, {steps} steps)", grpo, config)]
    if a.train_lr:
        from vlfactory.recipe import load_recipe
        from vlfactory.trainers.config import read_settings

        work = Path(a.keep or tempfile.mkdtemp(prefix="bench-kl-")).resolve()
        copy = work / "lake"
        if not copy.exists():
            shutil.copytree(lake_dir, copy)
        base = dict(read_settings("grpo", load_recipe(a.recipe).loop.grpo))
        if config.get("source_weights"):
            base["source_weights"] = config["source_weights"]
        for lr in a.train_lr:
            settings = base | {"learning_rate": lr} | ({} if a.beta is None else {"beta": a.beta}) | (
                {} if a.steps is None else {"max_steps": a.steps})
            started = time.monotonic()
            folder, steps, reused = train(copy, dataset, sft, settings,
                                          work / f"grpo-lr{lr:g}-beta{settings.get('beta', 0):g}")
            print(f"GRPO at lr {lr:g}, beta {settings.get('beta', 0):g}: {steps} steps "
                  + ("trained before, reused" if reused else f"trained in {time.monotonic() - started:.0f} s")
                  + f" ({folder})", flush=True)
            runs.append((f"trained here (lr {lr:g}, beta {settings.get('beta', 0):g}, {steps} steps)", folder,
                         config | settings))

    print(f"\n| GRPO model | tokens | k3 > {CLAMP:g} | largest k3 | mean k3, no clamp (TRL) | mean k3, clamped "
          f"(EasyR1) | clamped / unclamped | completions |")
    print("|---|---|---|---|---|---|---|---|")
    for label, folder, settings in runs:
        started = time.monotonic()
        m = measure(folder, sft, examples, a.k, settings, a.seed, a.batch)
        print(f"| {label} | {m['tokens']:,} | {100 * m['over'] / m['tokens']:.2f}% ({m['over']}) | {m['max']:.3g} | "
              f"{m['mean']:.3g} | {m['clamped']:.3g} | {m['clamped'] / m['mean'] if m['mean'] else 1:.2f} | "
              f"{m['completions']} |  ({time.monotonic() - started:.0f} s)", flush=True)


if __name__ == "__main__":
    main()
