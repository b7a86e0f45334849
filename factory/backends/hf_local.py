"""The `transformers` backend: local generation for small models on a CPU or one GPU.

Vision-language models (anything `AutoModelForImageTextToText` loads) get
their images through the model's own processor; text-only models load with
`AutoModelForCausalLM`. Up to `batch_size` consecutive requests with the same
sampling settings go through one left-padded `generate` call with
`num_return_sequences = n`, seeded by the batch's first request: greedy
answers do not depend on the batch, sampled ones do (`batch_size: 1` makes
each request's samples depend on its own seed only). Use the `vllm` or
`openai` backends for volume.

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
    batch_size: int = 8             # requests per generate() call (same sampling settings)


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
        self.batch_size = cfg.batch_size

    def __repr__(self) -> str:
        return f"TransformersBackend(model={self.model!r}, device={self.device!r})"

    def _text_and_images(self, messages: list[dict]) -> tuple[str, list]:
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
        return self.processor.apply_chat_template(converted, add_generation_prompt=True, tokenize=False), images

    def _inputs(self, batch: list[Request]):
        texts, images = [], []
        for request in batch:
            text, imgs = self._text_and_images(request.messages)
            texts.append(text)
            images += imgs
        self.tokenizer.padding_side = "left"  # generation continues every row from its last real token
        if images:
            return self.processor(text=texts, images=images, padding=True, return_tensors="pt")
        return self.tokenizer(texts, padding=True, return_tensors="pt")

    def _batch(self, batch: list[Request]) -> list[Result]:
        import torch

        s = batch[0].sampling
        t0 = time.perf_counter()
        inputs = self._inputs(batch).to(self.device)
        if s.seed is not None:
            torch.manual_seed(s.seed)
        sample = s.temperature > 0
        pad = self.tokenizer.pad_token_id
        if pad is None:
            pad = self.tokenizer.eos_token_id
        with torch.no_grad():
            out = self.net.generate(
                **inputs, max_new_tokens=s.max_tokens, do_sample=sample, num_return_sequences=s.n,
                temperature=s.temperature if sample else None, top_p=s.top_p if sample else None,
                top_k=None, stop_strings=list(s.stop) or None, tokenizer=self.tokenizer, pad_token_id=pad)
        prompt_len = inputs["input_ids"].shape[1]
        prompt_tokens = inputs["attention_mask"].sum(dim=1).tolist()
        latency = time.perf_counter() - t0
        eos = self.net.generation_config.eos_token_id
        eos = set(eos if isinstance(eos, list) else [eos])
        results = []
        for b, request in enumerate(batch):
            completions = []
            for row in out[b * s.n:(b + 1) * s.n, prompt_len:]:
                ids = row.tolist()
                while ids and ids[-1] == pad and pad not in eos:
                    ids.pop()
                finished = any(t in eos for t in ids) or len(ids) < s.max_tokens
                kept = [t for t in ids if t not in eos and t != pad]
                completions.append(Completion(self.tokenizer.decode(kept, skip_special_tokens=True),
                                              len(kept), "stop" if finished else "length"))
            results.append(Result(request, completions, int(prompt_tokens[b]), latency, endpoint=self.device))
        return results

    def generate(self, requests: Iterable[Request]) -> Iterator[Result]:
        batch: list[Request] = []

        def same(a: Request, b: Request) -> bool:
            x, y = a.sampling, b.sampling
            return (x.temperature, x.top_p, x.max_tokens, x.n, x.stop) == (y.temperature, y.top_p, y.max_tokens,
                                                                            y.n, y.stop)

        def flush() -> Iterator[Result]:
            try:
                yield from self._batch(batch)
            except Exception:  # one bad prompt (an image the processor rejects) fails alone, not its batch
                for request in batch:
                    try:
                        yield from self._batch([request])
                    except Exception as e:
                        yield Result(request, [], 0, 0.0, error=f"{type(e).__name__}: {e}", endpoint=self.device)

        for request in requests:
            if batch and (len(batch) >= self.batch_size or not same(batch[0], request)):
                yield from flush()
                batch = []
            batch.append(request)
        if batch:
            yield from flush()

    def close(self) -> None:
        self.net = None
