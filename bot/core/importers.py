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
from .cleaning import clean_text
from .export import EXPORT_FORMAT
from .text_safety import first_control

log = logging.getLogger(__name__)

FORMATS = ("text", "markdown", "html", "jsonl")
_FRONT_MATTER = re.compile(r"\A---[ \t]*\n(.*?)\n---[ \t]*\n", re.S)
_HTML_SNIFF = re.compile(r"<(?:!doctype\s+html|html|head|body|article|p|div)[\s>]", re.I)
_MD_LINK = re.compile(r"!?\[([^\]]*)\]\([^)]*\)")
_MD_EMPHASIS = re.compile(r"(\*\*|__|\*|_|`)(?=\S)(.+?)(?<=\S)\1")


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
    if head.startswith("{") and _looks_like_jsonl(text):
        return "jsonl"
    if _HTML_SNIFF.search(head):
        return "html"
    if suffix in (".md", ".markdown") or _FRONT_MATTER.match(text):
        return "markdown"
    if suffix in (".html", ".htm"):
        return "html"
    return "text"


def _looks_like_jsonl(text: str) -> bool:
    for line in itertools.islice(_lines(text), 5):
        if line.strip():
            try:
                return isinstance(json.loads(line), dict)
            except ValueError:
                return False
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
    return [ParsedItem(name, draft=parse_text(text, fmt, meta))]


def parse_text(text: str, fmt: str, meta: Metadata = Metadata()) -> ArticleDraft:
    if fmt == "html":
        return parse_html(text, meta)
    if fmt == "markdown":
        return parse_markdown(text, meta)
    return clean_text(text, **meta.as_kwargs())


def parse_markdown(text: str, meta: Metadata = Metadata()) -> ArticleDraft:
    front: dict = {}
    match = _FRONT_MATTER.match(text)
    if match:
        try:
            loaded = yaml.safe_load(match.group(1))
        except yaml.YAMLError:
            raise ArticleError("The front matter is not valid YAML.") from None
        front = loaded if isinstance(loaded, dict) else {}
        text = text[match.end() :]
    title = meta.title or _str(front.get("title"))
    lines = []
    for line in text.splitlines():
        heading = re.match(r"^\s{0,3}(#{1,6})\s+(.*?)\s*#*\s*$", line)
        if heading:
            if title is None and heading.group(1) == "#":
                title = heading.group(2)
                continue
            line = heading.group(2)
        line = _MD_LINK.sub(r"\1", line)
        line = _MD_EMPHASIS.sub(r"\2", line)
        lines.append(line)
    return clean_text(
        "\n".join(lines),
        title=title,
        source=meta.source or _str(front.get("source")),
        author=meta.author or _str(front.get("author")),
        url=meta.url or _str(front.get("url")),
        published=meta.published or _str(front.get("published") or front.get("date")),
    )


def parse_html(html: str, meta: Metadata = Metadata()) -> ArticleDraft:
    import trafilatura  # heavy import: only when an HTML article arrives

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
            if not isinstance(record, dict):
                raise ArticleError("not a JSON object")
            body = record.get("text")
            if not isinstance(body, str) or not body.strip():
                raise ArticleError('no "text"')
            if record.get("format") == EXPORT_FORMAT:
                # Our own export: already clean, so it is taken exactly as it was stored.
                yield ParsedItem(
                    where,
                    draft=_exported_draft(record),
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
    return value if isinstance(value, str) and 0 < len(value) <= 100 else None


def read_file(path: Path, *, max_bytes: int, bulk_max_bytes: int) -> bytes:
    """A file's bytes, refusing oversize files before reading them whole."""
    size = path.stat().st_size
    limit = bulk_max_bytes if path.suffix.lower() == ".jsonl" else max_bytes
    if size > limit:
        raise ArticleError(f"{path.name} is {size:,} bytes; the limit is {limit:,}.")
    return path.read_bytes()


def _str(value: object) -> str | None:
    if value is None:
        return None
    text = str(value).strip()
    return text or None
