"""A recipe's generation blocks (`caption:`, `distil:`, `rollout:`, `eval.judge`): a model, its backend and the
backend's own options, written flat beside `backend:`."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

from pydantic import BeforeValidator
from pydantic_core import PydanticCustomError

from vlfactory.backends import BACKENDS, Sampling, backend_config_class
from vlfactory.recipe.fields import FORBID, AtLeast1, Decoding, Internal, fail
from vlfactory.redact import redact


@dataclass
class GenerationConfig:
    """How one generation stage (caption, distil, rollout) calls its model.

    The backend's own options (base_url, concurrency, dtype, device, batch_size, ...) are written
    flat beside `backend:` in the recipe and parsed into that backend's typed config
    (`options`): OpenAIConfig, VLLMConfig or TransformersConfig. An option of another backend
    fails at load time.
    """

    __pydantic_config__ = FORBID
    model: str
    backend: Literal[BACKENDS] = "openai"
    revision: str | None = None       # a hub model's revision: part of its identity
    model_id: str | None = None       # identity override, for a served model whose weights we cannot read
    prompt: str | None = None         # a shipped template name or a file path (default: the stage's own)
    sampling: Decoding = field(default_factory=Sampling)
    # Commit generated rows every `commit_seconds`, or sooner once `commit_rows` are waiting: a kill loses
    # at most that much, and each commit's cost (a snapshot, a file, a key check) is paid per batch, not per row.
    commit_rows: AtLeast1 = 8192
    commit_seconds: float = 10.0
    options: Internal[Any] = None     # the backend's typed config

    @property
    def identity(self) -> str:
        """What the model is, by content (vlfactory.models.identity); every row it writes carries it."""
        from vlfactory.models import identity

        return self.model_id or identity(self.model, self.revision)

    def with_model(self, model: str, **changes) -> GenerationConfig:
        """This block with another model answering (a checkpoint the loop trained, the model under evaluation):
        `revision` and `model_id` named the block's own model, so they go, and the identity is the new model's."""
        return dataclasses.replace(self, model=model, model_id=None, revision=None, **changes)


def _with_options(cls: type, raw: Any) -> Any:
    """A generation block's own keys, and the chosen backend's options (written flat beside them) as its typed
    config in `options`."""
    if not isinstance(raw, dict):
        return raw  # pydantic says what a block is
    from vlfactory.recipe.load import adapter, known_keys, problem

    own = set(known_keys(cls))
    backend = raw.get("backend", "openai")
    if backend not in BACKENDS:
        fail(f"{backend!r} is not one of {', '.join(BACKENDS)}", "backend")
    options_cls = backend_config_class(backend)
    allowed = {f.name for f in dataclasses.fields(options_cls)} - {"model"}
    for key in [k for k in raw if k not in own | allowed]:
        other = [b for b in BACKENDS if key in {f.name for f in dataclasses.fields(backend_config_class(b))}]
        if other:
            fail(f"an option of the {other[0]} backend; this stage's backend is {backend} (its options: "
                 f"{', '.join(sorted(allowed))})", key)
        raise PydanticCustomError("unexpected_keyword_argument", "unknown key", {"at": key, "known": sorted(
            own | allowed)})
    block = {k: v for k, v in raw.items() if k in own}
    if not isinstance(raw.get("model"), str):
        return block  # pydantic says the model is missing
    options = {k: v for k, v in raw.items() if k in allowed}
    if backend == "openai" and not options.get("base_url"):
        fail("missing (the OpenAI-compatible server, e.g. http://127.0.0.1:8000/v1)", "base_url")
    ok, built = adapter(options_cls, {"model": raw["model"], **options})
    if not ok:
        fail(*problem(built))
    for ok, key, why in [(getattr(built, "concurrency", 1) >= 1, "concurrency", "must be at least 1"),
                         (getattr(built, "timeout_s", 1) > 0, "timeout_s", "must be > 0"),
                         (getattr(built, "batch_size", 1) >= 1, "batch_size", "must be at least 1")]:
        if not ok:
            fail(why, key)
    urls = getattr(built, "base_url", None) or []
    for url in [urls] if isinstance(urls, str) else urls:
        _url(url)
    return block | {"options": built}


def _url(url: str) -> None:
    from urllib.parse import urlsplit

    try:
        parts = urlsplit(url)
        ok = parts.scheme in ("http", "https") and bool(parts.hostname)
    except ValueError:  # a malformed port or IPv6 address
        ok = False
    if not ok:
        fail(f"{redact(url)!r} is not an http:// or https:// URL of a server, e.g. http://127.0.0.1:8000/v1", "base_url")


@dataclass
class CaptionConfig(GenerationConfig):
    overwrite: bool = False           # call the model even where the source has a caption


@dataclass
class DistilConfig(GenerationConfig):
    # Which captions the reasoner reads: the recipe's caption block (set by Recipe.stage_config).
    captions: Internal[CaptionConfig | None] = None


# A generation block as a recipe writes it: the backend's options flat beside the block's own keys.
Generation = Annotated[GenerationConfig, BeforeValidator(lambda raw: _with_options(GenerationConfig, raw))]
Caption = Annotated[CaptionConfig, BeforeValidator(lambda raw: _with_options(CaptionConfig, raw))]
Distil = Annotated[DistilConfig, BeforeValidator(lambda raw: _with_options(DistilConfig, raw))]
