"""Turn a page's worth of plain text into a story: metadata, headline, caption, body.

Real articles arrive wrapped in web-page debris: navigation before the story, and after it
gallery links, recommendation widgets, station or ad blurbs, share/follow/copyright lines.
The rules here are general (what debris looks like), not a list of one site's strings.
"""
from __future__ import annotations

import re
from datetime import datetime

from .articles import ArticleDraft, ArticleError
from .sentences import iter_blocks

_MONTHS = "jan|feb|mar|apr|may|jun|jul|aug|sep|sept|oct|nov|dec"
_DATE_PATTERNS = (
    re.compile(r"(?P<m>\d{1,2})/(?P<d>\d{1,2})/(?P<y>\d{4})"),
    re.compile(r"(?P<y>\d{4})-(?P<m>\d{1,2})-(?P<d>\d{1,2})"),
    re.compile(rf"(?P<mon>(?:{_MONTHS})[a-z]*)\.?\s+(?P<d>\d{{1,2}}),?\s+(?P<y>\d{{4}})", re.I),
    re.compile(rf"(?P<d>\d{{1,2}})\s+(?P<mon>(?:{_MONTHS})[a-z]*)\.?,?\s+(?P<y>\d{{4}})", re.I),
)
_META_WORDS = r"(?:updated|published|posted|last\s+updated|first\s+published|date)"
_META_LINE = re.compile(rf"^\s*(?:{_META_WORDS}\s*:?\s*)?.{{0,40}}\d{{4}}.{{0,40}}$", re.I)
_BYLINE = re.compile(r"(?:^|\|)\s*by\s+(?P<who>[^|]{2,80}?)\s*(?:\||$)", re.I)

# What a caption looks like: a photo described ("This picture taken ... shows"), or a credit.
_CAPTION = re.compile(
    r"^(?:(?:this|a|an|the|file)\s+)?(?:picture|photo|photograph|image|handout\s+photo|file\s+photo)\b"
    r"|\b(?:photo|picture|image)\s+(?:taken|shows)\b"
    r"|\s[-–—]\s+(?:by\s+)?[A-Z][\w.'-]+(?:\s+[A-Z][\w.'-]+){0,3}\s*$"
    r"|\((?:AFP|AP|Reuters|Getty|EPA)[^)]*(?:photo|image)[^)]*\)\s*$",
    re.I,
)

# Paragraphs that open the trailing debris of a page; everything from the first one on goes.
# Headings ("Related stories", "More from ...") never end like a sentence; legal lines may.
_TAIL_HEADINGS = re.compile(
    r"^(?:latest|more|related|recommended|popular|trending|top|most\s+\w+|also\s+on|read\s+more|see\s+also|"
    r"you\s+may\s+also|you\s+might\s+also|from\s+around|sponsored|advertisement|follow\s+us|share\s+this|"
    r"sign\s+up|subscribe|newsletter|comments?\b|leave\s+a\s+comment|tags?:|filed\s+under)"
    r"|\b(?:galler(?:y|ies)|recommendations|related\s+(?:stories|articles|links)|photo\s+galleries)\b",
    re.I,
)
_TAIL_LEGAL = re.compile(r"^(?:copyright|©|\(c\)\s)|all\s+rights\s+reserved", re.I)
# Lines that are debris wherever they stand at the edges of the story: a navigation word alone...
_EDGE_WORDS = re.compile(
    r"^(?:home|menu|skip\s+to\s+\w+|search|log\s*in|sign\s*in|sign\s+up|subscribe|share|tweet|email|print|"
    r"advertisement|follow\s+us.*|like\s+us.*|click\s+here.*|read\s+more.*|back\s+to\s+top|"
    r"facebook|twitter|instagram|whatsapp|linkedin)\W*$",
    re.I,
)
# ...or the shape of a menu: a bullet, or a breadcrumb ("Home | World | Sport"). One separator
# is matched at a time (no nested quantifiers: a long line costs linear time).
_EDGE_BULLET = re.compile(r"^[•·▪●]")
_EDGE_SEPARATOR = re.compile(r"\s[|»›/]\s")
# Debris rules look only at lines this short: anything longer is someone's writing.
EDGE_LINE_MAX = 200
MIN_WORDS = 3
_SENTENCE_END = re.compile(r"""[.!?…]["'”’)\]]*$""")


def parse_date(text: str) -> str | None:
    """ISO date (YYYY-MM-DD) from the first date in `text`; day-first when the first number > 12."""
    for pattern in _DATE_PATTERNS:
        match = pattern.search(text)
        if not match:
            continue
        parts = match.groupdict()
        try:
            year, day = int(parts["y"]), int(parts["d"])
            if parts.get("mon"):
                month = datetime.strptime(parts["mon"][:3].title(), "%b").month
            else:
                month = int(parts["m"])
                if month > 12 and day <= 12:
                    month, day = day, month
            return datetime(year, month, day).date().isoformat()
        except ValueError:
            continue
    return None


def _is_meta_line(text: str) -> bool:
    return "\n" not in text and len(text) <= 160 and bool(_META_LINE.match(text)) and parse_date(text) is not None


def _is_headline(text: str) -> bool:
    return len(text) <= 200 and "\n" not in text and 3 <= len(text) and not _SENTENCE_END.search(text) and len(text.split()) >= 2


def _is_story_paragraph(text: str) -> bool:
    # The word count looks at a bounded head: a 2 MB paragraph is not split into a list here.
    return len(text) >= 60 and _sentence_like(text) and len(text[:400].split()) >= 10


def is_caption(text: str) -> bool:
    return len(text) <= 600 and bool(_CAPTION.search(text))


def _sentence_like(text: str) -> bool:
    return bool(_SENTENCE_END.search(text[-16:]))


def is_edge_debris(para: str) -> bool:
    """A short line that is a navigation word, a bullet or a breadcrumb and does not read as a
    sentence. Story text is never debris, however many " / " it holds."""
    if len(para) > EDGE_LINE_MAX:
        return False
    if _EDGE_WORDS.search(para):
        return True
    if _sentence_like(para.strip()):
        return False
    return bool(_EDGE_BULLET.search(para)) or len(_EDGE_SEPARATOR.findall(para)) >= 2


def _is_tail_marker(para: str) -> bool:
    if len(para) > EDGE_LINE_MAX or _is_story_paragraph(para):
        return False
    first_line = para.split("\n", 1)[0].strip()
    if _TAIL_LEGAL.search(first_line):
        return True
    return not _sentence_like(para.strip()) and bool(_TAIL_HEADINGS.search(first_line))


def strip_tail(paragraphs: list[str]) -> tuple[list[str], list[str]]:
    """(kept, dropped): trailing debris goes, from the first debris marker after the story has
    begun, and any short unpunctuated lines left at the end. Indices, not list copies: a page
    of 100,000 debris lines costs one pass."""
    end = len(paragraphs)
    story_seen = False
    for i, para in enumerate(paragraphs):
        if story_seen and _is_tail_marker(para):
            end = i
            break
        if _is_story_paragraph(para):
            story_seen = True
    # A short unpunctuated last line is a link or a label; a long one is story text that
    # happens to end in "[citation needed]" or a score.
    while end > 0 and (
        is_edge_debris(paragraphs[end - 1])
        or (end > 1 and len(paragraphs[end - 1]) < 80 and not _sentence_like(paragraphs[end - 1].strip()))
    ):
        end -= 1
    return paragraphs[:end], paragraphs[end:]


def strip_head(paragraphs: list[str]) -> tuple[list[str], list[str]]:
    """(kept, dropped): leading navigation debris goes."""
    start = 0
    while start < len(paragraphs) and is_edge_debris(paragraphs[start]):
        start += 1
    return paragraphs[start:], paragraphs[:start]


def clean_text(
    text: str,
    *,
    title: str | None = None,
    source: str | None = None,
    author: str | None = None,
    url: str | None = None,
    published: str | None = None,
) -> ArticleDraft:
    """Parse wire-style plain text into a draft; given metadata wins over what is parsed."""
    text = text.replace("\r\n", "\n").replace("\r", "\n").replace("\ufeff", "")
    paragraphs = [text[s:e] for s, e in iter_blocks(text)]
    paragraphs, dropped = strip_head(paragraphs)

    parsed_source = parsed_author = parsed_published = None
    if paragraphs and _is_meta_line(paragraphs[0]):
        meta = paragraphs.pop(0)
        parsed_published = parse_date(meta)
        byline = _BYLINE.search(meta)
        if byline:
            parsed_source = byline.group("who").strip()

    parsed_title = None
    # A headline needs a story under it: a lone paragraph is the story itself.
    if len(paragraphs) > 1 and _is_headline(paragraphs[0]):
        parsed_title = paragraphs.pop(0)
    elif title is None and paragraphs and "\n" in paragraphs[0]:
        # A headline printed straight above the first paragraph, with no blank line between.
        first, _, rest = paragraphs[0].partition("\n")
        if _is_headline(first.strip()) and rest.strip():
            parsed_title, paragraphs[0] = first.strip(), rest.strip()
    final_title = (title or parsed_title or "").strip()

    # The headline repeated (pages often print it twice) is searchable once, via the title.
    headlines = {" ".join(t.split()).casefold() for t in (final_title, parsed_title) if t}
    paragraphs = [p for p in paragraphs if " ".join(p.split()).casefold() not in headlines]

    paragraphs, dropped_tail = strip_tail(paragraphs)
    dropped += dropped_tail

    caption = None
    for i, para in enumerate(paragraphs[:3]):
        if is_caption(para) and not (i == 0 and len(paragraphs) == 1):
            caption = para
            break

    if not final_title:
        final_title = _title_from_body(paragraphs)
    body = "\n\n".join(paragraphs).strip()
    if not body and not final_title:
        raise ArticleError("No article text found.")
    if not body:
        raise ArticleError("The article has a title but no text.")
    if len(body.split()) < MIN_WORDS:
        # What is left of a broken page or a stray word is not something to quote.
        raise ArticleError(f"No article text found (only {len(body.split())} word(s)).")
    return ArticleDraft(
        title=final_title,
        body=body,
        source=source or parsed_source,
        author=author or parsed_author,
        url=url,
        published=(parse_date(published[:200]) or published) if published else parsed_published,
        caption=caption,
        dropped=tuple(line.strip() for para in dropped for line in para.split("\n") if line.strip()),
    )


def _title_from_body(paragraphs: list[str]) -> str:
    if not paragraphs:
        return "Untitled"
    first = " ".join(paragraphs[0].split())
    words = first.split()
    return " ".join(words[:12]) + ("…" if len(words) > 12 else "")
