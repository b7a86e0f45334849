"""A recipe's sources: one dataset each, its columns mapped onto the factory's schema (`sources:`, `benchmarks:`)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Annotated, Literal, get_args

from pydantic import AfterValidator, BeforeValidator, Field, with_config
from typing_extensions import TypedDict  # pydantic reads typing's only from Python 3.12

from vlfactory.recipe.fields import FORBID, AtLeast1, Slug, fail

Format = Literal["hf", "parquet", "jsonl", "json", "imagefolder", "synthetic"]
FORMATS = get_args(Format)
PICKS = ("most_common",)          # columns.KEY.pick: how one gold is chosen from a list of answers
MAX_IMAGE_BYTES = 64 * 2**20


@dataclass
class Column:
    """A schema column read from one source column through rules (`columns.KEY` written as a mapping).

    A plain string stays what it was: a column name or a "{template}". The rules apply in this order,
    each to what the one before gave (vlfactory.sources.columns.read_column):

        question: {column: messages, turn: user}       # the content of a chat's one turn of that role
        image: {column: images, index: 0}              # an element of a list (negative counts from the end)
        answer: {column: answers, pick: most_common}   # one gold from a list of annotators' answers
        answer: {column: answer, option_of: options}   # an option's index (0, "0", or a letter "A") -> its text
        answer: {column: solution, tag: answer}        # the text inside the last <answer> ... </answer>
        choices: {column: choices, split: ","}         # a joined string -> a list, items stripped
        question: {column: problem, strip: "<image>"}  # literal markers removed (one, or a list)

    A column missing from the data, or holding the wrong type for a rule, fails at preflight naming
    the key path (columns.answer.option_of); a row whose value breaks a rule (an index out of range,
    an empty list, no tag) is a `rejected` row with the reason.
    """

    __pydantic_config__ = FORBID
    column: str
    turn: str | None = None
    index: int | None = None
    pick: Literal[PICKS] | None = None
    option_of: str | None = None
    tag: str | None = None
    split: str | None = None
    strip: Annotated[list[str] | None, BeforeValidator(lambda v: [v] if isinstance(v, str) else v,
                                                       json_schema_input_type=str | list[str] | None)] = None


def _column(col: Column, key: str) -> None:
    """A Column mapping's rules fit the schema column they fill (the data is checked at preflight)."""
    for ok, message in [
        (bool(col.column), ".column: name the source column to read"),
        (col.tag is None or re.fullmatch(r"[A-Za-z][\w-]*", col.tag) is not None,
         f".tag: {col.tag!r} is not a tag name (answer, for <answer> ... </answer>)"),
        (col.split is None or col.split != "", ".split: the separator is empty"),
        (col.split is None or key == "choices", ".split: makes a list, which only choices holds"),
        (col.turn is None or col.turn != "", ".turn: name the role (user, assistant, human, gpt)"),
        (not (col.pick and col.index is not None), ": pick and index both choose one element of a list; keep one"),
        (key != "image" or not (col.option_of or col.tag or col.split or col.strip or col.pick),
         ": only column, turn and index apply to an image"),
        (all(col.strip or [True]), ".strip: an empty marker removes nothing; list the literal text to remove"),
    ]:
        if not ok:
            at, _, why = message.partition(": ")
            fail(why, key + at)


def _template(template: str, key: str) -> None:
    """A column template names source columns only: `"tables/{id}.png"`, `"{a} {b}"`."""
    import string

    try:
        fields = [f for _, f, _, _ in string.Formatter().parse(template) if f is not None]
    except ValueError as e:
        fail(f"{template!r} is not a valid template ({e}); write a column as {{name}} and a literal brace as "
             "{{{{ or }}}}", key)
    for name in fields:
        # {0}, {} or {a.b}/{a[0]} would reach into positional arguments or attributes, not columns.
        if not name or name.isdigit() or any(c in name for c in ".[]"):
            fail(f"{template!r}: {{{name}}} is not a column name; name a column, e.g. \"tables/{{id}}.png\"", key)


def _columns(columns: dict) -> dict:
    for key, col in columns.items():
        if isinstance(col, Column):
            _column(col, key)
        elif col and ("{" in col or "}" in col):
            _template(col, key)
    return columns


@with_config(FORBID)
class Columns(TypedDict, total=False):
    """The schema columns a source maps (`columns:`): each a source column, a "{template}", or a Column mapping."""

    question: Column | str | None
    answer: Column | str | None
    image: Column | str | None
    choices: Column | str | None
    caption: Column | str | None
    id: Column | str | None
    split: Column | str | None
    completion: Column | str | None


COLUMN_KEYS = tuple(Columns.__annotations__)


@dataclass
class Source:
    """One dataset mapped onto the factory's schema."""

    __pydantic_config__ = FORBID
    name: Slug
    format: Format
    path: str | None = None           # file, folder, glob, or `datasets` path (hf)
    # schema column -> a source column, a "{template}", or a Column mapping ({column: images, index: 0})
    columns: Annotated[Columns, AfterValidator(_columns)] = field(default_factory=dict)
    # Row-level rules, applied as rows are read, before `limit`: `explode: qa` makes one row per element of
    # the list-of-objects column `qa` (its keys become columns), then `where: {ques_type: [choose_txt]}`
    # keeps the rows whose value is listed and `where_not: {source: [ai2d]}` drops those whose value is
    # (the others are not part of the source, as another split is not).
    explode: Annotated[str, Field(min_length=1)] | None = field(
        default=None, metadata={"fix": "name the list column whose elements become rows (e.g. explode: qa)"})
    where: dict[str, Annotated[list[str | int | bool], Field(min_length=1)]] = field(
        default_factory=dict, metadata={"fix": "an empty list keeps no row; list the values to keep"})
    where_not: dict[str, Annotated[list[str | int | bool], Field(min_length=1)]] = field(
        default_factory=dict, metadata={"fix": "an empty list drops no row; list the values to drop"})
    # A source with a `completion` column carries finished chains: each row is also a `traces` row written
    # by this identity (default: vlfactory.sources.readers.source_identity: a hub id and revision, or a local
    # copy's content digest), graded and picked like distilled ones.
    model: str | None = None
    images_root: str | None = None    # base for relative image paths (default: the data file's folder)
    split: str = "train"              # stored split; for hf also the split loaded
    limit: Annotated[int, Field(ge=0)] | None = None  # read at most this many rows
    # hf only
    subset: str | None = None         # the `name` argument of load_dataset
    data_dir: str | None = None
    data_files: str | list[str] | None = None
    revision: str | None = None
    # synthetic only
    n: AtLeast1 = 200
    seed: int = 0
    kinds: list[str] | None = None
    license: str | None = None        # carried to dataset cards


def _source(src: Source) -> Source:
    if src.format != "synthetic" and not src.path:
        fail(f"missing (the {src.format} data to read)", "path")
    return src
