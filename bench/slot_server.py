"""A stand-in for an inference server with a known ceiling, for benchmarks.

Speaks just enough of POST /v1/chat/completions: every request is answered
after exactly `latency` seconds of service, with at most `slots` requests in
service at once (the rest wait their turn, like a vLLM server at its batch
limit). The ideal throughput is therefore slots / latency requests per
second, and a client's efficiency is what it achieves divided by that.

Run it in its own process so that its CPU does not compete with the client's
event loop (bench/generation.py does):

    python bench/slot_server.py --port 8123 --slots 64 --latency 0.2
"""

from __future__ import annotations

import argparse
import asyncio
import json

from aiohttp import web


def make_app(slots: int, latency: float) -> web.Application:
    service = asyncio.Semaphore(slots)
    answers: dict[int, bytes] = {}  # by n; the answer never varies, so build each body once

    def answer(n: int) -> bytes:
        if n not in answers:
            answers[n] = json.dumps({
                "id": "chatcmpl-slot", "object": "chat.completion", "created": 0, "model": "slot",
                "choices": [{"index": i, "message": {"role": "assistant", "content": "The answer is 42."},
                             "finish_reason": "stop"} for i in range(n)],
                "usage": {"prompt_tokens": 10, "completion_tokens": 5 * n, "total_tokens": 10 + 5 * n},
            }).encode()
        return answers[n]

    async def chat(request: web.Request) -> web.Response:
        body = json.loads(await request.read())
        async with service:
            await asyncio.sleep(latency)
        return web.Response(body=answer(int(body.get("n", 1))), content_type="application/json")

    app = web.Application()
    app.router.add_post("/v1/chat/completions", chat)
    return app


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8123)
    p.add_argument("--slots", type=int, default=64)
    p.add_argument("--latency", type=float, default=0.2, help="seconds of service per request")
    args = p.parse_args()
    # No access log: formatting a line per request would cost more than answering it.
    web.run_app(make_app(args.slots, args.latency), host=args.host, port=args.port, access_log=None,
                print=None, backlog=1024)


if __name__ == "__main__":
    main()
