"""Make text from data (captions, keys, URLs, shard and concept names) safe to show.

Control characters and escape sequences (ESC, BEL, CR, backspace, OSC/CSI introducers, DEL, C1
controls, bidi overrides and isolates, zero-width joiners used for spoofing) become a visible
placeholder, so nothing from a dataset can move the cursor, clear the screen, write the
clipboard (OSC 52), open links or reorder what the user reads. Rich markup is never parsed from
data: the dashboard wraps it in `rich.text.Text`; `rich_markup` escapes it for the rare string
that must go through markup.
"""

from __future__ import annotations

import json
import re

PLACEHOLDER = "\ufffd"  # the replacement character: visible, never interpreted
_BIDI = "\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069"
_INVISIBLE = "\u200b-\u200d\u2028\u2029\ufeff"
UNSAFE = re.compile(f"[\x00-\x08\x0b-\x1f\x7f-\x9f{_BIDI}{_INVISIBLE}]")
_WHITESPACE = re.compile(r"[\t\n]+")
_MARKDOWN = re.compile(r"([\\`*_{}\[\]<>()#+!|~])")
_JSON_UNSAFE = re.compile(f"[\x7f-\x9f{_BIDI}{_INVISIBLE}]")


def safe_text(value, single_line: bool = True) -> str:
    """`value` as text with every control/escape/bidi character replaced by a placeholder;
    tabs and newlines become one space when `single_line` (the default)."""
    text = "" if value is None else str(value)
    if single_line:
        text = _WHITESPACE.sub(" ", text)
    return UNSAFE.sub(PLACEHOLDER, text)


def rich_text(value, style: str | None = None):
    """A rich Text that shows `value` literally (no markup, no escapes)."""
    from rich.text import Text

    return Text(safe_text(value), style=style or "")


def rich_markup(value) -> str:
    """`value` safe to embed in a rich markup string."""
    from rich.markup import escape

    return escape(safe_text(value))


def markdown_text(value) -> str:
    """`value` safe inside a Markdown table cell or paragraph: controls replaced, pipes,
    backticks, brackets and HTML-significant characters backslash-escaped."""
    return _MARKDOWN.sub(r"\\\1", safe_text(value))


def json_text(data, indent: int | None = 2) -> str:
    """JSON with non-ASCII kept readable, but DEL, C1 controls and bidi/invisible characters
    written as \\u escapes (json.dumps already escapes the C0 controls)."""
    text = json.dumps(data, indent=indent, ensure_ascii=False, default=str)
    return _JSON_UNSAFE.sub(lambda m: f"\\u{ord(m.group()):04x}", text)
