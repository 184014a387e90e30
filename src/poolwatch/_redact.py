"""Secrets out of everything poolwatch prints or logs: one :func:`redact` for every output path.

It masks URL passwords (``user:secret@``), secret-looking parameters in query strings, libpq
``key=value`` strings and JSON (``password``, ``token``, ``secret``, ``api_key``...), HTTP
``Bearer``/``Basic`` credentials, and every secret registered with :func:`remember` in any
encoding it may be echoed in (as is, URL- or JSON-escaped, in another case, base64).
"""

from __future__ import annotations

import base64
import json
import logging
import re
import threading
from collections.abc import Iterable
from urllib.parse import quote, quote_plus, unquote

MASK = "***"

#: Names whose value is a secret: any name containing one of these...
_SECRET_PART = r"password|passwd|pwd|secret|token|api[_-]?key|access[_-]?key|private[_-]?key"
#: ...or ending with one of these after a separator (``x-api-key``, ``client_key``), or equal.
_SECRET_TAIL = r"key|pass|auth|authorization|credentials?|signature|sig"
_NAME = rf"(?:[\w.-]*?(?:{_SECRET_PART})[\w.-]*|(?:[\w.-]*[_.-])?(?:{_SECRET_TAIL}))"

_URL_USERINFO = re.compile(r"(?P<head>[a-zA-Z][\w+.-]*://[^\s:/?#@\[\]]*):(?P<secret>[^\s/?#]*)@")
_KEY_VALUE = re.compile(
    rf"(?P<head>(?<![\w.-]){_NAME}\s*=\s*)"
    r"(?P<secret>'(?:[^'\\]|\\.)*'?|\"(?:[^\"\\]|\\.)*\"?|[^\s&;#,'\"]*)",
    re.IGNORECASE,
)
_JSON_VALUE = re.compile(
    rf"(?P<head>(?P<q>\\?[\"']){_NAME}(?P=q)\s*:\s*)"
    # A plain JSON string (escapes included), then one inside another JSON string (\"...\").
    r"(?P<secret>\"(?:[^\"\\]|\\.)*\"|\\\"(?:[^\"\\]|\\\\\\\"|\\\\\\\\|\\\\[^\"\\]|\\[^\"\\])*\\\"|'(?:[^'\\]|\\.)*')",
    re.IGNORECASE,
)
#: ``Bearer <anything>``; ``Basic <base64>`` only when it looks encoded (not "basic support").
_HEADER = re.compile(
    r"(?P<head>\bbearer\s+)(?P<secret>[^\s\"',;|]+)"
    r"|(?P<basic>\bbasic\s+)(?=[\w+/=-]*[\d+/=])[\w+/=-]{8,}",
    re.IGNORECASE,
)

#: Shorter registered secrets would mask ordinary words; they are still masked by the patterns.
MIN_SECRET_LENGTH = 4


class _Known:
    """Secrets remembered so far, as one pattern of all their spellings (longest first)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.forms: set[str] = set()
        self.pattern: re.Pattern[str] | None = None

    def add(self, secrets: set[str]) -> None:
        with self.lock:
            for secret in secrets:
                self.forms.update(_variants(secret))
            ordered = sorted(self.forms, key=len, reverse=True)  # longest first: no partial masks
            self.pattern = re.compile("|".join(map(re.escape, ordered)), re.IGNORECASE)

    def clear(self) -> None:
        with self.lock:
            self.forms.clear()
            self.pattern = None


_known = _Known()


def _variants(secret: str) -> set[str]:
    """The spellings ``secret`` may take in a message, a URL, a JSON body or an auth header.

    Other cases are listed too: a pattern's IGNORECASE folds one character at a time, which
    misses mappings that change length (``"ß".upper() == "SS"``, ``"İ".lower() == "i̇"``).
    """
    forms = {base64.b64encode(secret.encode()).decode().rstrip("=")}
    forms.add(base64.urlsafe_b64encode(secret.encode()).decode().rstrip("="))
    for cased in {secret, secret.lower(), secret.upper(), secret.casefold()}:
        forms.update((cased, quote(cased, safe=""), quote_plus(cased)))
        forms.add(json.dumps(cased)[1:-1])
        forms.add(json.dumps(cased, ensure_ascii=False)[1:-1])
    return {form for form in forms if len(form) >= MIN_SECRET_LENGTH}


def remember(*secrets: str | None) -> None:
    """Mask these values wherever they appear from now on (tokens, passwords, ``user:pass``)."""
    fresh = {s for s in secrets if s and len(s) >= MIN_SECRET_LENGTH}
    if fresh:
        _known.add(fresh)


def remember_url(url: str | None) -> None:
    """Remember the password in ``url`` (and ``user:password``, which basic auth encodes)."""
    if not url:
        return
    for match in _URL_USERINFO.finditer(url):
        password = unquote(match["secret"])
        user = unquote(match["head"].rsplit("//", 1)[1])
        remember(password, match["secret"], f"{user}:{password}")
    for match in _KEY_VALUE.finditer(url):
        value = match["secret"]
        if value[:1] in ("'", '"'):  # libpq's quoting: backslash escapes inside quotes
            remember(re.sub(r"\\(.)", r"\1", value[1:-1] if value[-1:] == value[0] else value[1:]))
        else:
            remember(value, unquote(value))


def forget_all() -> None:
    """Drop every remembered secret (for tests)."""
    _known.clear()


def redact(text: str, secrets: Iterable[str] = ()) -> str:
    """``text`` with every secret poolwatch knows of, or can recognise, replaced by ``***``."""
    pattern = _known.pattern
    extra = [s for s in secrets if s and len(s) >= MIN_SECRET_LENGTH]
    if extra:
        forms = {form for s in extra for form in _variants(s)}
        ordered = sorted(forms, key=len, reverse=True)
        text = re.sub("|".join(map(re.escape, ordered)), MASK, text, flags=re.IGNORECASE)
    text = _URL_USERINFO.sub(rf"\g<head>:{MASK}@", text)
    text = _JSON_VALUE.sub(_masked_json, text)
    text = _KEY_VALUE.sub(_masked_value, text)
    text = _HEADER.sub(_masked_header, text)
    return text if pattern is None else pattern.sub(MASK, text)


def _masked_value(match: re.Match[str]) -> str:
    secret = match["secret"]
    if not secret or secret == MASK:
        return match[0]
    quote_mark = secret[0] if secret[0] in "'\"" else ""
    return f"{match['head']}{quote_mark}{MASK}{quote_mark}"


def _masked_header(match: re.Match[str]) -> str:
    return f"{match['head'] or match['basic']}{MASK}"


def _masked_json(match: re.Match[str]) -> str:
    secret = match["secret"]
    opening = secret[:2] if secret.startswith("\\") else secret[0]
    return f"{match['head']}{opening}{MASK}{opening}"


class RedactingFormatter(logging.Formatter):
    """A log formatter whose every line, traceback included, goes through :func:`redact`."""

    def format(self, record: logging.LogRecord) -> str:
        """The formatted record, secrets masked."""
        return redact(super().format(record))
