"""The article store: SQLite through aiosqlite, WAL, foreign keys, versioned migrations.

One connection writes (behind a lock, one transaction per article, so an article is stored
with all of its sentences or not at all); a second one reads, so a question never sees a
write that is half-way through.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import sqlite3
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from urllib.parse import quote

import aiosqlite
import numpy as np

from .articles import ArticleDraft, ArticleInfo, DuplicateArticle, SentenceRecord

log = logging.getLogger(__name__)



# Per rebuilt table: copy into the new one, drop the old one, give the new one its name.
_REBUILD = {
    "articles": (
        "INSERT INTO articles_new SELECT * FROM articles",
        "DROP TABLE articles",
        "ALTER TABLE articles_new RENAME TO articles",
    ),
    "sentences": (
        "INSERT INTO sentences_new SELECT * FROM sentences",
        "DROP TABLE sentences",
        "ALTER TABLE sentences_new RENAME TO sentences",
    ),
}


async def _never_reuse_ids(conn: aiosqlite.Connection) -> None:
    """Rebuild `articles` and `sentences` with AUTOINCREMENT (SQLite cannot add it in place),
    from their own stored definitions, so columns and indexes added by other migrations stay.
    Foreign keys are off while migrating (see _migrate): dropping the old tables cascades
    nothing, and references to `articles` resolve to the rebuilt table."""
    rebuilt: list[tuple[str, list[str]]] = []
    for table, (copy, _, _) in _REBUILD.items():
        rows = await conn.execute_fetchall(
            "SELECT type, sql FROM sqlite_master WHERE tbl_name = ? AND sql IS NOT NULL", (table,)
        )
        create = next(sql for kind, sql in rows if kind == "table")
        extras = [sql for kind, sql in rows if kind in ("index", "trigger")]
        new_sql, found = re.subn(
            r"^(\s*CREATE TABLE )" + table + r"(\s*\(\s*id INTEGER PRIMARY KEY)\b",
            r"\g<1>" + table + r"_new\g<2> AUTOINCREMENT",
            create,
            count=1,
        )
        if not found:
            raise StoreError(f"Unexpected definition of table {table}; cannot migrate")
        await conn.execute(new_sql)
        await conn.execute(copy)
        rebuilt.append((table, extras))
    for table, _ in reversed(rebuilt):
        await conn.execute(_REBUILD[table][1])
    for table, extras in rebuilt:
        await conn.execute(_REBUILD[table][2])
        for sql in extras:
            await conn.execute(sql)
    # Past every id ever used, including those only the change log still remembers.
    rows = await conn.execute_fetchall("SELECT article_id, removed FROM changes")
    used = {
        "articles": max((r[0] for r in rows), default=0),
        "sentences": max((int(i) for r in rows if r[1] for i in r[1].split()), default=0),
    }
    for table, highest in used.items():
        seq = await conn.execute_fetchall("SELECT seq FROM sqlite_sequence WHERE name = ?", (table,))
        highest = max(highest, seq[0][0] if seq else 0)
        await conn.execute("DELETE FROM sqlite_sequence WHERE name = ?", (table,))
        await conn.execute("INSERT INTO sqlite_sequence (name, seq) VALUES (?, ?)", (table, highest))


# Each entry moves the schema one version up; never edit a released entry, append a new one.
# An entry is SQL (statements separated by ";") or a coroutine function run with the connection.
MIGRATIONS: tuple[str | Callable[[aiosqlite.Connection], Awaitable[None]], ...] = (
    """
    CREATE TABLE articles (
        id INTEGER PRIMARY KEY,
        scope INTEGER NOT NULL DEFAULT 0,
        title TEXT NOT NULL,
        source TEXT,
        author TEXT,
        url TEXT,
        published TEXT,
        caption TEXT,
        body TEXT NOT NULL,
        added_by TEXT,
        added_at TEXT NOT NULL,
        content_hash TEXT NOT NULL,
        sentence_count INTEGER NOT NULL,
        UNIQUE (scope, content_hash)
    );
    CREATE INDEX articles_scope ON articles (scope, id);
    CREATE TABLE sentences (
        id INTEGER PRIMARY KEY,
        article_id INTEGER NOT NULL REFERENCES articles (id) ON DELETE CASCADE,
        seq INTEGER NOT NULL,
        paragraph INTEGER NOT NULL,
        kind TEXT NOT NULL,
        start INTEGER NOT NULL,
        "end" INTEGER NOT NULL,
        text TEXT NOT NULL,
        tokens TEXT NOT NULL,
        UNIQUE (article_id, seq)
    );
    CREATE TABLE library_state (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
    INSERT INTO library_state (key, value) VALUES ('generation', 0);
    """,
    # Which tokenizer made the stored tokens; every database before this entry used version 2.
    """
    INSERT OR IGNORE INTO library_state (key, value) VALUES ('tokenizer', 2);
    """,
    # What each generation changed, so a stale index cache can catch up instead of being
    # rebuilt: an added article (removed NULL) or a removed one with its sentence ids.
    """
    CREATE TABLE changes (
        generation INTEGER NOT NULL,
        article_id INTEGER NOT NULL,
        removed TEXT
    );
    CREATE INDEX changes_generation ON changes (generation);
    """,
    # Answers shown with buttons (bot/core/feedback.py): the question is kept so More and
    # Context work after a restart; votes are one per answer and member, changeable.
    """
    CREATE TABLE answer_records (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        guild_id INTEGER,
        asker_id INTEGER NOT NULL,
        question TEXT NOT NULL,
        pages TEXT NOT NULL,
        created_at TEXT NOT NULL
    );
    CREATE INDEX answer_records_created ON answer_records (created_at);
    CREATE TABLE answer_votes (
        answer_id INTEGER NOT NULL REFERENCES answer_records (id) ON DELETE CASCADE,
        user_id INTEGER NOT NULL,
        helpful INTEGER NOT NULL,
        voted_at TEXT NOT NULL,
        PRIMARY KEY (answer_id, user_id)
    );
    """,
    # Where the bot speaks, what members asked (the question log, only in the server asked in),
    # which message showed which answer (so the asker's 👍 resolves it), and followed feeds.
    """
    CREATE TABLE channel_modes (
        channel_id INTEGER PRIMARY KEY,
        guild_id INTEGER NOT NULL,
        mode TEXT NOT NULL,
        set_by TEXT,
        set_at TEXT NOT NULL
    );
    CREATE INDEX channel_modes_guild ON channel_modes (guild_id);
    CREATE TABLE questions (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        guild_id INTEGER NOT NULL,
        channel_id INTEGER,
        question TEXT NOT NULL,
        normalised TEXT NOT NULL,
        asked_at TEXT NOT NULL,
        answered INTEGER NOT NULL
    );
    CREATE INDEX questions_guild_asked ON questions (guild_id, asked_at);
    CREATE TABLE answer_messages (
        message_id INTEGER PRIMARY KEY,
        answer_id INTEGER NOT NULL REFERENCES answer_records (id) ON DELETE CASCADE,
        question_id INTEGER REFERENCES questions (id) ON DELETE SET NULL,
        guild_id INTEGER NOT NULL,
        channel_id INTEGER NOT NULL,
        answered_at TEXT NOT NULL,
        resolved_at TEXT
    );
    CREATE INDEX answer_messages_guild ON answer_messages (guild_id, answered_at);
    CREATE INDEX answer_messages_answer ON answer_messages (answer_id);
    CREATE TABLE feeds (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        guild_id INTEGER NOT NULL,
        url TEXT NOT NULL,
        title TEXT,
        every_minutes INTEGER NOT NULL,
        channel_id INTEGER,
        added_by TEXT,
        added_at TEXT NOT NULL,
        etag TEXT,
        last_modified TEXT,
        last_poll TEXT,
        next_poll TEXT NOT NULL,
        items_added INTEGER NOT NULL DEFAULT 0,
        failures INTEGER NOT NULL DEFAULT 0,
        last_error TEXT,
        paused INTEGER NOT NULL DEFAULT 0,
        UNIQUE (guild_id, url)
    );
    CREATE TABLE feed_items (
        feed_id INTEGER NOT NULL REFERENCES feeds (id) ON DELETE CASCADE,
        guild_id INTEGER NOT NULL,
        link TEXT NOT NULL,
        article_id INTEGER,
        attempts INTEGER NOT NULL DEFAULT 0,
        error TEXT,
        done INTEGER NOT NULL DEFAULT 0,
        seen_at TEXT NOT NULL,
        PRIMARY KEY (feed_id, link)
    );
    CREATE INDEX feed_items_guild_link ON feed_items (guild_id, link);
    """,
    # Ids are never handed out twice (AUTOINCREMENT), so an old answer's "article 8" or another
    # process's index never points at a newer article or sentence.
    _never_reuse_ids,
    # When each change was logged: the log is trimmed only past a retention window, so another
    # process (or a cache) that is behind can still catch up. See CHANGE_LOG_RETENTION_SECONDS.
    """
    ALTER TABLE changes ADD COLUMN at INTEGER NOT NULL DEFAULT 0;
    UPDATE changes SET at = CAST(strftime('%s', 'now') AS INTEGER);
    """,
    # The lines the importer dropped as page debris (the first DROPPED_MAX_CHARS of them), so a
    # manager can see what was left out of an article.
    "ALTER TABLE articles ADD COLUMN dropped TEXT;",
)
SCHEMA_VERSION = len(MIGRATIONS)
DROPPED_MAX_CHARS = 4_000

# Change-log entries younger than this are never trimmed. Every process polls the log twice a
# second, so a live one is never that far behind; one that is (suspended, or a cache file
# older than this) rebuilds its index from the database: slower, never wrong.
CHANGE_LOG_RETENTION_SECONDS = 7 * 24 * 3600
MAX_ID = 2**63 - 1  # SQLite's INTEGER; a larger id names nothing
ROWS_PER_INSERT = 1_000  # sentence rows per executemany (built on the event loop)


class StoreError(RuntimeError):
    """The database cannot be used (locked, full, corrupt, from a newer version)."""


class StoreBusy(StoreError):
    """A write could not be made (locked or full); its message is safe to show anyone."""


class StoreReadOnly(StoreBusy):
    """The database (or its folder) cannot be written; reads still work."""


@dataclass(frozen=True, slots=True)
class StoredSentence:
    id: int
    article_id: int
    seq: int
    paragraph: int
    kind: str
    start: int
    end: int
    text: str
    tokens: str


@dataclass(frozen=True, slots=True)
class SentenceInContext:
    """A candidate answer with what judging and quoting it needs, read in one trip."""

    sentence: StoredSentence
    paragraph_tokens: str  # the stored tokens of its paragraph's sentences, a line each; a headline's own
    article: ArticleInfo


def in_context_sql(marks: str, lines: str) -> str:
    """The one query behind `sentences_in_context` (both stores), for the ids in `marks`;
    `lines`: the dialect's aggregate joining `p.tokens` with newlines (a fixed fragment)."""
    # The lines' order does not matter: they are only searched for the question's words.
    return (
        f"SELECT {_CANDIDATE_COLUMNS}, CASE WHEN s.kind = 'title' THEN s.tokens ELSE"
        f" (SELECT {lines} FROM sentences p"
        "  WHERE p.article_id = s.article_id AND p.paragraph = s.paragraph AND p.kind = s.kind) END,"
        f" {_CANDIDATE_ARTICLE_COLUMNS} FROM sentences s JOIN articles a ON a.id = s.article_id WHERE s.id IN ({marks})"
    )


def sentence_in_context(row: Sequence[object]) -> SentenceInContext:
    n = len(StoredSentence.__slots__)
    return SentenceInContext(StoredSentence(*row[:n]), row[n] or "", ArticleInfo(*row[n + 1 :]))  # type: ignore[arg-type]


@dataclass(frozen=True, slots=True)
class IndexRow:
    sentence_id: int
    scope: int
    paragraph_key: tuple[int, int]
    tokens: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class IndexBatch:
    """Stored sentences read for an index rebuild, as columns, by sentence id: a million
    IndexRow objects would cost seconds to make and to take apart again."""

    sentence_ids: np.ndarray  # int64, ascending
    scopes: np.ndarray  # int64
    article_ids: np.ndarray  # int64
    paragraphs: np.ndarray  # int64
    tokens: list[list[str]]

    def __len__(self) -> int:
        return len(self.sentence_ids)

    def select(self, keep: np.ndarray) -> IndexBatch:
        """The rows where the boolean array `keep` is true."""
        return IndexBatch(
            self.sentence_ids[keep], self.scopes[keep], self.article_ids[keep], self.paragraphs[keep],
            [t for t, k in zip(self.tokens, keep.tolist()) if k],
        )


@dataclass(frozen=True, slots=True)
class Change:
    """One change-log entry: an article added (removed None) or removed with its sentence ids."""

    generation: int
    article_id: int
    removed: tuple[int, ...] | None


@dataclass(frozen=True, slots=True)
class ChangeLog:
    """Every change after some generation up to `generation`, the database's current one."""

    generation: int
    changes: tuple[Change, ...]


# The library's generation, as both stores read it.
GENERATION_SQL = "SELECT value FROM library_state WHERE key = 'generation'"
_SENTENCE_COLUMNS = 'id, article_id, seq, paragraph, kind, start, "end", text, tokens'
_ARTICLE_COLUMNS = (
    "id, scope, title, source, author, url, published, caption, added_by, added_at, sentence_count"
)
_CANDIDATE_COLUMNS = ", ".join(f"s.{c.strip()}" for c in _SENTENCE_COLUMNS.split(","))
_CANDIDATE_ARTICLE_COLUMNS = ", ".join(f"a.{c.strip()}" for c in _ARTICLE_COLUMNS.split(","))


def _now() -> str:
    return datetime.now(timezone.utc).replace(microsecond=0).isoformat()


async def _connect(path: Path, read_only: bool = False, immutable: bool = False) -> aiosqlite.Connection:
    target: Path | str = path
    if read_only:
        target = f"file:{quote(str(path.resolve()))}?mode=ro" + ("&immutable=1" if immutable else "")
    conn = await aiosqlite.connect(target, isolation_level=None, timeout=10, uri=read_only)
    try:
        await conn.execute("PRAGMA foreign_keys = ON")
        await conn.execute("PRAGMA busy_timeout = 10000")
    except BaseException:
        await conn.close()
        raise
    return conn


def _writable(path: Path) -> bool:
    """Whether this process may change the database file and create files beside it (the
    WAL and its index). Asked of the file system: SQLite opens an unwritable file read-only
    without a word, and a first write would fail only then."""
    if str(path) == ":memory:" or not path.exists():
        return True
    return os.access(path, os.W_OK) and os.access(path.parent, os.W_OK)


def _cannot_write(exc: sqlite3.Error) -> bool:
    """The file or its folder is read-only (SQLite says so in the message only)."""
    text = str(exc).lower()
    return "readonly" in text or "read-only" in text or "unable to open database file" in text


class ArticleStore:
    def __init__(
        self, path: Path, writer: aiosqlite.Connection, reader: aiosqlite.Connection, *, read_only: bool = False
    ) -> None:
        self.path = path
        self._writer = writer
        self._reader = reader
        # Opened from a file or folder this process cannot write: questions only.
        self.read_only = read_only
        # The generation made by this store's latest committed write (None before any): the
        # library tells its own changes from other processes' in the change log with it.
        self.last_generation: int | None = None
        self._pending_generation: int | None = None
        self._write_lock = asyncio.Lock()
        # Interleaved statements on one connection keep a read transaction (an old snapshot)
        # open; one read at a time means each sees everything committed before it.
        self._read_lock = asyncio.Lock()

    @classmethod
    async def open(cls, path: Path | str) -> ArticleStore:
        path = Path(path)
        if str(path) != ":memory:":
            try:
                await asyncio.to_thread(path.parent.mkdir, parents=True, exist_ok=True)
            except (FileExistsError, NotADirectoryError):
                raise StoreError(f"Cannot open the library database {path}: a file is in the way of its folder") from None
            except OSError as exc:
                raise StoreError(f"Cannot open the library database {path}: {exc.strerror or exc}") from None
        if await asyncio.to_thread(_writable, path):
            try:
                return await cls._open(path, read_only=False)
            except sqlite3.Error as exc:
                if not (_cannot_write(exc) and await asyncio.to_thread(path.is_file)):
                    raise StoreError(f"Cannot open the library database {path}: {exc}") from None
        # A database this process may read but not write: answer questions from it all the same.
        try:
            store = await cls._open(path, read_only=True)
        except sqlite3.OperationalError:
            # In a read-only folder SQLite cannot make the WAL's index file; nobody can write
            # the database there either, so it may be read as unchanging.
            try:
                store = await cls._open(path, read_only=True, immutable=True)
            except sqlite3.Error as exc:
                raise StoreError(f"Cannot open the library database {path} (read-only): {exc}") from None
        except sqlite3.Error as exc:
            raise StoreError(f"Cannot open the library database {path} (read-only): {exc}") from None
        log.warning("The library database %s is read-only: questions are answered, changes refused", path)
        return store

    @classmethod
    async def _open(cls, path: Path, *, read_only: bool, immutable: bool = False) -> ArticleStore:
        opened: list[aiosqlite.Connection] = []
        try:
            writer = await _connect(path, read_only, immutable)
            opened.append(writer)
            if read_only:
                async with writer.execute("PRAGMA user_version") as cur:
                    version = int((await cur.fetchone())[0])
                if version != SCHEMA_VERSION:
                    raise StoreError(
                        f"The library database {path} is read-only and has schema version {version};"
                        f" this bot needs {SCHEMA_VERSION}."
                    )
            else:
                await writer.execute("PRAGMA journal_mode = WAL")
                await writer.execute("PRAGMA synchronous = NORMAL")
                await _migrate(writer)
            reader = await _connect(path, read_only, immutable)
        except BaseException:
            # aiosqlite's worker threads keep the process alive until their connections close.
            for conn in opened:
                await conn.close()
            raise
        return cls(path, writer, reader, read_only=read_only)

    async def close(self) -> None:
        async with self._write_lock:
            await self._reader.close()
            await self._writer.close()

    # --- writes -----------------------------------------------------------------------------

    async def add_articles(
        self,
        batch: Sequence[tuple[ArticleDraft, Sequence[SentenceRecord]]],
        *,
        scope: int,
        added_by: str | None,
        provenance: Sequence[tuple[str | None, str | None] | None] | None = None,
    ) -> list[tuple[int, list[int]] | DuplicateArticle]:
        """Bulk import: many articles in one transaction (each whole, or the batch rolled back).
        Per article, (article id, sentence ids) or the DuplicateArticle it would have been.
        `provenance`, per article: (added_by, added_at) to keep (a restored export) or None."""
        results: list[tuple[int, list[int]] | DuplicateArticle] = []
        async with self._write_transaction():
            for n, (draft, sentences) in enumerate(batch):
                kept = provenance[n] if provenance is not None else None
                by, at = kept if kept is not None else (added_by, None)
                results.append(await self._insert(draft, sentences, scope, by, at or _now()))
            added = [r[0] for r in results if not isinstance(r, DuplicateArticle)]
            if added:
                generation = await self._bump_generation()
                now = int(time.time())
                await self._writer.executemany(
                    "INSERT INTO changes (generation, article_id, at) VALUES (?, ?, ?)",
                    [(generation, a, now) for a in added],
                )
        return results

    @contextlib.asynccontextmanager
    async def _write_transaction(self) -> AsyncIterator[None]:
        """One write transaction: committed whole or rolled back; a busy or full database is a
        StoreError with a message fit for the admin who tried."""
        if self.read_only:
            raise StoreReadOnly("The library database is read-only; nothing was changed.")
        async with self._write_lock:
            self._pending_generation = None
            try:
                await self._writer.execute("BEGIN IMMEDIATE")
                try:
                    yield
                    await self._writer.execute("COMMIT")
                except BaseException:
                    await self._rollback()
                    raise
            except sqlite3.Error as exc:
                log.warning("Write to the library database failed: %s", exc)
                if self.read_only or _cannot_write(exc):
                    raise StoreReadOnly("The library database is read-only; nothing was changed.") from exc
                if isinstance(exc, sqlite3.OperationalError):
                    raise StoreBusy("The library database is busy or full; nothing was changed. Try again later.") from exc
                raise StoreError(f"The library database is damaged; nothing was changed ({exc}).") from exc
            # Only a committed generation is ours: a rolled-back one may be another process's next.
            if self._pending_generation is not None:
                self.last_generation = self._pending_generation

    async def _insert(
        self, draft: ArticleDraft, sentences: Sequence[SentenceRecord], scope: int, added_by: str | None, added_at: str
    ) -> tuple[int, list[int]] | DuplicateArticle:
        content_hash = draft.content_hash()
        async with self._writer.execute(
            "SELECT id FROM articles WHERE scope = ? AND content_hash = ?", (scope, content_hash)
        ) as cur:
            row = await cur.fetchone()
        if row:
            return DuplicateArticle(row[0])
        cur = await self._writer.execute(
            "INSERT INTO articles (scope, title, source, author, url, published, caption, body,"
            " added_by, added_at, content_hash, sentence_count, dropped) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
            (
                scope, draft.title, draft.source, draft.author, draft.url, draft.published,
                draft.caption, draft.body, added_by, added_at, content_hash, len(sentences), _dropped(draft.dropped),
            ),
        )
        article_id = cur.lastrowid
        assert article_id is not None
        # In slices: the rows are built on the event loop, and a 2 MB article's 17,000 in one
        # go kept it busy ~35 ms.
        for at in range(0, len(sentences), ROWS_PER_INSERT):
            await self._writer.executemany(
                'INSERT INTO sentences (article_id, seq, paragraph, kind, start, "end", text, tokens)'
                " VALUES (?,?,?,?,?,?,?,?)",
                [
                    (article_id, s.seq, s.paragraph, s.kind, s.start, s.end, s.text, " ".join(s.tokens))
                    for s in sentences[at : at + ROWS_PER_INSERT]
                ],
            )
        async with self._writer.execute(
            "SELECT id FROM sentences WHERE article_id = ? ORDER BY seq", (article_id,)
        ) as cur:
            ids = [r[0] for r in await cur.fetchall()]
        return article_id, ids

    async def remove_article(self, article_id: int) -> list[int]:
        """Delete an article and its sentences; the removed sentence ids (empty if none)."""
        if not 0 < article_id <= MAX_ID:
            return []
        async with self._write_transaction():
            async with self._writer.execute("SELECT id FROM sentences WHERE article_id = ?", (article_id,)) as cur:
                ids = [r[0] for r in await cur.fetchall()]
            cur = await self._writer.execute("DELETE FROM articles WHERE id = ?", (article_id,))
            if cur.rowcount:
                generation = await self._bump_generation()
                await self._writer.execute(
                    "INSERT INTO changes (generation, article_id, removed, at) VALUES (?, ?, ?, ?)",
                    (generation, article_id, " ".join(map(str, ids)), int(time.time())),
                )
        return ids if cur.rowcount else []

    async def retokenise(
        self, tokenize: Callable[[str], Sequence[str]], version: int, *, batch: int = 5_000
    ) -> int:
        """Recompute every sentence's stored tokens from its stored text with `tokenize`, then
        record `version`; the number of sentences redone. One transaction per batch: if this
        is interrupted, the version is still the old one and the next start does it again."""
        done = last = 0
        while True:
            rows = await self._fetch("SELECT id, text FROM sentences WHERE id > ? ORDER BY id LIMIT ?", (last, batch))
            if not rows:
                break
            fresh = await asyncio.to_thread(lambda: [(" ".join(tokenize(text)), sid) for sid, text in rows])
            async with self._write_transaction():
                await self._writer.executemany("UPDATE sentences SET tokens = ? WHERE id = ?", fresh)
            done += len(rows)
            last = rows[-1][0]
        async with self._write_transaction():
            await self._writer.execute("UPDATE library_state SET value = ? WHERE key = 'tokenizer'", (version,))
            if done:
                await self._bump_generation()  # any index cache was built from the old tokens
        return done

    async def tokenizer_version(self) -> int:
        rows = await self._fetch("SELECT value FROM library_state WHERE key = 'tokenizer'")
        return int(rows[0][0])

    async def _bump_generation(self) -> int:
        await self._writer.execute("UPDATE library_state SET value = value + 1 WHERE key = 'generation'")
        async with self._writer.execute(GENERATION_SQL) as cur:
            row = await cur.fetchone()
        self._pending_generation = int(row[0])
        return self._pending_generation

    async def forget_changes(self, generation: int, *, older_than: float | None = None) -> None:
        """Drop the change log up to `generation` (an index cache of it is safely saved); with
        `older_than` (seconds), only the entries logged longer ago than that, which other
        processes, polling the log, have long read. Always a prefix of the log."""
        async with self._write_transaction():
            if older_than is None:
                await self._writer.execute("DELETE FROM changes WHERE generation <= ?", (generation,))
                return
            await self._writer.execute(
                "DELETE FROM changes WHERE generation <= ? AND generation <="
                " (SELECT COALESCE(MAX(generation), 0) FROM changes WHERE at < ?)",
                (generation, int(time.time() - older_than)),
            )

    async def wait_for_change(self, timeout: float) -> bool:
        """SQLite cannot announce a change to another process: wait out `timeout` (the caller
        then looks at the generation); always False."""
        await asyncio.sleep(timeout)
        return False

    async def read_changes(self, after: int) -> ChangeLog | None:
        """Every change after generation `after`, in order, read in one snapshot; None when the
        log does not cover every generation since (trimmed, or a change like re-tokenising
        that is not logged): then only a rebuild will do."""
        async with self._read_lock:
            try:
                await self._reader.execute("BEGIN")
                try:
                    state = await self._reader.execute_fetchall(GENERATION_SQL)
                    rows = await self._reader.execute_fetchall(
                        "SELECT generation, article_id, removed FROM changes WHERE generation > ? ORDER BY generation",
                        (after,),
                    )
                finally:
                    await self._reader.execute("COMMIT")
            except sqlite3.Error as exc:
                raise StoreError(f"The library database cannot be read: {exc}") from exc
        current = int(state[0][0]) if state else 0
        if after > current or {r[0] for r in rows} != set(range(after + 1, current + 1)):
            return None
        changes = tuple(
            Change(r[0], r[1], None if r[2] is None else tuple(int(i) for i in r[2].split())) for r in rows
        )
        return ChangeLog(current, changes)

    async def _rollback(self) -> None:
        if not self._writer.in_transaction:  # SQLite already rolled back (e.g. disk full)
            return
        try:
            await self._writer.execute("ROLLBACK")
        except sqlite3.Error:
            log.warning("Rollback failed", exc_info=True)

    async def write(self, *statements: tuple[str, Sequence[object]]) -> list[tuple[int | None, int]]:
        """Small writes of the modules beside the articles (question log, channel modes, feeds):
        the statements in one transaction; per statement (lastrowid, rowcount)."""
        done: list[tuple[int | None, int]] = []
        async with self._write_transaction():
            for sql, args in statements:
                cur = await self._writer.execute(sql, args)
                done.append((cur.lastrowid, cur.rowcount))
        return done

    async def read(self, sql: str, args: Sequence[object] = ()) -> list[tuple]:
        """A read for the modules beside the articles; sees everything committed before it."""
        return await self._fetch(sql, args)

    # --- answer records (the answer buttons: bot/core/feedback.py) -------------------------------

    async def record_answer(
        self, guild_id: int | None, asker_id: int, question: str, pages: str, created_at: str, expire_before: str
    ) -> int:
        """Store an answer record; records created before `expire_before` go, with their votes."""
        async with self._write_transaction():
            cur = await self._writer.execute(
                "INSERT INTO answer_records (guild_id, asker_id, question, pages, created_at) VALUES (?, ?, ?, ?, ?)",
                (guild_id, asker_id, question, pages, created_at),
            )
            answer_id = cur.lastrowid
            await self._writer.execute("DELETE FROM answer_records WHERE created_at < ?", (expire_before,))
        assert answer_id is not None
        return answer_id

    async def set_answer_pages(self, answer_id: int, pages: str) -> None:
        async with self._write_transaction():
            await self._writer.execute("UPDATE answer_records SET pages = ? WHERE id = ?", (pages, answer_id))

    async def answer_record(self, answer_id: int) -> tuple | None:
        """(id, guild_id, asker_id, question, pages, created_at), or None."""
        rows = await self._fetch(
            "SELECT id, guild_id, asker_id, question, pages, created_at FROM answer_records WHERE id = ?", (answer_id,)
        )
        return tuple(rows[0]) if rows else None

    async def vote(self, answer_id: int, user_id: int, helpful: bool, voted_at: str) -> tuple[bool | None, int, int] | None:
        """Record a member's vote (a second one replaces the first): (their previous vote,
        helpful count, not-helpful count), or None if the answer record is gone."""
        async with self._write_transaction():
            writer = self._writer
            async with writer.execute("SELECT 1 FROM answer_records WHERE id = ?", (answer_id,)) as cur:
                if await cur.fetchone() is None:
                    return None
            async with writer.execute(
                "SELECT helpful FROM answer_votes WHERE answer_id = ? AND user_id = ?", (answer_id, user_id)
            ) as cur:
                row = await cur.fetchone()
            previous = None if row is None else bool(row[0])
            await writer.execute(
                "INSERT INTO answer_votes (answer_id, user_id, helpful, voted_at) VALUES (?, ?, ?, ?)"
                " ON CONFLICT (answer_id, user_id) DO UPDATE SET helpful = excluded.helpful, voted_at = excluded.voted_at",
                (answer_id, user_id, int(helpful), voted_at),
            )
            async with writer.execute(
                "SELECT COALESCE(SUM(helpful), 0), COUNT(*) - COALESCE(SUM(helpful), 0) FROM answer_votes WHERE answer_id = ?",
                (answer_id,),
            ) as cur:
                up, down = await cur.fetchone()
        return previous, int(up), int(down)

    # --- reads ------------------------------------------------------------------------------

    async def _fetch(self, sql: str, args: Sequence[object] = ()) -> list[tuple]:
        """All rows of a read, in one trip to the database thread (execute, fetch and close
        as separate awaits would be three, and a question makes several reads)."""
        async with self._read_lock:
            try:
                return list(await self._reader.execute_fetchall(sql, args))
            except sqlite3.Error as exc:  # locked, or damaged ("database disk image is malformed")
                raise StoreError(f"The library database cannot be read: {exc}") from exc

    async def generation(self) -> int:
        rows = await self._fetch(GENERATION_SQL)
        return int(rows[0][0]) if rows else 0

    def announced_generation(self) -> int | None:
        return None  # SQLite announces nothing: a question reads the generation (in-process, cheap)

    async def count_articles(self, scope: int | None = None) -> int:
        sql, args = "SELECT COUNT(*) FROM articles", ()
        if scope is not None:
            sql, args = sql + " WHERE scope = ?", (scope,)
        rows = await self._fetch(sql, args)
        return int(rows[0][0])

    async def get_article(self, article_id: int) -> ArticleInfo | None:
        if not 0 < article_id <= MAX_ID:
            return None
        rows = await self._fetch(f"SELECT {_ARTICLE_COLUMNS} FROM articles WHERE id = ?", (article_id,))
        return ArticleInfo(*rows[0]) if rows else None

    async def articles_by_ids(self, ids: Iterable[int]) -> dict[int, ArticleInfo]:
        ids = list(set(ids))
        if not ids:
            return {}
        marks = ",".join("?" * len(ids))
        rows = await self._fetch(f"SELECT {_ARTICLE_COLUMNS} FROM articles WHERE id IN ({marks})", ids)
        return {row[0]: ArticleInfo(*row) for row in rows}

    async def list_articles(
        self, scopes: Sequence[int] | None = None, *, limit: int = 50, offset: int = 0
    ) -> list[ArticleInfo]:
        """Newest first."""
        sql, args = f"SELECT {_ARTICLE_COLUMNS} FROM articles", []
        if scopes is not None:
            sql += f" WHERE scope IN ({','.join('?' * len(scopes))})"
            args.extend(scopes)
        sql += " ORDER BY id DESC LIMIT ? OFFSET ?"
        args.extend((limit, offset))
        return [ArticleInfo(*row) for row in await self._fetch(sql, args)]

    async def find_articles(self, scopes: Sequence[int], text: str, *, limit: int = 25) -> list[ArticleInfo]:
        """Articles whose title contains `text` (any case) or whose id starts with it, newest first."""
        pattern = "%" + text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        rows = await self._fetch(
            f"SELECT {_ARTICLE_COLUMNS} FROM articles WHERE scope IN ({','.join('?' * len(scopes))})"
            " AND (title LIKE ? ESCAPE '\\' OR CAST(id AS TEXT) LIKE ? ESCAPE '\\') ORDER BY id DESC LIMIT ?",
            (*scopes, pattern, pattern[1:], limit),
        )
        return [ArticleInfo(*row) for row in rows]

    async def dropped_lines(self, article_id: int) -> list[str]:
        """The page-debris lines dropped from an article when it was imported (the first few KB)."""
        rows = await self._fetch("SELECT dropped FROM articles WHERE id = ?", (article_id,))
        return rows[0][0].split("\n") if rows and rows[0][0] else []

    async def article_text(self, article_id: int) -> tuple[str, str] | None:
        """(title, body) as stored."""
        rows = await self._fetch("SELECT title, body FROM articles WHERE id = ?", (article_id,))
        return (rows[0][0], rows[0][1]) if rows else None

    async def sentences_of(self, article_id: int, limit: int = -1) -> list[StoredSentence]:
        rows = await self._fetch(
            f"SELECT {_SENTENCE_COLUMNS} FROM sentences WHERE article_id = ? ORDER BY seq LIMIT ?",
            (article_id, limit),
        )
        return [StoredSentence(*row) for row in rows]

    async def sentences_in_context(self, ids: Iterable[int]) -> dict[int, SentenceInContext]:
        ids = list(ids)
        out: dict[int, SentenceInContext] = {}
        for i in range(0, len(ids), 500):
            chunk = ids[i : i + 500]
            rows = await self._fetch(in_context_sql(",".join("?" * len(chunk)), "group_concat(p.tokens, char(10))"), chunk)
            out.update((row[0], sentence_in_context(row)) for row in rows)
        return out

    async def sentences_by_ids(self, ids: Iterable[int]) -> dict[int, StoredSentence]:
        ids = list(ids)
        out: dict[int, StoredSentence] = {}
        for i in range(0, len(ids), 500):
            chunk = ids[i : i + 500]
            rows = await self._fetch(
                f"SELECT {_SENTENCE_COLUMNS} FROM sentences WHERE id IN ({','.join('?' * len(chunk))})", chunk
            )
            out.update((row[0], StoredSentence(*row)) for row in rows)
        return out

    async def neighbours(self, article_id: int, seqs: Iterable[int]) -> dict[int, StoredSentence]:
        """Sentences of one article by position: seq -> sentence."""
        seqs = sorted(set(seqs))
        if not seqs:
            return {}
        rows = await self._fetch(
            f"SELECT {_SENTENCE_COLUMNS} FROM sentences WHERE article_id = ?"
            f" AND seq IN ({','.join('?' * len(seqs))})",
            (article_id, *seqs),
        )
        return {row[2]: StoredSentence(*row) for row in rows}

    async def iter_index_rows(self, batch: int = 20_000) -> AsyncIterator[IndexBatch]:
        """Every sentence's stored tokens, for building the index without re-tokenising."""
        last = 0
        while True:
            rows = await self._fetch(
                "SELECT s.id, a.scope, s.article_id, s.paragraph, s.tokens FROM sentences s"
                " JOIN articles a ON a.id = s.article_id WHERE s.id > ? ORDER BY s.id LIMIT ?",
                (last, batch),
            )
            if not rows:
                return
            last = rows[-1][0]
            yield await asyncio.to_thread(index_batch, rows)  # 20k splits: off the loop

    async def index_rows_of(self, article_ids: Iterable[int]) -> list[IndexRow]:
        """The index rows of the given articles (those that still exist), by sentence id."""
        ids = sorted(set(article_ids))
        rows: list[IndexRow] = []
        for i in range(0, len(ids), 500):
            chunk = ids[i : i + 500]
            found = await self._fetch(
                "SELECT s.id, a.scope, s.article_id, s.paragraph, s.tokens FROM sentences s"
                f" JOIN articles a ON a.id = s.article_id WHERE s.article_id IN ({','.join('?' * len(chunk))})",
                chunk,
            )
            rows.extend(_index_row(r) for r in found)
        rows.sort(key=lambda r: r.sentence_id)
        return rows

    async def iter_articles(self, batch: int = 200) -> AsyncIterator[list[tuple]]:
        """(id, scope, title, source, author, url, published, caption, body, added_by, added_at) rows."""
        last = 0
        while True:
            rows = await self._fetch(
                "SELECT id, scope, title, source, author, url, published, caption, body, added_by, added_at"
                " FROM articles WHERE id > ? ORDER BY id LIMIT ?",
                (last, batch),
            )
            if not rows:
                return
            yield rows
            last = rows[-1][0]


def index_batch(rows: Sequence[Sequence]) -> IndexBatch:
    """(sentence id, scope, article id, paragraph, tokens) rows as read -> IndexBatch."""
    ids, scopes, articles, paragraphs, tokens = zip(*rows)
    return IndexBatch(
        np.array(ids, dtype=np.int64),
        np.array(scopes, dtype=np.int64),
        np.array(articles, dtype=np.int64),
        np.array(paragraphs, dtype=np.int64),
        [t.split() for t in tokens],
    )


def _index_row(r: Sequence) -> IndexRow:
    """(sentence id, scope, article id, paragraph, tokens) as read -> IndexRow."""
    return IndexRow(r[0], r[1], paragraph_key(r[2], r[3]), tuple(r[4].split()) if r[4] else ())


def paragraph_key(article_id: int, paragraph: int) -> tuple[int, int]:
    """One key per (article, paragraph), for scoring a sentence with its paragraph; a pair,
    so no number of paragraphs can spill into the next article's keys."""
    return (article_id, paragraph)


async def _migrate(conn: aiosqlite.Connection) -> None:
    """Apply the missing migrations, one transaction each. The version is read inside the
    transaction, so two processes starting at once never apply one migration twice. Foreign
    keys are off meanwhile (table rebuilds) and checked before each commit."""
    await conn.execute("PRAGMA foreign_keys = OFF")  # only takes effect outside a transaction
    try:
        while True:
            await conn.execute("BEGIN IMMEDIATE")
            try:
                async with conn.execute("PRAGMA user_version") as cur:
                    row = await cur.fetchone()
                number = int(row[0])
                if number > SCHEMA_VERSION:
                    raise StoreError(
                        f"The database has schema version {number}, newer than this bot ({SCHEMA_VERSION}). Upgrade the bot."
                    )
                if number == SCHEMA_VERSION:
                    await conn.execute("COMMIT")
                    return
                log.info("Migrating the library database to schema version %d", number + 1)
                migration = MIGRATIONS[number]
                if isinstance(migration, str):
                    for statement in migration.split(";"):
                        if statement.strip():
                            await conn.execute(statement)
                else:
                    await migration(conn)
                if await conn.execute_fetchall("PRAGMA foreign_key_check"):
                    raise StoreError(f"Migration {number + 1} would break references between tables")
                await conn.execute(f"PRAGMA user_version = {number + 1}")
                await conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    await conn.execute("ROLLBACK")
                raise
    finally:
        await conn.execute("PRAGMA foreign_keys = ON")


def _dropped(lines: Sequence[str]) -> str | None:
    """As many whole dropped lines as fit in DROPPED_MAX_CHARS, one a line (kept small: a page
    of 100,000 debris lines is not stored twice)."""
    kept, size = [], 0
    for line in lines:
        size += len(line) + 1
        if size > DROPPED_MAX_CHARS:
            break
        kept.append(line)
    return "\n".join(kept) or None
