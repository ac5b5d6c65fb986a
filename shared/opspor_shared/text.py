"""Text that people type and that Opspor later puts into mail headers, CSV cells and pages.

A line break in a school name could add a mail header ("Bcc:"), and bidi or zero-width
characters can disguise what a reader sees. Nothing typed into a name, a rule's description or a
short reason needs them, so they are refused where the text comes in.
"""

from __future__ import annotations

import unicodedata

_LINE_SEPARATORS = frozenset("\u2028\u2029")


def control_character(value: str) -> str | None:
    """The first control, format or line-separator character, as U+XXXX, or None."""
    for char in value:
        if unicodedata.category(char)[0] == "C" or char in _LINE_SEPARATORS:
            return f"U+{ord(char):04X}"
    return None


def control_problem(value: str) -> str | None:
    """A message naming the offending character (never quoting the text), or None."""
    found = control_character(value)
    if found is None:
        return None
    return (
        f"contains the control character {found}; line breaks, tabs and invisible "
        "formatting characters are not allowed"
    )
