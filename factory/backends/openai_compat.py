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
bad 200s are retried up to `max_retries` times with exponential backoff and
full jitter (or the server's Retry-After, in seconds, capped); other 4xx fail
at once, since sending them again cannot help, and so does a body over
`max_response_bytes` (read in chunks, so a body that never ends costs that
much memory and no more; `timeout_s` covers the whole attempt, body
included). A base URL that refuses connections gets no traffic for
`dead_cooldown_s`; when every URL is down, requests wait for the first to
come back, within their retry budget.

A 200 is checked before it becomes a Result: `choices` must be a list of n
objects whose `message.content` is a string (null, as OpenAI sends with tool
calls and refusals, is a failure too) and whose `finish_reason` is a string
(missing or null reads as ""); anything else is a bad response, retried and
then failed with the reason ("bad response: choices[0].message.content is a
number (42), expected a string"). Token counts are only bookkeeping, so a bad
one does not fail the request: a count that is not an int in
0..10,000,000 (or no `usage` at all) is unknown; unknown prompt tokens read
as 0, and unknown completion tokens are estimated per choice (max_tokens for
a choice cut at the length limit, else about 4 characters a token).

A server that is not there: until some server has answered (any HTTP
status), refused connections (also DNS failures, unreachable hosts, TLS
failures) do not use up a request's retries; requests look again every
second or so, and once every base URL has refused for `fail_fast_after_s`
with no answer at all since the start, generate() raises
EndpointsUnreachable, one line naming the URLs ("no server answers at
http://127.0.0.1:9/v1 (connection refused, 12 attempts in 30.1 s); is it
running?"). Results yielded before that stand. Once any server has answered,
refused connections are retried as above, so a server restarting mid-run
does not stop the run.

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
import base64
import errno
import itertools
import json
import os
import queue
import random
import socket
import threading
import time
from dataclasses import dataclass
from typing import Iterable, Iterator

import aiohttp
import yarl

from vlfactory.backends import Completion, EndpointsUnreachable, Request, Result, openai_messages
from vlfactory.redact import redact

RETRY_STATUS = {408, 409, 429}  # the 4xx that can succeed when sent again
MAX_TOKENS = 10_000_000         # a token count above this is a server bug, not a count
PROBE_S = 1.0                   # until a server answers, refused requests look again this often


class BadResponse(ValueError):
    """A 200 whose body is not a chat completion we can use."""


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
    max_response_bytes: int = 32 * 2**20  # a longer response body fails its request (n=16 x 32k tokens is ~3 MB)
    fail_fast_after_s: float | None = 30.0  # no server answered and every URL refused this long: stop
                                            # (EndpointsUnreachable); None: keep retrying within max_retries


class _Endpoint:
    def __init__(self, base: str):
        self.base = redact(base)  # what results, errors and rows name: no user:password@ of the URL
        url = yarl.URL(base)
        # user:password@ in the URL (a server behind a proxy with basic auth): sent as this endpoint's
        # Authorization, in place of the bearer key (aiohttp refuses a URL's credentials beside that header).
        basic = base64.b64encode(f"{url.user or ''}:{url.password or ''}".encode()).decode()
        self.headers = {"Authorization": f"Basic {basic}"} if url.user is not None else None
        self.url = str(url.with_user(None)).rstrip("/") + "/chat/completions"
        self.in_flight = 0
        self.dead_until = 0.0
        self.unreachable = ""  # why connecting failed, before any server answered


class _Endpoints:
    """The base URLs and what the backend knows of them: which is the least busy of those not cooling down after
    a refused connection, whether any server has answered yet and, until one has, how long all have refused."""

    def __init__(self, bases: list[str], cooldown_s: float, fail_fast_after_s: float | None):
        self.all = [_Endpoint(b) for b in bases]
        self.cooldown_s, self.fail_fast_after_s = cooldown_s, fail_fast_after_s
        self.answered = False       # some server sent an HTTP response (any status) since we started
        self._refused_since = None  # before that: when the first connection failed, and how many did
        self._refusals = 0

    def pick(self) -> _Endpoint | None:
        now = time.monotonic()
        alive = [e for e in self.all if e.dead_until <= now]
        return min(alive, key=lambda e: e.in_flight) if alive else None

    async def next(self) -> _Endpoint:
        """Where to send: the least busy live URL, else the first to come back, waited for (looked at again
        soon while nothing has answered yet: a server may be starting)."""
        ep = self.pick()
        if ep is None:
            ep = min(self.all, key=lambda e: e.dead_until)
            delay = ep.dead_until - time.monotonic()
            if not self.answered:
                delay = min(delay, PROBE_S, self.cooldown_s)
            await asyncio.sleep(max(0.0, delay))
        return ep

    def refused(self, ep: _Endpoint, reason: str) -> bool:
        """A connection to `ep` failed: it cools down. True when that is no failed attempt (no server has
        answered yet and fail_fast_after_s is set: wait for one), raising EndpointsUnreachable once every URL
        has refused for fail_fast_after_s."""
        now = time.monotonic()
        ep.dead_until = now + self.cooldown_s
        if self.answered or self.fail_fast_after_s is None:
            return False
        ep.unreachable = reason
        self._refusals += 1
        if self._refused_since is None:
            self._refused_since = now
        waited = now - self._refused_since
        if waited < self.fail_fast_after_s or not all(e.unreachable for e in self.all):
            return True
        tried = f"{self._refusals} attempts in {waited:.1f} s"
        if len(self.all) == 1:
            raise EndpointsUnreachable(f"no server answers at {ep.base} ({reason}, {tried}); is it running?")
        where = ", ".join(f"{e.base} ({e.unreachable})" for e in self.all)
        raise EndpointsUnreachable(f"no server answers at any base URL: {where}; {tried}; are they running?")


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
        self._endpoints = _Endpoints(bases, cfg.dead_cooldown_s, cfg.fail_fast_after_s)
        if cfg.max_response_bytes < 1024:
            raise ValueError(f"backend openai: max_response_bytes: {cfg.max_response_bytes} is too small for an answer")
        if cfg.api_key_env and cfg.api_key_env not in os.environ:
            raise ValueError(f"backend openai: api_key_env: the environment variable {cfg.api_key_env} is not set")
        key = (os.environ.get(cfg.api_key_env) if cfg.api_key_env else None) or \
            os.environ.get("VLFACTORY_API_KEY") or os.environ.get("OPENAI_API_KEY") or "EMPTY"
        self._secret = key if key != "EMPTY" else None
        self._headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
        self._loop: asyncio.AbstractEventLoop | None = None

    def __repr__(self) -> str:
        return (f"OpenAIBackend(model={self.model!r}, base_url={[e.base for e in self._endpoints.all]}, "
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

    async def _send(self, req: Request, body: bytes) -> Result:
        cfg = self.cfg
        start = time.monotonic()
        attempt = retries = 0  # attempts sent; retries counted against max_retries
        while True:
            attempt += 1
            ep = await self._endpoints.next()
            wait = None
            ep.in_flight += 1
            try:
                async with self._session.post(ep.url, data=body, headers=ep.headers) as resp:
                    self._endpoints.answered = True
                    status, retry_after = resp.status, resp.headers.get("Retry-After")
                    raw = await _read(resp, cfg.max_response_bytes)
            except TimeoutError:
                error = f"timeout after {cfg.timeout_s:g}s"
            except aiohttp.ClientConnectorError as e:
                reason = _unreachable(e)
                error = f"{reason}: {e}"
                if self._endpoints.refused(ep, reason):  # raises once every URL refused for fail_fast_after_s
                    continue  # not a failed attempt: no server has answered yet, wait for one
                if self._endpoints.pick() is not None:
                    wait = 0.0  # another URL is up: go there now
            except aiohttp.ClientError as e:  # dropped connection, truncated body
                error = f"connection error: {type(e).__name__}: {e}"
            else:
                if raw is None:  # sending it again would get the same, or cost as much again
                    error = f"response over {cfg.max_response_bytes} bytes (max_response_bytes)"
                    if status != 200:
                        error = f"HTTP {status}: {error}"
                    break
                if status == 200:
                    try:
                        return _result(req, raw, start, attempt, ep.base)
                    except BadResponse as e:
                        error = f"bad response: {e}"
                else:
                    error = f"HTTP {status}: {raw[:300].decode('utf-8', 'replace')}"
                    if status < 500 and status not in RETRY_STATUS:
                        break
                    if retry_after:
                        try:
                            wait = min(float(retry_after), cfg.max_backoff_s)
                        except ValueError:  # the HTTP-date form: fall back to backoff
                            pass
                        else:
                            wait = wait if wait >= 0 else None  # nan or negative: backoff too
            finally:
                ep.in_flight -= 1
            if retries >= cfg.max_retries:
                break
            retries += 1
            if wait is None:
                wait = random.uniform(0, min(cfg.max_backoff_s, cfg.backoff_s * 2 ** (retries - 1)))
            await asyncio.sleep(wait)
        if self._secret:
            error = error.replace(self._secret, "***")
        error = redact(error)
        return Result(req, [], 0, time.monotonic() - start, error=error, attempts=attempt, endpoint=ep.base)


async def _read(resp: aiohttp.ClientResponse, cap: int) -> bytes | None:
    """The body, or None once it passes `cap` bytes (decompressed), without reading further."""
    if resp.content_length is not None and resp.content_length > cap:
        return None
    chunks, size = [], 0
    while chunk := await resp.content.readany():
        size += len(chunk)
        if size > cap:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


_CONNECT_ERRORS = {errno.ECONNREFUSED: "connection refused", errno.EHOSTUNREACH: "host unreachable",
                   errno.ENETUNREACH: "network unreachable", errno.ETIMEDOUT: "connect timed out"}


def _unreachable(e: aiohttp.ClientConnectorError) -> str:
    """A short name for why we could not connect."""
    if isinstance(e, aiohttp.ClientSSLError):
        return "TLS error"
    if isinstance(e.os_error, socket.gaierror):
        return "host name not found"
    return _CONNECT_ERRORS.get(e.os_error.errno, "cannot connect")


def _result(req: Request, raw: bytes, start: float, attempt: int, endpoint: str) -> Result:
    """A Result from a 200's body; BadResponse says what is wrong with it."""
    try:
        data = json.loads(raw)
    except (ValueError, RecursionError) as e:  # RecursionError: [[[[... nested past the parser's limit
        raise BadResponse(f"not JSON ({str(e)[:100]}): {raw[:200]!r}") from None
    if type(data) is not dict:
        raise BadResponse(f"the body is {_kind(data)}, expected an object")
    choices = data.get("choices")
    if type(choices) is not list:
        if choices is None:
            err = data.get("error")
            if type(err) is dict and "message" in err:  # an error passed on with status 200
                err = err["message"]
            raise BadResponse("no choices" + (f"; error: {_short(err, 200)}" if err else ""))
        raise BadResponse(f"choices is {_kind(choices)}, expected a list")
    s = req.sampling
    if len(choices) != s.n:
        raise BadResponse(f"{len(choices)} choices for n={s.n}")
    ordered: list = [None] * s.n
    for i, c in enumerate(choices):
        if type(c) is not dict:
            raise BadResponse(f"choices[{i}] is {_kind(c)}, expected an object")
        m = c.get("message")
        if type(m) is not dict:
            raise BadResponse(f"choices[{i}].message is {_kind(m)}, expected an object")
        text = m.get("content")
        if type(text) is not str:
            raise BadResponse(_content_problem(f"choices[{i}].message.content", m))
        finish = c.get("finish_reason")
        if finish is None:
            finish = ""
        elif type(finish) is not str:
            raise BadResponse(f"choices[{i}].finish_reason is {_kind(finish)}, expected a string")
        index = c.get("index")
        if index is None:
            index = i
        if type(index) is not int or not 0 <= index < s.n or ordered[index] is not None:
            raise BadResponse(f"choices[{i}].index is {_kind(index)}, expected a distinct number below n={s.n}")
        ordered[index] = (text, finish)
    usage = data.get("usage")
    if type(usage) is not dict:
        usage = {}
    total = _count(usage.get("completion_tokens"))
    if total is None:  # unknown: estimate
        tokens = [s.max_tokens if f == "length" else min(s.max_tokens, -(-len(t) // 4)) for t, f in ordered]
    else:
        tokens = _split(total, [f for _, f in ordered], s.max_tokens)
    completions = [Completion(t, k, f) for (t, f), k in zip(ordered, tokens)]
    return Result(req, completions, _count(usage.get("prompt_tokens")) or 0, time.monotonic() - start,
                  attempts=attempt, endpoint=endpoint)


def _count(v) -> int | None:
    """A token count if `v` is a believable one, else None."""
    return v if type(v) is int and 0 <= v <= MAX_TOKENS else None


def _content_problem(where: str, message: dict) -> str:
    text = message.get("content")
    if text is not None:
        return f"{where} is {_kind(text)}, expected a string"
    if message.get("tool_calls"):
        return f"{where} is null: the model called a tool"
    if isinstance(message.get("refusal"), str):
        return f"{where} is null: the model refused ({_short(message['refusal'])})"
    return f"{where} is {'null' if 'content' in message else 'missing'}"


def _kind(v) -> str:
    """What a JSON value is, briefly: 'a number (42)', 'a list of 3', 'null'."""
    if v is None:
        return "null"
    if type(v) is bool:
        return "true" if v else "false"
    if type(v) in (int, float):
        return f"a number ({_short(v)})"
    if type(v) is str:
        return f"a string ({_short(v)})"
    if type(v) is list:
        return f"a list of {len(v)}"
    return "an object"


def _short(v, limit: int = 60) -> str:
    text = repr(v) if isinstance(v, str) else json.dumps(v)
    return text if len(text) <= limit else text[:limit - 3] + "..."


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
