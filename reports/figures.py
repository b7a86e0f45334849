"""How a report's plot becomes an inline SVG: matplotlib figures built without pyplot, legends beside the axes,
bar labels, tick labels shortened until they fit, and the classes (`vlf-legend`, `vlf-bar`, `vlf-label`,
`vlf-hist`) the browser tests measure; each plot's SVG kept by what it was drawn from (`cached`). The plots
themselves are in reports/plots.py.
"""

from __future__ import annotations

import functools
import hashlib
import io
import os
import re
from pathlib import Path

COLORS = {"accepted": "#2a9d8f", "rejected": "#e76f51", "sft": "#264653", "added": "#2a9d8f", "removed": "#e76f51",
          "changed": "#e9c46a"}


CACHED = 2000  # plots kept; past that, the least recently used half goes


def cached(plot):
    """A plot function whose SVG is kept in `$VLFACTORY_CACHE/figures/`, by a hash of its name, its arguments (the
    numbers drawn, as `repr` spells them), matplotlib's version and the source of the report modules that draw.
    Drawing is most of a report's time (a dozen matplotlib figures per version) and the same version gives the
    same numbers, so a report of a version drawn before costs its queries only; any other input or code is
    another key: never a stale figure. A cache that cannot be written is skipped."""

    @functools.wraps(plot)
    def draw(*args, **kwargs):
        key = hashlib.sha256(repr((plot.__name__, args, sorted(kwargs.items()), _code())).encode()).hexdigest()
        path = _cache() / f"{key}.svg"
        try:
            svg = path.read_text(encoding="utf-8")
            os.utime(path)  # recently used: kept when the cache is trimmed
            return svg
        except OSError:
            pass
        svg = plot(*args, **kwargs)
        if svg is not None:
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                part = path.with_suffix(f".{os.getpid()}.part")  # whole or absent for a report drawn alongside
                part.write_text(svg, encoding="utf-8")
                os.replace(part, path)
                _trim(path.parent)
            except OSError:
                pass
        return svg
    return draw


def _cache() -> Path:
    from vlfactory.models import cache_dir

    return cache_dir() / "figures"


@functools.cache
def _code() -> str:
    """What the plots depend on besides their arguments: matplotlib's version and the source of every report
    module (the plots name models and intervals through stats and evals) and of the eval stage (its intervals)."""
    from importlib.metadata import version
    from importlib.util import find_spec

    files = sorted(Path(__file__).parent.glob("*.py")) + [Path(find_spec("vlfactory.stages.eval").origin)]
    # a matplotlibrc where matplotlib looks for one (matplotlib_fname), read without importing matplotlib
    rc = os.environ.get("MATPLOTLIBRC", "")
    config = os.environ.get("MPLCONFIGDIR") or Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config",
                                                    "matplotlib")
    files += [f for f in (Path("matplotlibrc"), Path(rc, "matplotlibrc") if rc else None, Path(rc) if rc else None,
                          Path(config, "matplotlibrc")) if f and f.is_file()]
    return f"matplotlib {version('matplotlib')} " + hashlib.sha256(b"".join(f.read_bytes() for f in files)).hexdigest()


def _trim(folder: Path) -> None:
    files = list(folder.glob("*.svg"))
    if len(files) > CACHED:
        for f in sorted(files, key=lambda f: f.stat().st_mtime)[:len(files) // 2]:
            f.unlink(missing_ok=True)


def _figure(rows: int = 1, cols: int = 1, width: float = 8.0, height: float = 3.6):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100, layout="constrained")
    return fig, fig.subplots(rows, cols, squeeze=False).ravel()


def _svg(fig) -> str:
    """The figure as an inline <svg>: text as text, the marked parts as classes, only the ids it refers to.

    Labels come from the data (gold answers such as `$\\frac12$`): they are text, never mathtext, so every text
    of the figure, and the tick labels drawn from here on, has math parsing off (issue 18 item 6)."""
    from matplotlib import rc_context
    from matplotlib.text import Text

    for text in fig.findobj(Text):
        text.set_parse_math(False)
    buf = io.StringIO()
    with rc_context({"svg.fonttype": "none", "text.parse_math": False}):
        _lay_out(fig)
        fig.savefig(buf, format="svg", metadata={"Date": None, "Creator": None, "Format": None, "Type": None})
    text = buf.getvalue()
    text = text[text.index("<svg"):]
    text = re.sub(r'id="vlf\.([\w-]+)"', r'class="vlf-\1"', text)
    used = set(re.findall(r'#([\w.-]+)', text))  # url(#clip), xlink:href="#marker"
    text = re.sub(r' id="([^"]+)"', lambda m: m.group(0) if m.group(1) in used else "", text)
    return re.sub(r'<svg ', '<svg class="plot" role="img" ', text, count=1)


def _mark(artists, part: str) -> None:
    for a in artists:
        a.set_gid(f"vlf.{part}")


def _legend(ax, **kwargs):
    """A legend beside the axes, never over the data."""
    legend = ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0, fontsize=8, **kwargs)
    legend.set_gid("vlf.legend")
    return legend


def _fig_legend(fig, axes) -> None:
    """One legend below the figure's panels for every line of them (each label once)."""
    handles = {label: h for ax in axes for h, label in zip(*ax.get_legend_handles_labels())}
    legend = fig.legend(handles.values(), handles.keys(), loc="outside lower center", fontsize=8,
                        ncols=min(3, len(handles)))
    legend.set_gid("vlf.legend")


def _compact(ax) -> None:
    """x tick labels that never run into each other: at most 5, large numbers as 12k and 1.2M."""
    from matplotlib.ticker import FuncFormatter, MaxNLocator

    def short(x, _):
        for size, suffix in ((1e6, "M"), (1e3, "k")):
            if abs(x) >= size:
                return f"{x / size:g}{suffix}"
        return f"{x:g}"

    ax.xaxis.set_major_locator(MaxNLocator(5))
    ax.xaxis.set_major_formatter(FuncFormatter(short))


def _printable(text: str) -> str:
    """Model output as a label: control characters (no glyph, not allowed in SVG) spelled out."""
    return "".join(c if c.isprintable() else f"\\x{ord(c):02x}" for c in text)


def _short(text: str, most: int) -> str:
    return text if len(text) <= most else text[:most - 1] + "…"


def _integers():
    from matplotlib.ticker import MaxNLocator

    return MaxNLocator(integer=True)


def _bar_labels(ax, bars, texts: list[str] | None = None, fontsize: int = 8) -> None:
    """Value labels at the bars' ends, with room for them inside the axes."""
    _mark(bars, "bar")
    _mark(ax.bar_label(bars, texts, padding=2, fontsize=fontsize), "label")
    _compact(ax)


def _lay_out(fig) -> None:
    """Place the panels (constrained layout) and widen each axes' x range until its bar labels end inside it (a
    label past the edge is cut or overlaps), then fix the layout so saving draws the figure once.

    The layout engine runs on its own with a kept Agg renderer, no draw of every artist around it: savefig with
    a layout engine draws twice (a layout pass, then the output), and a draw per fitting round came on top; the
    draws were most of a report's time."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    renderer = FigureCanvasAgg(fig).get_renderer()
    engine = fig.get_layout_engine()
    for round_ in range(4):
        engine.execute(fig)
        if round_ == 3 or not _fit_labels(fig, renderer):
            break
    fig.set_layout_engine("none")  # placed: savefig draws the output only


def _fit_labels(fig, renderer) -> bool:
    """Widen the x range of each axes whose bar labels end past its right edge; whether any was widened."""
    changed = False
    for ax in fig.axes:
        labels = [t for t in ax.texts if t.get_gid() == "vlf.label" and t.get_text()]
        if not labels:
            continue
        box = ax.get_window_extent(renderer)
        right = max(t.get_window_extent(renderer).x1 for t in labels)
        if right > box.x1 - 4:
            lo, hi = ax.get_xlim()
            ax.set_xlim(lo, lo + (hi - lo) * (right - box.x0 + 12) / box.width)
            changed = True
    return changed


def _barh(ax, labels: list[str], values: list[float], color: str | None = None, fmt: str = "{:,.0f}") -> None:
    bars = ax.barh(range(len(labels)), values, color=color)
    ax.set_yticks(range(len(labels)), labels)
    ax.invert_yaxis()  # first label on top
    _bar_labels(ax, bars, [fmt.format(v) for v in values])


def _grouped(categories: list[str], series: list[dict], xlabel: str, title: str, row: float = 0.45) -> str:
    """Grouped horizontal bars: per category one bar of each series ({label, values, color, texts?, xerr?}),
    value labels at their ends, the legend beside the axes."""
    fig, (ax,) = _figure(height=1.4 + row * len(categories) * max(1, len(series) / 2))
    width = 0.8 / len(series)
    for i, sr in enumerate(series):
        extra = {"xerr": sr["xerr"], "error_kw": {"elinewidth": 0.8, "capsize": 2}} if sr.get("xerr") else {}
        bars = ax.barh([j + (i - (len(series) - 1) / 2) * width for j in range(len(categories))], sr["values"],
                       height=width, color=sr["color"], label=sr["label"], **extra)
        _bar_labels(ax, bars, sr.get("texts"), fontsize=7 if len(series) > 2 else 8)
    ax.set_yticks(range(len(categories)), categories)
    ax.invert_yaxis()
    ax.set_xlabel(xlabel)
    ax.set_title(title)
    _legend(ax)
    return _svg(fig)
