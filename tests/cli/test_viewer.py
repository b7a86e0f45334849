"""The trace viewer: `vlfactory view` serves a read-only page over the lake. Its JSON API pages by key and
filters by source, verdict, reason, model, iteration and a SQL WHERE that cannot write; in headless Chromium
the page filters, opens a sample and renders its image (checked in the DOM and in a screenshot's pixels)."""

from __future__ import annotations

import io
import json
import re
import urllib.error
import urllib.parse
import urllib.request

import pytest

import vlfactory
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


def test_keyset_pages_cover_every_row_once(url):
    seen, after, pages = [], None, 0
    while True:
        page = api(url, "rows", table="traces", limit=10, **({"after": after} if after else {}))
        seen += [r["trace_id"] for r in page["rows"]]
        pages += 1
        if not page["next"]:
            break
        after = page["next"]
    assert page["total"] == len(seen) == 42 and seen == sorted(set(seen)) and pages == 5


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
        cells = b.eval("""(() => { const head = [...document.querySelectorAll('#rows th')].map(t => t.textContent);
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
