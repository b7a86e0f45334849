"""A local, read-only trace viewer in the browser: `vlfactory view [VERSION]`.

    vlfactory view iter1                 # then open http://127.0.0.1:8765/
    vlfactory view --port 0              # any free port; the URL is printed

Browse problems, captions, traces, rollouts, grades, rejected rows and the
sft/rl sets of any version, content first (the image's thumbnail, the question,
the completion, the verdict and its reasons, the model by its short name);
sort by any listed column; filter by source, verdict, reason, model, iteration
(each with how many rows it would list) or any SQL WHERE over the listed
table's columns; open a sample to see its image, question, the caption the
reasoner saw, the full completion beside its cleaned version, the extracted
answer, verdict and reasons, tokens and finish reason, and step to the
previous or next row of the list; a problem page links all its generations
and how they stood at every tagged version (TABLE@VERSION time travel).

Standard library only (http.server): a JSON API under /api/ over one read-only
lake connection, image bytes under /image/<image_id> (`?thumb=N`: a thumbnail),
and one static page (viewer/static/: index.html and app.js). Lists read an
in-memory index per table and version (viewer/index.py), built on first use
and, for the version shown, when the server starts; pages are keyset queries
on it, so a page deep in a million rows, or sorted by any column, stays under
a few tens of milliseconds (bench/viewer.py).
Filter values are bound parameters; the free SQL WHERE is the one user
fragment, and it runs through `Lake.query` (one SELECT statement, else refused)
on a read-only attachment, so it cannot write. It can read what SQL can read,
so only the viewer's own page may ask: the server listens on 127.0.0.1 unless
told otherwise, refuses requests addressed to another host name (DNS
rebinding), refuses what another site's page sends (a foreign `Origin`, or
Fetch-Metadata `Sec-Fetch-Site` other than same-origin; a link to the page
itself is fine, it holds no data), and answers /api/ and /image/ only with the
token of this server's session, which the page carries and no other site can
read. So another page can neither read the lake nor time a query on it. Each
request runs on its own cursor, stopped after VLFACTORY_QUERY_TIMEOUT_S seconds
(default 30): a slow WHERE makes no other tab wait.
"""

from __future__ import annotations

import copy
import hmac
import json
import os
import secrets
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

from vlfactory.stores import tables as store
from vlfactory.stores.lake import Lake, LakeError
from vlfactory.viewer.queries import Viewer

QUERY_TIMEOUT_S = 30.0


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
    token: str
    timeout_s: float
    server_version = "vlfactory-viewer"

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        url = urlsplit(self.path)
        host = self.headers.get("Host") or ""
        if self.hosts and host.rsplit(":", 1)[0].strip("[]") not in self.hosts:
            return self.send(HTTPStatus.FORBIDDEN, b"unknown host", "text/plain")
        page = url.path in ("/", "/index.html")
        if not self.same_origin(host, page):
            return self.send(HTTPStatus.FORBIDDEN, b"another site's page may not use the viewer", "text/plain")
        if page:
            html = _static("index.html").replace(b'name="vlfactory-token" content=""',
                                                 f'name="vlfactory-token" content="{self.token}"'.encode())
            return self.send(HTTPStatus.OK, html, "text/html; charset=utf-8")
        if url.path == "/app.js":
            return self.send(HTTPStatus.OK, _static("app.js"), "text/javascript; charset=utf-8")
        q = {k: v[-1] for k, v in parse_qs(url.query).items()}
        given = self.headers.get("X-Vlfactory-Token") or q.pop("token", "")
        if url.path.startswith(("/image/", "/api/")) and not hmac.compare_digest(given.encode(), self.token.encode()):
            return self.send(HTTPStatus.FORBIDDEN, b"not this viewer's session: reload the page", "text/plain")
        if url.path.startswith("/image/"):
            thumb = q.get("thumb", "")
            try:
                found = self.run(Viewer.image, url.path.removeprefix("/image/"),
                                 min(512, int(thumb)) if thumb.isdigit() else None)
            except Exception:  # noqa: BLE001 (a timeout or a closed lake: no image)
                found = None
            if found is None:
                return self.send(HTTPStatus.NOT_FOUND, b"no such image", "text/plain")
            return self.send(HTTPStatus.OK, found[0], found[1], cache="private, max-age=31536000, immutable")
        endpoint = {"/api/meta": Viewer.meta, "/api/rows": Viewer.rows, "/api/facets": Viewer.facets,
                    "/api/sample": Viewer.sample, "/api/problem": Viewer.problem}.get(url.path)
        if endpoint is None:
            return self.send(HTTPStatus.NOT_FOUND, b"not found", "text/plain")
        try:
            body, status = _json(self.run(endpoint, q)), HTTPStatus.OK
        except Exception as e:  # one line for the page; a bad request (a wrong WHERE) is the user's to fix
            line = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            bad = isinstance(e, (LakeError, ValueError))
            status = HTTPStatus.BAD_REQUEST if bad else HTTPStatus.INTERNAL_SERVER_ERROR
            body = _json({"error": line})
        self.send(status, body.encode(), "application/json")

    def same_origin(self, host: str, page: bool) -> bool:
        """Whether the request comes from the viewer's own page (or a person: no Fetch-Metadata, no Origin).

        Browsers send `Sec-Fetch-Site` with every request and `Origin` with CORS and non-GET ones; a no-cors GET
        from another page (an <img>, fetch(..., {mode: 'no-cors'})) carries only the former. Another port of the
        same host is `same-site`, not same-origin: refused too. Opening the page itself from a link is allowed.
        """
        origin = self.headers.get("Origin")
        if origin is not None and origin != f"http://{host}":
            return False
        site = self.headers.get("Sec-Fetch-Site")
        if site in (None, "same-origin", "none"):
            return True
        return page and self.headers.get("Sec-Fetch-Mode") == "navigate"

    def run(self, endpoint, *args):
        """An endpoint on a cursor of its own (DuckDB runs cursors side by side), interrupted after timeout_s."""
        viewer = copy.copy(self.viewer)  # its caches are shared; its lake is this request's
        try:
            with store.own_cursor(self.viewer.lake, self.timeout_s) as viewer.lake:
                return endpoint(viewer, *args)
        except Exception as e:
            if type(e).__name__ == "InterruptException" or "Interrupted" in str(e):
                raise LakeError(f"the query ran longer than {self.timeout_s:g} s and was stopped "
                                "(VLFACTORY_QUERY_TIMEOUT_S); narrow the WHERE") from None
            raise

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


def _warm(viewer: Viewer) -> None:
    """Build the index of the first list the page shows (traces at the version served) and look the models' names
    up before anyone asks, on a cursor of its own; a request for the index meanwhile waits for this build rather
    than starting another."""
    mine = copy.copy(viewer)
    try:
        with store.own_cursor(viewer.lake) as mine.lake:
            snap = mine.snapshot(None)
            mine.names(snap)  # the models' short names, which every list shows
            if "traces" in mine.tables(snap):
                mine.index("traces", snap)
    except Exception:  # noqa: BLE001, S110 (a closed lake at shutdown: the page builds it when asked, or says why)
        pass


def server(lake: Lake, version: str | int | None = None, host: str = "127.0.0.1", port: int = 8765,
           timeout_s: float | None = None, warm: bool = True) -> ThreadingHTTPServer:
    """A viewer server over an open lake (not yet serving: call serve_forever, or run it in a thread). `warm`
    builds the index of the first list in a background thread."""
    if version is not None:
        lake.resolve(version)  # an unknown version fails now, with one line
    hosts = LOOPBACK | {host} if host in LOOPBACK else frozenset()  # bound elsewhere on purpose: any Host
    if timeout_s is None:
        try:
            timeout_s = float(os.environ.get("VLFACTORY_QUERY_TIMEOUT_S", QUERY_TIMEOUT_S))
        except ValueError:
            timeout_s = QUERY_TIMEOUT_S
    viewer = Viewer(lake, version)
    handler = type("ViewerHandler", (Handler,), {"viewer": viewer, "hosts": hosts,
                                                 "token": secrets.token_urlsafe(32), "timeout_s": timeout_s})
    httpd = ThreadingHTTPServer((host, port), handler)
    if warm:
        threading.Thread(target=_warm, args=(viewer,), name="viewer-index", daemon=True).start()
    httpd.daemon_threads = True
    httpd.token = handler.token  # for a client of our own (bench/viewer.py): send it as X-Vlfactory-Token
    return httpd
