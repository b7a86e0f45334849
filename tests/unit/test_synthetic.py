"""The synthetic problem source: determinism, shape of the rows, images, and answers re-derived from captions.

The caption checks are the strong ones: a small text-only solver below reads
each caption (never the generator's internals) and must reach the stated
answer, which shows both that the answer is right and that the caption holds
every fact needed to get it.
"""

from __future__ import annotations

import io
import math
import re
from collections import Counter
from decimal import ROUND_HALF_UP, Decimal
from fractions import Fraction

import pytest
from PIL import Image

from vlfactory.sources import synthetic
from vlfactory.sources.synthetic import FIELDS, KINDS, MAX_SIDE, MIN_SIDE, generate

N = 240


@pytest.fixture(scope="module")
def rows() -> list[dict]:
    return list(generate(N, seed=11))


# ---- shape, determinism, filtering -----------------------------------------------

def test_n_respected_and_ids_unique(rows):
    assert len(rows) == N
    assert len({r["id"] for r in rows}) == N
    assert list(generate(0)) == []
    assert len(list(generate(7, seed=2, kinds=["clock"]))) == 7
    with pytest.raises(ValueError):
        list(generate(-1))


def test_rows_have_exactly_the_fields(rows):
    for r in rows:
        assert tuple(r) == FIELDS
        assert r["id"] == f"{r['kind']}-11-{rows.index(r)}"
        for key in ("id", "kind", "question", "answer", "caption"):
            assert isinstance(r[key], str) and r[key].strip(), (r["id"], key)
        assert isinstance(r["image"], bytes)
        assert r["choices"] is None or (isinstance(r["choices"], list) and all(isinstance(c, str) for c in r["choices"]))


def test_same_seed_same_bytes_other_seed_differs():
    a, b = list(generate(24, seed=5)), list(generate(24, seed=5))
    assert a == b
    c = list(generate(24, seed=6))
    assert [r["id"] for r in c] != [r["id"] for r in a]
    assert sum(x["image"] != y["image"] for x, y in zip(a, c)) >= 20
    assert sum(x["question"] + x["answer"] != y["question"] + y["answer"] for x, y in zip(a, c)) >= 12


def test_item_does_not_depend_on_n_and_id_names_the_problem():
    long, short = list(generate(18, seed=4)), list(generate(6, seed=4))
    assert long[:6] == short
    # the same id gives the same problem whatever kinds filter produced it
    only_bars = list(generate(13, seed=4, kinds=["bar"]))
    assert only_bars[12]["id"] == "bar-4-12" == long[12]["id"]
    assert only_bars[12] == long[12]
    assert synthetic.make("table", 4, 7) == long[7]


def test_every_kind_appears_and_kinds_filter(rows):
    assert set(r["kind"] for r in rows) == set(KINDS)
    assert min(Counter(r["kind"] for r in rows).values()) >= N // len(KINDS) - 1
    picked = list(generate(30, seed=3, kinds=("table", "counting")))
    assert {r["kind"] for r in picked} == {"table", "counting"}
    assert all(r["id"].startswith(r["kind"] + "-3-") for r in picked)
    with pytest.raises(ValueError):
        list(generate(3, kinds=["pie-chart-of-doom"]))
    with pytest.raises(ValueError):
        list(generate(3, kinds=[]))


def test_images_decode_as_png_in_the_size_range(rows):
    for r in rows:
        img = Image.open(io.BytesIO(r["image"]))
        assert img.format == "PNG" and img.mode == "RGB", r["id"]
        assert MIN_SIDE <= img.width <= MAX_SIDE and MIN_SIDE <= img.height <= MAX_SIDE, (r["id"], img.size)
        img.load()
        assert len(img.getcolors(1 << 16) or range(2)) > 1, f"{r['id']} is blank"
        assert png_chunks(r["image"]) <= {"IHDR", "IDAT", "IEND"}, r["id"]   # no tIME/tEXt: bytes stay stable


def png_chunks(data: bytes) -> set[str]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, names = 8, set()
    while pos < len(data):
        length = int.from_bytes(data[pos:pos + 4], "big")
        names.add(data[pos + 4:pos + 8].decode("ascii"))
        pos += 12 + length
    return names


def test_question_styles_are_mixed(rows):
    mc = [r for r in rows if r["choices"]]
    assert 0.15 * N < len(mc) < 0.7 * N
    assert {r["kind"] for r in mc} == set(KINDS)
    for r in mc:
        assert r["answer"] in r["choices"], r["id"]
        assert len(set(r["choices"])) == len(r["choices"]) >= 2, r["id"]
    assert len({r["question"] for r in rows}) > N // 2
    assert any("Round to one decimal place." in r["question"] for r in rows)


def test_answers_are_canonical_numbers_or_words(rows):
    for r in rows:
        a = r["answer"]
        assert re.fullmatch(r"\d+(\.\d*[1-9])?|\d{1,2}:\d\d|[A-Z][A-Za-z0-9 ]*|[a-z]+", a), (r["id"], a)


def test_fmt_is_exact_and_minimal():
    assert synthetic.fmt(12) == "12"
    assert synthetic.fmt(Fraction(7, 2)) == "3.5"
    assert synthetic.fmt(Fraction(-1, 4)) == "-0.25"
    assert synthetic.fmt(Fraction(314, 100) * 25) == "78.5"
    assert synthetic.fmt(Fraction(1, 80)) == "0.0125"
    with pytest.raises(ValueError):
        synthetic.fmt(Fraction(1, 3))


# ---- answers re-derived from the caption alone ------------------------------------

def dec(x, places: int | None = None) -> str:
    d = Decimal(x.numerator) / Decimal(x.denominator) if isinstance(x, Fraction) else Decimal(repr(x))
    if places is not None:
        d = d.quantize(Decimal(1).scaleb(-places), rounding=ROUND_HALF_UP)
    return format(d.normalize(), "f")


def rounding(q: str) -> int | None:
    return 1 if "round to one decimal place" in q.lower() else None


def pairs(caption: str, after: str) -> dict[str, int]:
    body = caption.split(after, 1)[1]
    return {k: int(v) for k, v in re.findall(r"(\w+) = (\d+)", body)}


def solve_series(q: str, vals: dict[str, int]) -> str | None:
    """Bar and line charts: label -> value."""
    names, nums = list(vals), list(vals.values())
    if q == "What is the value of the tallest bar?":
        return str(max(nums))
    if q == "What is the value of the shortest bar?":
        return str(min(nums))
    if q in ("Which category has the smallest value?",) or re.match(r"In which year was .* lowest\?", q):
        return min(names, key=vals.get)
    if q in ("Which category has the largest value?",) or re.match(r"In which year was .* highest\?", q):
        return max(names, key=vals.get)
    if q == "What is the sum of the values of all the bars?":
        return str(sum(nums))
    if m := re.fullmatch(r"How much larger is the value for (\w+) than the value for (\w+)\?", q):
        return str(vals[m[1]] - vals[m[2]])
    if m := re.fullmatch(r"How many bars have a value greater than (\d+)\?", q):
        return str(sum(v > int(m[1]) for v in nums))
    if m := re.fullmatch(r"What (?:is the value for|was .* in) (\w+)\?", q):
        return str(vals[m[1]])
    if m := re.fullmatch(r"By how much did .* (increase|decrease) from (\d+) to (\d+)\?", q):
        return str(abs(vals[m[3]] - vals[m[2]]))
    if re.fullmatch(r"In how many years did .* increase compared with the year before\?", q):
        return str(sum(b > a for a, b in zip(nums, nums[1:])))
    if q.startswith("What was the average of"):
        return dec(Fraction(sum(nums), len(nums)), rounding(q))
    return None


def solve_table(q: str, caption: str) -> str | None:
    lines = [line.split(" | ") for line in caption.splitlines()[1:]]
    header, body = lines[0], lines[1:]
    col = {h: [int(r[c]) for r in body] for c, h in enumerate(header) if c}
    labels = [r[0] for r in body]
    value = lambda name, c: col[c][labels.index(name)]  # noqa: E731
    if m := re.fullmatch(r"What is the total of the (.+) column\?", q):
        return str(sum(col[m[1]]))
    if m := re.fullmatch(r"In the (.+) column, how much larger is the value for (\w+) than for (\w+)\?", q):
        return str(value(m[2], m[1]) - value(m[3], m[1]))
    if m := re.fullmatch(r"Which \w+ has the (largest|smallest) (.+) value\?", q):
        pick = max if m[1] == "largest" else min
        return pick(labels, key=lambda name: value(name, m[2]))
    if m := re.fullmatch(r"What is the mean of the (.+) column\?.*", q):
        return dec(Fraction(sum(col[m[1]]), len(body)), rounding(q))
    if m := re.fullmatch(r"What is the total across all numeric columns for (\w+)\?", q):
        return str(sum(value(m[1], c) for c in col))
    if m := re.fullmatch(r"What is the (.+) value for (\w+)\?", q):
        return str(value(m[2], m[1]))
    if m := re.fullmatch(r"What is the difference between the largest and smallest values in the (.+) column\?", q):
        return str(max(col[m[1]]) - min(col[m[1]]))
    return None


def solve_counting(q: str, caption: str) -> str | None:
    items = re.findall(r"an? (\w+) (circle|square|triangle) at", caption)
    assert len(items) == int(caption.split()[0])
    plural = {"circles": "circle", "squares": "square", "triangles": "triangle"}
    if m := re.fullmatch(r"How many (\w+) (circles|squares|triangles) are there\?", q):
        return str(items.count((m[1], plural[m[2]])))
    if m := re.fullmatch(r"How many (circles|squares|triangles) are there\?", q):
        return str(sum(s == plural[m[1]] for _, s in items))
    if m := re.fullmatch(r"How many (\w+) shapes are there\?", q):
        return str(sum(c == m[1] for c, _ in items))
    if q == "How many shapes are there in total?":
        return str(len(items))
    if m := re.fullmatch(r"How many shapes are not (\w+)\?", q):
        return str(sum(c != m[1] for c, _ in items))
    if q == "Which color do the most shapes have?":
        (top, k), (_, k2) = Counter(c for c, _ in items).most_common(2)
        assert k > k2
        return top
    if m := re.fullmatch(r"Are there more (\w+)s than (\w+)s\?", q):
        shapes = Counter(s for _, s in items)
        return "Yes" if shapes[m[1]] > shapes[m[2]] else "No"
    return None


def solve_clock(q: str, caption: str) -> str | None:
    hour_deg = Fraction(re.search(r"hour hand points ([\d.]+) degrees", caption)[1])
    minute_deg = int(re.search(r"\((\d+) degrees from 12\)", caption)[1])
    minutes = minute_deg // 6
    hour = int(hour_deg // 30)
    assert hour_deg == hour * 30 + Fraction(minutes, 2)       # the two hands agree
    now = hour * 60 + minutes

    def hhmm(t: int) -> str:
        h, m = divmod(t % 720, 60)
        return f"{h or 12}:{m:02d}"
    if q == "What time does the clock show?":
        return hhmm(now)
    if m := re.fullmatch(r"What time will the clock show (\d+) minutes later\? Answer as h:mm\.", q):
        return hhmm(now + int(m[1]))
    if m := re.fullmatch(r"How many minutes from the time shown until the clock next shows (\d+):00\?", q):
        wait = (int(m[1]) % 12 * 60 - now) % 720
        return str(wait or 720)
    return None


def solve_geometry(q: str, caption: str) -> str | None:
    labels = dict(re.findall(r"(bottom side|right side|vertical leg on the left|horizontal leg along the bottom|"
                             r"hypotenuse) is labelled '(\d+|\?)(?: \w+)?'", caption))
    num = lambda key: int(labels[key])  # noqa: E731
    places = rounding(q)
    if caption.startswith(("A rectangle", "A square")):
        w = num("bottom side")
        if m := re.fullmatch(r"The \w+ has an area of (\d+) square \w+\. What is its height, in \w+\?", q):
            assert f"'Area = {m[1]} sq" in caption
            return dec(Fraction(int(m[1]), w))
        h = num("right side")
        if q.startswith("What is the area"):
            return str(w * h)
        if q.startswith("What is the perimeter"):
            return str(2 * (w + h))
        if "diagonal" in q:
            return dec(math.hypot(w, h), places) if places else str(math.isqrt(w * w + h * h))
    elif caption.startswith("A right triangle"):
        a, b, c = labels["vertical leg on the left"], num("horizontal leg along the bottom"), labels.get("hypotenuse")
        if "leg marked '?'" in q:
            assert a == "?"
            return str(math.isqrt(int(c) ** 2 - b * b))
        a = int(a)
        hyp = math.hypot(a, b)
        if q.startswith("What is the area"):
            return dec(Fraction(a * b, 2))
        if q.startswith("What is the length of the hypotenuse"):
            return dec(hyp, places) if places else str(math.isqrt(a * a + b * b))
        if q.startswith("What is the perimeter"):
            return dec(a + b + hyp, places) if places else str(a + b + math.isqrt(a * a + b * b))
    elif caption.startswith("A circle"):
        m = re.search(r"labelled '([rd]) = (\d+) \w+'", caption)
        r = Fraction(int(m[2]), 2 if m[1] == "d" else 1)
        pi = Fraction(314, 100) if "Use 3.14 for π." in q else math.pi
        if q.startswith("What is the radius"):
            return dec(r)
        if q.startswith("What is the diameter"):
            return dec(2 * r)
        if q.startswith("What is the area of the circle"):
            return dec(pi * r * r if isinstance(pi, Fraction) else pi * float(r * r), places)
        if q.startswith("What is the circumference"):
            return dec(2 * pi * r if isinstance(pi, Fraction) else 2 * pi * float(r), places)
        if q.startswith("What is the area of a semicircle"):
            return dec(pi * r * r / 2 if isinstance(pi, Fraction) else pi * float(r * r) / 2, places)
    return None


def solve(r: dict) -> str | None:
    q, cap = r["question"], r["caption"]
    if r["kind"] == "bar":
        return solve_series(q, pairs(cap, "Bars from left to right:"))
    if r["kind"] == "line":
        return solve_series(q, pairs(cap, "Points from left to right:"))
    return {"table": solve_table, "counting": solve_counting, "clock": solve_clock,
            "geometry": solve_geometry}[r["kind"]](q, cap)


def test_answers_follow_from_the_caption_alone(rows):
    more = list(generate(120, seed=12, kinds=["geometry", "counting"]))   # geometry has the most templates
    for r in rows + more:
        assert solve(r) == r["answer"], (r["id"], r["question"], r["caption"], r["answer"])


def test_table_caption_holds_every_cell(rows):
    tables = [r for r in rows if r["kind"] == "table"]
    assert tables
    for r in tables:
        lines = r["caption"].splitlines()[1:]
        widths = {len(line.split(" | ")) for line in lines}
        assert len(widths) == 1 and 2 <= widths.pop() <= 4, r["id"]
        assert 3 <= len(lines) - 1 <= 6, r["id"]
        assert all(cell.isdigit() for line in lines[1:] for cell in line.split(" | ")[1:]), r["id"]


def test_bar_and_counting_sizes(rows):
    for r in rows:
        if r["kind"] == "bar":
            assert 3 <= len(pairs(r["caption"], "Bars from left to right:")) <= 6
        if r["kind"] == "counting":
            assert {c for c, _ in re.findall(r"an? (\w+) (circle|square|triangle) at", r["caption"])} <= set(synthetic.COLORS)


# ---- the quickstart's kind ----------------------------------------------------------

def solve_shapes(q: str, caption: str) -> str | None:
    found = re.findall(r"an? (big|small) (\w+) (circle|square|triangle)", caption)
    n = int(caption.split(" ")[0])
    assert n == len(found), caption
    if q == "How many shapes are there?":
        return str(n)
    if q == "What color is the shape?":
        return found[0][1]
    m = re.fullmatch(r"Which shape is bigger, the (\w+) one or the (\w+) one\?", q)
    size = {color: big for big, color, _ in found}
    return next(c for c in m.groups() if size[c] == "big") if m and sorted(size.values()) == ["big", "small"] else None


def test_shapes_kind_is_opt_in_and_answers_follow_from_the_caption():
    assert "shapes" not in KINDS and "shapes" in synthetic.VISION_KINDS   # the default mix is unchanged
    rows = list(generate(90, seed=3, kinds=["shapes"]))
    assert [r["id"] for r in rows[:2]] == ["shapes-3-0", "shapes-3-1"]
    for r in rows:
        assert solve_shapes(r["question"], r["caption"]) == r["answer"], (r["id"], r["caption"])
        assert r["choices"] is None or r["answer"] in r["choices"]
        img = Image.open(io.BytesIO(r["image"])).convert("RGB")
        assert MIN_SIDE <= img.width <= MAX_SIDE and img.getpixel((0, 0)) == synthetic.SHAPE_BG
        # a shape's colour covers a good part of the picture: coarse features, readable at 56x56
        counts = dict((rgb, n) for n, rgb in img.getcolors(1 << 16))
        drawn = sum(n for rgb, n in counts.items() if rgb in synthetic.COLORS.values())
        assert drawn > 0.015 * img.width * img.height, r["id"]


def test_shapes_answers_are_balanced_so_the_question_alone_cannot_answer():
    rows = list(generate(400, seed=5, kinds=["shapes"]))
    by_question = Counter("bigger" if r["question"].startswith("Which") else r["question"] for r in rows)
    assert min(by_question.values()) > 100                       # three question types in even shares
    colors = Counter(r["answer"] for r in rows if r["question"] == "What color is the shape?")
    counts = Counter(r["answer"] for r in rows if r["question"] == "How many shapes are there?")
    assert set(colors) == set(synthetic.SHAPE_COLORS) and max(colors.values()) < 0.4 * sum(colors.values())
    assert set(counts) == {"1", "2", "3", "4"} and max(counts.values()) < 0.4 * sum(counts.values())
    bigger = [r for r in rows if r["question"].startswith("Which")]
    first = sum(r["question"].split("the ")[1].startswith(r["answer"] + " ") for r in bigger)
    assert 0.35 < first / len(bigger) < 0.65                     # the bigger one is named first half the time
