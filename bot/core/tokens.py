"""Retrieval tokens: what a question and a sentence are compared on.

Lower-cased, Unicode-normalised (NFKC, accents folded), numbers and hyphenated words kept
(the whole word and its parts, so "cross-border" matches "cross border"; a decade "1990s"
also as "1990"), English stop words dropped, Snowball-stemmed.

Besides words, a text gets a few answer-type tokens (they start with "#", which no word
can): a statement is marked with what it holds (#when: a year, month or century; #num: a
number; #pct: a percentage), a question with what it asks for ("when", "what year" ->
#when; "how many", "what percentage" -> #num, #pct). A question thus leans towards the
sentences that hold the kind of thing it asks for, inside plain BM25. They are never bolded.
"""
from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence
from functools import lru_cache

from nltk.stem.snowball import SnowballStemmer

# NLTK's English stop-word list, kept here because `nltk.corpus.stopwords` needs a download;
# less "won" (there for "won't", which stays): "Who won ...?" must keep its verb.
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
    when where which while who whom why will with won't wouldn wouldn't y you you'd you'll
    your you're yours yourself yourselves you've
    """.split()
)

# Bumped whenever tokenize() changes: tokens stored with another version are stale.
TOKENIZER_VERSION = 2

_WORD = re.compile(r"\w+(?:[-'’.]\w+)*")
_stemmer = SnowballStemmer("english")


def normalise(text: str) -> str:
    """NFKC, case-folded, combining marks removed: "Café" and "cafe" compare equal."""
    if text.isascii():
        return text.lower()  # most text: the same result at a fraction of the cost
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
    """Retrieval tokens of a sentence or a question: its words, then its answer-type tokens."""
    out: list[str] = []
    for raw in word_tokens(text):
        out.extend(_word_terms(raw))
    if out:
        out.extend(answer_types(text))
    return out


def words_of(tokens: Sequence[str]) -> Sequence[str]:
    """The word tokens of tokenize()'s output: all but the answer-type tokens, which it puts
    last (a slice, not a test of every token: index rebuilds call this a million times)."""
    n = len(tokens)
    while n and tokens[n - 1].startswith("#"):
        n -= 1
    return tokens[:n]


def is_answer_type(term: str) -> bool:
    """True for the "#..." answer-type tokens (not words: never bolded, not paragraph context)."""
    return term.startswith("#")


# What a statement holds.
_YEAR = re.compile(r"(?<![\w.,])(?:1\d{3}|20\d{2})(?:'?s)?(?!\w|[.,]\d)")
_MONTH = re.compile(
    r"\b(?:January|February|March|April|June|July|August|September|October|November|December)\b"
    r"|\bMay\s+\d|\d\s+May\b"
)
_CENTURY = re.compile(r"\bcentur(?:y|ies)\b|\b\d+\s*(?:BC|BCE|AD|CE)\b", re.I)
_NUMBER = re.compile(
    r"\d|\b(?:one|two|three|four|five|six|seven|eight|nine|ten|eleven|twelve|twenty|thirty|forty|fifty|sixty"
    r"|seventy|eighty|ninety|hundreds?|thousands?|millions?|billions?|trillions?|dozens?)\b",
    re.I,
)
_PERCENT = re.compile(r"%|\bper\s?cent", re.I)
# What a question asks for.
_ASKS_WHEN = re.compile(
    r"\bwhen\b|\b(?:what|which)\s+(?:year|years|date|dates|century|centuries|decade|month|day|era|time\s+period)\b"
    r"|\bhow\s+long\s+ago\b",
    re.I,
)
_ASKS_NUMBER = re.compile(
    r"\bhow\s+(?:many|much|long|far|old|large|big|high|tall|often|fast|heavy|deep|wide)\b"
    r"|\bwhat\s+(?:number|amount|percentage|percent|proportion|fraction|share|size|population)\b",
    re.I,
)
_ASKS_PERCENT = re.compile(r"\bpercent(?:age)?\b|\bproportion\b|%", re.I)
_WH_START = re.compile(
    r"^\W*(?:(?:in|on|at|by|for|from|to|of|with|during|after|before|since|until|under|about)\s+)?"
    r"(?:who|whom|whose|what|when|where|which|why|how)\b",
    re.I,
)
_STATEMENT_END = re.compile(r"""[.!:;…]["'”’)\]]*$""")


def is_question(text: str) -> bool:
    """A question ends with "?", or starts with a question word and ends without a full stop."""
    text = text.strip()
    if text.endswith("?"):
        return True
    return not _STATEMENT_END.search(text) and bool(_WH_START.match(text))


def answer_types(text: str) -> list[str]:
    """Answer-type tokens of `text`: what a question asks for (each twice, to weigh it), or
    what a statement holds."""
    if is_question(text):
        asked = []
        if _ASKS_WHEN.search(text):
            asked.append("#when")
        if _ASKS_NUMBER.search(text):
            asked.append("#num")
        if _ASKS_PERCENT.search(text):
            asked.append("#pct")
        return asked * 2
    held = []
    if _YEAR.search(text) or _MONTH.search(text) or _CENTURY.search(text):
        held.append("#when")
    if _NUMBER.search(text):
        held.append("#num")
    if _PERCENT.search(text):
        held.append("#pct")
    return held


# Irregular past forms -> the verb ("When did he meet ..." finds "... met ..."); stemming
# cannot do it. Forms that are also common other words (found, left, saw, lay, rose, ...) stay.
_IRREGULAR_VERBS = """
arise arose arisen|awake awoke awoken|beat beaten|become became|begin began begun|bend bent|
bite bitten|bleed bled|blow blew blown|break broke broken|breed bred|bring brought|build built|buy bought|
catch caught|choose chose chosen|cling clung|creep crept|deal dealt|dig dug|draw drew drawn|
dream dreamt|drink drank drunk|drive drove driven|eat ate eaten|fall fallen|feed fed|feel felt|
fight fought|flee fled|fly flew flown|forbid forbade forbidden|forget forgot forgotten|
forgive forgave forgiven|freeze froze frozen|get got gotten|give gave given|go went gone|grow grew grown|
hang hung|hear heard|hide hid hidden|hold held|keep kept|kneel knelt|know knew known|lead led|
leap leapt|lend lent|lie lain|lose lost|make made|mean meant|meet met|pay paid|prove proven|ride rode ridden|
ring rang rung|rise risen|run ran|say said|see seen|seek sought|sell sold|send sent|shake shook shaken|
shine shone|shoot shot|show shown|shrink shrank shrunk|sing sang sung|sink sank sunk|sit sat|slay slew slain|
sleep slept|slide slid|speak spoke spoken|spend spent|spin spun|spring sprang sprung|stand stood|
steal stole stolen|stick stuck|sting stung|strike struck stricken|strive strove striven|swear swore sworn|
sweep swept|swim swam swum|swing swung|take took taken|teach taught|tear torn|tell told|think thought|
throw threw thrown|tread trod trodden|understand understood|wake woke woken|wear wore worn|weave wove woven|
weep wept|win won|withdraw withdrew withdrawn|write wrote written|overcome overcame|undertake undertook undertaken|
uphold upheld|withstand withstood|overthrow overthrew overthrown|foresee foresaw foreseen|mistake mistook mistaken|
forsake forsook forsaken|befall befell befallen|behold beheld|stride strode stridden|sew sewn|sow sown|
swell swollen|hew hewn|mow mown|shear shorn
"""
_IRREGULAR = {
    form: forms.split()[0]
    for forms in _IRREGULAR_VERBS.replace("\n", " ").split("|")
    for form in forms.split()[1:]
}


@lru_cache(maxsize=500_000)
def _word_terms(raw: str) -> tuple[str, ...]:
    # Cached per surface word: the same words recur, and stemming dominates import time.
    if raw in STOP_WORDS:
        return ()
    raw = _IRREGULAR.get(raw, raw)
    terms = []
    for word in _expand(raw):
        if word and word not in STOP_WORDS and (len(word) > 1 or word.isdigit()):
            terms.append(stem(word))
            if _DECADE.fullmatch(word):
                terms.append(word[:-1])  # "1990s" also matches "1990"
    return tuple(terms)


_DECADE = re.compile(r"\d{3}0s")


def matched_word_spans(text: str, terms: set[str]) -> list[tuple[int, int]]:
    """(start, end) offsets in `text` of the words whose tokens are among `terms` (to bold them)."""
    spans = []
    for match in _WORD.finditer(text):
        if any(t in terms for raw in word_tokens(match.group()) for t in _word_terms(raw)):
            spans.append((match.start(), match.end()))
    return spans
