"""Finding the final answer in a completion: <answer> tags, \boxed{} runs, "the answer is", and the
multiple-choice letters and option texts an answer or a question names (see vlfactory.verify)."""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence

# ---- finding the answer ------------------------------------------------------------------

_BOX = re.compile(r"\\(?:boxed|fbox)\s*\{")
_BRACE = re.compile(r"[{}]")
_BOX_GAP = re.compile(r"[\s,;$]*(?:(?:and|&)[\s$]*)?")
_ANSWER_IS = re.compile(r"(?i)\banswer\b[\s*]*(?:is\b|:|=)[\s*:]*")
_SENTENCE_END = re.compile(r"(?<!\b(?:Mr|Ms|Dr|St|Mt|Jr|Sr))(?<!\bMrs)\.(?:\s|$)")


def extract_answer(completion: str, choices: Sequence[str] | None = None) -> str | None:
    """The final answer of a completion, cleaned; with `choices`, a letter becomes its choice.

    >>> extract_answer("<think>7 + 5 = 12</think> It costs $12. <answer>\\\\boxed{12}</answer>")
    '12'
    >>> extract_answer("Comparing the rows, the answer is (B).", ["Monday", "Tuesday"])
    'Tuesday'
    """
    answer = _extract(completion)
    if answer is not None and choices:
        choices = [str(c) for c in choices]
        picked = _picked(answer, choices)
        if picked is not None:
            return choices[picked]
    return answer


def _extract(completion: str) -> str | None:
    end = completion.rfind("</think>")
    text = completion[end + len("</think>"):] if end >= 0 else completion
    start = text.rfind("<answer>")
    if start >= 0:
        body = text[start + len("<answer>"):]
        stop = body.find("</answer>")
        span = _narrow(body if stop < 0 else body[:stop], whole=True)
    else:
        span = _narrow(text, whole=False)
    return (_clean(span) or None) if span is not None else None


def stated_answer(text: str) -> str | None:
    """The answer a text states outright, cleaned: its last \\boxed{} run, else what follows its
    last "answer is"; None if it states none. Unlike `extract_answer`, a short text is not an
    answer by itself, and `<think>` tags mean nothing: this reads a piece of reasoning.

    >>> stated_answer("The base is 4, so the area is \\\\boxed{12}. Wait, the base is 5.")
    '12'
    >>> stated_answer("7 * 6 = 42") is None
    True
    """
    span = _stated(text)
    return (_clean(span) or None) if span is not None else None


def _narrow(text: str, whole: bool) -> str | None:
    """The answer inside `text`: a boxed run, else after "answer is", else all of it if `whole` or short."""
    stated = _stated(text)
    if stated is not None:
        return stated
    text = text.strip()
    return text if whole or (len(text) <= 100 and "\n" not in text) else None


def _stated(text: str) -> str | None:
    boxed = _boxed(text)
    if boxed is not None:
        return boxed
    said = None
    for said in _ANSWER_IS.finditer(text):
        pass
    if said is None:
        return None
    rest = text[said.end():].lstrip().split("\n", 1)[0]
    stop = _SENTENCE_END.search(rest)
    return rest[:stop.start()] if stop else rest


def _boxed(text: str) -> str | None:
    """The last \\boxed{...}, or the last run of them separated by commas/"and", joined by ", "."""
    found: list[str] = []
    stop = len(text)
    for box in reversed(list(_BOX.finditer(text))):
        end = _closing(text, box.end(), stop)
        if end is None or (found and not _BOX_GAP.fullmatch(text, end + 1, stop)):
            break
        found.append(text[box.end():end])
        stop = box.start()
    return ", ".join(reversed(found)) if found else None


def _closing(text: str, start: int, stop: int) -> int | None:
    depth = 1
    for brace in _BRACE.finditer(text, start, stop):
        depth += 1 if brace.group() == "{" else -1
        if depth == 0:
            return brace.start()
    return None


_WRAPPER = re.compile(r"\\(?:text|textbf|textit|textrm|mathrm|mathbf|mbox|operatorname)\s*\{([^{}]*)\}")
_MATH_DELIM = re.compile(r"\\[()\[\]]|\$\$")
_TEX_SPACE = re.compile(r"\\[,;:! ]|~|\\(?:left|right)(?![A-Za-z])|\\displaystyle")
_EMPHASIS = re.compile(r"^(\*\*|\*|`)(.+)\1$")   # markdown **bold**, *italic*, `code`
_DEGREE = re.compile(r"\^\s*\{?\s*\\circ\s*\}?|\\circ\b|\\degree\b")


def _clean(s: str) -> str:
    """Strip the wrapping that carries no meaning: math delimiters, \\text{}, markdown, spacing."""
    s = unicodedata.normalize("NFKC", s).replace("\u2212", "-").replace("\u2044", "/").replace("\x00", "")
    s = _WRAPPER.sub(r"\1", _WRAPPER.sub(r"\1", s))
    s = _MATH_DELIM.sub(" ", s.replace("\\$", "\x00"))
    if s.count("$") >= 2:   # math delimiters; a lone "$" is money
        s = s.replace("$", " ")
    s = s.replace("\x00", "$").replace("\\%", "%").replace("\\dfrac", "\\frac").replace("\\tfrac", "\\frac")
    s = _TEX_SPACE.sub(" ", _DEGREE.sub("°", s))
    s = _EMPHASIS.sub(r"\2", " ".join(s.split())).strip()
    return s[:-1].rstrip() if s.endswith(".") else s


_MERIDIEM = re.compile(r"(?<=\d)\s*([ap])\.?\s?m\b\.?")


def _fold(s: str) -> str:
    """For comparing texts: case, spacing and "P.M." vs "pm" do not count."""
    return _MERIDIEM.sub(r" \1m", " ".join(s.casefold().split()))

# ---- multiple choice ---------------------------------------------------------------------

_LETTER = re.compile(r"(?:(?i:option|choice)\s*)?(?:\(([A-Za-z])\)|([A-Z])(?=[.:),]|$))")
_CHOICE_LINE = re.compile(r"^[ \t]*([A-H])[.:)][ \t]+(\S.*?)[ \t]*$", re.M)
_CHOICE_MARK = re.compile(r"\(([A-H])\)")


def _letter(answer: str) -> str | None:
    """The choice letter an answer leads with ("B", "(B) x", "B. x", "Option B"), or its only "(B)"."""
    if m := _LETTER.match(answer):
        return (m[1] or m[2]).upper()
    marks = set(_CHOICE_MARK.findall(answer)) if len(answer) <= 100 else ()
    return marks.pop() if len(marks) == 1 else None


def _picked(answer: str, choices: list[str]) -> int | None:
    """Which choice `answer` names: by its text first, then by its letter."""
    folded = _fold(answer)
    for i, choice in enumerate(choices):
        if _fold(choice) == folded:
            return i
    letter = _letter(answer)
    if letter is not None and ord(letter) - ord("A") < len(choices):
        return ord(letter) - ord("A")
    return None


def _choices_in(question: str) -> list[str]:
    """The choices a question lists itself, as "A. x" / "A: x" lines or inline "(A) x (B) y"."""
    lines = [(m[1], m[2]) for m in _CHOICE_LINE.finditer(question)]
    marks = list(_CHOICE_MARK.finditer(question))
    inline = [(m[1], question[m.end():nxt.start() if nxt else None].strip())
              for m, nxt in zip(marks, marks[1:] + [None])]
    for found in (lines, inline):
        firsts = [i for i, (letter, _) in enumerate(found) if letter == "A"]
        if firsts:
            run = [found[firsts[-1]]]
            for letter, text in found[firsts[-1] + 1:]:
                if ord(letter) != ord(run[-1][0]) + 1:
                    break
                run.append((letter, text))
            if len(run) >= 2:
                return [text for _, text in run]
    return []
