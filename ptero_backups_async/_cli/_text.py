"""Panel text made safe for a terminal: ``visible()``, the one sanitizer, and its friends.

Whatever the panel sends (names, ids, checksums, error texts) is shown through ``visible()``:
a terminal never receives a control sequence from the panel, and rich never reads panel text
as markup (``safe_markup()`` for markup strings, ``plain()`` for cells). JSON output keeps the
exact values, with the same characters written as escapes (``json_text()``).
"""

from __future__ import annotations

import json
import re
import unicodedata
from typing import Any

from rich.markup import escape
from rich.text import Text

__all__ = ["json_text", "plain", "quoted", "safe_markup", "visible"]

#: Unicode categories a terminal must not receive raw: controls (C0, DEL, C1: escape
#: sequences), format characters (bidirectional overrides, zero-width characters), lone
#: surrogates (they cannot even be encoded) and the line and paragraph separators.
_UNSAFE_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Zl", "Zp"})
_SHORT_ESCAPES = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}
_NOT_PRINTABLE_ASCII = re.compile(r"[^\x20-\x7e]")
#: json.dumps already escapes C0 inside strings, and a raw C0 outside them is layout.
_NON_ASCII = re.compile(r"[^\x00-\x7e]")


def _unsafe(char: str) -> bool:
    return unicodedata.category(char) in _UNSAFE_CATEGORIES


def _python_escape(char: str) -> str:
    short = _SHORT_ESCAPES.get(char)
    if short is not None:
        return short
    code = ord(char)
    if code < 0x100:
        return f"\\x{code:02x}"
    if code < 0x10000:
        return f"\\u{code:04x}"
    return f"\\U{code:08x}"


def visible(text: object) -> str:
    """``text`` with every control, format and separator character shown as an escape.

    ``"\\x1b]0;pwned\\x07"`` comes out as the characters ``\\x1b]0;pwned\\x07``; a
    right-to-left override as ``\\u202e``. Every panel-supplied string the command line prints
    goes through here (JSON output keeps the exact value: see ``json_text``).
    """
    s = text if isinstance(text, str) else str(text)
    if s.isascii() and s.isprintable():
        return s
    return _NOT_PRINTABLE_ASCII.sub(lambda m: _python_escape(m[0]) if _unsafe(m[0]) else m[0], s)


def safe_markup(text: object) -> str:
    """Panel text for a rich markup string: sanitized and with its ``[tags]`` escaped."""
    return escape(visible(text))


def plain(text: object, style: str = "") -> Text:
    """Panel text as a rich ``Text`` cell: sanitized, never read as markup."""
    return Text(visible(text), style=style)


def quoted(text: object) -> str:
    """``'name'``, sanitized (for messages: where a name starts and ends)."""
    return f"'{visible(text)}'"


def _json_escape(char: str) -> str:
    code = ord(char)
    if code > 0xFFFF:  # JSON spells it as a UTF-16 surrogate pair
        code -= 0x10000
        return f"\\u{0xD800 + (code >> 10):04x}\\u{0xDC00 + (code & 0x3FF):04x}"
    return f"\\u{code:04x}"


def json_text(doc: Any) -> str:
    """``doc`` as indented JSON, readable (UTF-8) yet safe on a terminal.

    The characters ``visible()`` escapes are written as ``\\uXXXX``: the same JSON value,
    but no raw C1 control, bidirectional override or lone surrogate in the output.
    """
    return _safe_json(json.dumps(doc, indent=2, ensure_ascii=False))


def json_line(doc: Any) -> str:
    """``doc`` as one line of JSON (for streams of documents), as safe as ``json_text``."""
    return _safe_json(json.dumps(doc, ensure_ascii=False, separators=(",", ":")))


def _safe_json(text: str) -> str:
    return _NON_ASCII.sub(lambda m: _json_escape(m[0]) if _unsafe(m[0]) else m[0], text)
