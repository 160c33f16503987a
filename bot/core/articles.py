"""Records that move through the core: an article to store, a stored one, its sentences."""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import regex

# Invisible format characters (zero-width space and joiners, word joiner, BOM, soft hyphen,
# direction marks): a copy that differs only by them is the same article.
_INVISIBLE = regex.compile(r"\p{Cf}+")


def visible(text: str) -> str:
    """`text` without invisible characters, its whitespace runs made single spaces."""
    return " ".join(_INVISIBLE.sub("", text).split())

GLOBAL_SCOPE = 0
"""Scope of articles answered everywhere (shipped corpus, owner imports). Guild ids are never 0."""


class ArticleError(ValueError):
    """Input a user can fix: the message is short and safe to show them."""


class DuplicateArticle(ArticleError):
    def __init__(self, existing_id: int) -> None:
        super().__init__(f"That article is already stored (id {existing_id}).")
        self.existing_id = existing_id


@dataclass(slots=True)
class ArticleDraft:
    """A parsed article before it is stored. `body` is the cleaned story text, paragraphs
    separated by blank lines; the headline lives in `title` only, so it is indexed once."""

    title: str
    body: str
    source: str | None = None
    author: str | None = None
    url: str | None = None
    published: str | None = None
    caption: str | None = None
    # Lines the cleaner dropped as page debris (navigation, share lines...), so an admin can
    # see what was left out; never stored as text to quote.
    dropped: tuple[str, ...] = ()
    # content_hash(), when the worker process that split the article computed it: hashing a
    # 2 MB body in the bot process holds the GIL (and stalls the event loop) about 25 ms.
    known_hash: str | None = field(default=None, repr=False, compare=False)

    def check_text(self) -> None:
        """Raise ArticleError unless every field is text SQLite and hashing accept: a JSON
        string may hold half a surrogate pair, which is not a character."""
        for name in ("title", "body", "source", "author", "url", "published", "caption"):
            value = getattr(self, name)
            if value is None:
                continue
            try:
                value.encode("utf-8")
            except UnicodeEncodeError as exc:
                shown = "text" if name == "body" else name
                raise ArticleError(
                    f"the {shown} holds half a surrogate pair (\\u{ord(value[exc.start]):04x}), which is not text"
                ) from None

    def content_hash(self) -> str:
        """Equal for copies that differ only in spacing, invisible characters, or the title's case."""
        if self.known_hash is not None:
            return self.known_hash
        digest = hashlib.sha256()
        digest.update(visible(self.title).casefold().encode())
        digest.update(b"\0")
        digest.update(visible(self.body).encode())
        return digest.hexdigest()


@dataclass(frozen=True, slots=True)
class SentenceRecord:
    """One stored sentence. `kind` is "title", "caption" or "body"; offsets index the title
    (kind "title") or the body, so `source_text[start:end] == text`."""

    seq: int
    paragraph: int
    kind: str
    start: int
    end: int
    text: str
    tokens: tuple[str, ...] = field(default=())

    def __reduce__(self) -> tuple:
        # Records come back from the worker processes by the ten thousand, unpickled in one
        # call that holds the GIL: a constructor call each is twice as fast as the default
        # slots state (a 2 MB article: ~45 ms instead of ~100 ms of stalled event loop).
        return (SentenceRecord, (self.seq, self.paragraph, self.kind, self.start, self.end, self.text, self.tokens))


@dataclass(frozen=True, slots=True)
class ArticleInfo:
    """A stored article's metadata, as listed and shown."""

    id: int
    scope: int
    title: str
    source: str | None
    author: str | None
    url: str | None
    published: str | None
    caption: str | None
    added_by: str | None
    added_at: str
    sentence_count: int
