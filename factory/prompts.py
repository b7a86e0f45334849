"""Prompt templates: text files referenced by name from recipes.

`caption`, `reason` and `rollout` ship with the package (recipes/prompts/);
a recipe may name any other file by path. A template's hash is stored with
every row it produced, and is part of every request's cache key, so editing
a template regenerates exactly what it affects.

Fields: `{caption}`, `{question}`, and a problem's choices two ways, each
empty for a problem without choices: `{choices}` lists them lettered
("(A) 3"), `{options}` lists their texts and asks for one as written, for
graders that pay an option's text and not its letter (the official
OpenVLThinker generation grader and GRPO reward; recipes/prompts/README.md).

    from vlfactory.prompts import load_template
    t = load_template("reason")
    print(t.hash, t.render(caption="...", question="What is x?", choices=None))
"""

from __future__ import annotations

import hashlib
import string
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from vlfactory.recipe import RecipeError, shipped_recipes

LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"


@dataclass(frozen=True)
class Template:
    name: str
    text: str

    @cached_property  # once per template, not once per rendered prompt (a million per large stage)
    def hash(self) -> str:
        return hashlib.sha256(self.text.encode()).hexdigest()[:16]

    @cached_property
    def fields(self) -> set[str]:
        return {f for _, f, _, _ in string.Formatter().parse(self.text) if f}

    def render(self, **values) -> str:
        choices = values.get("choices")
        if "choices" in self.fields:
            values["choices"] = format_choices(choices) if choices else ""
        if "options" in self.fields:
            values["options"] = format_options(choices) if choices else ""
        return self.text.format_map(values).strip()


def format_choices(choices: list[str]) -> str:
    return "\nChoices:\n" + "\n".join(f"({LETTERS[i]}) {c}" for i, c in enumerate(choices))


def format_options(choices: list[str]) -> str:
    """The choices by their texts alone, and the request to answer with one of them as written.

    >>> print("Which is larger?" + format_options(["3", "5"]))
    Which is larger?
    Options:
    - 3
    - 5
    Answer with the text of one option, exactly as written.
    """
    listed = "\n".join(f"- {c}" for c in choices)
    return f"\nOptions:\n{listed}\nAnswer with the text of one option, exactly as written."


FIELDS = frozenset({"caption", "question", "choices", "options"})


def load_template(ref: str, base: Path | None = None, needs: set[str] = frozenset(),
                  fields: frozenset[str] = FIELDS) -> Template:
    """A shipped template by name, or a file path (relative to `base`, the recipe's folder), using
    only `fields` (an LLM judge's template has its own)."""
    shipped = shipped_recipes() / "prompts" / f"{ref}.txt"
    path = Path(ref).expanduser()
    if not path.is_absolute() and base is not None:
        path = base / path
    if shipped.is_file() and not path.is_file():
        path = shipped
    if not path.is_file():
        names = sorted(p.stem for p in (shipped_recipes() / "prompts").glob("*.txt"))
        raise RecipeError(f"prompt: {ref!r} is neither a shipped template ({', '.join(names)}) nor a file")
    template = Template(ref, path.read_text())
    missing = needs - template.fields
    if missing:
        raise RecipeError(f"prompt: template {ref!r} lacks the field(s) {{{', '.join(sorted(missing))}}}")
    unknown = template.fields - fields
    if unknown:
        raise RecipeError(f"prompt: template {ref!r} uses unknown field(s) {sorted(unknown)}; "
                          f"available: {', '.join('{' + f + '}' for f in sorted(fields))}")
    return template
