"""Retrieval tokens: what a question and a sentence are compared on.

Lower-cased, Unicode-normalised (NFKC, accents folded), numbers and hyphenated words kept
(the whole word and its parts, so "cross-border" matches "cross border"), English stop
words dropped, Snowball-stemmed.
"""
from __future__ import annotations

import re
import unicodedata
from functools import lru_cache

from nltk.stem.snowball import SnowballStemmer

# NLTK's English stop-word list, kept here because `nltk.corpus.stopwords` needs a download.
STOP_WORDS = frozenset(
    """
    a about above after again against ain all am an and any are aren aren't as at be because
    been before being below between both but by can couldn couldn't d did didn didn't do does
    doesn doesn't doing don don't down during each few for from further had hadn hadn't has
    hasn hasn't have haven haven't having he he'd he'll her here hers herself he's him himself
    his how i i'd if i'll i'm in into is isn isn't it it'd it'll it's its itself i've just ll m
    ma me mightn mightn't more most mustn mustn't my myself needn needn't no nor not now o of off
    on once only or other our ours ourselves out over own re s same shan shan't she she'd she'll
    she's should shouldn shouldn't should've so some such t than that that'll the their theirs
    them themselves then there these they they'd they'll they're they've this those through to
    too under until up ve very was wasn wasn't we we'd we'll we're were weren weren't we've what
    when where which while who whom why will with won won't wouldn wouldn't y you you'd you'll
    your you're yours yourself yourselves you've
    """.split()
)

_WORD = re.compile(r"\w+(?:[-'’.]\w+)*")
_stemmer = SnowballStemmer("english")


def normalise(text: str) -> str:
    """NFKC, case-folded, combining marks removed: "Café" and "cafe" compare equal."""
    text = unicodedata.normalize("NFKD", unicodedata.normalize("NFKC", text).casefold())
    return "".join(ch for ch in text if not unicodedata.combining(ch))


@lru_cache(maxsize=200_000)
def stem(word: str) -> str:
    return _stemmer.stem(word)


def _expand(word: str) -> list[str]:
    word = word.replace("’", "'")
    if word.endswith("'s"):
        word = word[:-2]
    if "." in word and not any(ch.isdigit() for ch in word):
        # "U.S." and "u.s" are the same word; "3.5" stays a number.
        word = word.replace(".", "")
    parts = [p for p in re.split(r"[-'.]", word) if p] if ("-" in word or "'" in word) else []
    whole = word.replace("'", "")
    return [whole, *parts] if len(parts) > 1 else [whole]


def word_tokens(text: str) -> list[str]:
    """Surface words of `text`, normalised but neither stemmed nor filtered."""
    return _WORD.findall(normalise(text))


def tokenize(text: str) -> list[str]:
    """Retrieval tokens of a sentence or a question."""
    out: list[str] = []
    for raw in word_tokens(text):
        if raw in STOP_WORDS:
            continue
        for word in _expand(raw):
            if word and word not in STOP_WORDS and (len(word) > 1 or word.isdigit()):
                out.append(stem(word))
    return out


def matched_word_spans(text: str, terms: set[str]) -> list[tuple[int, int]]:
    """(start, end) offsets in `text` of the words whose tokens are among `terms` (to bold them)."""
    spans = []
    for match in _WORD.finditer(text):
        if terms.intersection(tokenize(match.group())):
            spans.append((match.start(), match.end()))
    return spans
