"""An OpenAI-compatible chat server that misbehaves on demand, for testing clients.

Runs in a thread of the test process on 127.0.0.1 (a random port unless one
is given). Each request is matched by its prompt (the text of its last
message) to a plan: a list of behaviours taken one per attempt; once a plan
is used up, or for prompts without one, the server does `default`:

    with FaultServer() as server:
        server.plan["q1"] = ["500", "429:2", "ok"]  # 500, then 429 with Retry-After: 2, then an answer
        ...point a client at server.url (http://127.0.0.1:PORT/v1)...
        [h.behaviour for h in server.hits if h.prompt == "q1"]

Behaviours:
    ok        200 with n choices "echo {i}: {prompt}", usage counts words
    slow:S    the same after S seconds
    500       HTTP 500
    429:S     HTTP 429 with Retry-After: S
    400       HTTP 400 whose body echoes the request headers, as a careless proxy would
    hang      hold the request for `hang_s` seconds (past the client's timeout), then close
    bad_json  200 with a body that is not JSON
    drop      close the connection without answering
    wrong_types:V  200 with valid JSON of the wrong shape, V one of WRONG_TYPES (below)
    body:B    200 with the body RAW_BODIES[B]: JSON nested too deep, not UTF-8, ...
    endless   200 whose chunked body never ends, sent as fast as the client takes it,
              until the client hangs up or the server closes (`streamed` counts the bytes)
    endless:S the same, a few bytes every S seconds

`close()` also cuts the connections still open, as a server process that
dies would, so a client's kept-alive connection does not outlive the server.
"""

from __future__ import annotations

import itertools
import json
import socket
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class Hit:
    prompt: str
    behaviour: str
    t: float           # time.monotonic() when the request arrived
    headers: dict
    body: dict


# wrong_types variants: what each does to an "ok" answer (a dict, changed in place)
WRONG_TYPES = {
    "content_int": lambda a: a["choices"][0]["message"].update(content=42),
    "content_list": lambda a: a["choices"][0]["message"].update(content=["echo", "in", "parts"]),
    "content_null": lambda a: a["choices"][0]["message"].update(content=None),
    "tool_call": lambda a: a["choices"][0]["message"].update(content=None, tool_calls=[
        {"id": "call_1", "type": "function", "function": {"name": "calc", "arguments": "{}"}}]),
    "message_str": lambda a: a["choices"][0].update(message="echo"),
    "finish_int": lambda a: a["choices"][0].update(finish_reason=12345),
    "index_dup": lambda a: [c.update(index=0) for c in a["choices"]],
    "no_choices": lambda a: a.pop("choices"),
    "choices_obj": lambda a: a.update(choices={"0": a["choices"][0]}),
    "few_choices": lambda a: a["choices"].pop(),
    "error_200": lambda a: (a.clear(), a.update(error={"message": "model overloaded", "code": 503})),
    # the answer is fine, its token counts are not: unknown counts, not failures
    "tokens_str": lambda a: a.update(usage={"prompt_tokens": "5", "completion_tokens": "7"}),
    "tokens_huge": lambda a: a.update(usage={"prompt_tokens": 10**30, "completion_tokens": 10**30}),
    "tokens_negative": lambda a: a.update(usage={"prompt_tokens": -1, "completion_tokens": -7}),
    "usage_null": lambda a: a.update(usage=None),
}

RAW_BODIES = {
    "nested": b"[" * 200_000 + b"]" * 200_000,
    "not_utf8": b'{"choices": [{"message": {"content": "\xff\xfe"}}]}',
    "long_int": b'{"choices": ' + b"9" * 5000 + b"}",
    "empty": b"",
}


class FaultServer:
    def __init__(self, port: int = 0, default: str = "ok", hang_s: float = 5.0):
        self.plan: dict[str, list[str]] = {}
        self.default = default
        self.hang_s = hang_s
        self.hits: list[Hit] = []
        self.in_service = self.max_in_service = 0
        self.streamed = 0  # bytes sent by `endless` answers
        self._lock = threading.Lock()
        self._conns: set[socket.socket] = set()
        self._closing = threading.Event()
        self._httpd = _Server(("127.0.0.1", port), _Handler)
        self._httpd.faults = self
        self.port = self._httpd.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}/v1"
        self._thread = threading.Thread(target=self._httpd.serve_forever, args=(0.05,), daemon=True)
        self._thread.start()

    def __enter__(self) -> "FaultServer":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self._closing.set()  # wakes hanging handlers
        self._httpd.shutdown()
        self._httpd.server_close()
        with self._lock:
            conns, self._conns = list(self._conns), set()
        for conn in conns:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def prompts(self, behaviour: str | None = None) -> list[str]:
        return [h.prompt for h in self.hits if behaviour is None or h.behaviour == behaviour]

    def _take(self, prompt: str, headers: dict, body: dict) -> str:
        with self._lock:
            steps = self.plan.get(prompt)
            behaviour = steps.pop(0) if steps else self.default
            self.hits.append(Hit(prompt, behaviour, time.monotonic(), headers, body))
            self.in_service += 1
            self.max_in_service = max(self.max_in_service, self.in_service)
        return behaviour


class _Server(ThreadingHTTPServer):
    request_queue_size = 128  # the default 5 drops bursts of connects, which clients see as timeouts


def _prompt(messages: list[dict]) -> str:
    content = messages[-1]["content"]
    if isinstance(content, str):
        return content
    return " ".join(p["text"] for p in content if p.get("type") == "text")


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, like real servers

    def log_message(self, *args) -> None:
        pass

    def setup(self) -> None:
        super().setup()
        with self.server.faults._lock:
            self.server.faults._conns.add(self.connection)

    def finish(self) -> None:
        with self.server.faults._lock:
            self.server.faults._conns.discard(self.connection)
        super().finish()

    def do_POST(self) -> None:
        faults: FaultServer = self.server.faults
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        prompt = _prompt(body["messages"])
        behaviour = faults._take(prompt, dict(self.headers), body)
        try:
            self._act(faults, behaviour, prompt, body)
        finally:
            with faults._lock:
                faults.in_service -= 1

    def _act(self, faults: FaultServer, behaviour: str, prompt: str, body: dict) -> None:
        name, _, arg = behaviour.partition(":")
        if name == "slow":
            time.sleep(float(arg))
            name = "ok"
        if name == "ok":
            self._send(200, json.dumps(_answer(body, prompt)))
        elif name == "wrong_types":
            answer = _answer(body, prompt)
            WRONG_TYPES[arg](answer)
            self._send(200, json.dumps(answer))
        elif name == "body":
            self._send(200, RAW_BODIES[arg])
        elif name == "endless":
            self._endless(faults, float(arg) if arg else 0.0)
        elif name == "500":
            self._send(500, '{"error": {"message": "internal error", "code": 500}}')
        elif name == "429":
            self._send(429, '{"error": {"message": "slow down"}}', {"Retry-After": arg})
        elif name == "400":
            self._send(400, json.dumps({"error": {"message": "bad request", "your_headers": dict(self.headers)}}))
        elif name == "bad_json":
            self._send(200, '{"choices": [{"message": ')
        elif name == "hang":
            faults._closing.wait(faults.hang_s)
            self.close_connection = True
        elif name == "drop":
            self.close_connection = True
        else:
            raise ValueError(f"unknown behaviour {behaviour!r}")

    def _endless(self, faults: FaultServer, every_s: float) -> None:
        self.close_connection = True
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        head = b'{"choices": [{"index": 0, "message": {"role": "assistant", "content": "'
        data = b"na" * (32 * 1024) if not every_s else b"na"
        try:
            for piece in itertools.chain([head], itertools.repeat(data)):
                if faults._closing.is_set() or (every_s and faults._closing.wait(every_s)):
                    return
                self.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece))
                with faults._lock:
                    faults.streamed += len(piece)
        except OSError:  # the client hung up
            pass

    def _send(self, status: int, text: str | bytes, headers: dict | None = None) -> None:
        data = text.encode() if isinstance(text, str) else text
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)


def _answer(body: dict, prompt: str) -> dict:
    n = body.get("n", 1)
    texts = [f"echo {i}: {prompt}" for i in range(n)]
    return {
        "id": "chatcmpl-fault", "object": "chat.completion", "model": body["model"],
        "choices": [{"index": i, "message": {"role": "assistant", "content": t}, "finish_reason": "stop"}
                    for i, t in enumerate(texts)],
        "usage": {"prompt_tokens": len(prompt.split()), "completion_tokens": sum(len(t.split()) for t in texts)},
    }
