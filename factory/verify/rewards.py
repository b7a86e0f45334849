"""TRL reward functions over the same judge: `accuracy_reward`, `format_reward`, and the official
GRPO reward `openvlthinker_reward` (see vlfactory.verify)."""

from __future__ import annotations

import re
from typing import Any

from vlfactory.verify.pool import TIMEOUT_S, _finish_all
from vlfactory.verify.protocols import grade_many
from vlfactory.verify.rules import Grade

_R1V_ANSWER = re.compile(r"<answer>(.*?)</answer>")   # no DOTALL, as in r1v.py


def openvlthinker_reward(completions: list, answer: list[str], **kwargs) -> list[float]:
    """The official GRPO reward (OpenVLThinker's train/easyr1/examples/reward_function/r1v.py): the first
    one-line `<answer>...</answer>` (else the whole completion), correct iff
    `mathruler.grader.grade_answer(given, gold)` or equal ignoring case; 1.0, or 0.5 when nothing
    stands between `</think>` and `<answer>`; 0.0 when wrong. mathruler runs with a time limit.

    >>> openvlthinker_reward(["<think>3 + 4</think> So 7. <answer>7</answer>", "<think>3 + 4</think><answer>7</answer>",
    ...                       "<answer>8</answer>"], answer=["7", "7", "7"])
    [1.0, 0.5, 0.0]
    """
    texts = [_content(c) for c in completions]
    results: list = []
    for text, gold in zip(texts, answer):
        found = _R1V_ANSWER.search(text)
        given = found.group(1).strip() if found else text.strip()
        gold = str(gold)
        ok = given.lower() == gold.lower()
        results.append(Grade(True, given, "correct") if ok else (given, "mathruler", given, gold.strip()))
    graded = _finish_all(results, None, TIMEOUT_S)
    out = []
    for text, g in zip(texts, graded):
        bare = "</think>" in text and "<answer>" in text and not text.split("</think>")[-1].split("<answer>")[0].strip()
        out.append((0.5 if bare else 1.0) if g.correct else 0.0)
    return out


# ---- TRL rewards ---------------------------------------------------------------------------


def accuracy_reward(completions: list, answer: list[str], choices: list | None = None,
                    question: list[str] | None = None, **kwargs) -> list[float | None]:
    """GRPO accuracy reward: 1.0 for a correct final answer, else 0.0; None when the gold is unreadable.

    TRL passes completions as strings or as conversations, and the dataset's columns as lists:
    `answer` (the gold), and `choices` and `question` when the dataset has them.

    >>> accuracy_reward(["<think>3 + 4</think> <answer>7</answer>", "<answer>8</answer>"], answer=["7", "7"])
    [1.0, 0.0]
    >>> accuracy_reward([[{"role": "assistant", "content": "<answer>(B)</answer>"}]],
    ...                 answer=["no"], choices=[["yes", "no"]])
    [1.0]
    """
    n = len(completions)
    rows = zip(map(_content, completions), answer, choices or [None] * n, question or [None] * n)
    return [None if g.reason == "unparsable_gold" else float(g.correct) for g in grade_many(rows)]


def format_reward(completions: list, **kwargs) -> list[float]:
    """1.0 when a completion is `<think> ... </think> ... <answer>X</answer>`: each tag once, X not empty.

    >>> format_reward(["<think>2 + 2 = 4</think> Four. <answer>4</answer>", "<answer>4</answer>",
    ...                [{"role": "assistant", "content": "<think>hm</think><answer></answer>"}]])
    [1.0, 0.0, 0.0]
    """
    return [float(_well_formed(_content(c))) for c in completions]


def _well_formed(text: str) -> bool:
    text = text.strip()
    tags = ("<think>", "</think>", "<answer>", "</answer>")
    if not (text.startswith("<think>") and text.endswith("</answer>")) or any(text.count(t) != 1 for t in tags):
        return False
    start = text.index("<answer>")
    return text.index("</think>") < start and text[start + len("<answer>"):-len("</answer>")].strip() != ""


def _content(completion: Any) -> str:
    """The text of a completion: a string, or the last message of a conversation."""
    if isinstance(completion, str):
        return completion
    content = completion[-1]["content"]
    if isinstance(content, str):
        return content
    return "".join(part.get("text") or "" for part in content)   # [{"type": "text", "text": ...}]
