"""Column mapping: a source row onto the schema (question, answer, choices, caption, image, id, split,
completion), with a reason for every row that cannot be mapped (`Reject`).

A schema column comes from a source column of the same name, a named column, a "{template}", or a
`Column` mapping whose rules (`read_column`) reach into what the Hub's schemas hold: an element of a
list, an option's text from its index, the text inside answer tags, one gold from annotators'
answers, a chat turn, a joined string split, literal markers removed. Preflight (`check_columns`)
runs those rules on the first row and fails on a missing column or a wrong type before anything is
written; a later row whose value breaks a rule is rejected with the reason.
"""

from __future__ import annotations

import json
import math
import re
import string
from collections import Counter
from dataclasses import dataclass
from typing import Any

from vlfactory.recipe import Column, IngestConfig, RecipeError, Source
from vlfactory.sources.readers import kind, read_source


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
    completion: str | None = None     # a finished chain the source carries (a `traces` row)


class Reject(Exception):
    def __init__(self, reason: str, detail: str):
        super().__init__(detail)
        self.reason, self.detail = reason, detail


class WrongType(Reject):
    """A column holds another type than a rule reads: a recipe error at preflight, a rejected row later."""

    def __init__(self, path: str, message: str):
        super().__init__("wrong_type", f"{path}: {message}")
        self.path, self.message = path, message


# ---- Column rules -------------------------------------------------------------


def read_column(col: Column, raw: dict, key: str) -> Any:
    """The value of schema column `key` from a raw row, through the Column's rules in order
    (turn, index, pick, option_of, tag, split, strip). None when the source value is null.

    >>> read_column(Column("solution", tag="answer"), {"solution": "<answer> 3 </answer>"}, "answer")
    '3'
    >>> read_column(Column("answer", option_of="options"), {"answer": "1", "options": ["No", "Yes"]}, "answer")
    'Yes'
    >>> read_column(Column("answers", pick="most_common"), {"answers": ["no", "Yes", "yes."]}, "answer")
    'Yes'
    >>> read_column(Column("choices", split=","), {"choices": "2, 3,4"}, "choices")
    ['2', '3', '4']
    """
    at = f"columns.{key}"
    if col.column not in raw:
        raise Reject("unmappable_column", f"{at}.column: column {col.column!r} missing from this row")
    value = raw[col.column]
    if value is not None and col.turn is not None:
        value = _turn(value, col, f"{at}.turn")
    if value is not None and col.index is not None:
        if not isinstance(value, (list, tuple)):
            raise WrongType(f"{at}.index", f"column {col.column!r} is {kind(value)}, not a list")
        if not -len(value) <= col.index < len(value):
            raise Reject("index_out_of_range", f"{at}.index: {col.column!r} has {len(value)} element"
                         f"{'' if len(value) == 1 else 's'}, no index {col.index}")
        value = value[col.index]
    if value is not None and col.pick is not None:
        value = _most_common(value, col.column, f"{at}.pick")
    if value is not None and col.option_of is not None:
        value = _option(value, raw, col, f"{at}.option_of")
    if value is not None and col.tag is not None:
        value = _tagged(value, col, f"{at}.tag")
    if value is not None and col.split is not None:
        if not isinstance(value, str):
            raise WrongType(f"{at}.split", f"column {col.column!r} is {kind(value)}, not a string to split")
        value = [item.strip() for item in value.split(col.split)] if value.strip() else None
    if value is not None and col.strip:
        if not isinstance(value, str):
            raise WrongType(f"{at}.strip", f"column {col.column!r} is {kind(value)}, not a string")
        for marker in col.strip:
            value = value.replace(marker, "")
        value = value.strip()
    return value


def _turn(value: Any, col: Column, at: str) -> Any:
    """The content of the chat's one turn with role `col.turn`: turns as {role, content} (OpenAI,
    LLaMA-Factory's sharegpt) or {from, value} (ShareGPT, LLaVA); a content of parts joins its texts."""
    if not isinstance(value, (list, tuple)) or not all(isinstance(t, dict) for t in value):
        raise WrongType(at, f"column {col.column!r} is {kind(value)}, not a list of chat turns "
                            "({role, content} or {from, value})")
    found = [t for t in value if t.get("role", t.get("from")) == col.turn]
    if len(found) != 1:
        roles = ", ".join(str(t.get("role", t.get("from"))) for t in value)
        raise Reject("no_turn" if not found else "ambiguous_turn",
                     f"{at}: {len(found)} turns with role {col.turn!r} (roles: {roles}); turn: reads a chat with one")
    content = found[0].get("content", found[0].get("value"))
    if isinstance(content, list):  # [{"type": "image"}, {"type": "text", "text": ...}]
        content = "".join(p.get("text") or "" for p in content if isinstance(p, dict) and p.get("type") == "text")
    return content


_LIGHT = re.compile(r"^[\s.,!?;:'\"]+|[\s.,!?;:'\"]+$")


def _most_common(value: Any, column: str, at: str) -> str:
    """The most common answer of a list, compared after light normalisation (case, surrounding
    spaces and punctuation, runs of spaces); a tie goes to the answer given first, and the gold is
    that answer's first spelling. This is the consensus answer of the VQA convention (Antol et al.
    2015, "VQA: Visual Question Answering": an answer scores min(#annotators who gave it / 3, 1); VizWiz
    and lmms-eval's lmms_eval/tasks/vizwiz_vqa/utils.py @75571cf score so), under which the most common
    answer scores highest. The full EvalAI normalisation (number words, articles, contractions) is not
    applied: "two" and "2" stay two answers."""
    if not isinstance(value, (list, tuple)):
        raise WrongType(at, f"column {column!r} is {kind(value)}, not a list of answers")
    spelled: dict[str, str] = {}
    counts: Counter = Counter()
    for answer in value:
        if answer is None or isinstance(answer, (list, dict)):
            continue
        text = " ".join(str(answer).split())
        norm = _LIGHT.sub("", text).lower()
        if norm:
            spelled.setdefault(norm, _LIGHT.sub("", text))
            counts[norm] += 1
    if not counts:
        raise Reject("empty_list", f"{at}: {column!r} holds no answer")
    best = max(counts.values())
    return spelled[next(n for n in spelled if counts[n] == best)]  # dicts keep first-occurrence order


def _option(value: Any, raw: dict, col: Column, at: str) -> str:
    """The text of the option `value` points at: an int, a digit string, or a letter (A = 0)."""
    if col.option_of not in raw:
        raise Reject("unmappable_column", f"{at}: column {col.option_of!r} missing from this row")
    options = raw[col.option_of]
    if options is not None and not isinstance(options, (list, tuple)):
        raise WrongType(at, f"column {col.option_of!r} is {kind(options)}, not a list of options")
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise WrongType(at, f"column {col.column!r} is {kind(value)}, not an option index (an int or a digit string)")
    text = str(value).strip()
    if re.fullmatch(r"-?\d+", text):
        index = int(text)
    elif re.fullmatch(r"[A-Za-z]", text):
        index = ord(text.upper()) - ord("A")
    else:
        raise Reject("bad_option_index", f"{at}: {text[:40]!r} is not an option index (0, 1, ... or A, B, ...)")
    if not options or not 0 <= index < len(options):
        n = len(options or [])
        raise Reject("option_out_of_range", f"{at}: index {text!r} but {col.option_of!r} has {n} option"
                                            f"{'' if n == 1 else 's'}")
    return options[index]


def _tagged(value: Any, col: Column, at: str) -> str:
    """The text inside the last <tag> ... </tag> (case aside), stripped."""
    if not isinstance(value, str):
        raise WrongType(at, f"column {col.column!r} is {kind(value)}, not a string")
    found = re.findall(rf"<{col.tag}>(.*?)</{col.tag}>", value, flags=re.S | re.I)
    if not found:
        raise Reject("no_tag", f"{at}: no <{col.tag}> ... </{col.tag}> in {_printable(value[:60])!r}")
    return found[-1].strip()


# ---- mapping rows onto the schema -------------------------------------------


def column_map(src: Source) -> dict[str, Column | str | None]:
    """The schema column -> source column mapping, defaults filled in (same name)."""
    mapping: dict[str, Column | str | None] = {k: k for k in ("question", "answer", "image", "choices", "caption",
                                                              "id")}
    mapping.update(src.columns)
    return mapping


def _fields(template: str) -> list[str]:
    return [f for _, f, _, _ in string.Formatter().parse(template) if f]


def check_columns(src: Source, first: dict) -> None:
    """Fail before any write when the mapping names a column the data lacks, or a Column rule meets
    a value of the wrong type in the first row (a null value is checked on the rows that hold one)."""
    if "_bad" in first:  # an unreadable row says nothing about the columns; it is rejected on its own
        return
    cols = ", ".join(k for k in first if not k.startswith("_"))

    def need(name: str, at: str) -> None:
        if name not in first:
            raise RecipeError(f"source {src.name}: {at}: {name!r} is not a column of the data "
                              f"(columns: {cols}); map it under `columns:`")

    for key, col in column_map(src).items():
        if col is None or (key not in src.columns and key not in ("question", "answer")):
            continue  # optional columns that merely default to their own name
        if isinstance(col, Column):
            need(col.column, f"columns.{key}.column")
            if col.option_of:
                need(col.option_of, f"columns.{key}.option_of")
            try:
                read_column(col, first, key)
            except WrongType as e:
                raise RecipeError(f"source {src.name}: {e.path}: {e.message}") from None
            except Reject:
                pass  # a value that breaks a rule is this row's problem, not the mapping's
            continue
        for name in (_fields(col) if "{" in col else [col]):
            need(name, f"columns.{key}")


def preflight(recipe: IngestConfig) -> None:
    """Read each source's first row and check the mapping, before anything is written."""
    for src in recipe.sources + recipe.benchmarks:
        rows = read_source(src)
        first = next((row for row, _ in zip(rows, range(1000)) if "_bad" not in row), None)
        if first is not None:
            check_columns(src, first)


def map_row(src: Source, mapping: dict[str, Column | str | None], raw: dict, index: int) -> Row:
    if "_bad" in raw:
        raise Reject(raw.get("_reason", "bad_row"), raw["_bad"])

    def get(key: str) -> Any:
        col = mapping.get(key)
        if col is None:
            return None
        if isinstance(col, Column):
            return read_column(col, raw, key)
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
        if len(choices) > 26:  # options are lettered A-Z in prompts, answers and grading
            raise Reject("bad_choices", f"{len(choices)} choices; at most 26 can be lettered A-Z")
    caption = _text(get("caption"), "caption", scalar=True)
    split = _text(get("split"), "split", scalar=True) if "split" in mapping else None
    completion = None
    if "completion" in mapping:
        completion = _text(get("completion"), "completion")
        if completion is None or not completion.strip():
            raise Reject("missing_completion", "the completion is missing or empty")
    return Row(source_id=source_id, question=question.strip(), answer=answer, choices=choices or None,
               caption=caption, split=split if split is not None else src.split, image=get("image"), raw=raw,
               completion=completion)


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


def _source_ref(source: str, mapping: dict[str, Column | str | None], raw: dict, index: int) -> str:
    """SOURCE:ID of a row that could not be mapped: its id column when it has one, else its key or position."""
    col = mapping.get("id")
    col = col.column if isinstance(col, Column) else col
    value = raw.get(col) if col and "{" not in col else None
    return _printable(f"{source}:{raw.get('_key', index) if value is None else value}")


def _printable(text: str) -> str:
    """Text that stores and prints: a lone surrogate becomes its escape (\\udc80)."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


# ---- images -------------------------------------------------------------------
