"""What the viewer lists: per table its key, listed columns, long texts, grade and model (`Spec`, `SPECS`), the
facets, and the page and snippet sizes (vlfactory.viewer.queries reads them)."""

from __future__ import annotations

import re
from dataclasses import dataclass

PAGE_ROWS = 50
SNIPPET = 160  # characters of a long text kept in the index and shown in a list


@dataclass(frozen=True)


class Spec:
    """How a table is listed: its key, the columns shown (content first), which of them are long texts, what its
    grade and model are."""

    key: str
    listed: tuple[str, ...]
    texts: tuple[str, ...] = ()   # long texts: listed as their first SNIPPET characters
    graded: str | None = None     # the column grades.ref_id names (with ref_table = `ref_table`)
    ref_table: str | None = None  # SQL for the grades.ref_table of a row
    model: str | None = None      # the column the model filter reads
    is_set: bool = False          # rewritten per version (sft, rl): an iteration is the set at its tag


SAMPLED = ("question", "completion", "accepted", "reasons", "model", "source", "sample_index", "completion_tokens",
           "finish_reason")
SPECS = {
    "traces": Spec("trace_id", SAMPLED, ("question", "completion"), "trace_id", "'traces'", "model"),
    "rollouts": Spec("rollout_id", SAMPLED, ("question", "completion"), "rollout_id", "'rollouts'", "model"),
    "problems": Spec("problem_id", ("question", "answer", "choices", "source", "split", "source_id"), ("question",)),
    "captions": Spec("caption_id", ("question", "caption", "model", "origin", "source", "completion_tokens",
                                    "finish_reason"), ("question", "caption"), model="model"),
    "grades": Spec("grade_id", ("question", "extracted", "gold", "accepted", "reasons", "ref_table", "source", "words",
                                "cleaned_ok"), ("question",)),
    "rejected": Spec("rejected_id", ("stage", "reason", "reasons", "detail", "source"), ("detail",)),
    "sft": Spec("example_id", ("question", "completion", "model", "source", "from_table", "words", "accepted"),
                ("question", "completion"), "from_id", "t.from_table", "model", is_set=True),
    "rl": Spec("problem_id", ("question", "pass_rate", "samples", "correct", "policy_model", "source"), ("question",),
               model="policy_model", is_set=True),
}
FACETS = ("source", "verdict", "reason", "model", "iteration")
ITERATION = re.compile(r"iter(\d+)")
GENERATED = ("captions", "traces", "rollouts", "sft", "rl")  # a problem's rows, on its page
INDEXED = ("problem_id", "image_id", "source", "accepted", "stage", "reason", "reasons")  # beside the listed ones

