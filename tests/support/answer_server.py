"""An OpenAI-compatible chat server whose answers are planned, for tests that need known verdicts."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class AnswerServer:
    """An OpenAI-compatible chat server whose answers are planned: `answers[prompt]` is the list of
    completions for a request of that prompt (its text part); it records each request's prompt and
    whether an image came with it."""

    def __init__(self, answers: dict[str, list[str]]):
        self.answers = answers
        self.hits: list[tuple[str, bool]] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:
                pass

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                parts = body["messages"][-1]["content"]
                if isinstance(parts, str):  # a text-only request (distil)
                    parts = [{"type": "text", "text": parts}]
                prompt = " ".join(p["text"] for p in parts if p["type"] == "text")
                image = any(p["type"] == "image_url" and p["image_url"]["url"].startswith("data:image/")
                            for p in parts)
                server.hits.append((prompt, image))
                texts = server.answers[prompt][: body.get("n", 1)]
                data = json.dumps({
                    "id": "x", "object": "chat.completion", "model": body["model"],
                    "choices": [{"index": i, "message": {"role": "assistant", "content": t}, "finish_reason": "stop"}
                                for i, t in enumerate(texts)],
                    "usage": {"prompt_tokens": len(prompt.split()), "completion_tokens": 5 * len(texts)}}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._httpd.server_address[1]}/v1"
        threading.Thread(target=self._httpd.serve_forever, args=(0.05,), daemon=True).start()

    def __enter__(self) -> "AnswerServer":
        return self

    def __exit__(self, *exc) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
