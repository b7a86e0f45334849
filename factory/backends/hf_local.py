"""The `transformers` backend: local generation for small models on a CPU or one GPU.

Vision-language models (anything `AutoModelForImageTextToText` loads) get
their images through the model's own processor; text-only models load with
`AutoModelForCausalLM`. Requests run one prompt at a time with
`num_return_sequences = n`, seeded per request, which is what a laptop or a
single small GPU can do; use the `vllm` or `openai` backends for volume.

    from vlfactory.backends import make_backend
    backend = make_backend({"backend": "transformers", "model": "path/to/model"})
"""

from __future__ import annotations

import io
import time
from dataclasses import dataclass
from typing import Iterable, Iterator

from vlfactory.backends import Completion, Request, Result


@dataclass
class TransformersConfig:
    model: str
    dtype: str = "auto"             # auto | float32 | bfloat16 | float16
    device: str | None = None       # default: cuda when available, else cpu
    batch_size: int = 8             # accepted for symmetry with the recipe; requests run one by one


class TransformersBackend:
    def __init__(self, cfg: TransformersConfig):
        import torch
        import transformers as tf

        from vlfactory.models import register_processors

        register_processors()  # Qwen2.5-VL folders saved with the image-only processor
        self.model = cfg.model
        self.device = cfg.device or ("cuda" if torch.cuda.is_available() else "cpu")
        dtype = "auto" if cfg.dtype == "auto" else getattr(torch, cfg.dtype)
        self.processor = tf.AutoProcessor.from_pretrained(cfg.model)
        try:
            self.net = tf.AutoModelForImageTextToText.from_pretrained(cfg.model, dtype=dtype)
            self.vision = True
        except (ValueError, KeyError):
            self.net = tf.AutoModelForCausalLM.from_pretrained(cfg.model, dtype=dtype)
            self.vision = False
        self.net.to(self.device).eval()
        self.tokenizer = getattr(self.processor, "tokenizer", self.processor)

    def __repr__(self) -> str:
        return f"TransformersBackend(model={self.model!r}, device={self.device!r})"

    def _inputs(self, messages: list[dict]):
        from PIL import Image

        images, converted = [], []
        for m in messages:
            content = m["content"]
            if isinstance(content, list):
                parts = []
                for p in content:
                    if p.get("type") == "image":
                        images.append(Image.open(io.BytesIO(p["image"])).convert("RGB"))
                        parts.append({"type": "image"})
                    else:
                        parts.append({"type": "text", "text": p["text"]})
                content = parts if self.vision else "".join(p.get("text", "") for p in parts)
            converted.append({"role": m["role"], "content": content})
        text = self.processor.apply_chat_template(converted, add_generation_prompt=True, tokenize=False)
        if images:
            return self.processor(text=[text], images=images, return_tensors="pt")
        return self.tokenizer([text], return_tensors="pt")

    def _one(self, request: Request) -> Result:
        import torch

        s = request.sampling
        t0 = time.perf_counter()
        inputs = self._inputs(request.messages).to(self.device)
        if s.seed is not None:
            torch.manual_seed(s.seed)
        sample = s.temperature > 0
        with torch.no_grad():
            out = self.net.generate(
                **inputs, max_new_tokens=s.max_tokens, do_sample=sample, num_return_sequences=s.n,
                temperature=s.temperature if sample else None, top_p=s.top_p if sample else None,
                top_k=None, stop_strings=list(s.stop) or None, tokenizer=self.tokenizer,
                pad_token_id=self.tokenizer.pad_token_id or self.tokenizer.eos_token_id)
        prompt_len = inputs["input_ids"].shape[1]
        eos = self.net.generation_config.eos_token_id
        eos = set(eos if isinstance(eos, list) else [eos])
        completions = []
        for row in out[:, prompt_len:]:
            ids = row.tolist()
            pad = self.tokenizer.pad_token_id
            while ids and ids[-1] == pad and pad not in eos:
                ids.pop()
            finished = any(t in eos for t in ids) or len(ids) < s.max_tokens
            kept = [t for t in ids if t not in eos and t != pad]
            completions.append(Completion(self.tokenizer.decode(kept, skip_special_tokens=True),
                                          len(kept), "stop" if finished else "length"))
        return Result(request, completions, int(prompt_len), time.perf_counter() - t0, endpoint=self.device)

    def generate(self, requests: Iterable[Request]) -> Iterator[Result]:
        for request in requests:
            try:
                yield self._one(request)
            except Exception as e:  # one bad prompt (an image the processor rejects) is one failed row
                yield Result(request, [], 0, 0.0, error=f"{type(e).__name__}: {e}", endpoint=self.device)

    def close(self) -> None:
        self.net = None
