"""The sft set: accepted samples turned into vision-language chat examples.

Candidates are the verify stage's accepted traces (iteration 1: distillation
through captions), rollouts (later iterations: the RL model's own verified
answers), or both; or, to teach a base model to see before anything else
(`loop.pretrain`), the sources' ground-truth captions (image + the caption
prompt -> the description). Per problem at most `per_problem` are kept, picked by a rule
(`shortest` correct, `random` with a seed, `all`), and the mix is balanced
across sources by the recipe's weights. `shortest` means the shortest chain as
written, cleaned afterwards (OpenVLThinker keeps the shortest correct chain,
then truncates it): a chain that cleaning would shorten most is not preferred
for that; a candidate whose cleaning failed (`cleaned_ok` false) is passed over. Each example is image + the user
prompt the trained model will see (the `rollout` template: question, choices,
the think/answer instruction) -> the completion (cleaned: reflection
truncated and capped, unless `cleaned: false`).

The set is a table, rewritten in one transaction, so a tag names exactly
one iteration's set: `sft@iter1`.

    vlfactory run RECIPE --stage verify --stage sft --tag iter1
"""

from __future__ import annotations

import hashlib
from collections import Counter, defaultdict
from dataclasses import dataclass, field

import pyarrow as pa

from vlfactory.prompts import load_template
from vlfactory.recipe import SFTSetConfig
from vlfactory.stages import Scope, StageResult
from vlfactory.stores import schema, tables
from vlfactory.stores.lake import Lake
from vlfactory.verify import verdict_identity


@dataclass
class SetStats:
    name: str
    candidates: int = 0               # accepted samples considered
    problems: int = 0                 # problems with at least one candidate
    examples: int = 0
    by_source: Counter = field(default_factory=Counter)
    dropped: Counter = field(default_factory=Counter)
    written: bool = False

    def result(self) -> StageResult:
        mix = ", ".join(f"{s} {n}" for s, n in sorted(self.by_source.items()))
        dropped = "".join(f"; {n} {why}" for why, n in self.dropped.items() if n)
        state = "written" if self.written else "unchanged, nothing written"
        return StageResult(
            self.name, wanted=self.candidates, written=self.examples if self.written else 0,
            cached=0 if self.written else self.examples, value=self,
            extra={"candidates": self.candidates, "problems": self.problems, "examples": self.examples,
                   **{f"source.{k}": v for k, v in self.by_source.items()}},
            summary=(f"{self.name}: {self.examples} examples from {self.problems} problems "
                     f"({self.candidates} accepted candidates){dropped}; by source: {mix or 'none'}; {state}"))


def _order_key(seed: int, ident: str) -> str:
    return hashlib.sha256(f"{seed}:{ident}".encode()).hexdigest()


def caption_candidates(lake: Lake, scope: Scope) -> list[dict]:
    """The ground-truth captions of the problems in scope, as image -> description examples: the set that
    teaches a base model to see before it learns to reason (`loop.pretrain`)."""
    return tables.dicts(lake, f"""
        WITH todo AS {scope.problems()}
        SELECT c.caption_id AS from_id, 'captions' AS from_table, c.model, c.caption AS completion,
               NULL AS cleaned, true AS cleaned_ok, len(string_split(c.caption, ' ')) AS words,
               NULL AS cleaned_words, p.problem_id, p.source, p.source_id, p.image_id, p.question, p.choices,
               p.answer
        FROM lake.captions c JOIN todo p ON p.problem_id = c.problem_id
        WHERE c.origin = 'source'""")


def candidates(lake: Lake, cfg: SFTSetConfig, scope: Scope) -> list[dict]:
    """Accepted samples of the problems in scope, by the current verifier's grades."""
    from vlfactory.models import identity

    if cfg.candidates == "captions":
        return caption_candidates(lake, scope)
    sample_tables = ("traces", "rollouts") if cfg.candidates == "both" else (cfg.candidates,)
    model = identity(cfg.model) if cfg.model else None
    out = []
    for table in sample_tables:
        id_col = "trace_id" if table == "traces" else "rollout_id"
        where = ["g.accepted", "g.ref_table = ?", "g.verifier = ?", "g.settings_hash = ?"]
        params = [table, *verdict_identity(cfg.verify)]
        if model and (table == "rollouts" or cfg.candidates != "both"):
            where.append("s.model = ?")  # with `both`, the model names whose rollouts join the traces
            params.append(model)
        out += tables.dicts(lake, f"""
            WITH todo AS {scope.problems()}
            SELECT s.{id_col} AS from_id, '{table}' AS from_table, s.model, s.completion, g.cleaned, g.cleaned_ok,
                   g.words, g.cleaned_words, p.problem_id, p.source, p.source_id, p.image_id, p.question,
                   p.choices, p.answer
            FROM grades g JOIN {table} s ON s.{id_col} = g.ref_id JOIN todo p ON p.problem_id = s.problem_id
            WHERE {' AND '.join(where)}""", params)
    return out


def pick(rows: list[dict], cfg: SFTSetConfig, stats: SetStats) -> list[dict]:
    """At most k per problem by the recipe's rule, then the source mix by weights."""
    per_problem: dict[str, list[dict]] = defaultdict(list)
    for r in rows:
        if cfg.cleaned:
            if not r["cleaned_ok"]:
                stats.dropped["failed cleaning (empty, word cap or re-verify)"] += 1
                continue
            r["text"], r["n_words"] = r["cleaned"], r["cleaned_words"]
        else:
            r["text"], r["n_words"] = r["completion"], r["words"]
        if r["image_id"] is None:
            stats.dropped["no image"] += 1
            continue
        per_problem[r["problem_id"]].append(r)
    chosen: dict[str, list[dict]] = {}
    for pid, group in per_problem.items():
        if cfg.pick == "shortest":  # by the chain as written: pick, then clean
            group.sort(key=lambda r: (r["words"], r["from_id"]))
        else:  # random and all: a seeded order, stable across runs
            group.sort(key=lambda r: _order_key(cfg.seed, r["from_id"]))
        chosen[pid] = group if cfg.pick == "all" else group[: cfg.per_problem]
    stats.problems = len(chosen)

    # Balance: each weighted source contributes in proportion to its weight, as far as the
    # scarcest source (relative to its weight) allows; unweighted sources are left out.
    by_source: dict[str, list[str]] = defaultdict(list)
    for pid, group in chosen.items():
        by_source[group[0]["source"]].append(pid)
    if cfg.weights:
        weights = {s: w for s, w in cfg.weights.items() if w > 0}
        for s in set(by_source) - set(weights):
            stats.dropped[f"source {s} has no weight"] += len(by_source.pop(s))
        total = sum(weights.values())
        present = {s: w / total for s, w in weights.items() if by_source.get(s)}
        if present:
            scale = min(len(by_source[s]) / share for s, share in present.items())
            for s, share in present.items():
                keep = int(scale * share + 1e-9)
                pids = sorted(by_source[s], key=lambda p: _order_key(cfg.seed, p))
                stats.dropped["over the source's weighted share"] += len(pids) - keep
                by_source[s] = pids[:keep]
    problems = sorted((p for pids in by_source.values() for p in pids), key=lambda p: _order_key(cfg.seed, p))
    if cfg.max_examples is not None:
        out: list[dict] = []
        for pid in problems:
            for r in chosen[pid]:
                if len(out) < cfg.max_examples:
                    out.append(r)
                else:
                    stats.dropped["over max_examples"] += 1
        return out
    return [r for pid in problems for r in chosen[pid]]


def run(lake: Lake, cfg: SFTSetConfig, scope: Scope, progress=None) -> StageResult:
    stats = SetStats("sft")
    default = "caption" if cfg.candidates == "captions" else "rollout"
    template = load_template(cfg.prompt or default, needs=set() if cfg.candidates == "captions" else {"question"})
    rows = candidates(lake, cfg, scope)
    stats.candidates = len(rows)
    examples = pick(rows, cfg, stats)
    table = pa.Table.from_pylist([{
        "example_id": hashlib.sha256(f"{r['from_id']}\x1f{r['text']}\x1f{template.hash}".encode()).hexdigest()[:16],
        "problem_id": r["problem_id"], "source": r["source"], "source_id": r["source_id"],
        "image_id": r["image_id"], "question": r["question"], "choices": r["choices"], "answer": r["answer"],
        "prompt": template.render(question=r["question"], choices=r["choices"]), "completion": r["text"],
        "from_table": r["from_table"], "from_id": r["from_id"], "model": r["model"], "words": r["n_words"],
        "run_id": lake.run_id} for r in examples], schema=schema.SFT)
    stats.examples = table.num_rows
    stats.by_source.update(table.column("source").to_pylist())
    stats.written = lake.replace("sft", table, f"sft set: {table.num_rows} examples")
    return stats.result()
