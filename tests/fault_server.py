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
"""

from __future__ import annotations

import json
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


class FaultServer:
    def __init__(self, port: int = 0, default: str = "ok", hang_s: float = 5.0):
        self.plan: dict[str, list[str]] = {}
        self.default = default
        self.hang_s = hang_s
        self.hits: list[Hit] = []
        self.in_service = self.max_in_service = 0
        self._lock = threading.Lock()
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
            n = body.get("n", 1)
            texts = [f"echo {i}: {prompt}" for i in range(n)]
            self._send(200, json.dumps({
                "id": "chatcmpl-fault", "object": "chat.completion", "model": body["model"],
                "choices": [{"index": i, "message": {"role": "assistant", "content": t}, "finish_reason": "stop"}
                            for i, t in enumerate(texts)],
                "usage": {"prompt_tokens": len(prompt.split()),
                          "completion_tokens": sum(len(t.split()) for t in texts)},
            }))
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

    def _send(self, status: int, text: str, headers: dict | None = None) -> None:
        data = text.encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)
