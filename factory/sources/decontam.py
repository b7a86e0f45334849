"""Decontamination: fingerprints (image digests, normalised questions) of the benchmarks, which training
rows must not match."""

from __future__ import annotations

import re
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
        for i, raw in enumerate(read_source(src)):
            try:
                row = map_row(src, mapping, raw, i)
            except Reject:
                continue
            fp.questions.add(normalise_question(row.question))
            if row.image is not None:
                try:
                    fp.images.add(load_image(row.image, root, max_bytes=recipe.max_image_bytes).image_id)
                except Reject:
                    pass
    return fp
