"""Reading a recipe: a YAML file in, a checked vlfactory.recipe.Recipe out, or one line saying what and where.

    from vlfactory.recipe import load_recipe, schema
    recipe = load_recipe("quickstart")        # a shipped recipe by name, or a path
    vlfactory recipe schema > recipe.schema.json

In order, each step with its one-line error: the file (a regular file of at most MAX_RECIPE_BYTES, UTF-8, YAML
without a key given twice); `extends:` merged; no key that looks like a secret (vlfactory.redact); the shape
and values, checked by pydantic against vlfactory.recipe's annotations; then what one value cannot tell:
relative paths resolved against the recipe's folder and the files they name, and names that refer to other
parts of the recipe (a benchmark the loop evaluates, the source a GRPO stage trains on).
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import json
import operator
import re
import types
import typing
from pathlib import Path
from typing import Annotated, Any, Literal, get_args, get_origin

import yaml
from typing_extensions import is_typeddict  # typing's misses typing_extensions.TypedDict before Python 3.12

from vlfactory.recipe import (
    MAX_RECIPE_BYTES,
    Columns,
    EvalSettings,
    Generator,
    LoopConfig,
    Recipe,
    RecipeError,
    Source,
    slug,
)
from vlfactory.redact import find_secret, redact


def shipped_recipes() -> Path:
    import vlfactory.recipes

    return Path(vlfactory.recipes.__file__).parent


def find_recipe(ref: str | Path) -> Path:
    """A recipe path, or the name of a recipe shipped with the package."""
    path = Path(ref)
    if path.exists():
        return path
    for candidate in (shipped_recipes() / f"{ref}.yaml", shipped_recipes() / str(ref)):
        if candidate.is_file():
            return candidate
    raise RecipeError(f"recipe not found: {ref} (a YAML file path, or one of: "
                      f"{', '.join(sorted(p.stem for p in shipped_recipes().glob('*.yaml')))})")


def load_recipe(ref: str | Path) -> Recipe:
    path = find_recipe(ref)
    text, raw = _read_yaml(path)
    if isinstance(raw, dict) and "extends" in raw:
        raw = _extended(raw, path, [path.resolve()])
        # The stored and published text is the whole recipe this run used, not just its overrides.
        text = (f"# {path.name}: {text.splitlines()[0].lstrip('# ') if text.startswith('#') else 'a recipe'}\n"
                f"# resolved: the recipes it extends merged with its own keys\n"
                + yaml.safe_dump(raw, sort_keys=False, allow_unicode=True, width=120))
    # resolve(): in a strict editable install a shipped recipe is a symlink into the tree; its
    # relative paths are relative to the real file.
    return parse_recipe(raw, text=text, base=path.resolve().parent, path=str(path))


def parse_recipe(raw: Any, *, text: str = "", base: Path | None = None, path: str | None = None) -> Recipe:
    where = path or "recipe"
    if not isinstance(raw, dict):
        raise RecipeError(f"{where}: a recipe is a YAML mapping with at least `sources:`")
    _no_secrets(raw, where)
    # A name taken from the file's own name is made a slug; a `name:` the recipe gives must be one.
    ok, recipe = adapter(Recipe, {"name": slug(Path(path).stem if path else "", "recipe"), **raw})
    if not ok:
        message, at = problem(recipe)
        raise RecipeError(f"{where}: {at}: {message}" if at else f"{where}: {message}")
    # The text is stored in the catalog and published: credentials inside values (a URL's
    # user:password@, password= in a lake URI) are masked there; the parsed values keep them.
    recipe.text, recipe.path = redact(text), path
    _resolve(recipe, base or Path.cwd(), where)
    return recipe


# ---- the shape and values: pydantic, and its errors as one line ----------------------------------------------

@functools.cache
def _adapter(cls: type):
    from pydantic import TypeAdapter

    return TypeAdapter(cls)


def adapter(cls: type, raw: Any) -> tuple[bool, Any]:
    """(True, `raw` as a `cls`), or (False, what problem() reads). Strict, as JSON: a YAML string is no number,
    a number no bool; the data goes through JSON (a YAML date becomes its text, a key its string)."""
    from pydantic import ValidationError

    try:
        return True, _adapter(cls).validate_json(json.dumps(raw, default=str), strict=True)
    except ValidationError as e:
        return False, (cls, e.errors())
    except (TypeError, ValueError) as e:  # json: a mapping key YAML made a list or a mapping
        return False, (cls, [{"type": "recipe", "loc": (), "ctx": {"message": f"not plain YAML data ({e})"}}])


UNKNOWN = ("unexpected_keyword_argument", "extra_forbidden")  # a dataclass's, a TypedDict's
NAMES = {"string_type": "str", "int_type": "int", "int_from_float": "int", "float_type": "float",
         "bool_type": "bool", "list_type": "a list", "tuple_type": "a list", "dict_type": "a mapping",
         "dataclass_type": "a mapping", "literal_error": "one of its values"}


def problem(failed: tuple[type, list[dict]]) -> tuple[str, str]:
    """(what is wrong and the fix, the key path) of a failed validation: the deepest error (of the alternatives
    pydantic tried for a value, the one that fit best), the expected types of a value that fits none."""
    root, errors = failed
    walked = [(*_walk(root, e["loc"], (e.get("ctx") or {}).get("at", "")), e) for e in errors]
    # a key that is not known before the key it misspells, which is then missing
    path, owner, fld, err = max(walked, key=lambda w: (len(w[0]), w[3]["type"] in UNKNOWN))
    kind, ctx, got = err["type"], err.get("ctx") or {}, redact(repr(err.get("input")))[:80]
    alike = [w[3]["type"] for w in walked if w[0] == path and w[3]["type"] in NAMES]
    if kind == "recipe":
        return ctx["message"], _dotted(path)
    if kind in UNKNOWN:
        known = ctx.get("known") or known_keys(owner)
        close = difflib.get_close_matches(str(path[-1]), known, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        if owner is Columns:
            return f"unknown schema column{hint} (map any of {', '.join(known)})", _dotted(path)
        return f"unknown key{hint}; known keys: {', '.join(known)}", _dotted(path)
    if kind == "literal_error" and len(alike) == 1:
        options = re.findall(r"'([^']*)'", ctx["expected"])  # "'a', 'b' or 'c'"
        message = f"{err['input']!r} is not one of {', '.join(options)}"
    elif kind in NAMES:
        names = list(dict.fromkeys(NAMES[k] for k in alike))
        expected = names[0] if len(names) == 1 else f"{', '.join(names[:-1])} or {names[-1]}"
        message = f"expected {expected}, got {got}"
    elif kind == "missing":
        message = f"missing (required for {getattr(owner, '__name__', 'this block').lower()})"
    elif kind in ("greater_than_equal", "greater_than", "less_than_equal"):
        bound = ctx.get("ge", ctx.get("gt", ctx.get("le")))
        message = {"greater_than": f"must be > {bound}", "less_than_equal": f"must be at most {bound}"}.get(
            kind, f"must be at least {bound}" if bound >= 1 else f"must be >= {bound}")
    elif kind == "too_short":
        message = "must not be empty"
    else:
        message = err["msg"]
    # the field's fix, for a wrong value of the right type (a type error says what it expected)
    fix = fld.metadata.get("fix") if fld and (kind not in NAMES or kind == "literal_error") else None
    return (f"{message} ({fix})" if fix else message), _dotted(path)


def _bare(tp: Any) -> Any:
    """The type a value is checked against: Annotated's metadata and an optional's None left out."""
    while True:
        if get_origin(tp) is Annotated:
            tp = get_args(tp)[0]
        elif get_origin(tp) in (typing.Union, types.UnionType) and type(None) in get_args(tp):
            rest = [a for a in get_args(tp) if a is not type(None)]
            if len(rest) > 1:
                return functools.reduce(operator.or_, rest)
            tp = rest[0]
        else:
            return tp


def _member(union: Any, label: str) -> Any:
    """The member of a union that pydantic's location names (`Column`, `str`, `list[str]`, `literal['final']`)."""
    for m in get_args(union):
        m = _bare(m)
        name = "literal" if get_origin(m) is Literal else getattr(get_origin(m) or m, "__name__", "")
        if label == name or label.startswith(f"{name.lower()}["):
            return m
    return None


@functools.cache
def _hints(cls: type) -> dict:
    return typing.get_type_hints(cls, include_extras=True)


def _walk(root: type, loc: tuple, at: str) -> tuple[tuple, Any, Any]:
    """The key path a recipe's author reads (pydantic's location without the names of the union members it tried,
    then `at`), the block that holds its last key, and the dataclass field it falls under (for its `fix`)."""
    tp, owner, fld, path = root, None, None, []
    for part in loc:
        tp = _bare(tp)
        if get_origin(tp) in (typing.Union, types.UnionType):
            tp = _member(tp, part)  # a label, not a key
            continue
        path.append(part)
        if dataclasses.is_dataclass(tp) or is_typeddict(tp):
            owner = tp
            fld = {f.name: f for f in dataclasses.fields(tp)}.get(part) if dataclasses.is_dataclass(tp) else fld
            tp = _hints(tp).get(part)
        elif get_origin(tp) in (list, tuple, dict):
            tp = get_args(tp)[-1] if get_args(tp) else None
        else:
            tp = None
    return (*path, *[k for k in at.split(".") if k]), owner, fld


def _dotted(path: tuple) -> str:
    """('sources', 2, 'columns', 'answer') -> sources[2].columns.answer"""
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else f".{part}" if out else part
    return out


def known_keys(owner: Any) -> list[str]:
    """The keys a recipe may write in a block: its fields but those the code sets (vlfactory.recipe.Internal)."""
    from pydantic.json_schema import SkipJsonSchema

    if owner is None:
        return []
    return [name for name, tp in _hints(owner).items()
            if not any(isinstance(m, SkipJsonSchema) for m in getattr(tp, "__metadata__", ()))]


def schema() -> dict:
    """The JSON Schema of a recipe as written (`vlfactory recipe schema`), for editors to complete and check keys.

    Required keys are left to the loader: a recipe that `extends:` another may leave them to it. A generation
    block is any one backend's: its own keys and that backend's options, flat."""
    from vlfactory.backends import BACKENDS, backend_config_class

    out = _adapter(Recipe).json_schema()
    _optional(out)
    for name in ("GenerationConfig", "CaptionConfig", "DistilConfig"):
        block = out["$defs"][name]
        variants = []
        for backend in BACKENDS:
            options = _adapter(backend_config_class(backend)).json_schema()
            assert "$defs" not in options, options  # flat options: scalars and lists of them
            props = {**block["properties"], **{k: v for k, v in options["properties"].items() if k != "model"},
                     "backend": {"const": backend, **({} if backend == "openai" else {"default": backend})}}
            variants.append({"type": "object", "properties": props, "additionalProperties": False,
                             **({} if backend == "openai" else {"required": ["backend"]})})
        out["$defs"][name] = {k: v for k, v in block.items() if k in ("title", "description")} | {"anyOf": variants}

    out["properties"] = {"extends": {"type": "string", "description": "the recipe this one extends (a file "
                                     "relative to this one, or a shipped recipe's name)"}, **out["properties"]}
    out["anyOf"] = [{"required": ["sources"]}, {"required": ["extends"]}]
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", **out, "title": "vlfactory recipe"}


def _optional(node: Any) -> None:
    """Every block's keys optional (the schema of a recipe that may extend another)."""
    if isinstance(node, dict):
        if node.get("type") == "object":
            node.pop("required", None)
        for value in node.values():
            _optional(value)
    elif isinstance(node, list):
        for value in node:
            _optional(value)


# ---- what one value cannot tell: files, and names that refer to other parts ----------------------------------

def _resolve(r: Recipe, base: Path, where: str) -> None:
    names: set[str] = set()
    for group in ("sources", "benchmarks"):
        for i, src in enumerate(getattr(r, group)):
            if src.name in names:
                raise RecipeError(f"{where}: {group}[{i}].name: {src.name!r} is used twice; names must be unique")
            names.add(src.name)
            _source_paths(src, base, f"{where}: {group}[{i}]")
    for block in (r.caption, r.distil, r.rollout, r.sft, r.rl, r.eval):
        if block is not None and block.prompt:
            block.prompt = _template_ref(block.prompt, base)
    if r.rl is not None and r.rl.model is None and r.rollout is None:
        raise RecipeError(f"{where}: rl.model: missing; name the policy model whose rollouts count, "
                          "or add a rollout: stage")
    if r.loop is not None:
        _loop(r.loop, names, {s.name for s in r.sources}, f"{where}: loop", base)
        if r.loop.captioner is not None and (r.caption is None or r.loop.pretrain is None):
            raise RecipeError(f"{where}: loop.captioner: pretrained needs loop.pretrain (the model that learns to "
                              "describe) and a caption: block (how it captions); leave it out for the caption block's "
                              "model")
    if r.eval is not None:
        _eval(r.eval, names, f"{where}: eval", base)
    if r.lake.catalog and not r.lake.catalog.startswith("ducklake:"):
        r.lake.catalog = str(_local(r.lake.catalog, base, f"{where}: lake", resolve=True))


def _source_paths(src: Source, base: Path, where: str) -> None:
    if src.format == "synthetic":
        return
    local = _local(src.path, base, f"{where}.path")
    if src.format == "hf":
        # A hub id (org/name) is not a local path; a local folder or file is.
        if local.exists():
            src.path = str(local)
    else:
        if not any(ch in src.path for ch in "*?[") and not local.exists():
            raise RecipeError(f"{where}.path: {local} does not exist")
        if local.exists() and not (local.is_file() or local.is_dir()):  # a FIFO or a device would hang or never end
            raise RecipeError(f"{where}.path: {local} is not a regular file or a folder")
        src.path = str(local)
    if src.images_root:
        root = _local(src.images_root, base, f"{where}.images_root")
        if not root.is_dir():
            raise RecipeError(f"{where}.images_root: {root} is not a folder")
        src.images_root = str(root)


def _settings_file(value: Any, base: Path, where: str) -> Any:
    """A trainers YAML named by the recipe, as an absolute path, its keys checked for secrets now (not hours later)."""
    if not isinstance(value, str):
        return value
    path = base / value
    if not path.exists():
        raise RecipeError(f"{where}: {path} does not exist")
    _no_secrets(_yaml_file(path), str(path))
    return str(path.resolve())


def _loop(loop: LoopConfig, names: set[str], sources: set[str], where: str, base: Path) -> None:
    def known(name: str, at: str) -> None:
        if name not in sources:
            raise RecipeError(f"{at}: {name!r} is not one of the recipe's sources ({', '.join(sorted(sources))})")

    for b in loop.benchmarks:
        if b not in names:
            raise RecipeError(f"{where}.benchmarks: {b!r} is not a source or benchmark of the recipe")
    loop.sft = _settings_file(loop.sft, base, f"{where}.sft")
    loop.grpo = _settings_file(loop.grpo, base, f"{where}.grpo")
    for i, stage in enumerate(loop.grpo_stages):
        if stage.source is not None:
            known(stage.source, f"{where}.grpo_stages[{i}].source")
        stage.config = _settings_file(stage.config, base, f"{where}.grpo_stages[{i}].config")
    if len({s.name for s in loop.grpo_stages}) != len(loop.grpo_stages):
        raise RecipeError(f"{where}.grpo_stages: stage names must be unique")
    for name in loop.pretrain_sources or []:
        known(name, f"{where}.pretrain_sources")
    for i, plan in enumerate(loop.schedule):
        at = f"{where}.schedule[{i}]"
        for key in ("sources", "rl_sources", "sft_weights", "rl_weights"):
            for name in getattr(plan, key) or []:
                known(name, f"{at}.{key}")
        if isinstance(plan.generator, Generator):
            _generator(plan.generator, i, loop, f"{at}.generator")
    if loop.schedule and loop.schedule[0].rl_set == "fixed":
        raise RecipeError(f"{where}.schedule[0].rl_set: iteration 1 has no earlier rl set to keep; use pick")
    if loop.launch.config_file is not None:
        path = _local(loop.launch.config_file, base)
        if not path.is_file():
            raise RecipeError(f"{where}.launch.config_file: {path} does not exist (an accelerate config file)")
        loop.launch.config_file = str(path)


def _generator(gen: Generator, i: int, loop: LoopConfig, where: str) -> None:
    if i == 0:
        raise RecipeError(f"{where}: iteration 1's data comes from distillation; a generator applies from "
                          "iteration 2 on")
    names = [s.name for s in loop.grpo_stages]
    if gen.stage is not None and gen.stage not in names:
        raise RecipeError(f"{where}.stage: {gen.stage!r} is not one of loop.grpo_stages "
                          f"({', '.join(names) or 'none: leave stage out'})")


def _eval(ev: EvalSettings, names: set[str], where: str, base: Path) -> None:
    for key, table in (("protocols", ev.protocols), ("formats", ev.formats)):
        for bench in table:
            if bench not in names:
                raise RecipeError(f"{where}.{key}.{bench}: not a source or benchmark of the recipe")
    if "judge" in [ev.protocol, ev.base_protocol, *ev.protocols.values()] and ev.judge is None:
        raise RecipeError(f"{where}.judge: missing; protocol judge needs a judge model (backend, model, prompt)")
    if ev.judge is not None:
        ev.judge.prompt = _template_ref(ev.judge.prompt or "mathverse_judge", base)


def _template_ref(ref: str, base: Path) -> str:
    """A template reference that no longer depends on the recipe's folder: a shipped name stays a
    name, a file relative to the recipe becomes an absolute path."""
    local = _local(ref, base)
    return str(local) if local.is_file() else ref


def _local(p: str, base: Path, where: str = "path", resolve: bool = False) -> Path:
    path = Path(p).expanduser()
    if path.is_absolute() and not resolve:
        return path
    try:
        return (base / path).resolve()
    except (RuntimeError, OSError) as e:  # a symbolic link loop: Python 3.11 raises RuntimeError
        raise RecipeError(f"{where}: {p}: cannot be resolved ({e})") from None


# ---- the file: YAML, `extends:`, secrets ----------------------------------------------------------------------

def _read_yaml(path: Path) -> tuple[str, Any]:
    if not path.is_file():
        raise RecipeError(f"{path}: not a regular file (a recipe is a YAML file)")
    if path.stat().st_size > MAX_RECIPE_BYTES:
        raise RecipeError(f"{path}: {path.stat().st_size:,} bytes, over the {MAX_RECIPE_BYTES:,} a recipe may have "
                          "(a recipe holds settings; put data in files its sources name)")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise RecipeError(f"{path}: not UTF-8 text (byte {e.start})") from None
    try:
        return text, _yaml(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f":{mark.line + 1}" if mark else ""
        raise RecipeError(f"{path}{where}: not valid YAML ({getattr(e, 'problem', e)})") from None
    except RecursionError:
        raise RecipeError(f"{path}: not valid YAML (nested too deep)") from None


def _extended(raw: dict, path: Path, chain: list[Path]) -> dict:
    """A recipe with `extends: OTHER.yaml` is OTHER with this recipe's keys merged over it.

    Mappings merge key by key, except a generation block that names another backend, which replaces
    the base's (its options belong to that backend); a list of named items (sources, benchmarks,
    grpo_stages) merges item by item on `name` (an item that names no existing one is added); any
    other value replaces the base's. Relative paths in both files resolve against the extending recipe's folder, so keep them
    side by side. `extends` names a file relative to this recipe, or a shipped recipe.
    """
    raw = dict(raw)
    ref = raw.pop("extends")
    if not isinstance(ref, str) or not ref:
        raise RecipeError(f"{path}: extends: expected the path of the recipe this one extends, got {ref!r}")
    local = (path.resolve().parent / ref)
    parent = local if local.is_file() else find_recipe(ref)
    if parent.resolve() in chain:
        raise RecipeError(f"{path}: extends: {ref} extends itself ({' -> '.join(p.name for p in chain)})")
    _, base = _read_yaml(parent)
    if not isinstance(base, dict):
        raise RecipeError(f"{parent}: a recipe is a YAML mapping")
    if "extends" in base:
        base = _extended(base, parent, [*chain, parent.resolve()])
    base.pop("name", None)  # the extending recipe is its own recipe (default: its file name)
    return _merged(base, raw)


def _named(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(i, dict) and "name" in i for i in value)


def _merged(base: Any, over: Any) -> Any:
    if isinstance(base, dict) and isinstance(over, dict):
        if "backend" in over and over["backend"] != base.get("backend"):
            return over  # another backend: the block's options are that backend's, none of the base's apply
        return {**base, **{k: _merged(base[k], v) if k in base else v for k, v in over.items()}}
    if _named(base) and _named(over):
        out = {i["name"]: i for i in base}
        for item in over:
            out[item["name"]] = _merged(out[item["name"]], item) if item["name"] in out else item
        return list(out.values())
    return over


def _no_secrets(raw: Any, where: str) -> None:
    """Refuse a key that looks like it holds a secret, at any depth (vlfactory.redact.secret_key), and YAML
    that is not a tree (a recursive anchor, an alias bomb)."""
    try:
        key = find_secret(raw)
    except ValueError as e:
        raise RecipeError(f"{where}: {e}") from None
    if key:
        raise RecipeError(f"{where}: {key}: secrets do not belong in recipes (they are stored in the catalog and "
                          "published); put it in an environment variable and name that variable instead")


class _UniqueKeys(getattr(yaml, "CSafeLoader", yaml.SafeLoader)):
    """safe_load (libyaml's parser where PyYAML has it: 10x faster) that refuses a key given twice in one mapping
    (PyYAML keeps the last, silently)."""

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            if isinstance(key, typing.Hashable) and key in seen:
                raise yaml.constructor.ConstructorError(None, None, f"duplicate key {key!r}", key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep)


def _yaml(text: str) -> Any:
    return yaml.load(text, Loader=_UniqueKeys)


def _yaml_file(path: Path) -> Any:
    try:
        if path.stat().st_size > MAX_RECIPE_BYTES:
            raise RecipeError(f"{path}: {path.stat().st_size:,} bytes, over the {MAX_RECIPE_BYTES:,} a settings "
                              "file may have")
        return _yaml(path.read_text())
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as e:
        raise RecipeError(f"{path}: {str(e).splitlines()[0]}") from None
