"""Generation backends: send chat requests to a model, get completions back.

A stage hands a backend an iterable of `Request`s and consumes `Result`s as
they complete, in any order; every request yields exactly one `Result`, either
answered (`error is None`, `len(completions) == sampling.n`) or failed after
retries with the reason in `error`. The caller's `key` comes back untouched so
results can be matched to the rows (and cache entries) they belong to.

    from vlfactory.backends import Request, Sampling, make_backend

    backend = make_backend({"backend": "openai", "model": "Qwen/Qwen2.5-VL-7B-Instruct",
                            "base_url": "http://localhost:8000/v1"})
    try:
        reqs = [Request(key=f"q{i}", messages=[{"role": "user", "content": f"What is {i} + {i}?"}],
                        sampling=Sampling(temperature=0.7, n=4)) for i in range(100)]
        for r in backend.generate(reqs):
            print(r.request.key, r.error or [c.text for c in r.completions])
    finally:
        backend.close()

Implementations live in their own modules and are imported only when asked
for, so that importing this package stays light (no vllm, no torch).
"""

from __future__ import annotations

import base64
import dataclasses
from dataclasses import dataclass
from typing import Any, Iterable, Iterator, Mapping, Protocol


@dataclass(frozen=True)
class Sampling:
    temperature: float = 0.0
    top_p: float = 1.0
    max_tokens: int = 1024
    n: int = 1
    seed: int | None = 0
    stop: tuple[str, ...] = ()


@dataclass
class Request:
    key: str              # opaque id chosen by the caller (the cache key); echoed back
    messages: list[dict]  # chat messages; content is a str or a list of parts
                          # {"type": "text", "text": ...} / {"type": "image", "image": <bytes>, "format": "png"}
    sampling: Sampling = Sampling()


@dataclass
class Completion:
    text: str
    completion_tokens: int
    finish_reason: str    # "stop", "length", ...


@dataclass
class Result:
    request: Request
    completions: list[Completion]  # len == sampling.n when ok
    prompt_tokens: int
    latency_s: float               # first attempt sent -> result ready, retries included
    error: str | None = None       # set when the request failed after retries ("HTTP 500: ...", "timeout after 600s")
    attempts: int = 1
    endpoint: str = ""             # which base URL answered (or failed last)

    @property
    def ok(self) -> bool:
        return self.error is None


class EndpointsUnreachable(RuntimeError):
    """No server ever answered: every base URL refused connections for `fail_fast_after_s` (openai backend).
    The stage keeps what it received and stops with this one line."""


class Backend(Protocol):
    model: str

    def generate(self, requests: Iterable[Request]) -> Iterator[Result]:
        """Yield one Result per request as they complete (any order), pulling requests lazily."""
        ...

    def close(self) -> None: ...


def openai_messages(messages: list[dict]) -> list[dict]:
    """Our messages in OpenAI chat form: image parts become data URLs (what vLLM's chat API takes too)."""
    out = []
    for m in messages:
        if isinstance(m["content"], list):
            m = {**m, "content": [_openai_part(p) for p in m["content"]]}
        out.append(m)
    return out


def _openai_part(p: dict) -> dict:
    if p["type"] != "image":
        return p
    fmt = (p.get("format") or "png").lower()
    mime = "jpeg" if fmt == "jpg" else fmt
    return {"type": "image_url",
            "image_url": {"url": f"data:image/{mime};base64,{base64.b64encode(p['image']).decode()}"}}


BACKENDS = ("openai", "vllm", "transformers", "rules")


def backend_config_class(name: str) -> type:
    """The typed options of a backend (its module is imported; none of them imports torch or vllm at the top)."""
    if name == "openai":
        from vlfactory.backends.openai_compat import OpenAIConfig

        return OpenAIConfig
    if name == "vllm":
        from vlfactory.backends.vllm_engine import VLLMConfig

        return VLLMConfig
    if name == "transformers":
        from vlfactory.backends.hf_local import TransformersConfig

        return TransformersConfig
    if name == "rules":
        from vlfactory.backends.rules import RulesConfig

        return RulesConfig
    raise ValueError(f"backend: unknown backend {name!r}; known: {', '.join(BACKENDS)}")


def make_backend(cfg: Mapping[str, Any] | Any) -> Backend:
    """A backend from a mapping (or dataclass) with `backend: <name>` and that backend's options.

    `{"backend": "openai", "model": ..., "base_url": ...}` -> `OpenAIBackend(OpenAIConfig(...))`.
    """
    if dataclasses.is_dataclass(cfg):  # a backend's own config: OpenAIConfig, VLLMConfig, TransformersConfig
        name = next(n for n in BACKENDS if backend_config_class(n) is type(cfg))
    else:
        cfg = dict(cfg)
        name = cfg.pop("backend", None)
        cfg = _config(backend_config_class(name), cfg, name)
    if name == "openai":
        from vlfactory.backends.openai_compat import OpenAIBackend

        return OpenAIBackend(cfg)
    if name == "vllm":
        from vlfactory.backends.vllm_engine import VLLMBackend

        return VLLMBackend(cfg)
    if name == "rules":
        from vlfactory.backends.rules import RulesBackend

        return RulesBackend(cfg)
    from vlfactory.backends.hf_local import TransformersBackend

    return TransformersBackend(cfg)


def _config(cls, options: dict, name: str):
    known = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(options) - set(known))
    if unknown:
        raise ValueError(f"backend {name}: unknown option {unknown[0]!r}; known options: {', '.join(known)}")
    return cls(**options)
