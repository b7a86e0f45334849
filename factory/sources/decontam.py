"""Decontamination: fingerprints (image digests, normalised questions) of the benchmarks, which training
rows must not match. A benchmark row that cannot be read (no question, a broken image, ...) gives no
fingerprint, so training rows like it pass: those rows are counted by reason and the ingest stage says how
many (`Fingerprints.unread`, tests/stages/test_ingest.py::test_unreadable_benchmark_rows_are_counted)."""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field

from vlfactory.recipe import IngestConfig
from vlfactory.sources.columns import Reject, column_map, map_row
from vlfactory.sources.images import images_root, load_image
from vlfactory.sources.readers import read_source

_PUNCT = re.compile(r"[^\w\s]")


def normalise_question(q: str) -> str:
    return " ".join(_PUNCT.sub(" ", q.lower()).split())


@dataclass
class Fingerprints:
    images: set[str] = field(default_factory=set)
    questions: set[str] = field(default_factory=set)
    # benchmark -> why rows gave no fingerprint (the row's reason; "image <reason>": its question only)
    unread: dict[str, Counter] = field(default_factory=dict)

    def unread_lines(self) -> list[str]:
        """One line per benchmark some of whose rows gave no fingerprint (or no image fingerprint)."""
        return [f"benchmark {name}: {sum(why.values())} rows not fingerprinted "
                f"({', '.join(f'{k} {v}' for k, v in why.most_common())}); training rows matching them are not caught"
                for name, why in self.unread.items() if why]

    def match(self, image_id: str | None, question: str, by: list[str]) -> str | None:
        if "image" in by and image_id and image_id in self.images:
            return "its image is a benchmark image"
        if "question" in by and self.questions and normalise_question(question) in self.questions:
            return "its question matches a benchmark question"
        return None


def benchmark_fingerprints(recipe: IngestConfig, workers: int) -> Fingerprints:
    fp = Fingerprints()
    for src in recipe.benchmarks:
        mapping, root = column_map(src), images_root(src)
        unread = fp.unread.setdefault(src.name, Counter())
        for i, raw in enumerate(read_source(src)):
            try:
                row = map_row(src, mapping, raw, i)
            except Reject as e:
                unread[e.reason] += 1
                continue
            fp.questions.add(normalise_question(row.question))
            if row.image is not None:
                try:
                    fp.images.add(load_image(row.image, root, max_bytes=recipe.max_image_bytes).image_id)
                except Reject as e:
                    unread[f"image {e.reason}"] += 1
    return fp
