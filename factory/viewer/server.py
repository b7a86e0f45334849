"""A local, read-only trace viewer in the browser: `vlfactory view [VERSION]`.

    vlfactory view iter1                 # then open http://127.0.0.1:8765/
    vlfactory view --port 0              # any free port; the URL is printed

Browse problems, captions, traces, rollouts, grades, rejected rows and the
sft/rl sets of any version; filter by source, verdict, reason, model,
iteration or any SQL WHERE over the listed table's columns; open a sample to
see its image, question, the caption the reasoner saw, the full completion
beside its cleaned version, the extracted answer, verdict and reasons, tokens
and finish reason; a problem page links all its generations and how they
stood at every tagged version (TABLE@VERSION time travel).

Standard library only (http.server): a JSON API under /api/ over one read-only
lake connection, image bytes under /image/<image_id>, and one static page
(viewer/static/: index.html and app.js). Pages are keyset queries (`id > last ORDER BY id
LIMIT n`), so paging stays as fast at row 90,000 as at row 0 (bench/viewer.py).
Filter values are bound parameters; the free SQL WHERE is the one user
fragment, and it runs through `Lake.query` (one SELECT statement, else refused)
on a read-only attachment, so it cannot write. It can read what SQL can read,
so the server listens on 127.0.0.1 unless told otherwise, and refuses requests
addressed to another host name (DNS rebinding).
"""

from __future__ import annotations

import json
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

from vlfactory.stores.lake import Lake, LakeError
from vlfactory.viewer.queries import Viewer


def _static(name: str) -> bytes:
    """A file of the page (viewer/static/), read from the installed package."""
    from importlib.resources import files

    return files("vlfactory.viewer").joinpath("static", name).read_bytes()


def _json(value) -> str:
    def default(v):
        if isinstance(v, (bytes, bytearray, memoryview)):
            return f"<{len(v)} bytes>"
        return str(v)
    return json.dumps(value, default=default, ensure_ascii=False)


class Handler(BaseHTTPRequestHandler):
    viewer: Viewer
    hosts: frozenset[str]
    server_version = "vlfactory-viewer"

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        url = urlsplit(self.path)
        if self.hosts and (self.headers.get("Host") or "").rsplit(":", 1)[0].strip("[]") not in self.hosts:
            return self.send(HTTPStatus.FORBIDDEN, b"unknown host", "text/plain")
        if url.path in ("/", "/index.html"):
            return self.send(HTTPStatus.OK, _static("index.html"), "text/html; charset=utf-8")
        if url.path == "/app.js":
            return self.send(HTTPStatus.OK, _static("app.js"), "text/javascript; charset=utf-8")
        if url.path.startswith("/image/"):
            with self.viewer.lock:
                found = self.viewer.image(url.path.removeprefix("/image/"))
            if found is None:
                return self.send(HTTPStatus.NOT_FOUND, b"no such image", "text/plain")
            return self.send(HTTPStatus.OK, found[0], found[1], cache="public, max-age=31536000, immutable")
        endpoint = {"/api/meta": Viewer.meta, "/api/rows": Viewer.rows, "/api/sample": Viewer.sample,
                    "/api/problem": Viewer.problem}.get(url.path)
        if endpoint is None:
            return self.send(HTTPStatus.NOT_FOUND, b"not found", "text/plain")
        q = {k: v[-1] for k, v in parse_qs(url.query).items()}
        try:
            with self.viewer.lock:
                body, status = _json(endpoint(self.viewer, q)), HTTPStatus.OK
        except Exception as e:  # one line for the page; a bad request (a wrong WHERE) is the user's to fix
            line = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            bad = isinstance(e, (LakeError, ValueError))
            status = HTTPStatus.BAD_REQUEST if bad else HTTPStatus.INTERNAL_SERVER_ERROR
            body = _json({"error": line})
        self.send(status, body.encode(), "application/json")

    def send(self, status: HTTPStatus, body: bytes, kind: str, cache: str = "no-store") -> None:
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", cache)
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Content-Security-Policy", "default-src 'self'; img-src 'self'; style-src 'self' "
                                                    "'unsafe-inline'; frame-ancestors 'none'")
        self.end_headers()
        self.wfile.write(body)

    def do_HEAD(self) -> None:  # noqa: N802
        self.send(HTTPStatus.METHOD_NOT_ALLOWED, b"", "text/plain")

    def log_message(self, fmt: str, *args) -> None:  # quiet: one line per request would drown the URL
        pass


LOOPBACK = frozenset({"127.0.0.1", "localhost", "::1"})


def server(lake: Lake, version: str | int | None = None, host: str = "127.0.0.1", port: int = 8765
           ) -> ThreadingHTTPServer:
    """A viewer server over an open lake (not yet serving: call serve_forever, or run it in a thread)."""
    if version is not None:
        lake.resolve(version)  # an unknown version fails now, with one line
    hosts = LOOPBACK | {host} if host in LOOPBACK else frozenset()  # bound elsewhere on purpose: any Host
    handler = type("ViewerHandler", (Handler,), {"viewer": Viewer(lake, version), "hosts": hosts})
    httpd = ThreadingHTTPServer((host, port), handler)
    httpd.daemon_threads = True
    return httpd
