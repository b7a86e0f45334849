"""The cached, resumable request loop shared by the generation stages.

A stage describes its work as `Prompt`s (messages, sampling, how many
samples); this module gives every sample a request key, skips the keys the
lake already holds, sends the rest through a backend, and commits the rows a
stage builds from each answer in batches (by count and by time). So:

- rerunning a finished stage sends zero requests;
- changing one sampling setting, the template, the model or an image
  regenerates exactly the samples whose key changed;
- `kill -9` loses at most the uncommitted batch, and the rerun sends only
  the missing requests (keys are unique in the table: no duplicates);
- a request that fails after its retries becomes a `rejected` row with the
  error, and a rerun tries it again.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Iterator

import pyarrow as pa

from vlfactory.backends import Backend, Request, Result, Sampling
from vlfactory.prompts import Template
from vlfactory.recipe import GenerationConfig
from vlfactory.stages import StageResult
from vlfactory.stores import schema
from vlfactory.stores.lake import Lake


PROBE_SLICE = 8192                    # prompts per cache probe, at least (one read of the table's key column each)
PROBE_SCANS = 4                       # a probe slice grows with the table: about this many reads of it per pass
HYDRATE_CHUNK = 256                   # prompts whose image bytes are fetched at once


_KEY_JSON = json.JSONEncoder(sort_keys=True, ensure_ascii=False, default=str)  # json.dumps's, built once


def sha(*parts: Any) -> str:
    return hashlib.sha256(_KEY_JSON.encode(parts).encode()).hexdigest()


def image_part(image_id: str, data: bytes | None = None, fmt: str = "png") -> dict:
    """A message part for an image; `image_id` stands for the bytes in cache keys."""
    return {"type": "image", "image_id": image_id, "image": data, "format": (fmt or "png").lower()}


def hydrate_images(lake: Lake, prompts: list[Prompt]) -> None:
    """Fill in the bytes of the image parts of these prompts, in one query."""
    parts = [p for prompt in prompts for m in prompt.messages if isinstance(m["content"], list)
             for p in m["content"] if p.get("type") == "image" and p.get("image") is None]
    if not parts:
        return
    ids = sorted({p["image_id"] for p in parts})
    lake.con.register("_ids", pa.table({"image_id": ids}))
    try:
        rows = lake.con.execute("SELECT image_id, bytes, format FROM lake.images WHERE image_id IN "
                                "(SELECT image_id FROM _ids)").fetchall()
    finally:
        lake.con.unregister("_ids")
    found = {r[0]: (r[1], r[2]) for r in rows}
    for p in parts:
        p["image"], fmt = found[p["image_id"]]
        p["format"] = (fmt or "png").lower()


def _key_messages(messages: list[dict]) -> list:
    """Messages as they enter a cache key: images by hash, never by bytes."""
    out = []
    for m in messages:
        content = m["content"]
        if isinstance(content, list):
            content = [{"type": "image", "image_id": p["image_id"]} if p.get("type") == "image" else p
                       for p in content]
        out.append({"role": m["role"], "content": content})
    return out


@dataclass
class Prompt:
    """One rendered prompt and the samples wanted from it."""

    ref: str                          # what it is about (a problem id)
    messages: list[dict]
    context: dict = field(default_factory=dict)  # whatever the stage needs to build its rows


def prompt_key(identity: str, sampling: Sampling, template_hash: str, messages: list[dict]) -> str:
    return prompt_keyer(identity, sampling, template_hash)(messages)


def prompt_keyer(identity: str, sampling: Sampling, template_hash: str) -> Callable[[list[dict]], str]:
    """prompt_key for one stage's settings: the JSON text of sha("prompt", identity, template_hash,
    messages, settings) with all but the messages encoded once (a key per prompt, a million prompts)."""
    settings = {"temperature": sampling.temperature, "top_p": sampling.top_p, "max_tokens": sampling.max_tokens,
                "seed": sampling.seed, "stop": list(sampling.stop)}
    head = _KEY_JSON.encode(["prompt", identity, template_hash])[:-1] + ", "  # a list's items join with ", "
    tail = f", {_KEY_JSON.encode(settings)}]"
    text = json.encoder.encode_basestring

    def key(messages: list[dict]) -> str:
        m = messages[0] if len(messages) == 1 else {}
        if m.keys() == {"role", "content"} and isinstance(m["content"], str) and isinstance(m["role"], str):
            body = f'[{{"content": {text(m["content"])}, "role": {text(m["role"])}}}]'  # one text turn, as encoded
        else:
            body = _KEY_JSON.encode(_key_messages(messages))
        return hashlib.sha256(f"{head}{body}{tail}".encode()).hexdigest()
    return key


def sample_key(prompt_key_: str, index: int) -> str:
    """sha("sample", prompt_key_, index), written out: the same JSON text, so the same key, without
    json.dumps's cost (a million keys per rerun of a large stage)."""
    return hashlib.sha256(f'["sample", "{prompt_key_}", {int(index)}]'.encode()).hexdigest()


RowBuilder = Callable[[Prompt, Result, list[int], list[str]], list[dict]]


def record_template(lake: Lake, template: Template) -> None:
    """Keep the text of every template that produced rows, keyed by its hash."""
    row = pa.table({"prompt_hash": [template.hash], "name": [template.name], "text": [template.text],
                    "run_id": [lake.run_id]}, schema=schema.PROMPTS)
    if not lake.existing("prompts", "prompt_hash", [template.hash]):
        lake.write(f"prompt template {template.name} ({template.hash})",
                   lambda: lake.insert("prompts", row, key="prompt_hash"))


def run_prompts(lake: Lake, stage_name: str, table: str, stage: GenerationConfig, identity: str, template: Template,
                prompts: Iterable[Prompt], build_rows: RowBuilder, progress=None,
                hydrate: Callable[[list[Prompt]], None] | None = None,
                backend_factory: Callable[[], Backend] | None = None) -> StageResult:
    """Send what the lake lacks, commit what comes back. See the module docstring.

    `identity` is the model's (GenerationConfig.identity, computed once by the stage): it is in
    every request key and every row, so another model, or the same folder with new weights,
    never reads these rows as its own.
    """
    stats = StageResult(stage_name)
    arrow_schema = {"captions": schema.CAPTIONS, "traces": schema.TRACES, "rollouts": schema.ROLLOUTS}[table]
    base = stage.sampling
    backend_factory = backend_factory or (lambda: make_backend_for(stage))
    t0 = time.perf_counter()

    def pending() -> Iterator[Request]:
        """Requests for the samples the lake lacks. Keys are probed in large slices (a probe reads the
        table's key column once, so its cost is per slice, not per prompt), and a slice grows with the
        table (about PROBE_SCANS probes per pass over it), so a pass reads the table a bounded number
        of times however large it is; image bytes are fetched in small chunks, only for the prompts
        that will be sent, so memory stays flat."""
        slice_: list[tuple[Prompt, str, list[str]]] = []
        held = lake.count(table)  # rows in the table, kept up to date with what this run commits

        def flush_slice():
            probes.append((own_writes, lake.guard_value(table)))  # before the read: a write in between shows
            lacking = lake.missing(table, "request_key", [k for _, _, ks in slice_ for k in ks])
            todo = []
            for prompt, pkey, ks in slice_:
                missing = [i for i, k in enumerate(ks) if k in lacking]
                stats.cached += len(ks) - len(missing)
                if missing:
                    todo.append((prompt, pkey, ks, missing))
            for k in range(0, len(todo), HYDRATE_CHUNK):
                chunk = todo[k:k + HYDRATE_CHUNK]
                if hydrate:
                    hydrate([prompt for prompt, *_ in chunk])
                for prompt, pkey, ks, missing in chunk:
                    # Partial prompts ask only for the missing samples; the seed moves with them.
                    sampling = base if len(missing) == base.n else Sampling(
                        **{**base.__dict__, "n": len(missing),
                           "seed": None if base.seed is None else base.seed + missing[0]})
                    prompt.context["_samples"] = (missing, [ks[i] for i in missing])
                    prompt.context["_probe"] = len(probes) - 1
                    stats.requests += 1
                    yield Request(key=pkey, messages=prompt.messages, sampling=sampling), prompt

        seen: set[str] = set()
        key_of = prompt_keyer(identity, base, template.hash)
        for prompt in prompts:
            pkey = key_of(prompt.messages)
            if pkey in seen:  # the same request as another problem's (same text, same image): its rows are the first's
                stats.skipped["same request as another problem"] += 1
                continue
            seen.add(pkey)
            ks = [sample_key(pkey, i) for i in range(base.n)]
            stats.wanted += base.n
            slice_.append((prompt, pkey, ks))
            if len(slice_) >= max(PROBE_SLICE, (held + stats.written) // (PROBE_SCANS * base.n)):
                yield from flush_slice()
                slice_ = []
        yield from flush_slice()

    by_key: dict[str, Prompt] = {}

    def requests() -> Iterator[Request]:
        for request, prompt in pending():
            by_key[request.key] = prompt
            yield request

    buffer: list[dict] = []
    failures: list[tuple[str, str, str]] = []
    last_commit = time.monotonic()
    # The buffer's keys were all missing at the oldest probe of its rows; while no other keyed write
    # has happened since (the table's guard moved by our own commits only), the insert skips its check.
    probes: list[tuple[int, int | None]] = []   # per probe: our commits so far, the table's guard
    own_writes, oldest = 0, None

    def commit() -> None:
        nonlocal buffer, failures, last_commit, own_writes, oldest
        if buffer or failures:
            mine, guard = probes[oldest] if oldest is not None else (0, None)
            guard_at = None if guard is None else guard + own_writes - mine
            rows = pa.Table.from_pylist(buffer, schema=arrow_schema)
            rejected = pa.Table.from_pylist([
                {"rejected_id": sha("rejected", stage_name, "request_failed", key)[:16], "stage": stage_name,
                 "reason": "request_failed", "reasons": ["request_failed"], "detail": detail, "ref_id": key,
                 "payload": payload, "run_id": lake.run_id} for key, detail, payload in failures],
                schema=schema.REJECTED)
            def write() -> int:  # run again from the start if another run's commit of these keys wins
                lake.insert("rejected", rejected, key="rejected_id")
                return lake.insert(table, rows, key="request_key", guard_at=guard_at)
            n = lake.write(f"{stage_name}: {len(buffer)} rows, {len(failures)} failed", write)
            stats.written += n
            own_writes += n > 0
            buffer, failures, oldest = [], [], None
        last_commit = time.monotonic()

    backend = None
    try:
        stream = requests()
        record_template(lake, template)
        record_model(lake, stage, identity)
        first = next(stream, None)
        if first is not None:  # only start a model when there is work for it
            backend = backend_factory()

            def all_requests():
                yield first
                yield from stream

            for result in backend.generate(all_requests()):
                prompt = by_key.pop(result.request.key)
                indices, keys = prompt.context.pop("_samples")
                probe = prompt.context.pop("_probe")
                if result.ok:
                    oldest = probe if oldest is None else min(oldest, probe)
                    for c in result.completions:  # a lone surrogate from a JSON reply would not store
                        c.text = c.text.encode("utf-8", "surrogatepass").decode("utf-8", "replace")
                    stats.prompt_tokens += result.prompt_tokens
                    stats.completion_tokens += sum(c.completion_tokens for c in result.completions)
                    buffer.extend(build_rows(prompt, result, indices, keys))
                else:
                    stats.failed += 1
                    stats.rejected["request_failed"] += 1
                    payload = json.dumps({"ref": prompt.ref, "attempts": result.attempts,
                                          "endpoint": result.endpoint, "samples": indices})
                    failures.append((result.request.key, f"{prompt.ref}: {result.error}", payload))
                if progress:
                    progress(stats, len(indices))
                if len(buffer) >= stage.commit_rows or time.monotonic() - last_commit >= stage.commit_seconds:
                    commit()
    finally:
        # Whatever happens (Ctrl-C, a bug, a dead backend), keep every answer already received.
        commit()
        if backend is not None:
            backend.close()
        stats.seconds = time.perf_counter() - t0
    return stats


def common_row(prompt: Prompt, result: Result, index: int, key: str, identity: str,
               template_hash: str, run_id: str | None) -> dict:
    """The columns every generated row shares."""
    c = result.completions[index]
    s = result.request.sampling
    return {"model": identity, "prompt_hash": template_hash, "prompt_tokens": result.prompt_tokens,
            "completion_tokens": c.completion_tokens, "finish_reason": c.finish_reason,
            "latency_s": result.latency_s, "request_key": key, "run_id": run_id,
            "temperature": s.temperature, "top_p": s.top_p, "max_tokens": s.max_tokens, "seed": s.seed}


def record_model(lake: Lake, stage: GenerationConfig, identity: str) -> None:
    """Name the identity in `models` (what the recipe called it, where it was), once per identity and name."""
    from vlfactory.models import describe

    info = describe(stage.model) if stage.model_id is None else {"path": None, "kind": "declared"}
    key = sha("model", identity, stage.model)[:16]
    if lake.existing("models", "model_key", [key]):
        return
    row = pa.table({"model_key": [key], "model_id": [identity], "name": [stage.model], "revision": [stage.revision],
                    "path": [info.get("path")], "kind": [info.get("kind")], "training_id": [None],
                    "run_id": [lake.run_id]}, schema=schema.MODELS)
    lake.write(f"model {identity} ({stage.model})", lambda: lake.insert("models", row, key="model_key"))


def make_backend_for(stage: GenerationConfig) -> Backend:
    """The stage's backend, its model resolved to what the backend loads (a folder for local backends)."""
    import dataclasses

    from vlfactory.backends import make_backend
    from vlfactory.models import resolve_model

    model = stage.model if stage.backend == "openai" else resolve_model(stage.model)
    return make_backend(dataclasses.replace(stage.options, model=model))
