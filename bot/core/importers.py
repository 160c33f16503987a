"""Bytes in, article drafts out: plain text, Markdown (+ YAML front matter), HTML, JSON Lines.

The format is detected from the content first and the file name second, so a `.txt` that
holds HTML is read as HTML and a `.html` that holds a PNG is refused.
"""
from __future__ import annotations

import codecs
import itertools
import json
import logging
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import yaml

from .articles import ArticleDraft, ArticleError
from .cleaning import clean_text, parse_date
from .export import EXPORT_FORMAT
from .text_safety import first_control

log = logging.getLogger(__name__)

FORMATS = ("text", "markdown", "html", "jsonl")
# Front matter is a few lines of metadata: looked for in the first FRONT_MATTER_MAX characters only.
FRONT_MATTER_MAX = 16_384
_FRONT_MATTER = re.compile(rf"\A---[ \t]*\n(.{{0,{FRONT_MATTER_MAX}}}?)\n---[ \t]*\n", re.S)
# Each front matter value is one short line of text (a title, a date), never a structure.
META_VALUE_MAX = 1_000
_META_KEYS = ("title", "source", "author", "url", "published", "date")
_HTML_SNIFF = re.compile(r"<(?:!doctype\s+html|html|head|body|article|p|div)[\s>]", re.I)
# Untrusted text meets no regex with nested or overlapping quantifiers: link text stops at the
# next "[" and a target at the next "(", so a line of 50,000 "[" is one linear pass.
_MD_LINK = re.compile(r"!?\[([^\[\]\n]*)\]\([^()\n]*\)")
# Emphasis markers are dropped where they open (before a non-space, not inside a word) or close
# (after a non-space), without pairing them up: pairing needs a scan to the closing marker.
_MD_EMPHASIS = re.compile(r"(?<![\w*_`])[*_`]+(?=[^\s*_`])|(?<=[^\s*_`])[*_`]+(?![\w*_`])")
_MD_HEADING = re.compile(r"[ \t]{0,3}(#{1,6})[ \t]+")
# libxml2 checks each attribute of a tag against all the others: a tag with 40,000 attributes
# takes seconds. A tag whose attributes run longer than this keeps its name only.
HTML_TAG_ATTRIBUTES_MAX = 2_000
_HTML_LONG_TAG = re.compile(rf"<([A-Za-z][A-Za-z0-9:-]{{0,63}})\s[^<>]{{{HTML_TAG_ATTRIBUTES_MAX},}}>")


@dataclass(frozen=True, slots=True)
class Metadata:
    """What an admin may give to override what is parsed."""

    title: str | None = None
    source: str | None = None
    author: str | None = None
    url: str | None = None
    published: str | None = None

    def as_kwargs(self) -> dict[str, str | None]:
        return {
            "title": self.title,
            "source": self.source,
            "author": self.author,
            "url": self.url,
            "published": self.published,
        }


@dataclass(frozen=True, slots=True)
class ParsedItem:
    """One article of an import, or why it could not be read. `where` names it for messages."""

    where: str
    draft: ArticleDraft | None = None
    error: str | None = None
    # Set only by our own export format, which records where each article belongs and who
    # added it when (kept only where the scope is: a restore by the owner).
    scope: int | None = None
    added_by: str | None = None
    added_at: str | None = None


def decode(data: bytes, name: str) -> str:
    if _blank(data):
        raise ArticleError(f"{name} is empty.")
    if b"\x00" in data[:8192]:
        raise ArticleError(f"{name} is a binary file, not text.")
    try:
        text = _utf8(data)
    except UnicodeDecodeError as exc:
        raise ArticleError(f"{name} is not UTF-8 text (bad byte at offset {exc.start}).") from None
    controls = sum(1 for ch in text[:8192] if ord(ch) < 32 and ch not in "\n\r\t\f")
    if controls > 8:
        raise ArticleError(f"{name} looks like a binary file, not text.")
    if (at := first_control(text)) is not None:  # anywhere in the file, not only its first 8 KB
        raise ArticleError(f"{name} has a control character (U+{ord(text[at]):04X}) at character {at:,}; it is not plain text.")
    return text


# Whole-buffer str/bytes calls hold the GIL throughout: on a 60 MB bulk file one decode or
# splitlines stalls the event loop for ~70 ms. Large buffers are handled in slices of this size.
_SLICE = 1 << 20


def _blank(data: bytes) -> bool:
    return all(data[i : i + _SLICE].isspace() for i in range(0, len(data), _SLICE))


def _utf8(data: bytes) -> str:
    """data.decode("utf-8-sig"), slice by slice; an error's offset is the byte's in the file."""
    start = len(codecs.BOM_UTF8) if data.startswith(codecs.BOM_UTF8) else 0
    decoder = codecs.getincrementaldecoder("utf-8")()
    parts = []
    for i in range(start, len(data), _SLICE):
        # Bytes of a character cut by the previous slice come first in the decoder's input.
        held = len(decoder.getstate()[0])
        try:
            parts.append(decoder.decode(data[i : i + _SLICE], final=i + _SLICE >= len(data)))
        except UnicodeDecodeError as exc:
            raise UnicodeDecodeError(exc.encoding, data, i + exc.start - held, i + exc.end - held, exc.reason) from None
    return "".join(parts)


def _lines(text: str) -> Iterator[str]:
    """The lines of a text, found one at a time (see _SLICE: splitlines() or a StringIO copies
    the whole text in one call). A line ends at '\n' or '\r\n', as in JSON Lines; a U+2028
    inside a JSON string does not end it."""
    start = 0
    while start < len(text):
        end = text.find("\n", start)
        if end < 0:
            end = len(text)
        yield text[start:end].rstrip("\r")
        start = end + 1


def detect_format(text: str, name: str) -> str:
    suffix = Path(name).suffix.lower()
    head = text[:65536].lstrip()[:4096]
    if head.startswith("{") and _looks_like_jsonl(text, suffix):
        return "jsonl"
    if _HTML_SNIFF.search(head):
        return "html"
    if suffix in (".md", ".markdown") or _FRONT_MATTER.match(text):
        return "markdown"
    if suffix in (".html", ".htm"):
        return "html"
    return "text"


def _looks_like_jsonl(text: str, suffix: str) -> bool:
    """One of the first lines is a JSON object (so a broken first line still fails alone), or
    the file says it is JSON Lines and starts like it."""
    if suffix == ".jsonl":
        return True
    lines = (line for line in _lines(text) if line.strip())
    for line in itertools.islice(lines, 5):
        try:
            if isinstance(json.loads(line), dict):
                return True
        except (ValueError, RecursionError):
            continue
    return False


def parse_bytes(data: bytes, name: str, meta: Metadata = Metadata(), *, max_bytes: int) -> list[ParsedItem]:
    """Every article in one file's bytes. A whole-file problem raises ArticleError; a bad line
    of a JSON Lines file becomes a ParsedItem with its error so the rest still load."""
    text = decode(data, name)
    fmt = detect_format(text, name)
    if fmt == "jsonl":
        return list(parse_jsonl(text, name, max_bytes=max_bytes))
    if len(data) > max_bytes:
        raise ArticleError(f"{name} is {len(data):,} bytes; the limit for one article is {max_bytes:,}.")
    try:
        draft = parse_text(text, fmt, meta)
    except RecursionError:
        raise ArticleError(f"{name} is nested too deeply to read.") from None
    draft.check_text()
    return [ParsedItem(name, draft=draft)]


def parse_text(text: str, fmt: str, meta: Metadata = Metadata()) -> ArticleDraft:
    if fmt == "html":
        return parse_html(text, meta)
    if fmt == "markdown":
        return parse_markdown(text, meta)
    return clean_text(text, **meta.as_kwargs())


def parse_markdown(text: str, meta: Metadata = Metadata()) -> ArticleDraft:
    front: dict[str, str] = {}
    match = _FRONT_MATTER.match(text)
    if match:
        front = front_matter(match.group(1))
        text = text[match.end() :]
    elif text.startswith("---") and text.find("\n---", 0, 16 * FRONT_MATTER_MAX) > 0:
        raise ArticleError(f"The front matter is longer than {FRONT_MATTER_MAX:,} characters: a few lines of metadata are expected.")
    title = meta.title or front.get("title")
    lines = []
    for line in _lines(text):
        heading = _MD_HEADING.match(line)
        if heading:
            content = line[heading.end() :].rstrip().rstrip("#").rstrip()
            if title is None and heading.group(1) == "#":
                title = content
                continue
            line = content
        line = _MD_LINK.sub(r"\1", line)
        line = _MD_EMPHASIS.sub("", line)
        lines.append(line)
    return clean_text(
        "\n".join(lines),
        title=title,
        source=meta.source or front.get("source"),
        author=meta.author or front.get("author"),
        url=meta.url or front.get("url"),
        published=meta.published or front.get("published") or front.get("date"),
    )


# A few lines of metadata need few YAML events and no nesting; anything past these is refused
# before a single object is built (an alias bomb of 373 bytes expands to gigabytes).
_YAML_EVENTS_MAX = 2_000
_YAML_DEPTH_MAX = 8
_ISO_DATE = re.compile(r"\d{4}-\d{1,2}-\d{1,2}\b")


def front_matter(source: str) -> dict[str, str]:
    """The metadata keys of a YAML front matter, as short strings. Raises ArticleError with the
    reason for anything else: aliases, deep nesting, a huge value, a date that does not exist."""
    depth = events = 0
    try:
        for event in yaml.parse(source, Loader=yaml.SafeLoader):
            events += 1
            if isinstance(event, yaml.AliasEvent):
                raise ArticleError("The front matter uses a YAML alias (*name); write each value out.")
            if isinstance(event, yaml.CollectionStartEvent):
                depth += 1
                if depth > _YAML_DEPTH_MAX:
                    raise ArticleError(f"The front matter is nested more than {_YAML_DEPTH_MAX} levels deep.")
            elif isinstance(event, yaml.CollectionEndEvent):
                depth -= 1
            if events > _YAML_EVENTS_MAX:
                raise ArticleError("The front matter is too long: a few lines of metadata are expected.")
        # BaseLoader keeps every scalar as the text written: no int() of 5,000 digits, no
        # datetime() of 2014-02-30.
        loaded = yaml.load(source, Loader=yaml.BaseLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 2})" if mark is not None else ""
        raise ArticleError(f"The front matter is not valid YAML{where}.") from None
    if not isinstance(loaded, dict):
        return {}
    out: dict[str, str] = {}
    for key in _META_KEYS:
        value = loaded.get(key)
        if value is None:
            continue
        if not isinstance(value, str):
            raise ArticleError(f"The front matter's {key} is a list or a mapping; it must be one line of text.")
        if len(value) > META_VALUE_MAX:
            raise ArticleError(f"The front matter's {key} is {len(value):,} characters long; the limit is {META_VALUE_MAX:,}.")
        value = value.strip()
        if key in ("published", "date") and _ISO_DATE.match(value) and parse_date(value) is None:
            raise ArticleError(f"The front matter's {key} {value[:40]} is not a date that exists.")
        if value:
            out[key] = value
    return out


def parse_html(html: str, meta: Metadata = Metadata()) -> ArticleDraft:
    import trafilatura  # heavy import: only when an HTML article arrives

    html = _HTML_LONG_TAG.sub(r"<\1>", html)
    try:
        doc = trafilatura.bare_extraction(
            html, url=meta.url, with_metadata=True, include_comments=False, include_tables=False, favor_precision=True
        )
    except Exception:  # trafilatura raises a zoo of lxml errors on broken pages
        log.info("HTML extraction failed", exc_info=True)
        doc = None
    text = getattr(doc, "text", None) if doc is not None else None
    if not text or not text.strip():
        raise ArticleError("No article text could be extracted from that HTML.")
    # trafilatura puts one paragraph per line; blank lines make them paragraphs for us.
    text = "\n\n".join(line for line in text.splitlines() if line.strip())
    return clean_text(
        text,
        title=meta.title or _str(getattr(doc, "title", None)),
        source=meta.source or _str(getattr(doc, "sitename", None)),
        author=meta.author or _str(getattr(doc, "author", None)),
        url=meta.url or _str(getattr(doc, "url", None)),
        published=meta.published or _str(getattr(doc, "date", None)),
    )


def jsonl_pieces(data: bytes, name: str, size: int) -> list[tuple[bytes, int]] | None:
    """A large JSON Lines file cut at line ends into pieces of about `size` bytes, each with
    the number of its first line, to be parsed in worker processes (one thread of the bot
    parsing 60 MB holds the GIL for seconds). None if `data` is small or not JSON Lines."""
    if len(data) <= size:
        return None
    head = data[:65536].decode("utf-8-sig", errors="ignore")
    if detect_format(head, name) != "jsonl":
        return None
    pieces: list[tuple[bytes, int]] = []
    start, line = 0, 1
    while start < len(data):
        cut = data.find(b"\n", start + size)
        end = len(data) if cut < 0 else cut + 1
        piece = data[start:end]
        pieces.append((piece, line))
        line += piece.count(b"\n")
        start = end
    return pieces


def parse_jsonl_piece(piece: bytes, name: str, first_line: int, *, max_bytes: int) -> list[ParsedItem]:
    """The articles of one piece of a JSON Lines file (see jsonl_pieces); a piece that cannot
    be read becomes one error item naming its lines, and the other pieces still load."""
    if _blank(piece):
        return []
    try:
        text = decode(piece, name)
    except ArticleError as exc:
        last = first_line + max(piece.count(b"\n") - 1, 0)
        return [ParsedItem(f"{name}:{first_line}-{last}", error=str(exc))]
    return list(parse_jsonl(text, name, max_bytes=max_bytes, first_line=first_line))


def parse_jsonl(text: str, name: str, *, max_bytes: int, first_line: int = 1):
    for number, line in enumerate(_lines(text), start=first_line):
        if not line.strip():
            continue
        where = f"{name}:{number}"
        try:
            if len(line.encode()) > max_bytes:
                raise ArticleError(f"the article is larger than the limit of {max_bytes:,} bytes")
            try:
                record = json.loads(line)
            except ValueError:
                raise ArticleError("not valid JSON") from None
            except RecursionError:
                raise ArticleError("JSON nested too deeply") from None
            if not isinstance(record, dict):
                raise ArticleError("not a JSON object")
            body = record.get("text")
            if not isinstance(body, str) or not body.strip():
                raise ArticleError('no "text"')
            if record.get("format") == EXPORT_FORMAT:
                # Our own export: already clean, so it is taken exactly as it was stored.
                exported = _exported_draft(record)
                exported.check_text()
                yield ParsedItem(
                    where,
                    draft=exported,
                    scope=_scope(record.get("scope")),
                    added_by=_short(record.get("added_by")),
                    added_at=_short(record.get("added_at")),
                )
                continue
            draft = clean_text(
                body,
                title=_str(record.get("title")),
                source=_str(record.get("source")),
                author=_str(record.get("author")),
                url=_str(record.get("url")),
                published=_str(record.get("published")),
            )
            if isinstance(record.get("caption"), str):
                draft.caption = record["caption"]
            draft.check_text()
            yield ParsedItem(where, draft=draft)
        except ArticleError as exc:
            yield ParsedItem(where, error=str(exc))


def _exported_draft(record: dict) -> ArticleDraft:
    if not isinstance(record.get("title"), str) or not record["title"].strip():
        raise ArticleError('no "title"')
    for key in ("source", "author", "url", "published", "caption"):
        if record.get(key) is not None and not isinstance(record[key], str):
            raise ArticleError(f'"{key}" is not text')
    return ArticleDraft(
        title=record["title"],
        body=record["text"],
        source=record.get("source"),
        author=record.get("author"),
        url=record.get("url"),
        published=record.get("published"),
        caption=record.get("caption"),
    )


def _scope(value: object) -> int | None:
    return value if isinstance(value, int) and 0 <= value < 2**63 else None


def _short(value: object) -> str | None:
    """Provenance from an export: a short string, else none."""
    if not (isinstance(value, str) and 0 < len(value) <= 100):
        return None
    try:
        value.encode("utf-8")  # half a surrogate pair is not text: SQLite would refuse the batch
    except UnicodeEncodeError:
        return None
    return value


def read_file(path: Path, *, max_bytes: int, bulk_max_bytes: int) -> bytes:
    """A file's bytes, refusing oversize files before reading them whole."""
    size = path.stat().st_size
    limit = bulk_max_bytes if path.suffix.lower() == ".jsonl" else max_bytes
    if size > limit:
        raise ArticleError(f"{path.name} is {size:,} bytes; the limit is {limit:,}.")
    return path.read_bytes()


def _str(value: object) -> str | None:
    """A metadata value as one short line of text; a structure or an oversize value is dropped
    (str() of a 5,000-digit number or a 900-deep list raises)."""
    if not isinstance(value, (str, float)) and not (isinstance(value, int) and abs(value) < 10**18):
        return None
    text = str(value).strip()
    return text[:META_VALUE_MAX] or None
