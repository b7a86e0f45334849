"""The `vllm` backend: vLLM's offline engine (`vllm.LLM`), the fast path on GPUs.

Requests are taken from the caller's iterable in chunks and handed to
`LLM.chat` together (vLLM schedules them with continuous batching), each with
its own `SamplingParams` (n, temperature, top_p, max_tokens, seed, stop).
Images travel as data URLs, which vLLM's chat path decodes for multimodal
models.

    from vlfactory.backends import make_backend
    backend = make_backend({"backend": "vllm", "model": "Qwen/Qwen2.5-VL-7B-Instruct"})

A script that uses it needs the `if __name__ == "__main__":` guard: vLLM
starts its engine in a child process.
"""

from __future__ import annotations

import itertools
import time
from dataclasses import dataclass
from typing import Iterable, Iterator

from vlfactory.backends import Completion, Request, Result, openai_messages


@dataclass
class VLLMConfig:
    model: str
    dtype: str = "auto"
    max_model_len: int | None = None
    tensor_parallel_size: int = 1
    gpu_memory_utilization: float = 0.9
    enforce_eager: bool = False
    chunk: int = 1024               # requests handed to the engine at once


class VLLMBackend:
    def __init__(self, cfg: VLLMConfig):
        import os

        os.environ.setdefault("VLLM_LOGGING_LEVEL", "ERROR")  # the factory prints its own progress
        from vllm.platforms import current_platform

        cpu = current_platform.is_cpu()
        if cpu:
            # In-process engine: loads in seconds instead of tens of seconds on a CPU.
            os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
            # Without it vLLM reserves a fraction of all RAM for its KV cache and refuses to start
            # when other processes use more than the rest; 1 GiB serves small models. Override in the env.
            os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
        from vllm import LLM

        self.model = cfg.model
        self.cfg = cfg
        kwargs = {"model": cfg.model, "dtype": cfg.dtype, "tensor_parallel_size": cfg.tensor_parallel_size,
                  "enforce_eager": cfg.enforce_eager or cpu}
        if cpu:
            # vLLM 0.32 on CPU: a seeded request in a chunked prefill batch kills the engine
            # ("CPU Generator does not use offset"); the cache keys need the seeds.
            kwargs["enable_chunked_prefill"] = False
            kwargs["distributed_executor_backend"] = "uni"
        if cfg.max_model_len:
            kwargs["max_model_len"] = cfg.max_model_len
        if cfg.gpu_memory_utilization and not cpu:
            kwargs["gpu_memory_utilization"] = cfg.gpu_memory_utilization
        self.llm = LLM(**kwargs)

    def __repr__(self) -> str:
        return f"VLLMBackend(model={self.model!r})"

    def generate(self, requests: Iterable[Request]) -> Iterator[Result]:
        from vllm import SamplingParams

        it = iter(requests)
        while chunk := list(itertools.islice(it, self.cfg.chunk)):
            params = [SamplingParams(n=r.sampling.n, temperature=r.sampling.temperature, top_p=r.sampling.top_p,
                                     max_tokens=r.sampling.max_tokens, seed=r.sampling.seed,
                                     stop=list(r.sampling.stop) or None) for r in chunk]
            t0 = time.perf_counter()
            outputs = self.llm.chat([openai_messages(r.messages) for r in chunk], params, use_tqdm=False)
            latency = time.perf_counter() - t0
            for request, output in zip(chunk, outputs):
                completions = [Completion(c.text, len(c.token_ids), c.finish_reason or "stop") for c in output.outputs]
                yield Result(request, completions, len(output.prompt_token_ids or []), latency, endpoint="vllm")

    def close(self) -> None:
        self.llm = None
