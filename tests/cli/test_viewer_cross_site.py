"""The viewer answers its own page only (issue 18 items 4 and 15): a request another site's page makes (a foreign
Origin, Fetch-Metadata `cross-site` or `same-site`) or that lacks the session's token is refused before any query
runs, so timing a `where=` from another page learns nothing; a slow query is interrupted after the time limit and
never makes another tab wait; a negative page size is a one-line 400.

    .venv/bin/python -m pytest -q -p no:cacheprovider tests/cli/test_viewer_cross_site.py
"""

from __future__ import annotations

import http.server
import json
import re
import threading
import time
import urllib.error
import urllib.parse
import urllib.request

import pytest

from browser import Browser
from workbench import build, viewer

SLOW = "(SELECT count(*) FROM range(3000000000) t(i) WHERE i % 7 = 3) > 0"  # seconds of work, reads nothing


@pytest.fixture(scope="module")
def wb(tmp_path_factory):
    return build(tmp_path_factory.mktemp("cross-site"))


@pytest.fixture(scope="module")
def url(wb):
    with viewer(wb.lake, VLFACTORY_QUERY_TIMEOUT_S="2") as base:
        yield base


def get(url: str, path: str, headers: dict | None = None) -> tuple[int, bytes]:
    req = urllib.request.Request(url + path, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def token(url: str) -> str:
    status, page = get(url, "/")
    assert status == 200
    return re.search(rb'<meta name="vlfactory-token" content="([^"]+)">', page).group(1).decode()


def rows(where: str = "", **q) -> str:
    return "/api/rows?" + urllib.parse.urlencode({"table": "traces", **({"where": where} if where else {}), **q})


def test_requests_of_other_sites_are_refused_before_anything_runs(url, wb):
    own = {"X-Vlfactory-Token": token(url)}
    image = "/image/" + wb.problems[0]["image_id"]
    assert get(url, rows(), own)[0] == 200
    assert get(url, image + "?token=" + own["X-Vlfactory-Token"])[0] == 200
    port = urllib.parse.urlsplit(url).port
    foreign = [{"Origin": "http://evil.example"}, {"Origin": f"http://localhost:{port + 1}"}, {"Origin": "null"},
               {"Sec-Fetch-Site": "cross-site"}, {"Sec-Fetch-Site": "same-site"}]
    for headers in foreign:
        for path in (rows(SLOW), image + "?token=" + own["X-Vlfactory-Token"], "/api/meta"):
            start = time.monotonic()
            status, body = get(url, path, own | headers)
            assert status == 403 and time.monotonic() - start < 1.0, (headers, path, status, body)
    # no token, a wrong one, or one from an earlier session: refused, and the WHERE does not run
    for headers in ({}, {"X-Vlfactory-Token": "guess"}, {"X-Vlfactory-Token": own["X-Vlfactory-Token"][:-1]}):
        start = time.monotonic()
        assert get(url, rows(SLOW), headers)[0] == 403 and time.monotonic() - start < 1.0
    assert get(url, image)[0] == 403
    # the page itself may be opened from a link (a top-level navigation): it holds no data
    nav = {"Sec-Fetch-Site": "cross-site", "Sec-Fetch-Mode": "navigate", "Sec-Fetch-Dest": "document"}
    assert get(url, "/", nav)[0] == 200 and get(url, "/api/meta", own | nav)[0] == 403


def test_a_slow_query_is_interrupted_and_never_holds_up_another_tab(url):
    own = {"X-Vlfactory-Token": token(url)}
    done = {}

    def slow():
        start = time.monotonic()
        done["status"], done["body"] = get(url, rows(SLOW), own)
        done["seconds"] = time.monotonic() - start

    thread = threading.Thread(target=slow)
    thread.start()
    time.sleep(0.3)
    start = time.monotonic()
    status, _ = get(url, rows(), own)  # another tab, while the slow WHERE runs
    assert status == 200 and time.monotonic() - start < 1.5
    thread.join(60)
    assert done["status"] == 400 and done["seconds"] < 10, done
    error = json.loads(done["body"])["error"]
    assert "2 s" in error and "\n" not in error


@pytest.mark.parametrize("limit", ["-5", "0", "x", "1e9"])
def test_a_bad_page_size_is_one_line(url, limit):
    status, body = get(url, rows(limit=limit), {"X-Vlfactory-Token": token(url)})
    assert status == 400 and "limit" in json.loads(body)["error"], body


class Attacker(http.server.BaseHTTPRequestHandler):
    page = b""

    def do_GET(self):  # noqa: N802
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.end_headers()
        self.wfile.write(self.page)

    def log_message(self, *args):
        pass


def test_a_page_of_another_site_learns_nothing_by_timing_in_chromium(url, wb):
    """The issue's attack in a real browser: another origin's page times a no-cors fetch of a slow WHERE and loads
    an image; the viewer refuses both at once (Chromium sends Fetch-Metadata; no-cors GETs carry no Origin)."""
    own = {"X-Vlfactory-Token": token(url)}
    start = time.monotonic()
    assert get(url, rows(SLOW), own)[0] == 400 and time.monotonic() - start > 1.5  # the WHERE is slow when it runs
    viewer_port = urllib.parse.urlsplit(url).port
    attacker = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Attacker)
    threading.Thread(target=attacker.serve_forever, daemon=True).start()
    try:
        for host in ("localhost", "127.0.0.1"):  # cross-site, then same-site (another port)
            target = f"http://127.0.0.1:{viewer_port}"
            with Browser() as b:
                b.open(f"http://{host}:{attacker.server_address[1]}/")
                took = b.eval(f"""(async () => {{
                    const t0 = performance.now();
                    await fetch({json.dumps(target + rows(SLOW))}, {{mode: 'no-cors'}}).catch(() => null);
                    const fetched = performance.now() - t0;
                    const ok = await new Promise(done => {{
                        const img = new Image(); img.onload = () => done(true); img.onerror = () => done(false);
                        img.src = {json.dumps(target + '/image/' + wb.problems[0]['image_id'])}; }});
                    return [fetched, ok]; }})()""")
            assert took[0] < 1000 and took[1] is False, (host, took)
    finally:
        attacker.shutdown()
