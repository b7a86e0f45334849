"""The dataset card (README.md) of a published version: Hub metadata, then how the set was made.

The YAML front matter is what the Hub reads: license from the recipe's sources, task and size
categories, and what `datasets.Dataset.push_to_hub` writes for each config (`dataset_info` with
features, splits, sizes; `configs` with each split's data files), through `datasets`' own
DatasetInfosDict and MetadataConfigs. The text says what this repository holds (and only that),
a few sample rows, which sources, models (by identity, never a local path), prompt templates,
sampling and verify settings made the version, the funnel and the rejection reasons, completion
lengths, how to load it and the commands that reproduce it from the published recipe copies.
Text from the data is text there: table cells are HTML-escaped with their line breaks folded, fences are longer
than any backtick run inside, inline names are code spans that contain them, a local file is shown by its
name only, and the reproduce block quotes every word it embeds (shlex.quote) and keeps comments on one line.
Everything comes from the catalog at that version (`reports/stats.py`, `model_labels`); nothing
from the environment, and credentials inside stored values are masked (vlfactory.redact), so no
secret can reach a card.

    from vlfactory.reports.card import dataset_card
    text = dataset_card(version_stats(lake, "iter1"), "org/name", configs, model_labels(lake, snapshot))
"""

from __future__ import annotations

import html
import re
import shlex
from dataclasses import dataclass, field
from pathlib import PurePosixPath

import yaml

from vlfactory.models import RULES
from vlfactory.redact import redact
from vlfactory.reports.stats import FUNNEL, VersionStats, rows, summary

TASKS = ["visual-question-answering", "image-text-to-text"]
WHAT = {
    "problems": "source problems: image, question, gold answer (and choices)",
    "captions": "image captions, from the source or a captioning model",
    "traces": "every reasoning chain the text reasoner wrote from caption + question, correct or not",
    "rollouts": "the policy's own answers from the images, graded",
    "grades": "the verifier's verdict on every trace and rollout, with the cleaned completion",
    "sft": "supervised fine-tuning examples: image + prompt -> verified reasoning and answer",
    "rl": "GRPO problems: those the policy solves with a pass rate inside the RL band",
    "rejected": "every row the factory rejected, with its stage and reason",
    "images": "the images, byte-exact, keyed by their SHA-256",
}


REASONING = ("traces", "sft", "rollouts", "grades", "eval_samples")  # configs that hold model-written text
SAMPLE_COLUMNS = ("source", "question", "answer", "prompt", "completion", "extracted", "correct", "pass_rate",
                  "stage", "reason", "detail", "caption", "width", "height", "format")
SAMPLE_CHARS = 160
PATH_PREFIXES = ("/", "./", "../", "~")


@dataclass
class Split:
    """One split of a config: its rows, Arrow bytes in memory (push_to_hub's num_bytes) and shard files."""

    name: str
    rows: int
    num_bytes: int
    files: list[str] = field(default_factory=list)


@dataclass
class Config:
    """One config of the published set: a table at the version, as `NAME/SPLIT-0000i-of-0000N.parquet`."""

    name: str
    splits: list[Split] = field(default_factory=list)
    features: object = None          # datasets.Features
    download_size: int = 0           # bytes of its Parquet files
    samples: list[dict] = field(default_factory=list)  # a few rows for the card

    @property
    def rows(self) -> int:
        return sum(s.rows for s in self.splits)

    @property
    def columns(self) -> list[str]:
        return list(self.features or [])


def dataset_card(st: VersionStats, repo: str, configs: list[Config], models: dict[str, str] | None = None) -> str:
    # Runs recorded before recipes and command lines were redacted may still hold a credential.
    return redact(f"---\n{front_matter(st, repo, configs)}---\n\n" + "\n".join(body(st, repo, configs, models or {})))


def front_matter(st: VersionStats, repo: str, configs: list[Config]) -> str:
    from datasets import DatasetInfo, SplitDict, SplitInfo
    from datasets.info import DatasetInfosDict
    from datasets.utils.metadata import MetadataConfigs
    from huggingface_hub import DatasetCardData

    licenses = sorted({(st.licenses.get(src) or "unknown").lower() for src in st.sources}) or ["unknown"]
    data = DatasetCardData(
        license=licenses[0] if len(licenses) == 1 else licenses,
        task_categories=TASKS,
        size_categories=[size_category(max(c.rows for c in configs))],
        pretty_name=repo.split("/")[-1],
        tags=["vlfactory", "visual-reasoning", "openvlthinker"])
    infos = DatasetInfosDict()
    for c in configs:
        splits = SplitDict()
        for s in c.splits:
            splits.add(SplitInfo(name=s.name, num_bytes=s.num_bytes, num_examples=s.rows))
        infos[c.name] = DatasetInfo(config_name=c.name, features=c.features, splits=splits,
                                    download_size=c.download_size, dataset_size=sum(s.num_bytes for s in c.splits))
    infos.to_dataset_card_data(data)
    # push_to_hub's data_files: SPLIT -> CONFIG/SPLIT-* ; the first table is the default config
    MetadataConfigs({c.name: {"data_files": [{"split": s.name, "path": f"{c.name}/{s.name}-*"} for s in c.splits],
                              **({"default": True} if i == 0 else {})}
                     for i, c in enumerate(configs)}).to_dataset_card_data(data)
    return data.to_yaml() + "\n"


def model_labels(lake, snapshot: int) -> dict[str, str]:
    """What each model identity at the snapshot is, for readers: a hub id or built-in name as the recipe
    called it, or the training of this lake that produced it; never the local folder it was read from."""
    trained = {r["model_id"]: f"trained here: {r['kind']}" + (f", iteration {r['iteration']}"
                                                              if r["iteration"] is not None else "")
               for r in rows(lake, f"""SELECT model_id, kind, iteration FROM trainings@{snapshot}
                                       WHERE model_id IS NOT NULL AND status = 'ok' ORDER BY started_at""")}
    labels: dict[str, str] = {}
    for r in rows(lake, f"SELECT model_id, name, kind FROM models@{snapshot} ORDER BY created_at"):
        if r["model_id"] in trained:
            labels[r["model_id"]] = trained[r["model_id"]]
        elif r["kind"] != "folder" and r["name"] and not str(r["name"]).startswith(PATH_PREFIXES):
            labels.setdefault(r["model_id"], str(r["name"]))
        else:
            labels.setdefault(r["model_id"], "a local folder")
    return labels | {k: v for k, v in trained.items() if k not in labels}


def model_cell(model: str | None, labels: dict[str, str]) -> str:
    """A model by identity, with what it is; a value that is a local path is never shown."""
    if not model:
        return ""
    if str(model).startswith(PATH_PREFIXES):
        return "a local folder (identity not recorded)"
    label = labels.get(model)
    return _code(model) + (f" ({label})" if label and label != model else "")


def size_category(n: int) -> str:
    """The Hub's size_categories bucket of a row count."""
    bounds = [(1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M"),
              (10_000_000, "1M<n<10M"), (100_000_000, "10M<n<100M"), (1_000_000_000, "100M<n<1B")]
    return next((label for bound, label in bounds if n < bound), "n>1B")


def body(st: VersionStats, repo: str, configs: list[Config], models: dict[str, str]) -> list[str]:
    name = repo.split("/")[-1]
    written = [c.name for c in configs if c.name in REASONING]
    # Say who wrote the text, by stage and identity: models, or the rules teacher, whose chains are templates.
    writers: dict[str, list[str]] = {}
    for u in st.usage:
        if u["stage"] != "caption" and u["model"]:
            writers.setdefault(u["stage"], []).append(model_cell(u["model"], models))
    by = "; ".join(f"{stage}: {', '.join(dict.fromkeys(cells))}" for stage, cells in writers.items())
    rules = [u["model"] for u in st.usage if str(u["model"]).startswith(f"vlfactory/{RULES}@")]
    holds = (f"images with questions and verified answers, and the completions written for them ({by or 'by models'})"
             if written else "images with questions and their answers, without reasoning traces or model answers")
    if written and rules:
        holds += (f". {_code(rules[0])} is not a model but rules (vlfactory.backends.rules) that parse the "
                  "synthetic shapes' captions and fill a one-line chain template: its chains show the answer format, "
                  "not reasoning")
    out = [f"# {name}", "",
           f"A visual reasoning dataset in the [OpenVLThinker](https://arxiv.org/abs/2503.17352) style, built by "
           f"vlfactory: {holds}. This is version {_code(st.version)} of the factory's catalog (DuckLake snapshot "
           f"{st.snapshot}); this repository holds {_names([c.name for c in configs])} of it.", "",
           _table(["config", "rows", "what", "columns"],
                  [[f"`{c.name}`", ", ".join(f"{s.name}: {s.rows:,}" for s in c.splits),
                    WHAT.get(c.name, "the catalog table of that name"),
                    ", ".join(f"`{col}`" for col in c.columns)] for c in configs]),
           "Rows keep their catalog columns (`problem_id`, `source_id`, ...); tables that name an image carry it as "
           "an `image` column (the original bytes, whose SHA-256 is `image_id`). Splits are the data's own: a "
           "problem's split from its source is the split of every row about it.", ""]
    if not written:
        out += ["No config here holds text a model wrote: the sections below describe how the whole version was "
                "made, reasoning stages included, not what this repository contains.", ""]
    out += ["## Sample rows", ""]
    for c in configs:
        out += [f"`{c.name}` ({c.splits[0].name if c.splits else '-'}, first {len(c.samples)} rows; long texts cut):",
                "", _samples(c), ""]
    out += ["## How it was made", "", "### Sources", ""]
    out += [_table(["source", "license", "problems"],
                   [[s, st.licenses.get(s) or "unknown", f"{st.funnel[s]['problems']:,}"] for s in st.sources])
            if st.sources else "No sources at this version.", ""]
    out += ["### Models", ""]
    out += ["Models by identity (vlfactory.models.identity: a content digest of a folder's files, or a hub id at "
            "its commit), as every generated row's `model` column holds it:", ""]
    out += [_table(["stage", "model", "calls", "prompt tokens", "completion tokens"],
                   [[u["stage"], model_cell(u["model"], models), f"{u['calls']:,}", f"{u['prompt_tokens'] or 0:,}",
                     f"{u['completion_tokens'] or 0:,}"] for u in st.usage])
            if st.usage else "No model calls: captions came from the sources and nothing was generated yet.", ""]
    if st.sampling:
        out += ["### Sampling", "",
                _table(["stage", "model", "temperature", "top_p", "max tokens", "samples per prompt", "rows"],
                       [[s["stage"], model_cell(s["model"], models), s["temperature"], s["top_p"], s["max_tokens"],
                         s["samples_per_prompt"], f"{s['rows']:,}"] for s in st.sampling]), ""]
    if st.prompts:
        out += ["### Prompt templates", ""]
        for p in st.prompts:
            out += [f"{_code(p['stage'])}: template {_code(public(p['name'] or '?'))} (hash "
                    f"{_code(p['prompt_hash'])})", "", _fence(p["text"] or "(text not recorded)"), ""]
    out += ["### Filters", "", "The verify stage's settings (a sample is accepted when its answer is correct and no "
            "filter rejects it), and the rules that pick the sets:", ""]
    for key, settings in st.settings.items():
        out += [f"{_code(key)}:", "", _fence(yaml.safe_dump(public(settings), sort_keys=False).strip(), "yaml"), ""]
    out += ["### Lineage", "",
            f"- Snapshot: {st.snapshot} (version {_code(st.version)})",
            *[f"- Recipe {_code(r['name'])}: hash {_code(r['hash'])}, in {_code('recipes/' + recipe_file(r))}"
              for r in st.recipes],
            *[f"- vlfactory {v}" for v in sorted({(r['versions'] or {}).get('vlfactory') for r in st.runs} - {None})],
            ""]
    out += ["## Funnel", "", "Per source, from problems to accepted samples and the sets:", ""]
    out += [_table(["source", *FUNNEL], [[s, *(f"{n:,}" for n in st.funnel[s].values())] for s in st.sources])
            if st.sources else "No problems at this version.", ""]
    out += ["## Rejection reasons", ""]
    if st.rejected:
        out += ["Rows in `rejected`, by stage and reason:", "",
                _table(["stage", "reason", "rows"], [[r["stage"], r["reason"], f"{r['rows']:,}"] for r in st.rejected]),
                ""]
    if st.verdicts:
        out += ["Graded samples not accepted, by every reason that applies:", "",
                _table(["graded", "reason", "samples"],
                       [[r["ref_table"], r["reason"], f"{r['rows']:,}"] for r in st.verdicts]), ""]
    if not st.rejected and not st.verdicts:
        out += ["Nothing was rejected.", ""]
    out += ["## Length statistics", ""]
    rows = [[group, unit, *(_num(summary(v).get(k)) for k in ("count", "mean", "median", "p90", "max"))]
            for unit, groups in st.lengths.items() for group, v in sorted(groups.items())]
    out += [_table(["completions", "unit", "count", "mean", "median", "p90", "max"], rows)
            if rows else "No completions at this version.", ""]
    out += ["## Load it", "", _fence("from datasets import load_dataset\n\n" + "\n".join(
        f'{c.name} = load_dataset("{repo}", "{c.name}")  # ' + ", ".join(f'{c.name}["{s.name}"]' for s in c.splits)
        for c in configs), "python"), ""]
    out += ["## Reproduce it", "",
            "The recipes of the runs that wrote this version are in `recipes/` (named by recipe hash). With "
            "vlfactory installed, these commands rebuild the version in a new lake, then tag and publish it:", "",
            _fence("\n".join(reproduce(st, repo, configs, models)), "bash"), ""]
    return out


def reproduce(st: VersionStats, repo: str, configs: list[Config], models: dict[str, str]) -> list[str]:
    """Runnable commands: fetch the recipe copies, rerun each run that wrote the version on its copy (the
    recipe hash is in the file name), name the models whose rows it holds, then tag and publish. Every word
    from the lake is quoted (shlex.quote) and every comment kept on its line: the block runs as written."""
    folder = repo.split("/")[-1]
    q = shlex.quote
    lines = [f"hf download {q(repo)} --repo-type dataset --include 'recipes/*' --local-dir {q(folder)}",
             f"cd {q(folder)}"]
    files = {r["hash"]: f"recipes/{recipe_file(r)}" for r in st.recipes}
    said, tagged = None, False
    for r in st.runs:
        command = rerun(r, files.get(r["recipe_hash"]))
        if command and command not in lines:
            if r["recipe_hash"] != said:
                lines.append(_comment(f"recipe {r['recipe_name']}, hash {r['recipe_hash']}"))
                said = r["recipe_hash"]
            lines.append(command)
            tagged = tagged or makes_tag(r, st.version)
    if st.usage:
        lines.append("# the models whose rows this version holds (the `model` column), by identity:")
        for stage, model in dict.fromkeys((u["stage"], u["model"]) for u in st.usage):
            lines.append(_comment(f"  {stage}: {model_cell(model, models).replace('`', '')}"))
    if not st.version.isdigit() and st.version != "latest" and not tagged:
        lines.append(f"vlfactory tag {q(st.version)}")
    tables = " ".join(f"--table {q(c.name)}" for c in configs)
    lines.append(f"vlfactory publish {q(st.version)} --repo {q(repo)} {tables}")
    return lines


ITERATE_TAGS = re.compile(r"iter\d+(-sft|-rl(-[\w.-]+)?)?")  # what `vlfactory iterate` tags (loop.py)


def makes_tag(run: dict, version: str) -> bool:
    """Whether rerunning `run` tags `version` itself: `--tag VERSION`, or an iterate and an iteration's tag (a
    `vlfactory tag` of it afterwards would then name another snapshot and fail)."""
    try:
        argv = shlex.split(run["argv"] or "")
    except ValueError:
        argv = []
    if any(a == f"--tag={version}" or (a == "--tag" and argv[i + 1:i + 2] == [version]) for i, a in enumerate(argv)):
        return True
    iterate = argv[:1] == ["iterate"] or (run["command"] or "").split()[:1] == ["iterate"]
    return iterate and bool(ITERATE_TAGS.fullmatch(version))


RERUN_OPTIONS = ("--stage", "--limit", "--iterations", "--tag")  # kept with their values
LAKE_OPTIONS = ("--lake", "--data-path")                        # dropped: where to rebuild is the reader's choice


def rerun(run: dict, recipe: str | None) -> str | None:
    """The command line that reruns a run on the published recipe copy; None for a run that is not a
    `run`/`ingest`/`iterate` of a recipe (eval, or rows written by other means)."""
    command = (run["command"] or "").split()
    try:
        argv = shlex.split(run["argv"] or "")
    except ValueError:
        argv = []
    if argv[:1] not in (["run"], ["iterate"], ["ingest"]):
        argv = []  # not a command line of ours (a run from Python records its caller's argv)
    if argv:
        verb = "run" if argv[0] == "ingest" else argv[0]
    elif command[:1] in (["run"], ["iterate"]):
        verb = command[0]
    else:
        return None
    if recipe is None:
        return None
    keep: list[str] = ["--stage", "ingest"] if argv[:1] == ["ingest"] else []
    if argv:
        args, i = argv[1:], 0
        while i < len(args):  # the positional recipe is replaced by the copy
            opt, eq, _ = args[i].partition("=")
            value = args[i + 1:i + 2] if opt in RERUN_OPTIONS + LAKE_OPTIONS and not eq else []
            if opt in RERUN_OPTIONS:
                keep += [args[i], *value]
            i += 1 + len(value)
    elif verb == "run" and len(command) > 1:
        keep = [x for stage in command[1].split(",") for x in ("--stage", stage)]
    return " ".join(["vlfactory", verb, *map(shlex.quote, [recipe, *keep])])


def recipe_file(recipe: dict) -> str:
    """The recipe copy's file name: its name as a slug (a lake written before names were checked may hold any
    text) and its hash."""
    from vlfactory.recipe import slug

    return f"{slug(str(recipe['name'] or ''), 'recipe')}-{slug(str(recipe['hash'] or ''), 'nohash')}.yaml"


def public(value):
    """A value as the card may show it: a local file path (a template, a recipe's folder) by its file name only,
    in nested settings too."""
    if isinstance(value, str):
        return PurePosixPath(value).name if value.startswith(("/", "~")) else value
    if isinstance(value, dict):
        return {k: public(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [public(v) for v in value]
    return value


LINE_BREAKS = re.compile(r"\r\n|[\r\n\v\f\x1c-\x1e\x85\u2028\u2029]")


def _one_line(text: str) -> str:
    """Text on one line: every line break (CR, LF, the Unicode ones) a space, other controls spelled out."""
    from vlfactory.sqlout import terminal

    return terminal(LINE_BREAKS.sub(" ", text))


def _comment(text: str) -> str:
    """A shell comment that stays a comment: nothing in `text` can start a new line."""
    return "# " + _one_line(text)


def _code(text: str) -> str:
    """An inline code span holding `text` whatever backticks it has (CommonMark: a longer backtick run)."""
    text = _one_line(str(text))
    ticks = "`" * (max(map(len, re.findall(r"`+", text)), default=0) + 1)
    pad = " " if text.startswith("`") or text.endswith("`") else ""
    return f"{ticks}{pad}{text}{pad}{ticks}"


def _names(names: list[str]) -> str:
    quoted = [f"`{n}`" for n in names]
    return quoted[0] if len(quoted) == 1 else ", ".join(quoted[:-1]) + " and " + quoted[-1]


def _samples(c: Config) -> str:
    if not c.samples:
        return "(no rows)"
    cols = [k for k in SAMPLE_COLUMNS if k in c.samples[0]][:5] or [
        k for k in c.samples[0] if k not in ("image", "bytes") and not k.endswith("_id")][:5]

    def cut(v) -> str:
        text = "" if v is None else str(v)
        return text if len(text) <= SAMPLE_CHARS else text[:SAMPLE_CHARS - 1] + "…"

    return _table(cols, [[cut(r.get(k)) for k in cols] for r in c.samples])


def _num(v) -> str:
    return "" if v is None else f"{v:,.1f}" if isinstance(v, float) else f"{v:,}"


def _fence(text: str, lang: str = "text") -> str:
    """A fenced block that holds `text` whole: its fence is longer than any backtick run inside (CommonMark)."""
    text = re.sub(r"\r\n?", "\n", text)
    ticks = "`" * max(3, max(map(len, re.findall(r"`+", text)), default=0) + 1)
    return f"{ticks}{lang}\n{text}\n{ticks}"


def _table(headers: list[str], rows: list[list]) -> str:
    def cell(v) -> str:
        # HTML from the data is text; a CR or LF would end the row (and could start a heading); a pipe a cell.
        return "" if v is None else html.escape(_one_line(str(v)), quote=False).replace("|", "\\|")

    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"
