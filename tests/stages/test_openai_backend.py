"""The `openai` backend against a server that fails on demand (tests/support/fault_server.py).

    .venv/bin/pytest tests/stages/test_openai_backend.py
"""

from __future__ import annotations

import base64
import socket
import threading
import time
from collections import Counter

import pytest
from fault_server import FaultServer

from vlfactory.backends import Request, Sampling, make_backend
from vlfactory.backends.openai_compat import _split

SECRET = "sk-test-7f3a9c-do-not-leak"


@pytest.fixture(autouse=True)
def no_keys(monkeypatch):
    for var in ("VLFACTORY_API_KEY", "OPENAI_API_KEY"):
        monkeypatch.delenv(var, raising=False)


@pytest.fixture()
def server():
    with FaultServer() as s:
        yield s


@pytest.fixture()
def backend():
    """make_backend with small timeouts and fast retries; closed after the test."""
    made = []

    def make(base_url, **options):
        cfg = {"backend": "openai", "model": "test-model", "base_url": base_url, "concurrency": 8,
               "timeout_s": 0.5, "max_retries": 3, "backoff_s": 0.01, "max_backoff_s": 2.0, **options}
        made.append(make_backend(cfg))
        return made[-1]

    yield make
    for b in made:
        b.close()


def ask(prompt: str, **sampling) -> Request:
    return Request(key=f"key-{prompt}", messages=[{"role": "user", "content": prompt}],
                   sampling=Sampling(**sampling))


def dead_url() -> str:
    """A loopback URL where nothing listens: connections are refused at once."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}/v1"


def test_answers_match_requests_and_carry_sampling_and_tokens(server, backend):
    b = backend(server.url)
    prompts = [f"what is {i} plus {i}" for i in range(30)]
    sampling = dict(temperature=0.7, top_p=0.9, max_tokens=77, seed=5, stop=("</answer>",))
    results = list(b.generate(ask(p, **sampling) for p in prompts))

    assert sorted(r.request.key for r in results) == sorted(f"key-{p}" for p in prompts)
    for r in results:
        prompt = r.request.messages[0]["content"]
        assert r.ok and r.attempts == 1 and r.endpoint == server.url
        assert [c.text for c in r.completions] == [f"echo 0: {prompt}"]
        assert r.prompt_tokens == 5 and r.completions[0].completion_tokens == 7
        assert r.completions[0].finish_reason == "stop" and r.latency_s > 0
    body = server.hits[0].body
    assert body["model"] == "test-model" and body["n"] == 1
    assert {k: body[k] for k in ("temperature", "top_p", "max_tokens", "seed", "stop")} == \
        {**sampling, "stop": ["</answer>"]}


def test_n_completions_and_their_tokens(server, backend):
    (r,) = backend(server.url).generate([ask("three ways please", n=3)])
    assert [c.text for c in r.completions] == [f"echo {i}: three ways please" for i in range(3)]
    assert sum(c.completion_tokens for c in r.completions) == 15 and r.prompt_tokens == 3


def test_split_tokens_over_choices():
    assert _split(42, ["stop"], 10) == [42]
    assert _split(250, ["length", "stop", "stop"], 100) == [100, 75, 75]
    assert _split(7, ["stop", "stop"], 100) == [4, 3]


def test_every_fault_ends_exactly_once(server, backend):
    plans = {
        "two 500s": ["500", "500"],
        "malformed": ["bad_json"],
        "dropped": ["drop", "drop"],
        "hung": ["hang"],
        "mixed": ["429:0", "bad_json", "drop"],
        "always 500": ["500"] * 10,
        "always hangs": ["hang"] * 10,
        "bad request": ["400"],
    }
    for prompt, steps in plans.items():
        server.plan[prompt] = list(steps)
    healthy = [f"fine {i}" for i in range(20)]
    t0 = time.monotonic()
    results = {r.request.key: r for r in backend(server.url).generate(ask(p) for p in [*plans, *healthy])}
    assert time.monotonic() - t0 < 5

    assert len(results) == len(plans) + len(healthy)
    sent = Counter(server.prompts())
    for prompt in [*plans, *healthy]:
        r = results[f"key-{prompt}"]
        assert r.attempts == sent[prompt], prompt  # every attempt reached the server and was counted
        answered = [h.behaviour for h in server.hits if h.prompt == prompt].count("ok")
        assert answered == (1 if r.ok else 0), prompt  # never sent again after an answer
        if r.ok:
            assert r.completions[0].text == f"echo 0: {prompt}"
    expected_attempts = {"two 500s": 3, "malformed": 2, "dropped": 3, "hung": 2, "mixed": 4}
    assert {p: results[f"key-{p}"].attempts for p in expected_attempts} == expected_attempts
    assert all(results[f"key-{p}"].ok for p in [*expected_attempts, *healthy])

    assert results["key-always 500"].error.startswith("HTTP 500: ")
    assert results["key-always 500"].attempts == 4  # 1 + max_retries
    assert results["key-always hangs"].error == "timeout after 0.5s"
    assert results["key-always hangs"].attempts == 4
    assert results["key-bad request"].error.startswith("HTTP 400: ")
    assert results["key-bad request"].attempts == 1  # a 400 is not retried
    assert all(not r.completions for r in results.values() if not r.ok)


def test_retry_after_is_honoured_and_capped(server, backend):
    server.plan["wait a bit"] = ["429:0.6"]
    server.plan["wait forever"] = ["429:100"]
    results = list(backend(server.url, max_backoff_s=1.2).generate([ask("wait a bit"), ask("wait forever")]))
    assert len(results) == 2 and all(r.ok and r.attempts == 2 for r in results)

    def gap(prompt):
        first, second = [h.t for h in server.hits if h.prompt == prompt]
        return second - first

    assert 0.55 <= gap("wait a bit") < 1.1  # without Retry-After the backoff would be ~0.01 s
    assert 1.1 <= gap("wait forever") < 2.0  # capped at max_backoff_s


def test_dead_base_url_is_routed_around(server, backend):
    dead = dead_url()
    t0 = time.monotonic()
    results = list(backend([dead, server.url], backoff_s=1.0).generate(ask(f"q{i}") for i in range(40)))
    assert time.monotonic() - t0 < 2  # no backoff: a refused request moves to the live URL at once
    assert len(results) == 40 and all(r.ok and r.endpoint == server.url for r in results)
    # Only the first wave can hit the dead URL before it is marked dead.
    assert sum(r.attempts - 1 for r in results) <= 8


def test_all_urls_down_wait_for_one_to_come_back(backend):
    url = dead_url()
    port = int(url.rsplit(":", 1)[1].split("/")[0])
    b = backend([url], dead_cooldown_s=0.2, max_retries=6)
    servers = []
    threading.Timer(0.5, lambda: servers.append(FaultServer(port=port))).start()
    try:
        results = list(b.generate(ask(f"q{i}") for i in range(5)))
    finally:
        for s in servers:
            s.close()
    assert len(results) == 5 and all(r.ok for r in results) and all(r.attempts > 1 for r in results)


def test_all_urls_down_fail_after_retry_budget_without_fail_fast(backend):
    # (with fail_fast_after_s, the default, generate() stops instead: tests/stages/test_hostile_servers.py)
    results = list(backend([dead_url(), dead_url()], dead_cooldown_s=0.05, max_retries=2, fail_fast_after_s=None)
                   .generate(ask(f"q{i}") for i in range(3)))
    assert len(results) == 3 and all(r.error.startswith("connection refused: ") and r.attempts == 3 for r in results)


def test_images_arrive_as_data_urls(server, backend):
    png, jpg = b"\x89PNG\r\n\x1a\n fake png bytes", bytes(range(256)) * 3
    content = [{"type": "image", "image": png, "format": "png"}, {"type": "text", "text": "compare these"},
               {"type": "image", "image": jpg, "format": "jpg"}]
    (r,) = backend(server.url).generate([Request("img", [{"role": "user", "content": content}], Sampling())])
    assert r.ok and r.completions[0].text == "echo 0: compare these"
    parts = server.hits[0].body["messages"][0]["content"]
    assert parts[1] == {"type": "text", "text": "compare these"}
    assert parts[0] == {"type": "image_url",
                        "image_url": {"url": "data:image/png;base64," + base64.b64encode(png).decode()}}
    url = parts[2]["image_url"]["url"]
    assert url.startswith("data:image/jpeg;base64,")
    assert base64.b64decode(url.split(",", 1)[1]) == jpg


def test_api_key_from_env_reaches_server_and_never_leaks(server, backend, monkeypatch):
    monkeypatch.setenv("VLFACTORY_API_KEY", SECRET)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-the-other-one")
    server.plan["echo my headers"] = ["400"]
    b = backend(server.url)
    results = {r.request.key: r for r in b.generate([ask("hello"), ask("echo my headers")])}
    assert server.hits[0].headers["Authorization"] == f"Bearer {SECRET}"
    assert SECRET not in repr(b) and SECRET not in str(vars(b).get("cfg"))
    error = results["key-echo my headers"].error
    assert "Bearer ***" in error and SECRET not in error

    monkeypatch.setenv("MY_KEY", "sk-mine")
    list(backend(server.url, api_key_env="MY_KEY").generate([ask("mine")]))
    assert server.hits[-1].headers["Authorization"] == "Bearer sk-mine"
    with pytest.raises(ValueError, match="NOT_SET_ANYWHERE"):
        backend(server.url, api_key_env="NOT_SET_ANYWHERE")


def test_no_key_sends_empty(server, backend):
    list(backend(server.url).generate([ask("hi")]))
    assert server.hits[0].headers["Authorization"] == "Bearer EMPTY"


def test_keeps_concurrency_in_flight_and_pulls_lazily(backend):
    with FaultServer(default="slow:0.05") as server:
        b = backend(server.url, concurrency=4)
        pulled = []

        def requests():
            for i in range(60):
                pulled.append(i)
                yield ask(f"q{i}")

        it = b.generate(requests())
        next(it)
        assert len(pulled) <= 8  # 2 x concurrency, not the whole iterable
        assert len(list(it)) == 59
        assert server.max_in_service == 4

    # A caller that stops early: what was not sent yet is dropped. "late0" is answered at once, the rest take 1 s:
    # when the caller stops, 4 are in flight (late1-3, and late4 taken by the worker that answered late0) and
    # late5-7 are pulled but not sent. Without the drop they would go out as the workers free up.
    with FaultServer(default="slow:1.0") as server:
        server.plan["late0"] = ["ok"]
        b = backend(server.url, concurrency=4, timeout_s=5.0)
        it = b.generate(ask(f"late{i}") for i in range(60))
        assert next(it).request.key == "key-late0"
        it.close()
        time.sleep(2.5)  # past the in-flight requests' second, when late5-7 would have been sent
        sent = sorted(h.prompt for h in server.hits)
        assert 4 <= len(sent) <= 5 and set(sent) <= {f"late{i}" for i in range(5)}, sent


def test_make_backend_names_bad_options():
    with pytest.raises(ValueError, match="'concurency'.*known options: model, base_url, concurrency"):
        make_backend({"backend": "openai", "model": "m", "base_url": "http://x/v1", "concurency": 3})
    with pytest.raises(ValueError, match="unknown backend 'sglang'"):
        make_backend({"backend": "sglang", "model": "m"})
