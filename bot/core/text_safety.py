"""Control characters in untrusted text: found when a file is read, made visible when shown in a terminal.

A title or quote can carry ESC, CSI or OSC sequences (recolour, retitle or clear a terminal,
hide text, write a fake prompt) and bidi overrides (show text in another order than it is
stored). Articles refuse them on the way in (`first_control`); text that reaches a terminal
by another road (metadata, JSON escapes, an old database) is shown with them spelled out
(`terminal_safe`), never emitted.
"""
from __future__ import annotations

import re

# C0 controls except tab, newline, carriage return and form feed (ordinary in text files),
# DEL, and C1 controls (U+0080–U+009F, which include the 8-bit CSI and OSC).
_FILE_CONTROLS = re.compile("[\x00-\x08\x0b\x0e-\x1f\x7f-\x9f]")

# What a terminal must never receive raw: every C0 control but tab and newline (a carriage
# return overwrites the line), DEL, C1, and the bidi marks, embeddings, overrides and isolates.
_TERMINAL_UNSAFE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")
_LINE_BREAKS = re.compile(r"\s+")


def first_control(text: str) -> int | None:
    """The index of the first control character that has no place in a text file, or None.
    One C-level regex scan: linear, and quick on the largest files the importer accepts."""
    found = _FILE_CONTROLS.search(text)
    return found.start() if found else None


def _spelled(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def terminal_safe(text: str) -> str:
    """`text` with every control and bidi character a terminal would act on spelled out
    (ESC as `\\x1b`, RLO as `\\u202e`); tabs and newlines are kept."""
    return _TERMINAL_UNSAFE.sub(_spelled, text)


def terminal_field(text: str) -> str:
    """One field (a title, a source) on one line: line breaks folded, controls spelled out,
    so a value cannot start a line of its own and pass for the program's own output."""
    return terminal_safe(_LINE_BREAKS.sub(" ", text).strip())


def json_safe(text: str) -> str:
    """JSON text (from json.dumps, which already escapes C0) with C1 and bidi characters
    escaped as `\\u....` too: they can only occur inside strings, where that escape is valid."""
    return _TERMINAL_UNSAFE.sub(lambda m: f"\\u{ord(m.group()):04x}", text)
