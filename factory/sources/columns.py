"""Column mapping: a source row onto the schema (question, answer, choices, caption, image, id, split),
with a reason for every row that cannot be mapped (`Reject`)."""

from __future__ import annotations

import json
import math
import string
from dataclasses import dataclass
from typing import Any

from vlfactory.recipe import IngestConfig, RecipeError, Source
from vlfactory.sources.readers import read_source


@dataclass


class Row:
    """A source row mapped onto the schema, before its image is checked."""

    source_id: str
    question: str | None
    answer: str | None
    choices: list[str] | None
    caption: str | None
    split: str
    image: Any                        # bytes, path, HF image dict, or None
    raw: dict


class Reject(Exception):
    def __init__(self, reason: str, detail: str):
        super().__init__(detail)
        self.reason, self.detail = reason, detail


# ---- mapping rows onto the schema -------------------------------------------


def column_map(src: Source) -> dict[str, str | None]:
    """The schema column -> source column mapping, defaults filled in (same name)."""
    mapping: dict[str, str | None] = {k: k for k in ("question", "answer", "image", "choices", "caption", "id")}
    mapping.update(src.columns)
    return mapping


def _fields(template: str) -> list[str]:
    return [f for _, f, _, _ in string.Formatter().parse(template) if f]


def check_columns(src: Source, first: dict) -> None:
    """Fail before any write when the mapping names a column the data lacks."""
    if "_bad" in first:  # an unreadable row says nothing about the columns; it is rejected on its own
        return
    mapping = column_map(src)
    for key, col in mapping.items():
        if col is None or (key not in src.columns and key not in ("question", "answer")):
            continue  # optional columns that merely default to their own name
        for name in (_fields(col) if "{" in col else [col]):
            if name not in first:
                cols = ", ".join(k for k in first if not k.startswith("_"))
                raise RecipeError(f"source {src.name}: columns.{key}: {name!r} is not a column of the data "
                                  f"(columns: {cols}); map it under `columns:`")


def preflight(recipe: IngestConfig) -> None:
    """Read each source's first row and check the mapping, before anything is written."""
    for src in recipe.sources + recipe.benchmarks:
        rows = read_source(src)
        first = next((row for row, _ in zip(rows, range(1000)) if "_bad" not in row), None)
        if first is not None:
            check_columns(src, first)


def map_row(src: Source, mapping: dict[str, str | None], raw: dict, index: int) -> Row:
    if "_bad" in raw:
        raise Reject("bad_row", raw["_bad"])

    def get(key: str) -> Any:
        col = mapping.get(key)
        if col is None:
            return None
        if "{" in col:
            try:
                return col.format_map(raw)
            except (KeyError, IndexError, ValueError, TypeError, AttributeError) as e:
                raise Reject("unmappable_column", f"columns.{key}: template {col!r} needs {e} which this row lacks")
        if col not in raw:
            if key in src.columns:
                raise Reject("unmappable_column", f"columns.{key}: column {col!r} missing from this row")
            return None  # an optional column left at its default name
        return raw[col]

    source_id = _text(get("id"), "id", scalar=True)
    if source_id is None:
        source_id = _text(raw.get("_key", index), "id", scalar=True)
    question = _text(get("question"), "question", scalar=True, missing="empty_question")
    if question is None or not question.strip():
        raise Reject("empty_question", "the question is missing or empty")
    answer = _answer(get("answer"))
    choices = get("choices")
    if isinstance(choices, (bytes, str)):
        text = _text(choices, "choices")
        try:
            choices = json.loads(text)
        except (json.JSONDecodeError, RecursionError):
            raise Reject("bad_choices", f"choices is a string that is not a JSON list: {_printable(text[:80])!r}")
    if choices is not None:
        if not isinstance(choices, (list, tuple)):
            raise Reject("bad_choices", f"choices must be a list, got {type(choices).__name__}")
        choices = [_text(c, "choices", scalar=True, missing="bad_choices") for c in choices]
        if None in choices:
            raise Reject("bad_choices", "choices holds an empty (null) option")
    caption = _text(get("caption"), "caption", scalar=True)
    split = _text(get("split"), "split", scalar=True) if "split" in mapping else None
    return Row(source_id=source_id, question=question.strip(), answer=answer, choices=choices or None,
               caption=caption, split=split if split is not None else src.split, image=get("image"), raw=raw)


def _text(value: Any, what: str, scalar: bool = False, missing: str | None = None) -> str | None:
    """A text field as a str that stores: bytes must be UTF-8; a str must hold no lone surrogate (a JSON
    `\\ud800`, or a byte of the file that was not UTF-8); numbers become their text when `scalar`, a NaN is
    a missing value (rejected as `missing` when that is given), an infinity is rejected."""
    if isinstance(value, (bytes, bytearray, memoryview)):
        try:
            value = bytes(value).decode("utf-8")
        except UnicodeDecodeError as e:
            raise Reject("invalid_text", f"{what} is not UTF-8 text (byte {e.start}: {bytes(value)[e.start:e.start + 1]!r})")
    if isinstance(value, float) and scalar:
        if math.isnan(value):
            if missing:
                raise Reject(missing, f"{what} is NaN (a missing value)")
            return None
        if math.isinf(value):
            raise Reject(f"bad_{what}", f"{what} is {value}, not a value")
    if value is None or isinstance(value, str):
        pass
    elif scalar and isinstance(value, (int, float)):  # bool is an int: True -> "True"
        value = str(value)
    else:
        raise Reject(f"bad_{what}", f"{what} must be text, got {type(value).__name__}: {_printable(str(value)[:80])}")
    if value is not None:
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as e:
            raise Reject("invalid_text", f"{what} is not valid text: {value[e.start]!r} at {e.start} is a lone "
                                         "surrogate (an escape in the JSON, or a byte that was not UTF-8)")
    return value


def _answer(value: Any) -> str:
    """The gold answer as text: a string, a number (not NaN or infinite), or a list/mapping of them as JSON."""
    if isinstance(value, (list, tuple, dict)):
        if not value:
            raise Reject("missing_answer", "the answer is missing or empty")
        try:
            value = json.dumps(value, allow_nan=False)
        except ValueError:
            raise Reject("bad_answer", "the answer holds NaN or an infinity")
        except TypeError as e:
            raise Reject("bad_answer", f"the answer is not JSON-like: {e}")
    answer = _text(value, "answer", scalar=True, missing="missing_answer")
    if answer is None or not answer.strip():
        raise Reject("missing_answer", "the answer is missing or empty")
    return answer.strip()


def _source_ref(source: str, mapping: dict[str, str | None], raw: dict, index: int) -> str:
    """SOURCE:ID of a row that could not be mapped: its id column when it has one, else its key or position."""
    col = mapping.get("id")
    value = raw.get(col) if col and "{" not in col else None
    return _printable(f"{source}:{raw.get('_key', index) if value is None else value}")


def _printable(text: str) -> str:
    """Text that stores and prints: a lone surrogate becomes its escape (\\udc80)."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


# ---- images -------------------------------------------------------------------
