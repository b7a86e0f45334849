"""SQL text: quoting (the one place text from outside becomes SQL where DuckDB takes no parameter), which
statement a query runs, DuckDB errors on one line, and the spans of a query that are code (not strings,
quoted names or comments)."""

from __future__ import annotations

from typing import Iterator

import duckdb


def literal(text: str) -> str:
    """`text` as a DuckDB string literal, for the places a parameter cannot go (ATTACH, DATA_PATH, INSTALL,
    a secret's options, a table function's name argument). Every quote is doubled, so whatever a path or a
    name holds (quotes, `;`, newlines, comments) stays one string; DuckDB's standard strings treat no other
    character specially. A NUL cannot be in a DuckDB string: refused.

    >>> literal("/data/o'brien/lake")
    "'/data/o''brien/lake'"
    >>> literal("x'); COPY (SELECT 1) TO 'y") == "'x''); COPY (SELECT 1) TO ''y'"
    True
    """
    text = str(text)
    if "\x00" in text:
        raise ValueError(f"a NUL character cannot be part of a path or a name: {text!r}")
    return "'" + text.replace("'", "''") + "'"


def ident(name: str) -> str:
    """`name` as a DuckDB quoted identifier (a table or column), every double quote doubled.

    >>> ident('a"b')
    '"a""b"'
    """
    name = str(name)
    if "\x00" in name:
        raise ValueError(f"a NUL character cannot be part of a name: {name!r}")
    return '"' + name.replace('"', '""') + '"'


def _statement_kind(sql: str, kind) -> "duckdb.StatementType":
    """The kind of statement `sql` runs: for EXPLAIN [ANALYZE] [(options)] X, the kind of X.

    A friendly early refusal only: a read-only Lake's engine refuses writes whatever this says.
    """
    if kind != duckdb.StatementType.EXPLAIN:
        return kind
    tokens = duckdb.tokenize(sql)
    i, depth = 1, 0
    while i < len(tokens):
        word = sql[tokens[i][0]:tokens[i + 1][0] if i + 1 < len(tokens) else len(sql)].strip()
        if word == "(":
            depth += 1
        elif word == ")":
            depth -= 1
        elif depth == 0 and word.upper() not in ("ANALYZE", "ANALYSE"):
            break
        i += 1
    if i >= len(tokens):
        return kind
    inner = duckdb.extract_statements(sql[tokens[i][0]:])
    return _statement_kind(sql[tokens[i][0]:], inner[0].type) if len(inner) == 1 else kind


def error_line(e: BaseException) -> str:
    """DuckDB's message on one line with its hints ("Did you mean ...", candidate bindings), less the
    LINE/caret pointer into the SQL (the rewritten SQL when it had `table@version`)."""
    lines = str(e).strip().splitlines()
    end = next((i for i, line in enumerate(lines) if line.startswith("LINE ")), len(lines))
    return " ".join(line.strip() for line in lines[:end] if line.strip()) or type(e).__name__


def _first_line(e: BaseException) -> str:
    return str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__


_KEYWORDS: set[str] = set()


def _keywords(con: duckdb.DuckDBPyConnection) -> set[str]:
    """Words that can follow a table reference but are not an alias."""
    if not _KEYWORDS:
        rows = con.execute("""SELECT keyword_name FROM duckdb_keywords()
                              WHERE keyword_category IN ('reserved', 'type_function')""").fetchall()
        _KEYWORDS.update(r[0].upper() for r in rows)
        _KEYWORDS.update(("SAMPLE", "PIVOT", "UNPIVOT"))
    return _KEYWORDS


def _code_spans(sql: str) -> Iterator[tuple[int, int, bool]]:
    """Split SQL into (start, end, is_code) spans, leaving strings, quoted names and comments alone."""
    i, start, n = 0, 0, len(sql)
    while i < n:
        c = sql[i]
        end = None
        if c in "'\"":
            end = sql.find(c, i + 1)
            while end != -1 and end + 1 < n and sql[end + 1] == c:  # doubled quote escape
                end = sql.find(c, end + 2)
        elif sql.startswith("--", i):
            end = sql.find("\n", i)
        elif sql.startswith("/*", i):
            end = sql.find("*/", i)
            end = end + 1 if end != -1 else -1
        if end is None:
            i += 1
            continue
        end = n - 1 if end == -1 else end
        if i > start:
            yield start, i, True
        yield i, end + 1, False
        i = start = end + 1
    if start < n:
        yield start, n, True
