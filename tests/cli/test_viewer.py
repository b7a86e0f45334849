"""The trace viewer: `vlfactory view` serves a read-only page over the lake. Its JSON API lists content first
(question, completion, verdict and reasons, the model's short name, the image), pages by keyset in the table's
order or sorted by any listed column (nulls last, every row once), counts facets under the other filters,
filters by source, verdict, reason, model, iteration and a SQL WHERE that cannot write, and steps from a sample
to its neighbours in the list; in headless Chromium the page filters, sorts, shows thumbnails and facet counts
with headers on one line and an unclipped WHERE box, opens a sample, steps through the list and renders the
image (checked in the DOM and in a screenshot's pixels)."""

from __future__ import annotations

import io
import json
import re
import urllib.error
import urllib.parse
import urllib.request

import pytest

from browser import Browser
from vlfactory.stores.lake import Lake
from workbench import build, planned, viewer


@pytest.fixture(scope="module")
def wb(tmp_path_factory):
    wb = build(tmp_path_factory.mktemp("viewer"))
    with Lake(wb.lake, read_only=True) as lake:
        wb.images = dict(lake.query("SELECT image_id, bytes FROM images").fetchall())
        wb.snapshots = [s["snapshot_id"] for s in lake.snapshots()]
    return wb


@pytest.fixture(scope="module")
def url(wb):
    """`vlfactory view` in its own process, on a free port; yields its base URL."""
    with viewer(wb.lake) as base:
        yield base
    with Lake(wb.lake, read_only=True) as lake:  # the viewer wrote nothing
        assert [s["snapshot_id"] for s in lake.snapshots()] == wb.snapshots


TOKENS: dict[str, str] = {}


def token(url: str) -> str:
    """The session token the viewer writes into its page (tests/cli/test_viewer_cross_site.py: required)."""
    if url not in TOKENS:
        with urllib.request.urlopen(f"{url}/", timeout=30) as r:
            TOKENS[url] = re.search(rb'name="vlfactory-token" content="([^"]+)"', r.read()).group(1).decode()
    return TOKENS[url]


def get(url: str, path: str, headers: dict | None = None, **q) -> tuple[int, bytes, str]:
    if path.startswith(("/api/", "/image/")):
        headers = {"X-Vlfactory-Token": token(url)} | (headers or {})
    req = urllib.request.Request(f"{url}{path}" + (f"?{urllib.parse.urlencode(q)}" if q else ""), headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, r.read(), r.headers["Content-Type"]
    except urllib.error.HTTPError as e:
        return e.code, e.read(), e.headers["Content-Type"]


def api(url: str, path: str, ok: bool = True, **q) -> dict:
    status, body, _ = get(url, f"/api/{path}", **q)
    assert (status == 200) == ok, (status, body)
    return json.loads(body)


def walk(url: str, **q) -> list[dict]:
    """Every row of a list, page by page (10 at a time)."""
    seen, after = [], None
    while True:
        page = api(url, "rows", limit=10, **q, **({"after": after} if after else {}))
        seen += page["rows"]
        if not page["next"]:
            assert page["total"] == len(seen)
            return seen
        after = page["next"]


def test_keyset_pages_cover_every_row_once(url, wb):
    rows = walk(url, table="traces")
    with Lake(wb.lake, read_only=True) as lake:  # in the table's own order, as the Hub viewer lists a dataset
        stored = [r[0] for r in lake.query("SELECT trace_id FROM traces ORDER BY rowid").fetchall()]
    assert [r["trace_id"] for r in rows] == stored and len(stored) == 42
    # sorted by any listed column, ties broken by key, nulls last, either way: every row once, in order
    for table, column in (("traces", "completion_tokens"), ("captions", "completion_tokens"),
                          ("traces", "finish_reason"), ("rl", "pass_rate")):
        key = api(url, "meta")["tables"][table]["key"]
        with Lake(wb.lake, read_only=True) as lake:
            everything = lake.query(f"SELECT {key}, {column} FROM {table}").fetchall()
        assert any(v is None for _, v in everything) or table != "captions"  # source captions count no tokens
        for desc in ("", "1"):
            got = [(r[key], r[column]) for r in walk(url, table=table, sort=column, desc=desc)]
            by_key = sorted((r for r in everything if r[1] is not None), key=lambda r: r[0])
            ordered = sorted(by_key, key=lambda r: r[1], reverse=bool(desc))  # stable: ties stay in key order
            assert got == ordered + sorted(r for r in everything if r[1] is None), (table, column, desc)


def test_lists_lead_with_content(url, wb):
    """What a row is about, not its identifiers: the question, the completion's start, the verdict with its reasons,
    the model by the name the report gives it, the image; and how many rows each filter value would list."""
    page = api(url, "rows", table="traces", verdict="rejected", limit=5)
    assert page["columns"][:4] == ["question", "completion", "accepted", "reasons"]
    with Lake(wb.lake, read_only=True) as lake:
        full = dict(lake.query("SELECT trace_id, completion FROM traces").fetchall())
    for r in page["rows"]:
        p = next(p for p in wb.problems if p["problem_id"] == r["problem_id"])
        assert r["question"] == p["question"][:160] and r["image_id"] == p["image_id"]
        assert r["completion"] == full[r["trace_id"]][:160] and r["accepted"] is False and r["reasons"]
        assert r["model_name"] == "reasoner"
    assert set(page["sortable"]) >= {"completion_tokens", "sample_index", "finish_reason", "source"}
    facets = api(url, "facets", table="traces", verdict="rejected")["facets"]
    # a facet counts under the page's other filters, not its own: each value's count is that filter's total
    for name, values in facets.items():
        for value, n in values.items():
            q = {"table": "traces", "verdict": "rejected", name: value}
            assert api(url, "rows", **q)["total"] == n, (name, value)
    assert facets["verdict"] == {"accepted": 21, "rejected": 21} and facets["iteration"] == {"1": 14, "2": 7}
    assert sum(facets["source"].values()) == 21 and facets["model"] == {"reasoner": 21}
    assert api(url, "meta")["values"]["model_names"]["reasoner"] == "reasoner"
    assert "sort: traces lists no sortable column 'completion'" in api(url, "rows", ok=False, table="traces",
                                                                        sort="completion")["error"]


def test_a_sample_steps_through_its_list(url):
    """From any row of a filtered, sorted list, previous and next are its neighbours there, and its place is
    counted: walking `next` from the first visits the list, in order."""
    q = {"table": "traces", "source": "charts", "sort": "completion_tokens", "desc": "1"}
    listed = [r["trace_id"] for r in walk(url, **q)]
    seen, at = [], listed[0]
    while at:
        s = api(url, "sample", id=at, **q)
        assert s["list"]["position"] == len(seen) + 1 and s["list"]["of"] == len(listed)
        assert s["list"]["previous"] == (seen[-1] if seen else None)
        seen.append(at)
        at = s["list"]["next"]
    assert seen == listed and len(listed) > 10


def test_filters(url, wb):
    charts = [p for p in wb.problems if p["source"] == "charts"]

    def total(**q) -> int:
        return api(url, "rows", **q)["total"]

    # latest: per problem sample 0 right, 1 wrong, 2 right on even problems (see workbench.planned)
    assert total(table="traces", verdict="accepted") == 14 + 7
    assert total(table="traces", verdict="rejected") == total(table="traces", reason="incorrect") == 14 + 7
    assert total(table="traces", source="charts") == 3 * len(charts)
    assert total(table="traces", source="charts", verdict="accepted") == len(charts) + sum(p["k"] % 2 == 0
                                                                                           for p in charts)
    assert total(table="traces", model="reasoner") == 42 and total(table="traces", model="other") == 0
    assert total(table="traces", iteration=1) == 28 and total(table="traces", iteration=2) == 14  # new in iter2
    assert total(table="traces", at="iter1") == 28 and total(table="traces", at="iter1", verdict="accepted") == 14
    assert total(table="traces", where="sample_index = 2 AND accepted") == 7
    assert total(table="traces", where="trace_id NOT IN (SELECT trace_id FROM traces@iter1)") == 14
    assert total(table="traces", where="completion_tokens > 0 -- a trailing comment") == 42
    assert total(table="traces", problem=wb.problems[0]["problem_id"]) == 3
    right = [p for p in wb.problems if p["policy_right"]]  # rollouts: one of two right where the policy knew
    assert total(table="rollouts", model="policy") == 28 and total(table="rollouts", verdict="accepted") == len(right)
    assert total(table="rl") == len(right) and total(table="rl", model="policy") == len(right)
    assert total(table="rejected", reason="incorrect") == 21 + 28 - len(right) and total(table="sft") == 14
    assert total(table="grades", verdict="accepted", source="shapes") == 6 + 3 + sum(p["source"] == "shapes"
                                                                                    for p in right)
    page = api(url, "rows", table="rejected", reason="incorrect", limit=1)
    assert page["rows"][0]["problem_id"] in {p["problem_id"] for p in wb.problems}  # linked from the payload


@pytest.mark.parametrize("where", [
    "1=1; DELETE FROM traces",
    "true) OR (SELECT count(*) FROM ducklake_expire_snapshots('lake', older_than => now())) >= 0 OR (false",
    "(SELECT count(*) FROM ducklake_expire_snapshots('lake', older_than => now())) >= 0",
    "(SELECT count(*) FROM ducklake_merge_adjacent_files('lake')) >= 0",
    "(SELECT count(*) FROM lake.set_option('parquet_compression', 'zstd')) >= 0",
    "length(read_text('/etc/hostname')) > 0",
    "no_such_column = 1",
])
def test_a_where_that_writes_or_is_wrong_is_one_error_line(url, where):
    error = api(url, "rows", ok=False, table="traces", where=where)["error"]
    assert error and "\n" not in error
    assert api(url, "rows", table="traces")["total"] == 42


def test_sample_problem_and_image(url, wb):
    p = next(p for p in wb.problems if p["k"] % 2 == 1)  # keeps its sft example, recleaned in iter2
    traces = api(url, "rows", table="traces", problem=p["problem_id"])["rows"]
    first = next(t for t in traces if t["sample_index"] == 0)
    s = api(url, "sample", table="traces", id=first["trace_id"])
    row = s["row"]
    assert row["completion"] == planned(p["answer"], p["k"])[0] and row["extracted"] == p["answer"]
    assert row["accepted"] is True and row["reasons"] == [] and row["finish_reason"] == "stop"
    assert row["cleaned"].rstrip().endswith(f"<answer>{p['answer']}</answer>") and "Wait" in row["cleaned"]
    assert row["completion_tokens"] > 0 and row["question"] == p["question"] and row["gold"] == p["answer"]
    assert s["caption"]["caption"] == p["caption"] and s["caption"]["origin"] == "source"
    assert s["prompt"]["name"] == "reason" and "{question}" in s["prompt"]["text"]
    assert [(v["at"], v["present"], v.get("accepted")) for v in s["versions"]] == \
           [("iter1", True, True), ("iter2", True, True), ("latest", True, True)]
    old = api(url, "sample", table="traces", id=first["trace_id"], at="iter1")["row"]
    assert "Wait" not in old["cleaned"] and old["settings_hash"] != row["settings_hash"]  # graded then as then
    wrong = next(t for t in traces if t["sample_index"] == 1)
    s = api(url, "sample", table="traces", id=wrong["trace_id"])
    assert s["row"]["accepted"] is False and s["row"]["reasons"] == ["incorrect"] and s["row"]["cleaned"] is None
    assert [r["reason"] for r in s["rejected"]] == ["incorrect"]
    problem = api(url, "problem", id=p["problem_id"])
    right = int(p["policy_right"])
    assert problem["tables"]["traces"]["total"] == 3 and problem["tables"]["sft"]["total"] == 1
    assert problem["tables"]["rollouts"]["total"] == 2 and ("rl" in problem["tables"]) == p["policy_right"]
    assert [(v["at"], v["traces"], v["rollouts"], v["sft"], v["rl"], v["accepted"]) for v in problem["versions"]] == \
           [("iter1", 2, 0, 1, 0, 1), ("iter2", 3, 2, 1, right, 1 + right), ("latest", 3, 2, 1, right, 1 + right)]
    status, body, kind = get(url, f"/image/{p['image_id']}")
    assert status == 200 and body == wb.images[p["image_id"]] and kind == "image/png"
    assert get(url, "/image/" + "0" * 64)[0] == 404
    assert api(url, "sample", ok=False, table="traces", id="nope")["error"].startswith("no traces row")
    assert "unknown table" in api(url, "rows", ok=False, table="images")["error"]


def test_every_table_lists_and_opens_a_sample(url):
    tables = api(url, "meta")["tables"]
    assert set(tables) == {"traces", "rollouts", "problems", "captions", "grades", "rejected", "sft", "rl"}
    for table, info in tables.items():
        page = api(url, "rows", table=table, limit=2)
        assert page["total"] > 0 and len(page["rows"]) == 2, table
        s = api(url, "sample", table=table, id=page["rows"][0][info["key"]])
        assert s["row"][info["key"]] == page["rows"][0][info["key"]] and s["versions"][-1]["present"], table


def test_read_only_and_local(url):
    assert get(url, "/", headers={"Host": "attacker.example:8765"})[0] == 403  # DNS rebinding
    req = urllib.request.Request(f"{url}/api/rows", data=b"x", method="POST")
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(req, timeout=10)
    assert e.value.code == 501
    status, body, kind = get(url, "/")
    assert status == 200 and kind.startswith("text/html") and b"/app.js" in body


def test_cli_refuses_a_busy_port_and_an_unknown_version(cli, lake_dir, tmp_path):
    import socket

    (tmp_path / "r.yaml").write_text("sources:\n  - {name: s, format: synthetic, n: 2}\n")
    cli("ingest", tmp_path / "r.yaml")
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        res = cli("view", "--port", port, ok=False)
    assert res.exit_code == 2 and f"cannot listen on 127.0.0.1:{port}" in res.output
    res = cli("view", "v9", ok=False)
    assert res.exit_code == 2 and "unknown version 'v9'" in res.output


def image_distance(a, b) -> float:
    """Mean absolute difference of two images reduced to 24x24 greys (robust to the browser's scaling)."""
    from PIL import ImageChops, ImageStat

    small = [im.convert("L").resize((24, 24), resample=4) for im in (a, b)]  # 4: BOX
    return ImageStat.Stat(ImageChops.difference(*small)).mean[0]


def test_in_chromium_filter_open_a_sample_and_its_image_renders(url, wb):
    from PIL import Image, ImageStat

    charts = [p for p in wb.problems if p["source"] == "charts"]
    expected = len(charts) + sum(p["k"] % 2 == 0 for p in charts)
    with Browser() as b:
        b.open(f"{url}/#/rows?table=traces")
        b.wait("document.querySelectorAll('#rows tbody tr').length === 42")
        # filter through the form, as a user does
        b.eval("document.forms.filters.source.value = 'charts'; document.forms.filters.verdict.value = 'accepted';"
               "document.querySelector('#apply').click()")
        b.wait(f"document.querySelectorAll('#rows tbody tr').length === {expected}")
        assert f"of {expected}" in b.eval("document.querySelector('#status').textContent")
        cells = b.eval("""(() => { const head = [...document.querySelectorAll('#rows th')].map(t => t.dataset.col);
            const cell = (r, name) => r.cells[head.indexOf(name)].textContent;
            return [...document.querySelectorAll('#rows tbody tr')].map(r => [cell(r, 'source'), cell(r, 'accepted')]);
            })()""")
        assert {tuple(c) for c in cells} == {("charts", "accepted")}
        trace_id = b.eval("document.querySelector('#rows tbody tr').dataset.id")
        b.eval("document.querySelector('#rows tbody tr').click()")
        b.wait("!!document.querySelector('#sample-image') && document.querySelector('#sample-image').complete")
        row = api(url, "sample", table="traces", id=trace_id)["row"]
        p = next(p for p in wb.problems if p["problem_id"] == row["problem_id"])
        dom = b.eval("""(() => { const f = {}; for (const d of document.querySelectorAll('[data-field]'))
                          f[d.dataset.field] = d.textContent;
                        const img = document.querySelector('#sample-image');
                        return {fields: f, completion: document.querySelector('#completion').textContent,
                                cleaned: document.querySelector('#cleaned').textContent,
                                caption: document.querySelector('#caption').textContent,
                                width: img.naturalWidth, src: img.getAttribute('src')}; })()""")
        assert dom["completion"] == row["completion"] and dom["cleaned"] == row["cleaned"]
        assert dom["caption"] == p["caption"] and dom["fields"]["question"] == p["question"]
        assert dom["fields"]["verdict"] == "accepted" and dom["fields"]["extracted answer"] == p["answer"]
        assert dom["fields"]["finish_reason"] == "stop" and dom["fields"]["completion_tokens"] == str(
            row["completion_tokens"])
        assert dom["width"] == Image.open(io.BytesIO(wb.images[p["image_id"]])).width
        assert dom["src"] == f"/image/{p['image_id']}?token={token(url)}"  # this session's token
        # the image's pixels are on screen: the shot of its box looks like the stored image, not like another one
        b.eval("document.querySelector('#sample-image').scrollIntoView()")
        box = b.eval("(() => { const r = document.querySelector('#sample-image').getBoundingClientRect();"
                     "return [r.left, r.top, r.right, r.bottom].map(Math.round); })()")
        shot = b.screenshot().crop(tuple(box))
        mine = Image.open(io.BytesIO(wb.images[p["image_id"]]))
        other = Image.open(io.BytesIO(next(data for i, data in wb.images.items() if i != p["image_id"])))
        assert ImageStat.Stat(shot.convert("L")).stddev[0] > 10  # not a blank box
        assert image_distance(shot, mine) < 6 < image_distance(shot, other), (image_distance(shot, mine),
                                                                                 image_distance(shot, other))
        # the problem page links every generation and version
        b.eval("document.querySelector('#problem-link').click()")
        b.wait("!!document.querySelector('#problem #versions')")
        versions = b.eval("[...document.querySelectorAll('#versions tbody tr')].map(r => r.cells[0].textContent)")
        assert versions == ["iter1", "iter2", "latest"]
        assert b.eval("document.querySelectorAll('#problem table[data-table=traces] tbody tr').length") == 3
        assert not [m for m in b.console if m.startswith("exception")], b.console


LAYOUT = """(() => {
  const lines = el => { const r = document.createRange(); r.selectNodeContents(el);
                        return new Set([...r.getClientRects()].map(x => Math.round(x.top))).size; };
  const heads = [...document.querySelectorAll('#rows th')];
  const cells = [...document.querySelectorAll('#rows tbody tr:first-child td')];
  return {wrapped: heads.filter(h => lines(h) > 1).map(h => h.textContent),
          clipped: [...heads, ...cells].filter(e => !e.querySelector('.snippet') && e.scrollWidth > e.clientWidth + 1)
                     .map(e => e.textContent),
          thumbs: [...document.querySelectorAll('#rows td.thumb img')]  // lazy: those on screen are loaded
                    .map(i => i.getBoundingClientRect().top < innerHeight ? i.complete && i.naturalWidth : null),
          where: (() => { const i = document.forms.filters.where; return i.scrollHeight <= i.clientHeight; })()};
})()"""


def test_in_chromium_the_list_reads_like_the_hub_viewer(url, wb):
    """Thumbnails, one-line headers, nothing clipped, an underscore visible in the WHERE box, sorting by clicking
    a header, facet counts in the filter menus, and previous/next (buttons and arrow keys) on a sample."""
    from PIL import Image, ImageChops

    with Browser(width=1280, height=900) as b:
        b.open(f"{url}/#/rows?table=traces")
        b.wait("document.querySelectorAll('#rows tbody tr').length === 42")
        b.wait("[...document.querySelectorAll('#rows td.thumb img')].filter(i => i.getBoundingClientRect().top < "
               "innerHeight).every(i => i.complete && i.naturalWidth > 0)")
        found = b.eval(LAYOUT)
        assert found["wrapped"] == [] and found["clipped"] == [] and found["where"], found
        shown = [w for w in found["thumbs"] if w is not None]
        assert len(found["thumbs"]) == 42 and len(shown) >= 5 and min(shown) > 0
        # the first row's thumbnail shows its own image, not another's
        first = b.eval("document.querySelector('#rows tbody tr').dataset.id")
        row = api(url, "sample", table="traces", id=first)["row"]
        box = b.eval("(() => { const r = document.querySelector('#rows td.thumb img').getBoundingClientRect();"
                     "return [r.left, r.top, r.right, r.bottom].map(Math.round); })()")
        shot = b.screenshot().crop(tuple(box))
        mine = Image.open(io.BytesIO(wb.images[row["image_id"]]))
        other = Image.open(io.BytesIO(next(d for i, d in wb.images.items() if i != row["image_id"])))
        assert image_distance(shot, mine) < image_distance(shot, other)
        # an underscore typed in the WHERE box is drawn, not cut off below the line
        where = "document.forms.filters.where"
        box = b.eval(f"(() => {{ const r = {where}.getBoundingClientRect();"
                     "return [r.left, r.top, r.right, r.bottom].map(Math.round); })()")
        shots = []
        for text in ("finish_reason", "finish reason"):
            b.eval(f"{where}.value = {json.dumps(text)}; {where}.blur()")
            shots.append(b.screenshot().crop(tuple(box)))
        assert ImageChops.difference(*shots).getbbox() is not None
        b.eval(f"{where}.value = ''")
        # facet counts in the menus: each source's rows
        b.wait("document.querySelector('#filters').dataset.facets === 'loaded'")
        options = b.eval("[...document.forms.filters.source.options].map(o => o.textContent)")
        counts = {p["source"]: 0 for p in wb.problems}
        for p in wb.problems:
            counts[p["source"]] += 3
        assert sorted(options[1:]) == sorted(f"{s} ({n})" for s, n in counts.items()), options
        # a count written into a menu leaves what the option selects as it was
        verdicts = b.eval("[...document.forms.filters.verdict.options].map(o => [o.value, o.textContent])")
        assert verdicts == [["", "any"], ["accepted", "accepted (21)"], ["rejected", "rejected (21)"],
                            ["ungraded", "ungraded (0)"]], verdicts
        # sorting by a header: ascending, then descending
        tokens = sorted(r["completion_tokens"] for r in walk(url, table="traces"))
        head = "document.querySelector('#rows th[data-col=completion_tokens]')"
        column = "[...document.querySelectorAll('#rows th')].findIndex(t => t.dataset.col === 'completion_tokens')"
        for arrow, value in (("▲", tokens[0]), ("▼", tokens[-1])):
            b.eval(f"{head}.querySelector('a').click()")
            b.wait(f"{head} && {head}.textContent.endsWith('{arrow}')")  # the page sorted this way has come
            first_value = b.eval(f"document.querySelector('#rows tbody tr').cells[{column}].textContent")
            assert first_value == str(value), (arrow, first_value, value)
        # a sample steps through the sorted list: next, then back with the arrow key
        ids = b.eval("[...document.querySelectorAll('#rows tbody tr')].map(r => r.dataset.id)")
        b.eval("document.querySelector('#rows tbody tr').click()")
        b.wait("!!document.querySelector('#sample') && document.querySelector('#status').textContent.includes('1 of 42')")
        b.eval("document.querySelector('#sample-next').click()")
        b.wait("document.querySelector('#status').textContent.includes('2 of 42')")
        assert ids[1] in b.eval("document.querySelector('#status').textContent")
        b.eval("document.dispatchEvent(new KeyboardEvent('keydown', {key: 'ArrowLeft'}))")
        b.wait("document.querySelector('#status').textContent.includes('1 of 42')")
        assert ids[0] in b.eval("document.querySelector('#status').textContent")
        assert not [m for m in b.console if m.startswith("exception")], b.console
