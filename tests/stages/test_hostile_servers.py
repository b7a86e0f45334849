"""The `openai` backend against servers that answer nonsense, never finish, or are not there.

Whatever a server does, generate() yields one Result per request: a bad answer
fails its own request with a short reason and leaves the others alone. The one
exception is a server that is not there at all: generate() stops early with
EndpointsUnreachable instead of failing every request slowly.

    .venv/bin/pytest tests/stages/test_hostile_servers.py
"""

from __future__ import annotations

import errno
import os
import socket
import threading
import time
from types import SimpleNamespace

import aiohttp
import pytest
from fault_server import FaultServer
from test_openai_backend import ask, backend, dead_url, no_keys, server  # noqa: F401 (fixtures)

from vlfactory.backends.openai_compat import EndpointsUnreachable, _unreachable

BAD_ANSWERS = {  # wrong_types variant -> Result.error, for a request with n=2
    "content_int": "bad response: choices[0].message.content is a number (42), expected a string",
    "content_list": "bad response: choices[0].message.content is a list of 3, expected a string",
    "content_null": "bad response: choices[0].message.content is null",
    "tool_call": "bad response: choices[0].message.content is null: the model called a tool",
    "message_str": "bad response: choices[0].message is a string ('echo'), expected an object",
    "finish_int": "bad response: choices[0].finish_reason is a number (12345), expected a string",
    "index_dup": "bad response: choices[1].index is a number (0), expected a distinct number below n=2",
    "no_choices": "bad response: no choices",
    "choices_obj": "bad response: choices is an object, expected a list",
    "few_choices": "bad response: 1 choices for n=2",
    "error_200": "bad response: no choices; error: 'model overloaded'",
}
BAD_BODIES = {  # body variant -> start of Result.error
    "nested": "bad response: not JSON (maximum recursion depth exceeded",
    "not_utf8": "bad response: not JSON (",
    "long_int": "bad response: not JSON (Exceeds the limit",
    "empty": "bad response: not JSON (Expecting value",
}


def test_each_bad_answer_fails_its_request_with_the_reason(server, backend):
    for variant in BAD_ANSWERS:
        server.plan[variant] = [f"wrong_types:{variant}"] * 5
    for variant in BAD_BODIES:
        server.plan[variant] = [f"body:{variant}"] * 5
    server.plan["bad once"] = ["wrong_types:content_int", "ok"]
    server.plan["nan retry-after"] = ["429:nan"]
    healthy = [f"fine {i}" for i in range(20)]
    prompts = [*BAD_ANSWERS, *BAD_BODIES, "bad once", "nan retry-after", *healthy]
    t0 = time.monotonic()
    results = {r.request.key.removeprefix("key-"): r
               for r in backend(server.url, max_retries=1).generate(ask(p, n=2) for p in prompts)}
    assert time.monotonic() - t0 < 10

    assert sorted(results) == sorted(prompts)
    for variant, error in BAD_ANSWERS.items():
        r = results[variant]
        assert (r.error, r.attempts, r.completions) == (error, 2, []), variant  # retried once, then failed
        assert "\n" not in r.error
    for variant, start in BAD_BODIES.items():
        r = results[variant]
        assert r.error.startswith(start) and r.attempts == 2 and not r.completions, (variant, r.error)
        assert len(r.error) < 400
    for prompt in ["bad once", "nan retry-after", *healthy]:
        r = results[prompt]
        assert r.ok and r.attempts == (1 if prompt in healthy else 2), prompt
        assert [c.text for c in r.completions] == [f"echo {i}: {prompt}" for i in range(2)]


@pytest.mark.parametrize("variant", ["tokens_str", "tokens_huge", "tokens_negative", "usage_null"])
def test_bad_token_counts_are_unknown_not_failures(server, backend, variant):
    server.plan["count me"] = [f"wrong_types:{variant}"]
    (r,) = backend(server.url).generate([ask("count me", n=2, max_tokens=3)])
    assert r.ok and r.attempts == 1 and r.prompt_tokens == 0
    # Estimated at about 4 characters a token ("echo 0: count me" is 16), within max_tokens.
    assert [(c.text, c.completion_tokens) for c in r.completions] == \
        [("echo 0: count me", 3), ("echo 1: count me", 3)]
    (r,) = backend(server.url).generate([ask("a longer prompt whose words are counted")])
    assert r.completions[0].completion_tokens == 9  # a good count is used as it is (9 words, 48 characters)


def rss() -> int:
    with open(f"/proc/{os.getpid()}/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@pytest.mark.skipif(not os.path.exists("/proc/self/statm"), reason="reads RSS from /proc")
def test_endless_body_is_cut_at_the_cap_and_memory_stays_bounded(server, backend):
    cap = 4 * 2**20
    endless = [f"endless {i}" for i in range(4)]
    for p in endless:
        server.plan[p] = ["endless"] * 5
    healthy = [f"fine {i}" for i in range(20)]
    # A long timeout: without the cap, each endless body would grow for 60 s at loopback speed.
    b = backend(server.url, timeout_s=60, max_response_bytes=cap)
    peak, before, done = 0, rss(), threading.Event()

    def sample():
        nonlocal peak
        while not done.wait(0.005):
            peak = max(peak, rss())

    sampler = threading.Thread(target=sample)
    sampler.start()
    t0 = time.monotonic()
    try:
        results = {r.request.key.removeprefix("key-"): r for r in b.generate(ask(p) for p in [*endless, *healthy])}
    finally:
        done.set()
        sampler.join()
    assert time.monotonic() - t0 < 15

    for p in endless:  # not retried: the same request would get the same again
        assert (results[p].error, results[p].attempts) == (f"response over {cap} bytes (max_response_bytes)", 1)
    assert all(results[p].ok for p in healthy)
    assert server.streamed >= len(endless) * cap  # the bodies did reach the cap
    assert peak - before < 200 * 2**20, f"RSS grew {(peak - before) / 2**20:.0f} MiB"
    # The server's endless writers saw the client hang up and stopped.
    deadline = time.monotonic() + 5
    while server.in_service and time.monotonic() < deadline:
        time.sleep(0.02)
    assert server.in_service == 0


def test_a_body_that_trickles_forever_times_out(server, backend):
    server.plan["trickle"] = ["endless:0.05"] * 5
    t0 = time.monotonic()
    results = {r.request.key: r for r in backend(server.url, timeout_s=0.5, max_retries=1)
               .generate([ask("trickle"), ask("fine")])}
    assert time.monotonic() - t0 < 5
    assert (results["key-trickle"].error, results["key-trickle"].attempts) == ("timeout after 0.5s", 2)
    assert results["key-fine"].ok


def test_no_server_at_all_stops_the_run_early(backend):
    url = dead_url()
    b = backend(url, fail_fast_after_s=2.0)
    t0 = time.monotonic()
    with pytest.raises(EndpointsUnreachable) as raised:
        list(b.generate(ask(f"q{i}") for i in range(200)))
    assert time.monotonic() - t0 < 15
    message = str(raised.value)
    assert message.startswith(f"no server answers at {url} (connection refused, ") and "is it running?" in message
    assert "\n" not in message


def test_no_server_at_any_url_names_them_all(backend):
    urls = [dead_url(), dead_url()]
    with pytest.raises(EndpointsUnreachable, match="no server answers at any base URL: ") as raised:
        list(backend(urls, fail_fast_after_s=1.0).generate(ask(f"q{i}") for i in range(20)))
    assert all(f"{u} (connection refused)" in str(raised.value) for u in urls)


def test_a_server_that_starts_late_within_the_window_is_used(backend):
    url = dead_url()
    port = int(url.rsplit(":", 1)[1].split("/")[0])
    servers = []
    threading.Timer(1.0, lambda: servers.append(FaultServer(port=port))).start()
    try:  # the default dead_cooldown_s (10 s): until a first answer, requests look again every second
        results = list(backend(url, fail_fast_after_s=5.0, max_retries=0).generate(ask(f"q{i}") for i in range(5)))
    finally:
        time.sleep(0.1)
        for s in servers:
            s.close()
    assert len(results) == 5 and all(r.ok for r in results)


def test_a_server_that_dies_mid_run_does_not_stop_the_run(backend):
    server = FaultServer()
    b = backend(server.url, concurrency=1, fail_fast_after_s=0.2, dead_cooldown_s=0.05, max_retries=2)
    try:
        it = b.generate(ask(f"q{i}") for i in range(6))
        first = next(it)
        server.close()
        rest = list(it)  # refused for longer than fail_fast_after_s, and no EndpointsUnreachable
    finally:
        server.close()
    assert first.ok and len(rest) == 5
    refused = [r for r in rest if not r.ok and r.error.startswith("connection refused: ")]
    assert len(refused) >= 4 and all(r.attempts == 3 for r in refused)


def test_why_a_connection_failed_is_named():
    key = SimpleNamespace(host="gpu1", port=8000, ssl=True)

    def error(os_error):
        return aiohttp.ClientConnectorError(key, os_error)

    assert _unreachable(error(ConnectionRefusedError(errno.ECONNREFUSED, "refused"))) == "connection refused"
    assert _unreachable(error(socket.gaierror(socket.EAI_NONAME, "Name or service not known"))) == \
        "host name not found"
    assert _unreachable(error(OSError(errno.EHOSTUNREACH, "No route to host"))) == "host unreachable"
    assert _unreachable(error(OSError(errno.EPERM, "odd"))) == "cannot connect"
