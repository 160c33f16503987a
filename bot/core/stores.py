"""One store interface, two implementations: SQLite (storage.py, the default) and PostgreSQL
(pg_store.py, for many processes). `open_store` picks one from a target: a PostgreSQL URL or
a file path."""
from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from pathlib import Path
from typing import Protocol
from urllib.parse import urlsplit, urlunsplit

from .articles import ArticleDraft, ArticleInfo, DuplicateArticle, SentenceRecord
from .storage import ArticleStore, ChangeLog, IndexBatch, IndexRow, SentenceInContext, StoredSentence

POSTGRES_SCHEMES = ("postgresql", "postgres")


class Store(Protocol):
    """What the library needs from a store. Both implementations raise StoreError (and
    StoreBusy for a write that could not be made) from bot.core.storage."""

    @property
    def path(self) -> Path | None:
        """The SQLite file (the index cache lives beside it); None for a server database."""

    @property
    def read_only(self) -> bool:
        """Opened for questions only: every write is refused."""

    # The generation made by this store's latest committed write (None before any).
    last_generation: int | None

    async def close(self) -> None: ...

    async def add_articles(
        self,
        batch: Sequence[tuple[ArticleDraft, Sequence[SentenceRecord]]],
        *,
        scope: int,
        added_by: str | None,
        provenance: Sequence[tuple[str | None, str | None] | None] | None = None,
    ) -> list[tuple[int, list[int]] | DuplicateArticle]: ...

    async def remove_article(self, article_id: int) -> list[int]: ...

    async def retokenise(self, tokenize: Callable[[str], Sequence[str]], version: int, *, batch: int = ...) -> int: ...

    async def tokenizer_version(self) -> int: ...

    async def generation(self) -> int: ...

    def announced_generation(self) -> int | None:
        """The database's generation as announced to this process, exact but for delivery
        time, without a read; None when the store cannot tell (then read `generation`)."""

    async def forget_changes(self, generation: int, *, older_than: float | None = None) -> None: ...

    async def read_changes(self, after: int) -> ChangeLog | None: ...

    async def wait_for_change(self, timeout: float) -> bool:
        """Until a change is announced (True) or `timeout` seconds pass (False)."""

    async def count_articles(self, scope: int | None = None) -> int: ...

    async def get_article(self, article_id: int) -> ArticleInfo | None: ...

    async def articles_by_ids(self, ids: Iterable[int]) -> dict[int, ArticleInfo]: ...

    async def list_articles(
        self, scopes: Sequence[int] | None = None, *, limit: int = 50, offset: int = 0
    ) -> list[ArticleInfo]: ...

    async def find_articles(self, scopes: Sequence[int], text: str, *, limit: int = 25) -> list[ArticleInfo]: ...

    async def dropped_lines(self, article_id: int) -> list[str]: ...

    async def article_text(self, article_id: int) -> tuple[str, str] | None: ...

    async def sentences_of(self, article_id: int, limit: int = -1) -> list[StoredSentence]: ...

    async def sentences_by_ids(self, ids: Iterable[int]) -> dict[int, StoredSentence]: ...

    async def sentences_in_context(self, ids: Iterable[int]) -> dict[int, SentenceInContext]:
        """Sentences by id, each with its paragraph's stored tokens and its article: what a
        question reads of its candidates, in one query. Removed ones are left out."""

    async def neighbours(self, article_id: int, seqs: Iterable[int]) -> dict[int, StoredSentence]: ...

    def iter_index_rows(self, batch: int = ...) -> AsyncIterator[IndexBatch]: ...

    async def index_rows_of(self, article_ids: Iterable[int]) -> list[IndexRow]: ...

    def iter_articles(self, batch: int = ...) -> AsyncIterator[list[tuple]]: ...

    # The modules beside the articles (channel modes, question log, feeds), in SQL both
    # databases take: `?` placeholders, portable statements.
    async def write(self, *statements: tuple[str, Sequence[object]]) -> list[tuple[int | None, int]]: ...

    async def read(self, sql: str, args: Sequence[object] = ()) -> list[tuple]: ...

    # Answer records and votes (the answer buttons, bot/core/feedback.py).
    async def record_answer(
        self, guild_id: int | None, asker_id: int, question: str, pages: str, created_at: str, expire_before: str
    ) -> int: ...

    async def set_answer_pages(self, answer_id: int, pages: str) -> None: ...

    async def answer_record(self, answer_id: int) -> tuple | None: ...

    async def vote(self, answer_id: int, user_id: int, helpful: bool, voted_at: str) -> tuple[bool | None, int, int] | None: ...


def is_postgres_url(target: Path | str) -> bool:
    return isinstance(target, str) and urlsplit(target).scheme in POSTGRES_SCHEMES


def describe(target: Path | str) -> str:
    """The target as it may be logged or shown: a URL's password is masked."""
    if not is_postgres_url(target):
        return str(target)
    parts = urlsplit(str(target))
    if parts.password is None:
        return str(target)
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{parts.username or ''}:***@{host}"))


async def open_store(target: Path | str, *, pool_size: int = 4) -> Store:
    """PostgreSQL for a postgresql:// URL, else the SQLite file at `target`."""
    if is_postgres_url(target):
        from .pg_store import PgArticleStore  # asyncpg is loaded only by those who use it

        return await PgArticleStore.open(str(target), pool_size=pool_size)
    return await ArticleStore.open(target)
