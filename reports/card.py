"""The dataset card (README.md) of a published version: Hub metadata, then how the set was made.

The YAML front matter is what the Hub reads (license from the recipe's sources, task and size
categories, one config per table with its data files); the text says what the set is, which
sources, models, prompt templates, sampling and verify settings made it, the funnel and the
rejection reasons, completion lengths, and how to load and reproduce it. Everything comes from
the catalog at that version (`reports/stats.py`); nothing from the environment, and credentials
inside stored values are masked (vlfactory.redact), so no secret can reach a card.

    from vlfactory.reports.card import Config, dataset_card
    text = dataset_card(version_stats(lake, "iter1"), "org/name", [Config("sft", 1200, ["image", ...])])
"""

from __future__ import annotations

from dataclasses import dataclass, field

import yaml

from vlfactory.redact import redact
from vlfactory.reports.stats import FUNNEL, VersionStats, summary

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


@dataclass
class Config:
    """One config of the published set: a table at the version, as Parquet shards under NAME/."""

    name: str
    rows: int
    columns: list[str] = field(default_factory=list)

    @property
    def data_files(self) -> str:
        return f"{self.name}/*.parquet"


def dataset_card(st: VersionStats, repo: str, configs: list[Config]) -> str:
    # Runs recorded before recipes and command lines were redacted may still hold a credential.
    return redact(f"---\n{front_matter(st, repo, configs)}---\n\n" + "\n".join(body(st, repo, configs)))


def front_matter(st: VersionStats, repo: str, configs: list[Config]) -> str:
    from huggingface_hub import DatasetCardData

    licenses = sorted({(st.licenses.get(src) or "unknown").lower() for src in st.sources}) or ["unknown"]
    data = DatasetCardData(
        license=licenses[0] if len(licenses) == 1 else licenses,
        task_categories=TASKS,
        size_categories=[size_category(max(c.rows for c in configs))],
        pretty_name=repo.split("/")[-1],
        tags=["vlfactory", "visual-reasoning", "openvlthinker"],
        configs=[{"config_name": c.name, "data_files": [{"split": "train", "path": c.data_files}],
                  **({"default": True} if i == 0 else {})} for i, c in enumerate(configs)])
    return data.to_yaml() + "\n"


def size_category(n: int) -> str:
    """The Hub's size_categories bucket of a row count."""
    bounds = [(1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M"),
              (10_000_000, "1M<n<10M"), (100_000_000, "10M<n<100M"), (1_000_000_000, "100M<n<1B")]
    return next((label for bound, label in bounds if n < bound), "n>1B")


def body(st: VersionStats, repo: str, configs: list[Config]) -> list[str]:
    name = repo.split("/")[-1]
    out = [f"# {name}", "",
           f"A visual reasoning dataset in the [OpenVLThinker](https://arxiv.org/abs/2503.17352) style, built by "
           f"vlfactory: images with questions and verified answers, and the reasoning that reached them. This is "
           f"version `{st.version}` of the factory's catalog (DuckLake snapshot {st.snapshot}).", "",
           _table(["config", "rows", "what", "columns"],
                  [[f"`{c.name}`", f"{c.rows:,}", WHAT.get(c.name, "the catalog table of that name"),
                    ", ".join(f"`{col}`" for col in c.columns)] for c in configs]),
           "Rows keep their catalog columns (`problem_id`, `source_id`, ...); tables that name an image carry it as "
           "an `image` column (the original bytes, whose SHA-256 is `image_id`).", "",
           "## How it was made", "", "### Sources", ""]
    out += [_table(["source", "license", "problems"],
                   [[s, st.licenses.get(s) or "unknown", f"{st.funnel[s]['problems']:,}"] for s in st.sources])
            if st.sources else "No sources at this version.", ""]
    out += ["### Models", ""]
    out += [_table(["stage", "model", "calls", "prompt tokens", "completion tokens"],
                   [[u["stage"], f"`{u['model']}`", f"{u['calls']:,}", f"{u['prompt_tokens'] or 0:,}",
                     f"{u['completion_tokens'] or 0:,}"] for u in st.usage])
            if st.usage else "No model calls: captions came from the sources and nothing was generated yet.", ""]
    if st.sampling:
        out += ["### Sampling", "",
                _table(["stage", "model", "temperature", "top_p", "max tokens", "samples per prompt", "rows"],
                       [[s["stage"], f"`{s['model']}`", s["temperature"], s["top_p"], s["max_tokens"],
                         s["samples_per_prompt"], f"{s['rows']:,}"] for s in st.sampling]), ""]
    if st.prompts:
        out += ["### Prompt templates", ""]
        for p in st.prompts:
            out += [f"`{p['stage']}`: template `{p['name'] or '?'}` (hash `{p['prompt_hash']}`)", "",
                    _fence(p["text"] or "(text not recorded)"), ""]
    out += ["### Filters", "", "The verify stage's settings (a sample is accepted when its answer is correct and no "
            "filter rejects it), and the rules that pick the sets:", ""]
    for key, settings in st.settings.items():
        out += [f"`{key}`:", "", _fence(yaml.safe_dump(settings, sort_keys=False).strip(), "yaml"), ""]
    out += ["### Lineage", "",
            f"- Snapshot: {st.snapshot} (version `{st.version}`)",
            *[f"- Recipe `{r['name']}`: hash `{r['hash']}`, in `recipes/{recipe_file(r)}`" for r in st.recipes],
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
        f'{c.name} = load_dataset("{repo}", "{c.name}", split="train")' for c in configs), "python"), ""]
    commands = list(dict.fromkeys(f"vlfactory {r['argv']}" if r["argv"]
                                  else f"# {r['command']} (recipe {r['recipe_name']})" for r in st.runs))
    if not st.version.isdigit() and st.version != "latest":
        commands.append(f"vlfactory tag {st.version}")
    commands.append(f"vlfactory publish {st.version} --repo {repo} " + " ".join(f"--table {c.name}" for c in configs))
    out += ["## Reproduce it", "",
            "The runs that wrote this version, in order (recipe paths are where they ran; the recipe texts are in "
            "`recipes/`), then the tag and this upload:", "", _fence("\n".join(commands), "bash"), ""]
    return out


def recipe_file(recipe: dict) -> str:
    return f"{recipe['name'] or 'recipe'}-{recipe['hash']}.yaml"


def _num(v) -> str:
    return "" if v is None else f"{v:,.1f}" if isinstance(v, float) else f"{v:,}"


def _fence(text: str, lang: str = "text") -> str:
    ticks = "```" if "```" not in text else "````"
    return f"{ticks}{lang}\n{text}\n{ticks}"


def _table(headers: list[str], rows: list[list]) -> str:
    def cell(v) -> str:
        return "" if v is None else str(v).replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"
