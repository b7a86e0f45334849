"""A query's result as text or a file: table, csv, tsv, json, jsonl, markdown or parquet.

csv, tsv, json, jsonl and parquet stream: rows are fetched and written a batch at a time, so a
result larger than memory goes to a file (`-o`) or a pipe. table and markdown align their columns,
so they read the whole result first (they are for people). `vlfactory sql` is the caller:

    vlfactory sql "SELECT * FROM traces" -o traces.parquet
    vlfactory sql "SELECT * FROM rejected" --format jsonl | head

Also the CLI's other printing: `row_diff` (`vlfactory diff --table`) and `progress`, the bar or lines `run` and
`iterate` show while a stage runs.
"""

from __future__ import annotations

import contextlib
import csv
import json
import os
import re
import sys
from pathlib import Path
from typing import IO, Iterator

FORMATS = ("table", "csv", "tsv", "json", "jsonl", "markdown", "parquet")
HEADED = ("table", "csv", "tsv", "markdown")  # the formats --no-header applies to
SUFFIXES = {".parquet": "parquet", ".csv": "csv", ".tsv": "tsv", ".json": "json", ".jsonl": "jsonl",
            ".ndjson": "jsonl", ".md": "markdown"}
ROWS = 2048  # rows per fetch (DuckDB's vector size)
ROW_GROUP_BYTES = 64 << 20  # a Parquet row group is written once this much is buffered


class Rows:
    """Rows made in Python, written as a query's are (`write`): `vlfactory versions --format json`."""

    def __init__(self, columns: list[str], rows):
        self.columns, self._rows = list(columns), iter(rows)

    def fetchmany(self, n: int) -> list[tuple]:
        import itertools

        return list(itertools.islice(self._rows, n))

    def fetchall(self) -> list[tuple]:
        return list(self._rows)


def format_for(fmt: str | None, output: str | None) -> str:
    """The format asked for, else the one the output file's suffix names, else table."""
    if fmt:
        return fmt
    return SUFFIXES.get(Path(output).suffix.lower(), "table") if output else "table"


# C0 controls but tab and newline, DEL, C1 controls (0x9b is a CSI on its own), and the bidirectional overrides
# that make text read in another order than it runs.
_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


def terminal(text: str) -> str:
    r"""Text for a terminal, its control characters spelled out (ESC as `\x1b`): a row or a model's output cannot
    clear the screen, move the cursor, retitle the window or write the clipboard (OSC 52). The one filter for
    what `show`, `sql` and `diff` print; tabs and newlines stay.

    >>> terminal("ok\x1b]52;c;aGk=\x07 \x9b2J")
    'ok\\x1b]52;c;aGk=\\x07 \\x9b2J'
    """
    return _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}" if ord(m.group()) < 0x100 else f"\\u{ord(m.group()):04x}",
                        text)


def plain(v):
    """A value as text formats (table, csv, tsv, markdown) show it: bytes (an image) by their size, not their
    content; lists, structs and maps as JSON, as a program reading the output parses them (not Python's repr).

    >>> plain(["red", None]), plain({"loss": 0.5}), plain(b"PNG"), plain(3)
    ('["red", null]', '{"loss": 0.5}', '<3 bytes>', 3)
    """
    if isinstance(v, (bytes, bytearray, memoryview)):
        return f"<{len(v)} bytes>"
    if isinstance(v, (list, tuple, dict)):
        return json.dumps(jsonable(v), ensure_ascii=False, default=str)
    return v


def jsonable(v):
    """A value as JSON holds it: nested lists and maps kept, bytes by their size, decimals as numbers, times
    and other scalars as text."""
    import decimal

    if isinstance(v, (bytes, bytearray, memoryview)):
        return f"<{len(v)} bytes>"
    if isinstance(v, dict):
        return {str(k): jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [jsonable(x) for x in v]
    if isinstance(v, decimal.Decimal):
        return float(v)
    return v


def write(rel, fmt: str, output: str | None, header: bool = True, max_width: int = 60) -> None:
    """Write a DuckDB relation's rows to `output` (a file path) or stdout, in `fmt`."""
    if fmt == "parquet":
        with _destination(output, binary=True) as out:
            _parquet(rel, out)
        return
    # Files and pipes get the data as it is; a terminal gets it with its control characters spelled out.
    tty = output is None and sys.stdout.isatty()
    with _destination(output) as out:
        if fmt in ("csv", "tsv"):
            writer = csv.writer(out, delimiter="," if fmt == "csv" else "\t", lineterminator="\n")
            cell = (lambda v: terminal(v) if isinstance(v, str) else plain(v)) if tty else plain  # noqa: E731
            if header:
                writer.writerow([cell(c) for c in rel.columns])
            for rows in _batches(rel):
                writer.writerows([[cell(v) for v in row] for row in rows])
        elif fmt == "jsonl":
            for rows in _batches(rel):
                out.write("".join(_json(rel.columns, row, tty) + "\n" for row in rows))
        elif fmt == "json":
            sep = "["
            for rows in _batches(rel):
                for row in rows:
                    out.write(sep + _json(rel.columns, row, tty))
                    sep = ",\n"
            out.write("[]\n" if sep == "[" else "]\n")
        elif fmt == "markdown":
            markdown(rel.columns, rel.fetchall(), out, header, max_width)
        else:
            table(rel.columns, rel.fetchall(), out, header, max_width)


def table(columns, rows, out: IO[str] | None = None, header: bool = True, max_width: int = 60) -> None:
    """A boxed table. On a terminal it fits the terminal; anywhere else (a pipe, a file) each row
    stays on one line, whatever the width, so the layout never depends on where it was run."""
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    out = out or sys.stdout
    t = Table(show_header=header, header_style="bold")
    for c in columns:
        t.add_column(Text(terminal(str(c))), overflow="fold")
    for row in rows:
        t.add_row(*(Text(_cell(v, max_width)) for v in row))  # Text: a cell's [brackets] are not rich markup
    console = Console(file=out, width=None if out.isatty() else 1 << 20)
    console.print(t)
    console.print(f"{len(rows)} row{'s' if len(rows) != 1 else ''}", style="dim")


def markdown(columns, rows, out: IO[str], header: bool = True, max_width: int = 60) -> None:
    """A GitHub-flavoured Markdown table, columns padded to line up."""
    cells = [[_cell(v, max_width).replace("|", "\\|").replace("\n", "<br>") for v in row] for row in rows]
    names = [terminal(str(c)).replace("|", "\\|") for c in columns]
    widths = [max([3, len(n), *(len(r[i]) for r in cells)]) for i, n in enumerate(names)]

    def line(values) -> str:
        return "| " + " | ".join(v.ljust(w) for v, w in zip(values, widths)) + " |\n"
    if header:
        out.write(line(names) + line("-" * w for w in widths))
    out.writelines(line(r) for r in cells)


def _cell(v, max_width: int) -> str:
    s = "NULL" if v is None else terminal(str(plain(v)))
    return s[: max_width - 1] + "…" if 0 < max_width < len(s) else s


def _json(columns, row, ascii: bool = False) -> str:
    # json escapes C0 controls; on a terminal, ensure_ascii escapes C1's too
    return json.dumps(dict(zip(columns, map(jsonable, row))), ensure_ascii=ascii, default=str)


def row_diff(d) -> None:
    """A TableDiff (stores/diffs.py) as `vlfactory diff --table` prints it: its line, then the rows added and
    removed (key, then the other columns) and the changed columns before and after, the change centred."""
    from vlfactory.stores.diffs import around_change

    print(terminal(d.line()))
    others = [c for c in d.compared if c not in d.key]
    for kind, rows, n in (("added", d.added, d.n_added), ("removed", d.removed, d.n_removed)):
        if rows:
            print(f"{kind}: {n}" + (f" (first {len(rows)})" if len(rows) < n else ""))
            table([*d.key, "row"], [[*(r[k] for k in d.key), "; ".join(f"{c}={plain(r[c])}" for c in others)]
                                    for r in rows], max_width=120)
    if d.changed:
        print(f"changed: {d.n_changed}" + (f" (first {len(d.changed)})" if len(d.changed) < d.n_changed else ""))
        table([*d.key, "column", "before", "after"],
              [[*c.key.values(), col, *around_change(plain(c.before[col]), plain(c.after[col]))]
               for c in d.changed for col in c.before], max_width=200)


def pointer(sql: str | None, position: int | None) -> str:
    r"""Where in `sql` an error is, drawn as DuckDB's shell draws it: the line, `LINE n: ` before it (a window
    with `...` when it is long), and a caret under the character (wide characters count two columns).

    >>> print(pointer("SELECT x\nFROM problemz", 14))
    LINE 2: FROM problemz
                 ^
    """
    import unicodedata

    if sql is None or position is None:
        return ""
    n = sql.count("\n", 0, position)
    start = sql.rfind("\n", 0, position) + 1
    end = sql.find("\n", position)
    line, column = sql[start:end if end != -1 else len(sql)], position - start
    head = f"LINE {n + 1}: "
    if len(line) > 100:  # a window around the position, as DuckDB shows it
        lo = max(0, column - 50)
        before, after = ("..." if lo else ""), ("..." if lo + 100 < len(line) else "")
        line, column = before + line[lo:lo + 100] + after, column - lo + len(before)
    width = sum(2 if unicodedata.east_asian_width(c) in "WF" else 1 for c in line[:column])
    return terminal(head + line) + "\n" + " " * (len(head) + width) + "^"


def _batches(rel) -> Iterator[list[tuple]]:
    while rows := rel.fetchmany(ROWS):
        yield rows


def _parquet(rel, out) -> None:
    """Record batches into row groups of about ROW_GROUP_BYTES: memory holds one row group, not the result."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    reader = rel.to_arrow_reader(ROWS)
    with pq.ParquetWriter(out, reader.schema) as writer:
        buffered, size = [], 0
        for batch in reader:
            buffered.append(batch)
            size += batch.nbytes
            if size >= ROW_GROUP_BYTES:
                writer.write_table(pa.Table.from_batches(buffered))
                buffered, size = [], 0
        if buffered:
            writer.write_table(pa.Table.from_batches(buffered))


@contextlib.contextmanager
def _destination(output: str | None, binary: bool = False) -> Iterator[IO]:
    """stdout, or a file that appears only once complete: a query failing halfway leaves any
    earlier file of that name as it was, and no partial one."""
    if output is None:
        try:
            yield sys.stdout.buffer if binary else sys.stdout
            sys.stdout.flush()
        except BrokenPipeError:  # `| head` read what it wanted; stop quietly, exit flush included
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return
    path = Path(output)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb" if binary else "w", **({} if binary else {"encoding": "utf-8", "newline": ""})) as f:
            yield f
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


# ---- progress: what `vlfactory run` and `iterate` print while a stage runs ----------------------------------

PROGRESS_S = 30.0  # seconds between progress lines when the output is not a terminal [env VLFACTORY_PROGRESS_S]


def progress(console, name: str):
    """Per stage, progress as done/total, rate, ETA, cache hits and failures: a bar on a terminal, and
    where a bar cannot be seen (piped, nohup, a SLURM log) a plain line every VLFACTORY_PROGRESS_S
    seconds (default 30; 0 prints one at every update) while the stage runs, whether or not anything
    finished since (a stalled server shows as a falling rate)."""
    import threading
    import time

    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    try:
        interval = max(0.0, float(os.environ.get("VLFACTORY_PROGRESS_S", PROGRESS_S)))
    except ValueError:
        interval = PROGRESS_S

    @contextlib.contextmanager
    def cm():
        columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                   TextColumn("{task.fields[rate]}"), TimeRemainingColumn())
        lines = not console.is_terminal
        with Progress(*columns, console=console, transient=True, disable=lines) as bar:
            task = bar.add_task(name, total=None, rate="")
            start = time.perf_counter()
            received = 0
            state = None  # (done, total, received, requests, tokens, cached, failed, rejected): the last update's

            def say() -> None:
                dt = max(time.perf_counter() - start, 1e-9)
                if state is None:
                    console.print(f"{name}: running for {clock(dt)}, nothing finished yet", markup=False,
                                  highlight=False, soft_wrap=True)
                    return
                done, total, got, requests, tokens, cached, failed, rejected = state
                rate = got / dt
                head = f"{name}: {done}/{total} ({100 * done / total:.0f}%)" if total else f"{name}: {done} done"
                eta = (f", ETA {clock((total - done) / rate)}" if rate > 0 else ", ETA unknown") if total else ""
                tail = f", {requests / dt:.1f} req/s, {tokens / dt:.0f} tok/s" if requests else ""
                console.print(f"{head}, {rate:.1f}/s{eta}{tail}; cached {cached}, failed {failed}, rejected {rejected}; "
                              f"{clock(dt)} elapsed", markup=False, highlight=False, soft_wrap=True)

            def progress(result, n: int) -> None:
                nonlocal received, state
                received += n
                dt = max(time.perf_counter() - start, 1e-9)
                bar.update(task, total=result.wanted or None, completed=result.cached + received,
                           rate=f"{result.requests / dt:.1f} req/s {result.completion_tokens / dt:.0f} tok/s "
                                f"cached {result.cached} failed {result.failed}")
                # One tuple, replaced whole: the line printer in the other thread reads a consistent update.
                state = (result.cached + received, result.wanted, received, result.requests,
                         result.completion_tokens, result.cached, result.failed, sum(result.rejected.values()))
                if lines and not interval:
                    say()

            stop = threading.Event()

            def ticker() -> None:
                while not stop.wait(interval):
                    say()

            thread = threading.Thread(target=ticker, name=f"progress-{name}", daemon=True)
            if lines and interval:
                thread.start()
            try:
                yield progress
            finally:
                stop.set()
                if thread.is_alive():
                    thread.join()
    return cm()


def clock(seconds: float) -> str:
    """12s, 3m05s, 1h02m: a duration as the progress lines print it."""
    s = int(seconds)
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s" if s >= 60 else f"{seconds:.0f}s"
