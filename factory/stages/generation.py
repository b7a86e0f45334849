"""The cached, resumable request loop shared by the generation stages.

A generation stage (caption, distil, rollout) is declared as a `Generation`: its
model call (the recipe block), its template, what to prompt for each problem
(`prompt`) and what to store from each sample (`row`, into `table`). The
`RequestLoop` does the rest: it gives every sample a request key, skips the
keys the lake already holds, sends the rest through a backend, and commits the
rows in batches (by count and by time). So:

- rerunning a finished stage sends zero requests;
- changing one sampling setting, the template, the model or an image
  regenerates exactly the samples whose key changed;
- `kill -9` loses at most the uncommitted batch, and the rerun sends only
  the missing requests (keys are unique in the table: no duplicates);
- a request that fails after its retries becomes a `rejected` row with the
  error, and a rerun tries it again.

tests/stages/test_stages.py proves each (and that keys are the hash of their JSON text, and that
another writer's rows committed between a probe and a commit are not inserted twice);
bench/generation.py measures the loop against a server with a known ceiling.
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Iterator

import pyarrow as pa

from vlfactory.backends import Backend, Request, Result, Sampling
from vlfactory.prompts import Template, load_template
from vlfactory.recipe import GenerationConfig
from vlfactory.stages import Progress, StageResult
from vlfactory.stores import schema, tables
from vlfactory.stores.lake import Lake


PROBE_SLICE = 8192                    # prompts per cache probe, at least (one read of the table's key column each)
PROBE_SCANS = 4                       # a probe slice grows with the table: about this many reads of it per pass
HYDRATE_CHUNK = 256                   # prompts whose image bytes are fetched at once
SCHEMAS = {"captions": schema.CAPTIONS, "traces": schema.TRACES, "rollouts": schema.ROLLOUTS}


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
    with tables.registered(lake, "_ids", pa.table({"image_id": ids})):
        rows = tables.rows(lake, "SELECT image_id, bytes, format FROM lake.images WHERE image_id IN "
                                 "(SELECT image_id FROM _ids)")
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

    ref: str                          # what it is about: the problem id its rows carry
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


class Generation:
    """A generation stage, declared: these prompts, these rows.

    A stage sets `name` (in commit messages and rejected rows), `table` (where its rows go), its
    default template (`template_name`, the recipe's `prompt:` overrides it) and the fields that
    template must have (`needs`), and says what to send for one problem (`prompt`) and which of
    its own columns a sample's row has (`row`); `run` sends through the RequestLoop.
    """

    name: str
    table: str
    template_name: str
    needs: frozenset[str] = frozenset()

    def __init__(self, config: GenerationConfig):
        self.config = config
        self.identity = config.identity  # in every key and row: computed once (a local model's is a hash of it)
        self.template = load_template(config.prompt or self.template_name, needs=self.needs)

    def prompt(self, problem: tuple) -> Prompt:
        raise NotImplementedError

    def row(self, prompt: Prompt, key: str, text: str) -> dict:
        """The stage's own columns of the row for one sample (`key` its request key, `text` its completion);
        RequestLoop.rows adds those every generated row shares."""
        raise NotImplementedError

    def run(self, lake: Lake, problems: Iterable[tuple], progress: Progress | None = None,
            backend_factory: Callable[[], Backend] | None = None) -> StageResult:
        return RequestLoop(lake, self, progress, backend_factory).run(map(self.prompt, problems))


class RequestLoop:
    """One pass of a generation stage over its prompts: probe the cache, hydrate images, send, commit.

    What a commit inserts was missing at the oldest probe of its rows; while no other writer has
    inserted keys into the table since (its write guard moved by this loop's own commits only),
    the insert skips its key check, and otherwise checks every key (another writer's rows are
    not inserted twice).
    """

    def __init__(self, lake: Lake, stage: Generation, progress: Progress | None = None,
                 backend_factory: Callable[[], Backend] | None = None):
        self.lake, self.stage, self.progress = lake, stage, progress
        self.backend_factory = backend_factory or (lambda: make_backend_for(stage.config))
        self.sampling = stage.config.sampling
        self.stats = StageResult(stage.name)
        self.sent: dict[str, tuple[Prompt, list[int], list[str], int]] = {}  # key -> prompt, samples, keys, probe
        self.rows: list[dict] = []                            # received, not committed
        self.failures: list[tuple[str, str, str]] = []        # (request key, detail, payload), not committed
        self.last_commit = time.monotonic()
        self.probes: list[tuple[int, int | None]] = []        # per probe: this loop's commits so far, the guard
        self.own_writes = 0
        self.oldest: int | None = None                        # the oldest probe of the uncommitted rows

    def run(self, prompts: Iterable[Prompt]) -> StageResult:
        """Send what the lake lacks, commit what comes back."""
        cfg, t0, backend = self.stage.config, time.perf_counter(), None
        try:
            requests = self.requests(prompts)
            record_template(self.lake, self.stage.template)
            record_model(self.lake, cfg, self.stage.identity)
            first = next(requests, None)
            if first is not None:  # only start a model when there is work for it
                backend = self.backend_factory()
                for result in backend.generate(itertools.chain([first], requests)):
                    self.receive(result)
                    if len(self.rows) >= cfg.commit_rows or time.monotonic() - self.last_commit >= cfg.commit_seconds:
                        self.commit()
        finally:
            # Whatever happens (Ctrl-C, a bug, a dead backend), keep every answer already received.
            self.commit()
            if backend is not None:
                backend.close()
            self.stats.seconds = time.perf_counter() - t0
        return self.stats

    def requests(self, prompts: Iterable[Prompt]) -> Iterator[Request]:
        """Requests for the samples the lake lacks. Keys are probed in large slices (a probe reads the
        table's key column once, so its cost is per slice, not per prompt), and a slice grows with the
        table (about PROBE_SCANS probes per pass over it), so a pass reads the table a bounded number
        of times however large it is."""
        n, stats = self.sampling.n, self.stats
        key_of = prompt_keyer(self.stage.identity, self.sampling, self.stage.template.hash)
        held = self.lake.count(self.stage.table)  # rows in the table; with stats.written, what it holds now
        seen: set[str] = set()
        slice_: list[tuple[Prompt, str, list[str]]] = []
        for prompt in prompts:
            pkey = key_of(prompt.messages)
            if pkey in seen:  # the same request as another problem's (same text, same image): its rows are the first's
                stats.skipped["same request as another problem"] += 1
                continue
            seen.add(pkey)
            slice_.append((prompt, pkey, [sample_key(pkey, i) for i in range(n)]))
            stats.wanted += n
            if len(slice_) >= max(PROBE_SLICE, (held + stats.written) // (PROBE_SCANS * n)):
                yield from self.probe(slice_)
                slice_ = []
        yield from self.probe(slice_)

    def probe(self, slice_: list[tuple[Prompt, str, list[str]]]) -> Iterator[Request]:
        """This slice's requests for what the table lacks; image bytes are fetched in small chunks, only
        for the prompts that will be sent, so memory stays flat."""
        self.probes.append((self.own_writes, self.lake.guard_value(self.stage.table)))  # first: a write after shows
        lacking = self.lake.missing(self.stage.table, "request_key", [k for *_, keys in slice_ for k in keys])
        todo = []
        for prompt, pkey, keys in slice_:
            missing = [i for i, k in enumerate(keys) if k in lacking]
            self.stats.cached += len(keys) - len(missing)
            if missing:
                todo.append((prompt, pkey, keys, missing))
        for start in range(0, len(todo), HYDRATE_CHUNK):
            chunk = todo[start:start + HYDRATE_CHUNK]
            hydrate_images(self.lake, [prompt for prompt, *_ in chunk])
            for prompt, pkey, keys, missing in chunk:
                self.sent[pkey] = (prompt, missing, [keys[i] for i in missing], len(self.probes) - 1)
                self.stats.requests += 1
                yield Request(key=pkey, messages=prompt.messages, sampling=self.partial(missing))

    def partial(self, missing: list[int]) -> Sampling:
        """A prompt with some samples stored asks only for the missing ones; the seed moves with them."""
        base = self.sampling
        if len(missing) == base.n:
            return base
        return dataclasses.replace(base, n=len(missing), seed=None if base.seed is None else base.seed + missing[0])

    def receive(self, result: Result) -> None:
        """An answer: its rows, or a failure, wait for the next commit."""
        prompt, indices, keys, probe = self.sent.pop(result.request.key)
        if result.ok:
            self.oldest = probe if self.oldest is None else min(self.oldest, probe)
            for c in result.completions:  # a lone surrogate from a JSON reply would not store
                c.text = c.text.encode("utf-8", "surrogatepass").decode("utf-8", "replace")
            self.stats.prompt_tokens += result.prompt_tokens
            self.stats.completion_tokens += sum(c.completion_tokens for c in result.completions)
            self.rows.extend(self.build(prompt, result, indices, keys))
        else:
            self.stats.failed += 1
            self.stats.rejected["request_failed"] += 1
            payload = json.dumps({"ref": prompt.ref, "attempts": result.attempts, "endpoint": result.endpoint,
                                  "samples": indices})
            self.failures.append((result.request.key, f"{prompt.ref}: {result.error}", payload))
        if self.progress:
            self.progress(self.stats, len(indices))

    def build(self, prompt: Prompt, result: Result, indices: list[int], keys: list[str]) -> list[dict]:
        """A row per sample: the columns generated rows share (a table keeps those in its schema), then the
        stage's own."""
        s, stage = result.request.sampling, self.stage
        shared = {"problem_id": prompt.ref, "model": stage.identity, "prompt_hash": stage.template.hash,
                  "prompt_tokens": result.prompt_tokens, "latency_s": result.latency_s, "run_id": self.lake.run_id,
                  "temperature": s.temperature, "top_p": s.top_p, "max_tokens": s.max_tokens, "seed": s.seed,
                  "backend": stage.config.backend}
        return [shared | {"sample_index": i, "request_key": key, "completion": c.text,
                          "completion_tokens": c.completion_tokens, "finish_reason": c.finish_reason}
                | stage.row(prompt, key, c.text) for i, key, c in zip(indices, keys, result.completions)]

    def commit(self) -> None:
        """The received rows and failures in one snapshot; run again from the start if another run's commit of
        these keys wins (Lake.write)."""
        if self.rows or self.failures:
            stage, lake = self.stage, self.lake
            mine, guard = self.probes[self.oldest] if self.oldest is not None else (0, None)
            guard_at = None if guard is None else guard + self.own_writes - mine
            rows = pa.Table.from_pylist(self.rows, schema=SCHEMAS[stage.table])
            rejected = pa.Table.from_pylist([
                {"rejected_id": sha("rejected", stage.name, "request_failed", key)[:16], "stage": stage.name,
                 "reason": "request_failed", "reasons": ["request_failed"], "detail": detail, "ref_id": key,
                 "payload": payload, "run_id": lake.run_id} for key, detail, payload in self.failures],
                schema=schema.REJECTED)

            def write() -> int:
                lake.insert("rejected", rejected, key="rejected_id")
                return lake.insert(stage.table, rows, key="request_key", guard_at=guard_at)
            n = lake.write(f"{stage.name}: {len(self.rows)} rows, {len(self.failures)} failed", write)
            self.stats.written += n
            self.own_writes += n > 0
            self.rows, self.failures, self.oldest = [], [], None
        self.last_commit = time.monotonic()


def record_template(lake: Lake, template: Template) -> None:
    """Keep the text of every template that produced rows, keyed by its hash."""
    row = pa.table({"prompt_hash": [template.hash], "name": [template.name], "text": [template.text],
                    "run_id": [lake.run_id]}, schema=schema.PROMPTS)
    if not lake.existing("prompts", "prompt_hash", [template.hash]):
        lake.write(f"prompt template {template.name} ({template.hash})",
                   lambda: lake.insert("prompts", row, key="prompt_hash"))


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
