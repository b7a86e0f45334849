"""Secrets: which keys name one, and redaction of credentials inside values.

Recipes and trainer settings are stored in the catalog and copied into published sets, so a key
that holds a secret is refused wherever it sits (`find_secret`), and credentials written inside a
value (a URL's `user:password@`, libpq's `password=`, `?api_key=` in a query, a bearer token, a
token of a well-known shape) are masked before any text is stored, shown or published (`redact`).

    >>> secret_key("hub_token"), secret_key("openai_api_key"), secret_key("pad_token"), secret_key("max_tokens")
    (True, True, False, False)
    >>> redact("base_url: http://user:pw@host:8000/v1 and password=hunter2")
    'base_url: http://user:***@host:8000/v1 and password=***'
"""

from __future__ import annotations

import re
from typing import Any

# A key is read as its word parts: hubToken, HUB_TOKEN, hub-token and hub.token are all (hub, token).
_PARTS = re.compile(r"[A-Z]+(?![a-z])|[A-Z]?[a-z]+|\d+")
# Any of these parts makes a key a secret's.
SECRET_WORDS = {"secret", "secrets", "password", "passwords", "passwd", "passphrase", "credential", "credentials",
                "apikey", "authorization", "cookie", "cookies", "bearer"}
# `X_key` is a secret for these X (api_key, access_key, private_key); a plain key (sort_key) is not.
KEY_KINDS = {"api", "access", "private", "secret", "auth", "client", "signing", "encryption", "master", "session"}
# `X_token` is a tokenizer's special token for these X (pad_token, eos_token), a credential otherwise
# (hub_token, access_token, auth_token, token).
SPECIAL_TOKENS = {"pad", "eos", "bos", "unk", "sep", "cls", "mask", "image", "video", "audio", "vision", "start",
                  "end", "special", "additional", "boi", "eoi", "think", "answer", "chat", "placeholder", "default"}
# A last part that makes the key name where a secret is, not hold it: api_key_env names an environment variable.
INDIRECT = {"env", "var", "variable"}


def _parts(key: str) -> list[str]:
    return [p.lower() for p in _PARTS.findall(str(key))]


def secret_key(key: Any) -> bool:
    """Whether a key looks like it holds a secret (judged by its word parts; plurals like max_tokens do not)."""
    parts = _parts(str(key))
    if not parts or parts[-1] in INDIRECT:
        return False
    for i, part in enumerate(parts):
        before = parts[i - 1] if i else None
        if part in SECRET_WORDS:
            return True
        if part == "auth" and i == len(parts) - 1:
            return True
        if part == "key" and before in KEY_KINDS:
            return True
        # token as the last part, or followed only by its value: hub_token, access_token_value
        if part == "token" and before not in SPECIAL_TOKENS and parts[i + 1:] in ([], ["value"]):
            return True
    return False


def find_secret(raw: Any, limit: int = 200_000) -> str | None:
    """The dotted path of the first key at any depth that looks like it holds a secret, else None.

    Also the guard against YAML that is not a tree: a recursive anchor raises ValueError, and so
    does a document whose aliases expand past `limit` nodes (a billion-laughs file), before any
    other code walks it.
    """
    seen = 0

    def walk(node: Any, trail: str, ancestors: tuple[int, ...]) -> str | None:
        nonlocal seen
        seen += 1
        if seen > limit:
            raise ValueError(f"more than {limit:,} values once its YAML aliases are expanded")
        if isinstance(node, (dict, list)):
            if id(node) in ancestors:
                raise ValueError(f"{trail.rstrip('.') or 'the document'} contains itself (a recursive YAML anchor)")
            ancestors += (id(node),)
        if isinstance(node, dict):
            for k, v in node.items():
                if secret_key(k):
                    return f"{trail}{k}"
                found = walk(v, f"{trail}{k}.", ancestors)
                if found:
                    return found
        elif isinstance(node, list):
            for i, v in enumerate(node):
                found = walk(v, f"{trail}{i}.", ancestors)
                if found:
                    return found
        return None

    return walk(raw, "", ())


# ---- values ---------------------------------------------------------------------------------------

MASK = "***"
# scheme://user:password@host -> scheme://user:***@host; scheme://token@host -> scheme://***@host
_USERINFO = re.compile(r"(?P<scheme>\b[a-zA-Z][\w+.-]*://)(?P<userinfo>[^\s/@?#'\"]+)@")
# key=value anywhere (query strings, libpq); key: value only where a mapping has its keys (a line's start,
# after `{` or `,`; quoted as in JSON), so prose like "no token: set HF_TOKEN" is left alone. Each key is
# judged by secret_key.
_VALUE = r"""(?P<value>"[^"\n]*"|'[^'\n]*'|[^\s&;,'"}\])]+)"""
_ASSIGN = re.compile(r"""(?P<key>[A-Za-z_][\w.-]*)(?P<q>)(?P<sep>\s*=\s*)""" + _VALUE + "|"
                     + r"""(?m:(?<=[{,])|^)(?P<lead>[ \t]*(?:-[ \t]+)?)(?P<q2>["']?)(?P<key2>[A-Za-z_][\w.-]*)(?P=q2)"""
                     + r"""(?P<sep2>:[ \t]*)""" + _VALUE.replace("value", "value2"))
# Tokens whose shape gives them away wherever they appear.
_SHAPES = re.compile(r"\b(?:hf_[A-Za-z0-9]{30,}|sk-[A-Za-z0-9_-]{20,}|gh[pousr]_[A-Za-z0-9]{30,}|"
                     r"github_pat_\w{30,}|AKIA[0-9A-Z]{16}|xox[abprs]-[\w-]{10,})")
_BEARER = re.compile(r"(?i)\b(bearer|basic)\s+[\w.~+/=-]{8,}")


def _userinfo(m: re.Match) -> str:
    user, sep, _ = m["userinfo"].partition(":")
    return f"{m['scheme']}{user}:{MASK}@" if sep else f"{m['scheme']}{MASK}@"


def _assign(m: re.Match) -> str:
    key, raw = (m["key"], m["value"]) if m["key"] else (m["key2"], m["value2"])
    value = raw.strip("\"'")
    if not secret_key(key) or not value or MASK in value or value.lower() in ("bearer", "basic"):
        return m[0]  # not a secret's key, empty, masked already, or a scheme whose credential _BEARER masked
    quote = raw[0] if raw[0] in "\"'" else ""
    head = m[0][:len(m[0]) - len(raw)]
    return f"{head}{quote}{MASK}{quote}"


def redact(text: str | None) -> str | None:
    """The text with credentials inside it masked; text without any is returned unchanged."""
    if not text:
        return text
    text = _USERINFO.sub(_userinfo, text)
    text = _BEARER.sub(lambda m: f"{m[1]} {MASK}", text)
    text = _ASSIGN.sub(_assign, text)
    return _SHAPES.sub(MASK, text)
