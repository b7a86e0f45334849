"""The field types recipe configs are written with: what pydantic checks beyond a plain type, with the message
and fix of each check (vlfactory.recipe.load turns them into one line with the key path)."""

from __future__ import annotations

import dataclasses
import re
from typing import Annotated, Any, Literal, NoReturn, TypeVar

from pydantic import AfterValidator, BeforeValidator, Field
from pydantic.json_schema import SkipJsonSchema
from pydantic_core import PydanticCustomError

from vlfactory.backends import Sampling

# Names that become file and folder names (recipe copies, tracking folders, tags, synthetic copies): no
# separators, no leading dot or dash, nothing a shell or SQL would read as code (issue 18).
SLUG = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,99}")
MAX_TOKENS = 2**20        # new tokens per request: more than any model's context
FORBID = {"extra": "forbid"}  # pydantic's config of every recipe block (a dict is a ConfigDict): unknown keys fail


def slug(text: str, default: str = "") -> str:
    """`text` made a SLUG, runs of other characters a '-': a recipe's default name from its file's name, a name an
    older lake stored as part of a file name."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", text).lstrip("-_.").rstrip("-")[:100] or default


def fail(message: str, at: str = "") -> NoReturn:
    """A recipe error found while validating: pydantic adds the key path; `at` continues it (a field of the value)."""
    raise PydanticCustomError("recipe", "{message}", {"message": message, "at": at})


def _slug(name: str) -> str:
    if not SLUG.fullmatch(name):
        fail(f"{name!r} cannot name a file: use letters, digits, '_', '-' and '.', starting with a letter or digit "
             "(at most 100)")
    return name


def _internal(value: Any) -> Any:
    if not dataclasses.is_dataclass(value):  # YAML makes no dataclass: the key came from a recipe
        raise PydanticCustomError("unexpected_keyword_argument", "unknown key")
    return value


T = TypeVar("T")
Slug = Annotated[str, AfterValidator(_slug), Field(json_schema_extra={"pattern": f"^{SLUG.pattern}$"})]
# Set by the code (Recipe.stage_config, the loader), never by a recipe: not in the schema, refused as a key.
Internal = Annotated[T, SkipJsonSchema(), BeforeValidator(_internal)]
AtLeast1 = Annotated[int, Field(ge=1)]


def _sampling(s: Sampling) -> Sampling:
    for ok, key, message in [(s.n >= 1, "n", "must be at least 1"),
                             (1 <= s.max_tokens <= MAX_TOKENS, "max_tokens",
                              f"must be 1 to {MAX_TOKENS:,} (new tokens per answer)"),
                             (s.temperature >= 0, "temperature", "must be >= 0"),
                             (0 < s.top_p <= 1, "top_p", "must be in (0, 1]")]:
        if not ok:
            fail(message, key)
    return s


def _band(lo_hi: list[float]) -> list[float]:
    if len(lo_hi) != 2 or not 0 <= lo_hi[0] <= lo_hi[1] <= 1:
        fail(f"{lo_hi} must be [lo, hi] with 0 <= lo <= hi <= 1")
    return lo_hi


Decoding = Annotated[Sampling, AfterValidator(_sampling)]  # the backends' Sampling, within bounds
Band = Annotated[list[float], AfterValidator(_band)]       # pass rates [lo, hi]
Pick = Literal["shortest", "random", "all"]  # which correct sample a set keeps
