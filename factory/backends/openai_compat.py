"""The `openai` backend: any server speaking POST /v1/chat/completions (vLLM, SGLang, OpenAI, ...).

    from vlfactory.backends import Request, make_backend

    backend = make_backend({"backend": "openai", "model": "Qwen/Qwen2.5-VL-7B-Instruct",
                            "base_url": ["http://gpu1:8000/v1", "http://gpu2:8000/v1"], "concurrency": 128})
    for r in backend.generate(Request(key=k, messages=m) for k, m in pending()):
        ...
    backend.close()

The key comes from the environment (`api_key_env`, else VLFACTORY_API_KEY,
else OPENAI_API_KEY, else "EMPTY", which vLLM accepts) and never appears in a
repr, a log line or an error string.

How it runs: an asyncio loop in one background thread keeps `concurrency`
requests in flight; the caller's thread pulls requests from its iterable (so
a generator over a database cursor stays on the thread that owns it), builds
the request bodies, and takes results from a queue. At most
2 x `concurrency` requests are held at once, so 100k requests cost no more
memory than 128.

Failures: 429, 408, 409, 5xx, timeouts, dropped or refused connections and
unparseable 200s are retried up to `max_retries` times with exponential
backoff and full jitter (or the server's Retry-After, in seconds, capped);
other 4xx fail at once, since sending them again cannot help. A base URL that
refuses connections gets no traffic for `dead_cooldown_s`; when every URL is
down, requests wait for the first to come back, within their retry budget.

Why aiohttp and not the `openai` client: the server does the work, so the
client's CPU per request is the ceiling on this kind of machine (2 cores
shared with the server, the catalog writer and everything else). The openai
client spends about 1.4 ms of CPU per request (pydantic models, httpx2
request building), 0.95 ms even on its aiohttp transport; a plain aiohttp
request costs about 0.16 ms. Against bench/slot_server.py (64 slots, 200 ms)
that is 0.85-0.92 of the ideal rate for a bare AsyncOpenAI loop on an idle
machine and 0.57 with one core taken by another process, against 0.97 for
this backend (0.93 with the core taken), DuckDB writer included. Measure
again with `python bench/generation.py`.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import queue
import random
import threading
import time
from dataclasses import dataclass
from typing import Iterable, Iterator

import aiohttp

from vlfactory.backends import Completion, Request, Result, openai_messages

RETRY_STATUS = {408, 409, 429}  # the 4xx that can succeed when sent again


@dataclass
class OpenAIConfig:
    model: str
    base_url: str | list[str]       # e.g. http://localhost:8000/v1; several spread the load
    concurrency: int = 64           # requests in flight, over all base URLs
    timeout_s: float = 600.0        # per attempt
    max_retries: int = 6            # attempts = 1 + max_retries
    api_key_env: str | None = None  # name of the env var holding the key (the key itself never goes in a config)
    backoff_s: float = 1.0          # the first retry waits up to this (full jitter), doubling each time
    max_backoff_s: float = 30.0     # cap on one wait, Retry-After included
    dead_cooldown_s: float = 10.0   # a base URL that refuses connections gets no traffic for this long


class _Endpoint:
    def __init__(self, base: str):
        self.base = base
        self.url = base.rstrip("/") + "/chat/completions"
        self.in_flight = 0
        self.dead_until = 0.0


class _Job:
    """One generate() call: where its results go, and whether anyone still wants them."""

    def __init__(self):
        self.done: queue.SimpleQueue = queue.SimpleQueue()
        self.cancelled = False


class OpenAIBackend:
    def __init__(self, cfg: OpenAIConfig):
        self.cfg = cfg
        self.model = cfg.model
        bases = [cfg.base_url] if isinstance(cfg.base_url, str) else list(cfg.base_url)
        if not bases:
            raise ValueError("backend openai: base_url: give at least one URL, e.g. http://localhost:8000/v1")
        self._endpoints = [_Endpoint(b) for b in bases]
        if cfg.api_key_env and cfg.api_key_env not in os.environ:
            raise ValueError(f"backend openai: api_key_env: the environment variable {cfg.api_key_env} is not set")
        key = (os.environ.get(cfg.api_key_env) if cfg.api_key_env else None) or \
            os.environ.get("VLFACTORY_API_KEY") or os.environ.get("OPENAI_API_KEY") or "EMPTY"
        self._secret = key if key != "EMPTY" else None
        self._headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
        self._loop: asyncio.AbstractEventLoop | None = None

    def __repr__(self) -> str:
        return (f"OpenAIBackend(model={self.model!r}, base_url={[e.base for e in self._endpoints]}, "
                f"concurrency={self.cfg.concurrency})")

    # -- the caller's side ---------------------------------------------------

    def generate(self, requests: Iterable[Request]) -> Iterator[Result]:
        if self._loop is None:
            self._start()
        job, it = _Job(), iter(requests)
        # Keep up to 2 x concurrency requests handed over, topping up in chunks of
        # concurrency / 2: the loop always has a backlog to refill from while the
        # caller is busy writing a batch, and the thread hand-off happens per
        # chunk, not per request.
        high = 2 * self.cfg.concurrency
        low = high - max(1, self.cfg.concurrency // 2)
        outstanding, more = 0, True
        try:
            while True:
                if more and outstanding <= low:
                    chunk = [(r, self._body(r), job) for r in itertools.islice(it, high - outstanding)]
                    more = len(chunk) == high - outstanding
                    if chunk:
                        outstanding += len(chunk)
                        self._loop.call_soon_threadsafe(self._enqueue, chunk)
                if not outstanding:
                    return
                result = job.done.get()
                if isinstance(result, Exception):  # a bug in the loop thread: fail here, do not hang
                    raise result
                outstanding -= 1
                yield result
        finally:
            job.cancelled = True  # the caller stopped early: drop what has not been sent

    def close(self) -> None:
        if self._loop is None:
            return
        asyncio.run_coroutine_threadsafe(self._stop(), self._loop).result()
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()
        self._loop.close()
        self._loop = None

    def _body(self, req: Request) -> bytes:
        s = req.sampling
        body = {"model": self.model, "messages": openai_messages(req.messages), "n": s.n,
                "temperature": s.temperature, "top_p": s.top_p, "max_tokens": s.max_tokens}
        if s.seed is not None:
            body["seed"] = s.seed
        if s.stop:
            body["stop"] = list(s.stop)
        return json.dumps(body).encode()

    # -- the loop thread -----------------------------------------------------

    def _start(self) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="openai-backend", daemon=True)
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._open(), self._loop).result()

    async def _open(self) -> None:
        # No connection cap here: the workers are the cap. keepalive_timeout sits
        # below uvicorn's 5 s (vLLM's server) so we do not reuse a connection the
        # server is closing, which would cost a retry.
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0, keepalive_timeout=4.0),
            timeout=aiohttp.ClientTimeout(total=self.cfg.timeout_s), headers=self._headers)
        self._todo: asyncio.Queue = asyncio.Queue()
        self._workers = [asyncio.create_task(self._work()) for _ in range(self.cfg.concurrency)]

    async def _stop(self) -> None:
        for w in self._workers:
            w.cancel()
        await asyncio.gather(*self._workers, return_exceptions=True)
        await self._session.close()

    def _enqueue(self, chunk: list) -> None:
        for item in chunk:
            self._todo.put_nowait(item)

    async def _work(self) -> None:
        while True:
            req, body, job = await self._todo.get()
            if job.cancelled:
                continue
            try:
                job.done.put(await self._send(req, body))
            except Exception as e:
                job.done.put(e)

    def _pick(self) -> _Endpoint | None:
        now = time.monotonic()
        alive = [e for e in self._endpoints if e.dead_until <= now]
        return min(alive, key=lambda e: e.in_flight) if alive else None

    async def _send(self, req: Request, body: bytes) -> Result:
        cfg = self.cfg
        start = time.monotonic()
        for attempt in range(1, cfg.max_retries + 2):
            ep = self._pick()
            if ep is None:  # every URL refused us lately: wait for the first to come back
                first = min(self._endpoints, key=lambda e: e.dead_until)
                await asyncio.sleep(max(0.0, first.dead_until - time.monotonic()))
                ep = first
            wait = None
            ep.in_flight += 1
            try:
                async with self._session.post(ep.url, data=body) as resp:
                    raw = await resp.read()
                    status, retry_after = resp.status, resp.headers.get("Retry-After")
            except TimeoutError:
                error = f"timeout after {cfg.timeout_s:g}s"
            except aiohttp.ClientConnectorError as e:
                ep.dead_until = time.monotonic() + cfg.dead_cooldown_s
                error = f"connection refused: {e}"
                if self._pick() is not None:
                    wait = 0.0  # another URL is up: go there now
            except aiohttp.ClientError as e:  # dropped connection, truncated body
                error = f"connection error: {type(e).__name__}: {e}"
            else:
                if status == 200:
                    try:
                        return _result(req, json.loads(raw), start, attempt, ep.base)
                    except (ValueError, KeyError, TypeError, IndexError, AttributeError) as e:
                        error = f"malformed response: {type(e).__name__}: {e}: {raw[:200]!r}"
                else:
                    error = f"HTTP {status}: {raw[:300].decode('utf-8', 'replace')}"
                    if status < 500 and status not in RETRY_STATUS:
                        break
                    if retry_after:
                        try:
                            wait = min(float(retry_after), cfg.max_backoff_s)
                        except ValueError:  # the HTTP-date form: fall back to backoff
                            pass
            finally:
                ep.in_flight -= 1
            if attempt <= cfg.max_retries:
                if wait is None:
                    wait = random.uniform(0, min(cfg.max_backoff_s, cfg.backoff_s * 2 ** (attempt - 1)))
                await asyncio.sleep(wait)
        if self._secret:
            error = error.replace(self._secret, "***")
        return Result(req, [], 0, time.monotonic() - start, error=error, attempts=attempt, endpoint=ep.base)


def _result(req: Request, data: dict, start: float, attempt: int, endpoint: str) -> Result:
    choices = sorted(data["choices"], key=lambda c: c.get("index", 0))
    if len(choices) != req.sampling.n:
        raise ValueError(f"{len(choices)} choices for n={req.sampling.n}")
    usage = data.get("usage") or {}
    tokens = _split(usage.get("completion_tokens", 0), [c.get("finish_reason") for c in choices],
                    req.sampling.max_tokens)
    completions = [Completion(c["message"]["content"] or "", t, c.get("finish_reason") or "")
                   for c, t in zip(choices, tokens)]
    return Result(req, completions, usage.get("prompt_tokens", 0), time.monotonic() - start,
                  attempts=attempt, endpoint=endpoint)


def _split(total: int, finish: list, max_tokens: int) -> list[int]:
    """Per-choice completion tokens from the one total the server reports for all n choices.

    A choice cut at the length limit used max_tokens; the others share the rest
    evenly. Exact for n == 1 and when every choice but one was cut.

    >>> _split(250, ["length", "stop", "stop"], 100)
    [100, 75, 75]
    """
    if len(finish) == 1:
        return [total]
    cut = sum(f == "length" for f in finish)
    rest, free = max(0, total - cut * max_tokens), max(1, len(finish) - cut)
    share = iter([rest // free + (i < rest % free) for i in range(free)])
    return [max_tokens if f == "length" else next(share) for f in finish]
