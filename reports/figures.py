"""How a report's plot is drawn: SVG written here, text as text, no plotting library.

A plot is a grid of panels (horizontal bars, vertical bars, histograms, lines) with their axes, titles and
legends, and every position is computed here. Text widths come from the advance widths of DejaVu Sans, the
first font the SVG asks for (Verdana, next, is as wide; Liberation Sans and Arial narrower), so a label is
placed where its box stays inside the figure and off every other text; tests/cli/test_reports.py measures
the real boxes in Chromium. A report's dozen plots take milliseconds here, where matplotlib's constrained
layout and SVG backend took 4 of a first report's 5.5 s; so nothing is cached.

The parts a reader must see carry the classes the browser tests measure: `vlf-legend`, `vlf-bar`,
`vlf-label`, `vlf-hist-*`, `vlf-band`, `vlf-baseline`. The plots themselves are in reports/plots.py.

    from vlfactory.reports.figures import HBars, figure
    svg = figure([HBars(["a", "b"], [{"label": "rows", "values": [3, 10], "color": "#219ebc"}])], title="Rows")
"""

from __future__ import annotations

import html
import math
import re
from collections import Counter

COLORS = {"accepted": "#2a9d8f", "rejected": "#e76f51", "sft": "#264653", "added": "#2a9d8f", "removed": "#e76f51",
          "changed": "#e9c46a"}
TAB10 = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22",
         "#17becf")
_VIRIDIS = ((68, 1, 84), (59, 82, 139), (33, 145, 140), (94, 201, 98), (253, 231, 37))

FONT = "DejaVu Sans, Verdana, Arial, sans-serif"
# Advance widths of DejaVu Sans for the characters 32..126, in hundredths of an em rounded up (regular, then bold);
# anything else counts a full em (CJK glyphs are one em; accented Latin letters are narrower).
_REGULAR = (32, 41, 46, 84, 64, 96, 78, 28, 40, 40, 50, 84, 32, 37, 32, 34, 64, 64, 64, 64, 64, 64, 64, 64, 64, 64,
            34, 34, 84, 84, 84, 54, 100, 69, 69, 70, 78, 64, 58, 78, 76, 30, 30, 66, 56, 87, 75, 79, 61, 79, 70, 64,
            62, 74, 69, 99, 69, 62, 69, 40, 34, 40, 84, 50, 50, 62, 64, 55, 64, 62, 36, 64, 64, 28, 28, 58, 28, 98,
            64, 62, 64, 64, 42, 53, 40, 64, 60, 82, 60, 60, 53, 64, 34, 64, 84)
_BOLD = (35, 46, 53, 84, 70, 101, 88, 31, 46, 46, 53, 84, 38, 42, 38, 37, 70, 70, 70, 70, 70, 70, 70, 70, 70, 70, 40,
         40, 84, 84, 84, 59, 100, 78, 77, 74, 84, 69, 69, 83, 84, 38, 38, 78, 64, 100, 84, 86, 74, 86, 78, 73, 69,
         82, 78, 111, 78, 73, 73, 46, 37, 46, 84, 50, 50, 68, 72, 60, 72, 68, 44, 72, 72, 35, 35, 67, 35, 105, 72,
         69, 72, 72, 50, 60, 48, 72, 66, 93, 65, 66, 59, 72, 37, 72, 84)
TICK, TITLE, SUPTITLE, LEGEND = 10, 12, 13, 9  # font sizes (px)


def width(text: str, size: float, bold: bool = False) -> float:
    """The width `text` takes at `size` px, a few percent over DejaVu Sans' own (rounding, kerning)."""
    table = _BOLD if bold else _REGULAR
    return size * 1.04 * sum(table[ord(c) - 32] if 32 <= ord(c) < 127 else 100 for c in text) / 100


def line(size: float) -> float:
    """The height a line of text takes at `size` px (ascent + descent of DejaVu Sans and Verdana)."""
    return 1.22 * size


def printable(text: str) -> str:
    """Model output as a label: control characters (no glyph, not allowed in SVG) spelled out."""
    return "".join(c if c.isprintable() else f"\\x{ord(c):02x}" for c in text)


def shorten(text: str, room: float, size: float = TICK, bold: bool = False) -> str:
    """`text` cut with an ellipsis to fit `room` px."""
    text = printable(text)
    if width(text, size, bold) <= room:
        return text
    while text and width(text + "…", size, bold) > room:
        text = text[:-1]
    return text + "…"


def viridis(t: float) -> str:
    t = min(1.0, max(0.0, t)) * (len(_VIRIDIS) - 1)
    i = min(int(t), len(_VIRIDIS) - 2)
    a, b = _VIRIDIS[i], _VIRIDIS[i + 1]
    return "#" + "".join(f"{round(x + (y - x) * (t - i)):02x}" for x, y in zip(a, b))


def short_number(x: float) -> str:
    """A tick label that stays short: 12k, 1.2M, 2.5e-5, 0.25."""
    if x == 0:
        return "0"
    for size, suffix in ((1e6, "M"), (1e3, "k")):
        if abs(x) >= size:
            return f"{x / size:.3g}{suffix}"
    if abs(x) < 1e-2:
        mantissa, exponent = f"{x:.2e}".split("e")
        return f"{mantissa.rstrip('0').rstrip('.')}e{int(exponent)}"
    return f"{x:.4g}"


def ticks(lo: float, hi: float, most: int = 5, integer: bool = False) -> list[float]:
    """At most `most` round values (1, 2, 2.5, 5 x 10^k apart) from lo to hi."""
    if hi <= lo:
        return [lo]
    raw = (hi - lo) / most
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 2.5, 5, 10) if m * power >= raw * 0.999)
    if integer:
        step = max(1, round(step))
    first = math.ceil(lo / step - 1e-9)
    values = [round((first + i) * step, 12) for i in range(int((hi - lo) / step + 1e-9) + 2)]
    return [v for v in values if lo - 1e-9 * step <= v <= hi + 1e-9 * step][:most + 1]


def _from_zero(top: float, integer: bool = False) -> tuple[list[float], float]:
    """An axis from 0 to a little over `top`: its ticks and its end."""
    end = max(1, top * 1.05) if integer else top * 1.05
    values = ticks(0, end, integer=integer)
    return values, max(values[-1], end)


def _n(v: float) -> str:
    return f"{v:.1f}".rstrip("0").rstrip(".")


class Svg:
    """The elements of one figure, as SVG text; every string from the data goes through `text` (escaped)."""

    def __init__(self):
        self.parts: list[str] = []

    def add(self, tag: str, cls: str | None = None, **attrs) -> None:
        self.parts.append(f"<{tag}{_attrs(cls, attrs)}/>")

    def open(self, cls: str) -> None:
        self.parts.append(f'<g class="{cls}">')

    def close(self) -> None:
        self.parts.append("</g>")

    def text(self, x: float, top: float, s: str, size: float = TICK, anchor: str = "start", bold: bool = False,
             cls: str | None = None, upright: bool = False) -> None:
        """`s` with its box's top at `top` (the baseline is placed from the font's ascent); `upright`: turned a
        quarter to read bottom to top, its box's left at `x`, centred on `top`."""
        weight = ' font-weight="bold"' if bold else ""
        at = {"x": x, "y": top + 0.95 * size}
        if upright:
            at = {"x": 0, "y": 0, "transform": f"translate({_n(x + 0.95 * size)} {_n(top)}) rotate(-90)"}
        self.parts.append(f'<text{_attrs(cls, at)} font-size="{_n(size)}" text-anchor="{anchor}" fill="#222"'
                          f'{weight}>{html.escape(printable(s))}</text>')

    def done(self, w: float, h: float) -> str:
        w, h = math.ceil(w), math.ceil(h)
        return (f'<svg class="plot" role="img" xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" '
                f'viewBox="0 0 {w} {h}" font-family="{FONT}">' + "".join(self.parts) + "</svg>")


def _attrs(cls: str | None, attrs: dict) -> str:
    out = f' class="{cls}"' if cls else ""
    for k, v in attrs.items():
        if v is not None:
            out += f' {k.rstrip("_").replace("_", "-")}="{_n(v) if isinstance(v, float | int) else html.escape(v)}"'
    return out


class Panel:
    """One axes: a title on top, y tick labels on the left, x tick labels and the x label below, an optional
    legend beside it on the right. Subclasses fill `left_labels` (the y side's texts) and `draw_plot`."""

    def __init__(self, title: str = "", xlabel: str = "", ylabel: str = "", legend: list[dict] | None = None,
                 plot_height: float = 200):
        self.title, self.xlabel, self.ylabel = title, xlabel, ylabel
        self.legend = [item | {"label": shorten(item["label"], 220, LEGEND)} for item in legend or []]
        self.plot_height = plot_height

    # -- what a subclass says about itself
    def left_labels(self) -> list[str]:
        return []

    def x_labels(self, left: float, right: float) -> list[tuple[float, str]]:
        return []

    def draw_plot(self, svg: Svg, left: float, top: float, right: float, bottom: float) -> None:
        raise NotImplementedError

    # -- layout
    def _top(self) -> float:
        return (line(TITLE) + 4 if self.title else 0) + line(TICK) / 2 + 2

    def _bottom(self) -> float:
        return line(TICK) / 2 + 3 + 2 * line(TICK) + (line(TICK) + 2 if self.xlabel else 0) + 2

    def _legend_width(self) -> float:
        return _legend_size(self.legend)[0] + 10 if self.legend else 0.0

    def _plot_h(self) -> float:
        return max(self.plot_height, _legend_size(self.legend)[1] if self.legend else 0.0)

    def height(self) -> float:
        return self._top() + self._plot_h() + self._bottom()

    def draw(self, svg: Svg, x: float, y: float, w: float) -> None:
        """The panel in the `w` px wide column from `x`, its top at `y`."""
        left = x + 4 + (line(TICK) + 4 if self.ylabel else 0)
        left += max((width(t, TICK) for t in self.left_labels()), default=0) + 8
        edge = x + w - 2 - self._legend_width()  # what the x tick labels may reach
        right = edge - 22  # room for half of the last tick label
        top, bottom = y + self._top(), y + self._top() + self._plot_h()
        if self.title:
            svg.text((left + right) / 2, y, shorten(self.title, right - x - 4, TITLE), TITLE, "middle")
        if self.ylabel:
            svg.text(x + 4, (top + bottom) / 2, shorten(self.ylabel, bottom - top, TICK), TICK, "middle", upright=True)
        svg.add("rect", x=left, y=top, width=right - left, height=bottom - top, fill="none", stroke="#666",
                stroke_width=0.8)
        self.draw_plot(svg, left, top, right, bottom)
        self._x_axis(svg, x, left, right, bottom, edge)
        if self.xlabel:
            svg.text((left + right) / 2, bottom + line(TICK) / 2 + 3 + 2 * line(TICK),
                     shorten(self.xlabel, right - left, TICK), TICK, "middle")
        if self.legend:
            _legend(svg, edge + 10, top, self.legend)

    def _x_axis(self, svg: Svg, x: float, left: float, right: float, bottom: float, edge: float) -> None:
        """Tick labels centred under their ticks, in one row, or two staggered rows where one row would run
        them into each other; each cut to its room (half way to its neighbours, inside the panel)."""
        labels = self.x_labels(left, right)
        if not labels:
            return
        gaps = [b[0] - a[0] for a, b in zip(labels, labels[1:])] or [right - left]
        rows = 1 if all(width(t, TICK) + 6 <= min(gaps) for _, t in labels) else 2
        for i, (at, text) in enumerate(labels):
            before = gaps[i - 1] if i else 2 * (at - x)
            after = gaps[i] if i < len(gaps) else 2 * (edge - at)
            room = min(before, after) * rows - 6
            room = min(room, 2 * (at - x - 2), 2 * (edge - at - 2))
            svg.add("line", x1=at, y1=bottom, x2=at, y2=bottom + 3, stroke="#666", stroke_width=0.8)
            svg.text(at, bottom + line(TICK) / 2 + 3 + (i % rows) * line(TICK), shorten(text, room, TICK), TICK,
                     "middle")

    @staticmethod
    def y_ticks(svg: Svg, left: float, right: float, scale: Scale, values: list[float]) -> None:
        """Labelled ticks on the y axis, each with a light grid line across the axes."""
        for v in values:
            y, text = scale(v), short_number(v)
            svg.add("line", x1=left, y1=y, x2=right, y2=y, stroke="#eee", stroke_width=0.8)
            svg.add("line", x1=left - 3, y1=y, x2=left, y2=y, stroke="#666", stroke_width=0.8)
            svg.text(left - 5, y - line(TICK) / 2, text, TICK, "end")


def _legend_size(items: list[dict]) -> tuple[float, float]:
    return 26 + max(width(i["label"], LEGEND) for i in items) + 6, len(items) * (line(LEGEND) + 3) + 6


def _legend(svg: Svg, x: float, top: float, items: list[dict]) -> None:
    """A framed legend: per item a swatch (a bar's colour, a line, a dashed line or a shaded band) and its
    label."""
    w, h = _legend_size(items)
    svg.open("vlf-legend")
    svg.add("rect", x=x, y=top, width=w, height=h, fill="#fff", stroke="#ccc", stroke_width=0.8)
    for k, item in enumerate(items):
        y = top + 4 + k * (line(LEGEND) + 3)
        _swatch(svg, x + 5, y + line(LEGEND) / 2, item)
        svg.text(x + 26, y, item["label"], LEGEND)
    svg.close()


def _swatch(svg: Svg, x: float, mid: float, item: dict) -> None:
    kind, color = item.get("kind", "bar"), item["color"]
    if kind == "bar":
        svg.add("rect", x=x, y=mid - 4, width=16, height=8, fill=color, fill_opacity=item.get("opacity"))
    else:
        svg.add("line", x1=x, y1=mid, x2=x + 16, y2=mid, stroke=color, stroke_width=1.8,
                stroke_dasharray="4 2" if kind == "dashed" else None)
        if kind == "marker":
            svg.add("circle", cx=x + 8, cy=mid, r=2.5, fill=color)


class Scale:
    """Data values to pixels along one axis."""

    def __init__(self, lo: float, hi: float, a: float, b: float):
        self.lo, self.hi, self.a, self.b = lo, hi, a, b

    def __call__(self, v: float) -> float:
        return self.a + (v - self.lo) * (self.b - self.a) / ((self.hi - self.lo) or 1)


class HBars(Panel):
    """Horizontal bars: per category one bar of each series ({label, values, color, texts?, xerr?, base?}),
    side by side, or stacked where series carry `base` (where each bar starts); value labels at the bars' ends
    with the x range stretched until the longest ends inside; optional per-category dashed `baselines`."""

    def __init__(self, categories: list[str], series: list[dict], *, xlabel: str = "", title: str = "",
                 legend: bool = False, xmax: float | None = None, baselines: list[float] | None = None,
                 baseline_label: str = "", stacked: bool = False, fmt: str = "{:,.0f}"):
        self.categories, self.series, self.stacked = [printable(c) for c in categories], series, stacked
        self.xmax, self.baselines, self.fmt = xmax, baselines, fmt
        self.groups = 1 if stacked else len(series)
        self.label_size = 8 if self.groups > 2 else 9
        self.bar = line(self.label_size) + 0.5
        self.pitch = self.groups * self.bar + 8
        items = [{"label": s["label"], "color": s["color"]} for s in series] if legend else []
        if baselines and legend:
            items.append({"label": baseline_label, "color": "#d62828", "kind": "dashed"})
        super().__init__(title, xlabel, legend=items, plot_height=len(categories) * self.pitch + 6)

    def left_labels(self) -> list[str]:
        return self.categories

    def _bars(self):
        """(series index, category index, start, end, value label) of every bar."""
        for i, sr in enumerate(self.series):
            texts = sr.get("texts")
            for j, v in enumerate(sr["values"]):
                start = sr["base"][j] if sr.get("base") else 0.0
                end = start + v
                if sr.get("xerr"):
                    end = max(end, start + v + sr["xerr"][1][j])
                text = texts[j] if texts is not None else self.fmt.format(v)
                if self.stacked and i < len(self.series) - 1:
                    text = ""  # a stack is labelled once, at its end
                yield i, j, start, v, end, text

    def draw(self, svg: Svg, x: float, y: float, w: float) -> None:
        self.categories = [shorten(c, 0.45 * w) for c in self.categories]  # at most 45% of the panel, cut
        super().draw(svg, x, y, w)

    def draw_plot(self, svg: Svg, left: float, top: float, right: float, bottom: float) -> None:
        span = right - left - 2
        bars = list(self._bars())
        # pixels per unit: every bar end plus its label inside the axes, and xmax inside too
        k = min([(span - 4 - width(t, self.label_size)) / e for *_, e, t in bars if e > 0] or [span])
        if self.xmax:
            k = min(k, span / self.xmax)
        k = max(k, 1e-12)
        self.scale = Scale(0, span / k, left, left + span)
        self.top = top
        for v in ticks(0, span / k):
            svg.add("line", x1=self.scale(v), y1=top, x2=self.scale(v), y2=bottom, stroke="#eee", stroke_width=0.8)
        for i, j, start, v, end, text in bars:
            y = self._y(i, j)
            sr = self.series[i]
            svg.add("rect", "vlf-bar", x=self.scale(start), y=y, width=max(0.0, v * k), height=self.bar - 1,
                    fill=sr["color"])
            if sr.get("xerr"):
                lo, hi = self.scale(start + v - sr["xerr"][0][j]), self.scale(start + v + sr["xerr"][1][j])
                mid = y + (self.bar - 1) / 2
                svg.add("line", x1=lo, y1=mid, x2=hi, y2=mid, stroke="#222", stroke_width=0.8)
                for at in (lo, hi):
                    svg.add("line", x1=at, y1=mid - 2, x2=at, y2=mid + 2, stroke="#222", stroke_width=0.8)
            if text:
                svg.text(left + end * k + 3, y + (self.bar - 1 - line(self.label_size)) / 2, text, self.label_size,
                         cls="vlf-label")
        for j, base in enumerate(self.baselines or []):
            at = self.scale(base)
            svg.add("line", "vlf-baseline", x1=at, y1=self._y(0, j) - 2, x2=at,
                    y2=self._y(self.groups - 1, j) + self.bar + 1, stroke="#d62828", stroke_width=1.5,
                    stroke_dasharray="5 3")
        for j, c in enumerate(self.categories):
            mid = self._y(0, j) + self.groups * self.bar / 2
            svg.text(left - 5, mid - line(TICK) / 2, c, TICK, "end")

    def _y(self, i: int, j: int) -> float:
        return self.top + 3 + 4 + j * self.pitch + (0 if self.stacked else i * self.bar)

    def x_labels(self, left: float, right: float) -> list[tuple[float, str]]:
        return [(self.scale(v), short_number(v)) for v in ticks(0, self.scale.hi)]


class VBars(Panel):
    """Vertical bars over categories (the x labels): per category one bar of each series ({label, values,
    color}), and an optional shaded `band` over the categories from band[0] to band[1] (indices)."""

    def __init__(self, categories: list[str], series: list[dict], *, title: str = "", xlabel: str = "",
                 ylabel: str = "", band: tuple[int, int] | None = None, band_label: str = ""):
        self.categories, self.series, self.band = categories, series, band
        items = [{"label": s["label"], "color": s["color"]} for s in series]
        if band:
            items.append({"label": band_label, "color": "#f4a261", "opacity": 0.35})
        super().__init__(title, xlabel, ylabel, items, plot_height=220)
        self.values, self.hi = _from_zero(max((max(s["values"], default=0) for s in series), default=0), True)

    def left_labels(self) -> list[str]:
        return [short_number(v) for v in self.values]

    def _slot(self, left: float, right: float) -> float:
        return (right - left) / len(self.categories)

    def draw_plot(self, svg: Svg, left: float, top: float, right: float, bottom: float) -> None:
        scale = Scale(0, self.hi, bottom, top)
        self.y_ticks(svg, left, right, scale, self.values)
        slot = self._slot(left, right)
        if self.band:
            a, b = self.band
            svg.add("rect", "vlf-band", x=left + a * slot + 0.04 * slot, y=top, width=(b - a + 0.92) * slot,
                    height=bottom - top, fill="#f4a261", fill_opacity=0.35)
        bar = 0.8 * slot / len(self.series)
        for i, sr in enumerate(self.series):
            for j, v in enumerate(sr["values"]):
                x = left + (j + 0.1) * slot + i * bar
                svg.add("rect", "vlf-bar", x=x, y=scale(v), width=bar - 0.5, height=bottom - scale(v),
                        fill=sr["color"])

    def x_labels(self, left: float, right: float) -> list[tuple[float, str]]:
        slot = self._slot(left, right)
        return [(left + (j + 0.5) * slot, c) for j, c in enumerate(self.categories)]


class Hist(Panel):
    """Histograms of groups ({name, values, color, label}) over shared bins, each drawn as its share of its
    own values (a filled step area and its outline), in the order given (later on top); each group one
    element of class `vlf-hist-<cls>-<name>`."""

    def __init__(self, groups: list[dict], bins: int = 30, *, cls: str, xlabel: str = "", ylabel: str = ""):
        self.groups, self.cls = groups, cls
        top = max((max(g["values"]) for g in groups), default=1) or 1
        self.edges = [top * i / bins for i in range(bins + 1)]
        self.shares = []
        for g in groups:
            counts = [0] * bins
            for v, n in Counter(g["values"]).items():  # lengths repeat: each distinct one binned once
                counts[min(bins - 1, int(v / top * bins))] += n
            self.shares.append([100 * c / len(g["values"]) for c in counts])
        self.y, self.hi = _from_zero(max(max(s) for s in self.shares))
        super().__init__("", xlabel, ylabel, plot_height=220)

    def left_labels(self) -> list[str]:
        return [short_number(v) for v in self.y]

    def draw_plot(self, svg: Svg, left: float, top: float, right: float, bottom: float) -> None:
        sy = Scale(0, self.hi, bottom, top)
        self.sx = Scale(0, self.edges[-1], left, right)
        self.y_ticks(svg, left, right, sy, self.y)
        for g, shares in zip(self.groups, self.shares):
            points = [(self.sx(0), bottom)]
            for a, b, s in zip(self.edges, self.edges[1:], shares):
                points += [(self.sx(a), sy(s)), (self.sx(b), sy(s))]
            points.append((self.sx(self.edges[-1]), bottom))
            path = " ".join(f"{_n(px)},{_n(py)}" for px, py in points)
            name = re.sub(r"[^\w-]", "_", g["name"])
            svg.open(f"vlf-hist-{self.cls}-{name}")
            svg.add("polygon", points=path, fill=g["color"], fill_opacity=0.25)
            svg.add("polyline", points=path, fill="none", stroke=g["color"], stroke_width=1.8)
            svg.close()

    def x_labels(self, left: float, right: float) -> list[tuple[float, str]]:
        return [(self.sx(v), short_number(v)) for v in ticks(0, self.edges[-1])]


class Lines(Panel):
    """Lines ({label, points [(x, y)], color, yerr? [(below, above)], values? (labels of the points), side? (1:
    the labels right of the points, -1: left)}) over a numeric x, or over `categories` (x = their index); y
    from the data (from 0 where `zero`) or `ylim`."""

    def __init__(self, series: list[dict], *, title: str = "", xlabel: str = "", ylabel: str = "",
                 categories: list[str] | None = None, ylim: tuple[float, float] | None = None,
                 integer_x: bool = False, legend: bool = True, height: float = 200, markers: bool = True,
                 zero: bool = True):
        series = [_finite(s) for s in series]  # a training can log nan or inf (a diverged loss): not drawn
        self.series, self.categories, self.integer_x, self.markers = series, categories, integer_x, markers
        ends = [(y - e[0], y + e[1]) for s in series for (_, y), e in zip(s["points"], _errors(s))]
        lo, hi = min((e[0] for e in ends), default=0.0), max((e[1] for e in ends), default=1.0)
        if zero:
            lo = min(lo, 0.0)
        pad = 0.05 * ((hi - lo) or abs(hi) or 1)
        self.ylo, self.yhi = ylim or (lo if zero and lo == 0 else lo - pad, hi + pad)
        self.y = ticks(self.ylo, self.yhi)
        xs = [x for s in series for x, _ in s["points"]]
        if categories is not None:
            self.xlo, self.xhi = -0.5, len(categories) - 0.5
        else:
            self.xlo, self.xhi = min(xs, default=0), max(xs, default=1)
            if self.xhi == self.xlo:
                self.xlo, self.xhi = self.xlo - 1, self.xhi + 1
        items = [{"label": s["label"], "color": s["color"], "kind": "marker" if markers else "line"}
                 for s in series] if legend else []
        super().__init__(title, xlabel, ylabel, items, plot_height=height)

    def left_labels(self) -> list[str]:
        return [short_number(v) for v in self.y]

    def draw_plot(self, svg: Svg, left: float, top: float, right: float, bottom: float) -> None:
        sy = Scale(self.ylo, self.yhi, bottom, top)
        pad = 0 if self.categories is not None else 6
        self.sx = Scale(self.xlo, self.xhi, left + pad, right - pad)
        self.y_ticks(svg, left, right, sy, self.y)
        for s in self.series:
            pts = [(self.sx(x), sy(y)) for x, y in s["points"]]
            for (px, _), (_, y), (below, above) in zip(pts, s["points"], _errors(s) if s.get("yerr") else []):
                y0, y1 = sy(y - below), sy(y + above)
                svg.add("line", x1=px, y1=y0, x2=px, y2=y1, stroke=s["color"], stroke_width=1)
                for at in (y0, y1):
                    svg.add("line", x1=px - 3, y1=at, x2=px + 3, y2=at, stroke=s["color"], stroke_width=1)
            svg.add("polyline", points=" ".join(f"{_n(px)},{_n(py)}" for px, py in pts), fill="none",
                    stroke=s["color"], stroke_width=1.6)
            if self.markers and len(pts) < 40:
                for px, py in pts:
                    svg.add("circle", cx=px, cy=py, r=2.5, fill=s["color"])
            side = s.get("side", 1)  # value labels right of the points, or left (-1)
            for (px, py), text in zip(pts, s.get("values") or []):
                svg.text(px + 6 * side, py - line(8) / 2, text, 8, "start" if side > 0 else "end")

    def x_labels(self, left: float, right: float) -> list[tuple[float, str]]:
        if self.categories is not None:
            return [(self.sx(i), c) for i, c in enumerate(self.categories)]
        values = ticks(self.xlo, self.xhi, integer=self.integer_x)
        return [(self.sx(v), short_number(v)) for v in values]


def _finite(series: dict) -> dict:
    """The series without its points whose x, y or interval is not a finite number."""
    keep = [i for i, ((x, y), (lo, hi)) in enumerate(zip(series["points"], _errors(series)))
            if all(math.isfinite(v) for v in (x, y, lo, hi))]
    out = series | {"points": [series["points"][i] for i in keep]}
    for key in ("yerr", "values"):
        if series.get(key):
            out[key] = [series[key][i] for i in keep]
    return out


def _errors(series: dict) -> list[tuple[float, float]]:
    return series.get("yerr") or [(0.0, 0.0)] * len(series["points"])


def figure(panels: list[Panel], cols: int = 1, wide: float = 800, title: str = "",
           legend: list[dict] | None = None) -> str:
    """Panels in a grid of `cols` columns, `title` above, an optional legend below every panel."""
    svg = Svg()
    y = 6.0
    if title:
        svg.text(wide / 2, y, shorten(title, wide - 8, SUPTITLE, True), SUPTITLE, "middle", bold=True)
        y += line(SUPTITLE) + 4
    w = (wide - 4) / cols
    for r in range(0, len(panels), cols):
        row = panels[r:r + cols]
        h = max(p.height() for p in row)
        for c, p in enumerate(row):
            p.draw(svg, 2 + c * w, y, w)
        y += h + 4
    if legend:
        y = _figure_legend(svg, wide, y, legend)
    return svg.done(wide, y + 4)


def _figure_legend(svg: Svg, wide: float, y: float, items: list[dict]) -> float:
    """Items in up to three columns, centred below the panels; the y under them."""
    cell = 26 + max(width(i["label"], LEGEND) for i in items) + 10
    cols = max(1, min(3, len(items), int((wide - 16) // cell)))
    rows = -(-len(items) // cols)
    x0 = (wide - cols * cell) / 2
    h = rows * (line(LEGEND) + 3) + 6
    svg.open("vlf-legend")
    svg.add("rect", x=x0 - 4, y=y, width=cols * cell + 8, height=h, fill="#fff", stroke="#ccc", stroke_width=0.8)
    for k, item in enumerate(items):
        cx, cy = x0 + (k % cols) * cell, y + 4 + (k // cols) * (line(LEGEND) + 3)
        _swatch(svg, cx + 4, cy + line(LEGEND) / 2, item)
        svg.text(cx + 26, cy, shorten(item["label"], cell - 30, LEGEND), LEGEND)
    svg.close()
    return y + h
