"""The library: where a question is answered and where articles come in and go out.

Every skin (console, command line, Discord, benchmarks) talks to this class. CPU work
(splitting, tokenising, indexing, scoring) runs in worker threads; storage through aiosqlite.
"""
from __future__ import annotations

import asyncio
import contextlib
import functools
import gc
import logging
import sys
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .answers import NOTHING_MATCHES, ONLY_COMMON_WORDS, Answer, Nearest, Passage, QuestionError
from .articles import GLOBAL_SCOPE, ArticleDraft, ArticleError, ArticleInfo, DuplicateArticle, SentenceRecord, visible
from .cluster import Shards
from .confidence import QuestionWords, TokenText, features, load_model, rarity, too_thin, weigh_question, with_best
from .importers import Metadata, ParsedItem, read_file
from .preparing import Preparer
from .retrieval import Hit, Retriever, RetrieverBuild
from .storage import (
    CHANGE_LOG_RETENTION_SECONDS,
    Change,
    IndexBatch,
    IndexRow,
    SentenceInContext,
    StoreError,
    StoredSentence,
    paragraph_key,
)
from .stores import Store, open_store
from .tokens import TOKENIZER_VERSION, normalise, tokenize

if TYPE_CHECKING:
    import aiohttp

    from .fetch import FetchPolicy

log = logging.getLogger(__name__)

# Articles per transaction in a bulk import: fewer commits, and each article still whole.
BULK_BATCH = 500
INDEX_SLICE = 500  # sentences per index update in a bulk import
INDEX_SLICE_TOKENS = 20_000  # ...and at most about this many tokens (a hostile article's sentences are long)
PARSE_PIECE_BYTES = 1 << 20  # JSON Lines files larger than this are parsed in worker processes
# How often a library looks for changes other processes made (a command-line import beside
# the running bot); each look is one read of the generation counter.
POLL_SECONDS = 0.5
# A question waits at most this long for other processes' changes being applied, then is
# answered from what the index holds (a large import elsewhere can take longer to apply).
ASK_WAITS_FOR_OTHERS_SECONDS = 1.0

IMPORTABLE_SUFFIXES = {".txt", ".text", ".md", ".markdown", ".html", ".htm", ".jsonl"}

# Whether to quote is decided by the confidence model (confidence.py, docs/answer-quality.md);
# sentences under this share of the best one's score are not even candidates.
MIN_RELATIVE_SCORE = 0.25
# Candidate sentences described and judged per question.
EXAMINED = 10
# Candidates read beyond those still wanted, in case some are duplicates or were removed.
READ_SPARE = 2


@dataclass(frozen=True, slots=True)
class Candidate:
    """A sentence the question might be answered with, and how sure the library is of it."""

    hit: Hit
    sentence: StoredSentence
    article: ArticleInfo
    features: np.ndarray  # confidence.FEATURES
    confidence: float  # that this sentence answers the question


@dataclass(frozen=True, slots=True)
class Limits:
    max_question_chars: int = 500
    max_article_bytes: int = 2_000_000
    max_bulk_file_bytes: int = 2_000_000_000
    max_articles_per_scope: int = 5_000


@dataclass(frozen=True, slots=True)
class Added:
    article: ArticleInfo
    sentence_count: int
    dropped: tuple[str, ...] = ()  # lines the cleaner left out as page debris


@dataclass(slots=True)
class ImportSummary:
    added: list[Added] = field(default_factory=list)
    duplicates: list[tuple[str, int]] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)

    def line(self) -> str:
        dropped = sum(len(a.dropped) for a in self.added)
        debris = f" (dropped {dropped} line{'s' if dropped != 1 else ''} of page debris)" if dropped else ""
        return f"added {len(self.added)}{debris}, duplicates {len(self.duplicates)}, failed {len(self.failed)}"


def scopes_for(guild_id: int | None) -> tuple[int, ...]:
    """Scopes answered in a server (its own and global) or in DMs (global only)."""
    return (GLOBAL_SCOPE,) if guild_id is None else (GLOBAL_SCOPE, guild_id)


class Library:
    def __init__(
        self,
        store: Store,
        retriever: Retriever,
        limits: Limits,
        top_k: int = 3,
        shards: Shards | None = None,
        snapshot: Path | None = None,
    ) -> None:
        self.store = store
        self.retriever = retriever
        self.limits = limits
        self.top_k = top_k
        # A process running some of the bot's shards indexes only the global articles and its
        # servers' (bot/core/cluster.py); None: every scope (one process, the console, the CLI).
        self.shards = shards
        # The index cache (a snapshot a restart loads, then catches up from the change log):
        # beside a SQLite file, or at `snapshot` for a server database.
        self._cache_path = _cache_path(snapshot or store.path, shards)
        self._saved_stamp: int | None = None
        self._compaction: asyncio.Task[None] | None = None
        # Every change up to this generation is in the index (some later ones may be too: see
        # _own). A cache is stamped with it, never with the database's generation, which may
        # include another process's changes this index lacks.
        self._generation = 0
        # Generations past _generation that this process wrote and indexed itself; the change
        # log is read from _generation on and skips them.
        self._own: set[int] = set()
        # Held from a change's store write to its index update, while the change log is
        # applied, and while the cache is saved.
        self._change_lock = asyncio.Lock()
        self._sync: asyncio.Task[None] | None = None
        self._watcher: asyncio.Task[None] | None = None
        self._local_writes = 0  # this process's writes under way: a question does not wait for them

    # --- life cycle ---------------------------------------------------------------------------

    @classmethod
    async def open(
        cls,
        target: Store | Path | str,
        *,
        limits: Limits = Limits(),
        top_k: int = 3,
        corpus_dir: Path | None = None,
        shards: Shards | None = None,
        snapshot: Path | None = None,
    ) -> Library:
        """Open the store (or take `target`, an open one: the library closes it), load or
        build the index, and import `corpus_dir` into a new library."""
        store = await open_store(target) if isinstance(target, (str, Path)) else target
        try:
            library = cls(store, Retriever(), limits, top_k, shards, snapshot)
            stored_version = await store.tokenizer_version()
            if stored_version != TOKENIZER_VERSION:
                log.info("Re-tokenising the stored sentences (tokenizer %d -> %d)", stored_version, TOKENIZER_VERSION)
                done = await store.retokenise(tokenize, TOKENIZER_VERSION)
                log.info("Re-tokenised %d sentences", done)
            if corpus_dir is not None and await store.generation() == 0 and corpus_dir.is_dir():
                summary = await library.import_paths([corpus_dir], scope=GLOBAL_SCOPE, added_by="corpus")
                log.info("Imported the shipped corpus: %s", summary.line())
                # The import indexed every article as it stored it; another process starting at
                # the same moment may have stored them first (here: duplicates), hence the sync.
                await library._apply_change_log()
                await library.save_index()
            else:
                await library._load_index()
            # The English word lists the confidence model weighs words by take ~0.5 s to load,
            # holding the GIL: here, before anything else runs, not under a question or import.
            await asyncio.to_thread(rarity, "the")
            _freeze_heap()
        except BaseException:
            await store.close()
            raise
        library._watcher = asyncio.get_running_loop().create_task(library._watch())
        return library

    async def close(self) -> None:
        if self._watcher is not None:
            self._watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watcher
            self._watcher = None
        if self._compaction is not None:
            await self._compaction
        try:
            await self.refresh(wait=None)  # what other processes changed goes into the saved cache too
        except StoreError:
            log.warning("Could not read the change log before saving the index cache", exc_info=True)
        await self.save_index()
        await self.store.close()

    def _after_change(self) -> None:
        """Merge index segments in a worker thread once enough have piled up; questions keep
        reading the published snapshot meanwhile."""
        if self._compaction is None and self.retriever.needs_compaction:
            self._compaction = asyncio.get_running_loop().create_task(self._compact())

    async def compact_fully(self) -> None:
        """Merge the index into as few segments as it will go (after a bulk import: questions
        then visit one segment instead of dozens)."""
        if self._compaction is not None:
            await self._compaction
        self._compaction = asyncio.get_running_loop().create_task(self._compact(full=True))
        await self._compaction

    async def _compact(self, full: bool = False) -> None:
        try:
            await asyncio.to_thread(self.retriever.compact, full)
        except Exception:
            log.exception("Index compaction failed; the index stays as it was")
        finally:
            self._compaction = None

    async def _load_index(self) -> None:
        current = await self.store.generation()
        found = None
        if self._cache_path is not None:
            found = await asyncio.to_thread(Retriever.load, self._cache_path)
        if found is not None:
            retriever, stamp = found
            cached = int(stamp) if stamp.isdigit() else -1
            empty = len(retriever) == 0 and self.shards is None and await self.store.count_articles() > 0
            if cached == current and not empty:
                self.retriever, self._generation, self._saved_stamp = retriever, cached, cached
                log.info("Loaded the index of %d sentences from %s", len(retriever), self._cache_path)
                return
            if 0 <= cached < current:
                self.retriever, self._generation = retriever, cached
                if await self._apply_change_log(rebuild=False):
                    log.info(
                        "Loaded the index from %s and caught up from generation %s to %s",
                        self._cache_path, cached, self._generation,
                    )
                    await self.save_index()
                    return
        await self._rebuild()
        await self.save_index()

    async def _rebuild(self) -> None:
        """A new index from every stored sentence. The database may change while it is read
        (other processes): the rows read after the generation was taken are applied again
        from the change log, which is harmless (applying a change twice changes nothing)."""
        generation = await self.store.generation()
        build = RetrieverBuild()
        async for batch in self.store.iter_index_rows():
            await asyncio.to_thread(self._build_held, build, batch)
            # The vocabulary grows a batch at a time; unfrozen, the cyclic collector walks what
            # the build keeps again and again (at 1M sentences, rebuild phases 24.5 s -> 16.5 s).
            _freeze_heap()
        retriever = await asyncio.to_thread(build.finish)
        async with self._change_lock:
            # This process's own changes meanwhile went into the old index: the log brings them.
            self.retriever, self._generation, self._own = retriever, generation, set()
        log.info("Built the index of %d sentences", len(retriever))
        await self._apply_change_log(rebuild=False)

    # --- other processes' changes ---------------------------------------------------------------

    async def refresh(self, *, wait: float | None = ASK_WAITS_FOR_OTHERS_SECONDS) -> None:
        """Bring the index up to the database if another process changed it: one read of the
        generation when nothing changed. Waits `wait` seconds at most (None: until done) for
        the changes to be applied; they go on being applied after that."""
        if await self.store.generation() == self._generation:
            return
        if self._sync is None:
            self._sync = asyncio.get_running_loop().create_task(self._apply_change_log())
            self._sync.add_done_callback(self._sync_done)
        task = self._sync
        if wait is None:
            await asyncio.shield(task)
        elif not self._local_writes:  # else the log waits for this process's import, and so would the question
            await asyncio.wait([task], timeout=wait)

    def _sync_done(self, task: asyncio.Task[None]) -> None:
        self._sync = None
        # Whoever awaited it saw the failure (the watcher logs it); a question that stopped
        # waiting did not, and the next look tries again.
        if not task.cancelled() and task.exception() is not None:
            log.debug("Applying the change log failed", exc_info=task.exception())

    def holds(self, scope: int) -> bool:
        """Whether this process's index holds `scope` (see `shards`)."""
        return self.shards is None or self.shards.holds(scope)

    def _build_held(self, build: RetrieverBuild, batch: IndexBatch) -> None:
        if self.shards is not None:
            held = [s for s in np.unique(batch.scopes).tolist() if self.shards.holds(s)]
            batch = batch.select(np.isin(batch.scopes, held))
        build.add(batch)

    async def _watch(self) -> None:
        """Look for other processes' changes every POLL_SECONDS, and at once when the store
        announces one (PostgreSQL's NOTIFY), for as long as the library is open."""
        failing = False
        while True:
            await self.store.wait_for_change(POLL_SECONDS)
            try:
                await self.refresh(wait=None)
                failing = False
            except Exception:  # the database stays the truth: the next look tries again
                if not failing:
                    log.warning("Could not read the library's change log", exc_info=True)
                failing = True

    @contextlib.asynccontextmanager
    async def _writing(self) -> AsyncIterator[int | None]:
        """Hold the change lock for one store write and its index update; yields the store's
        last generation before it (see _written)."""
        self._local_writes += 1
        try:
            async with self._change_lock:
                yield self.store.last_generation
        finally:
            self._local_writes -= 1

    async def _apply_change_log(self, *, rebuild: bool = True) -> bool:
        """Apply every logged change after self._generation that this process did not make
        itself. False when the log does not cover them (it was trimmed, or a change such as
        re-tokenising is not logged); with `rebuild`, the index is then rebuilt instead."""
        async with self._change_lock:
            found = await self.store.read_changes(self._generation)
            if found is not None:
                theirs = [c for c in found.changes if c.generation not in self._own]
                applied = await self._apply(theirs)
                if applied:
                    self._generation = found.generation
                    self._own = {g for g in self._own if g > found.generation}
                    if theirs:
                        log.debug("Applied %d change(s) made elsewhere, up to generation %d", len(theirs), found.generation)
                        self._after_change()
                    return True
        if rebuild:
            log.info("The change log does not cover this index; rebuilding it")
            await self._rebuild()
        return False

    async def _apply(self, changes: Sequence[Change]) -> bool:
        """Put logged changes into the index. Applying one twice changes nothing: an added
        article's sentences are removed before they are added. False if the index rejects them."""
        if not changes:
            return True
        removed = {i for c in changes if c.removed for i in c.removed}
        added = {c.article_id for c in changes if c.removed is None}
        if self.shards is not None and added:
            # Another shard's articles: one look at their scopes instead of reading their
            # sentences. (A removed one's ids are removed anyway: unknown ids cost nothing.)
            infos = await self.store.articles_by_ids(added)
            added = {a for a, info in infos.items() if self.shards.holds(info.scope)}
        rows = await self.store.index_rows_of(added)
        try:
            await _index_update(self._replace_rows, removed | {r.sentence_id for r in rows}, rows)
        except ValueError:
            log.warning("The index does not fit the change log", exc_info=True)
            return False
        return True

    def _replace_rows(self, removed: set[int], rows: Sequence[IndexRow]) -> None:
        self.retriever.remove(removed)
        for start in range(0, len(rows), INDEX_SLICE):  # slices: one add holds the GIL for its length
            self.retriever.add(rows[start : start + INDEX_SLICE])

    def _written(self, before: int | None) -> None:
        """This process's store write (if it made one since `before`) is in the index. Not
        called when the index update was cut short (cancelled, failed): the change log then
        applies that change again, and no cache is stamped past it."""
        generation = self.store.last_generation
        if generation is None or generation == before:
            return
        self._own.add(generation)
        while self._generation + 1 in self._own:
            self._generation += 1
            self._own.discard(self._generation)

    async def save_index(self) -> None:
        if self._cache_path is None or self.store.read_only:
            return
        async with self._change_lock:
            stamp = self._generation
            if stamp == self._saved_stamp:
                return
            try:
                await asyncio.to_thread(self.retriever.save, self._cache_path, str(stamp))
            except OSError:
                # The cache is an optimisation: the database stays the truth.
                log.warning("Could not write the index cache %s", self._cache_path, exc_info=True)
                return
        self._saved_stamp = stamp
        try:
            # Only entries older than the retention window: other processes read the log too.
            await self.store.forget_changes(stamp, older_than=CHANGE_LOG_RETENTION_SECONDS)
        except StoreError:
            log.warning("Could not trim the change log; it is trimmed at the next save", exc_info=True)

    # --- questions ----------------------------------------------------------------------------

    async def ask(self, question: str, *, guild_id: int | None = None, top_k: int | None = None) -> Answer:
        k = top_k or self.top_k
        terms, candidates = await self.assess(question, guild_id=guild_id, examine=max(EXAMINED, 2 * k))
        if not terms:
            return Answer(question, (), frozenset(), ONLY_COMMON_WORDS)
        return await self._compose(" ".join(question.split()), terms, candidates, k)

    async def assess(
        self, question: str, *, guild_id: int | None = None, examine: int = EXAMINED
    ) -> tuple[list[str], list[Candidate]]:
        """(question terms, the best `examine` candidate sentences with their features and
        confidence, best first). Raises QuestionError for a question the bot cannot take."""
        question = " ".join((question or "").split())
        if not question:
            raise QuestionError("Ask a question, for example: who released the footage?")
        if len(question) > self.limits.max_question_chars:
            raise QuestionError(f"That question is too long ({len(question)} characters; the limit is {self.limits.max_question_chars}).")
        rank = functools.partial(self._rank, question, max(30, examine), scopes_for(guild_id))
        # Has another process changed the library? PostgreSQL announces every change (NOTIFY)
        # as it commits; otherwise the database is asked while the question is ranked, so the
        # look costs a question nothing unless something did change.
        looked = asyncio.ensure_future(self.store.generation()) if self.store.announced_generation() is None else None
        # What the index held when ranking began: the watcher may bring changes in meanwhile
        # (at once, when PostgreSQL announces them), and then this ranking is out of date.
        ranked_at = self._generation
        try:
            # One trip to a worker thread for all the CPU work: every hop costs a wake-up.
            terms, hits, weights = await asyncio.to_thread(rank)
        except BaseException:
            if looked is not None:
                looked.cancel()
            raise
        # Announced: read after ranking, when what arrived meanwhile is in (None: the listener was lost).
        current = self.store.announced_generation() if looked is None else None
        if current is None:
            current = await (looked or self.store.generation())
        if current != ranked_at:
            await self.refresh()
            if self._generation != ranked_at:
                terms, hits, weights = await asyncio.to_thread(rank)
        if not terms or not hits or weights is None:
            return terms, []
        best = hits[0].score
        if best <= 0:
            # No question word tells sentences apart here (each is in exactly half of them,
            # where BM25's idf is 0): every sentence ties, and any quote would be a guess.
            return terms, []
        eligible = [h for h in hits if h.score >= best * MIN_RELATIVE_SCORE]
        seen_texts: set[str] = set()
        kept: list[tuple[Hit, SentenceInContext]] = []
        read = 0
        while read < len(eligible) and len(kept) < examine:
            # A few more than are missing, for duplicates and sentences removed since ranking.
            batch = eligible[read : read + examine - len(kept) + READ_SPARE]
            read += len(batch)
            found = await self.store.sentences_in_context(h.sentence_id for h in batch)
            for hit in batch:
                c = found.get(hit.sentence_id)
                if c is None or len(kept) >= examine:
                    continue
                key = normalise(visible(c.sentence.text))
                if key not in seen_texts:
                    seen_texts.add(key)
                    kept.append((hit, c))
        rows, confidences = await asyncio.to_thread(_describe, weights, best, kept)
        return terms, [Candidate(hit, c.sentence, c.article, x, p) for (hit, c), x, p in zip(kept, rows, confidences)]

    def _rank(self, question: str, k: int, scopes: Sequence[int]) -> tuple[list[str], list[Hit], QuestionWords | None]:
        """(question terms, best hits, what each question word is worth); runs in a worker thread."""
        terms = tokenize(question)
        if not terms:
            return terms, [], None
        retriever = self.retriever
        return terms, retriever.search(terms, k, scopes), weigh_question(question, terms)

    async def _compose(self, question: str, terms: list[str], candidates: list[Candidate], k: int) -> Answer:
        """Quote the best candidates if the library is sure enough that they answer; else say
        why not, and name the closest article when something came close."""
        if not candidates:
            return Answer(question, (), frozenset(terms), NOTHING_MATCHES)
        model = load_model()
        top = candidates[0]
        confidence = model.answer_confidence(top.features)
        answerable = model.answerable_confidence(top.features)
        if answerable < model.answer_threshold or too_thin(top.features):
            nearest = None
            if answerable >= model.close_threshold:
                info = await self.store.get_article(top.sentence.article_id)
                if info is not None:
                    nearest = Nearest(info.id, info.title)
            return Answer(question, (), frozenset(terms), NOTHING_MATCHES, round(confidence, 4), round(answerable, 4), nearest)
        chosen: list[list[Candidate]] = []
        for c in candidates:
            group = next((g for g in chosen if _adjacent(g, c.sentence)), None)
            if group is not None:  # a neighbour of a quoted sentence: quoted with it, verbatim
                group.append(c)
            elif len(chosen) < k and (c is top or c.confidence >= model.passage_threshold):
                chosen.append([c])
        passages = []
        for group in chosen:
            group.sort(key=lambda c: c.sentence.seq)
            info = group[0].article
            text = await self._passage_text([c.sentence for c in group])
            passages.append(
                Passage(
                    article_id=info.id,
                    title=info.title,
                    source=info.source,
                    url=info.url,
                    published=info.published,
                    text=text,
                    score=round(max(c.hit.score for c in group), 6),
                    sentence_ids=tuple(c.sentence.id for c in group),
                    confidence=round(max(c.confidence for c in group), 4),
                )
            )
        return Answer(question, tuple(passages), frozenset(terms), None, round(confidence, 4), round(answerable, 4))

    async def _passage_text(self, group: list[StoredSentence]) -> str:
        if len(group) == 1:
            return group[0].text
        # Adjacent sentences are quoted with the stored text between them, so the passage is verbatim.
        first, last = group[0], group[-1]
        stored = await self.store.article_text(first.article_id)
        if stored is None:
            return " ".join(s.text for s in group)
        return stored[1][first.start : last.end]

    # --- articles in and out --------------------------------------------------------------------

    async def _room(self, scope: int) -> int:
        """How many more articles `scope` may hold; global articles have no limit."""
        if scope == GLOBAL_SCOPE:
            return sys.maxsize
        return self.limits.max_articles_per_scope - await self.store.count_articles(scope)

    async def add_draft(self, draft: ArticleDraft, *, scope: int, added_by: str | None) -> Added:
        """One parsed article, through the same path as files and pastes; raises
        DuplicateArticle or ArticleError instead of reporting them."""
        summary = ImportSummary()
        preparer = Preparer()
        try:
            await self._store_batch([ParsedItem("article", draft=draft)], scope, added_by, summary, False, preparer, None)
        finally:
            await preparer.close()
        if summary.duplicates:
            raise DuplicateArticle(summary.duplicates[0][1])
        if summary.failed:
            raise ArticleError(summary.failed[0][1])
        return summary.added[0]

    async def add_bytes(
        self, data: bytes, name: str, *, scope: int, added_by: str | None, meta: Metadata = Metadata()
    ) -> ImportSummary:
        """Pasted text or an uploaded file. Whole-input problems raise ArticleError."""
        summary = ImportSummary()
        preparer = Preparer()
        try:
            items = await preparer.parse_file(
                data, name, meta, max_bytes=self.limits.max_article_bytes, piece_bytes=PARSE_PIECE_BYTES
            )
            await self._store_batch(items, scope, added_by, summary, False, preparer, None)
        finally:
            await preparer.close()
        return summary

    async def add_url(
        self,
        url: str,
        *,
        scope: int,
        added_by: str | None,
        policy: FetchPolicy,
        meta: Metadata = Metadata(),
        session: aiohttp.ClientSession | None = None,
    ) -> ImportSummary:
        """Fetch a page (HTML or plain text) and import it like a file. Raises ArticleError.
        `session`: a guarded session from `fetch.fetch_session`, shared by the bot."""
        from .fetch import fetch_page  # aiohttp is only needed once someone adds a URL

        page = await fetch_page(url, policy, session)
        meta = Metadata(meta.title, meta.source, meta.author, meta.url or page.final_url, meta.published)
        return await self.add_bytes(page.data, page.name, scope=scope, added_by=added_by, meta=meta)

    async def import_paths(
        self,
        paths: Iterable[Path],
        *,
        scope: int,
        added_by: str | None,
        progress: Callable[[int], None] | None = None,
        preserve_scope: bool = False,
    ) -> ImportSummary:
        """Files and folders (recursively); a bad file is reported and the rest carry on.
        `progress` is called with the number of articles done. `preserve_scope`: articles from
        our own export go back to the scope they came from."""
        summary = ImportSummary()
        preparer = Preparer()
        pending: list[ParsedItem] = []
        try:
            refused: list[tuple[str, str]] = []
            files = await asyncio.to_thread(collect_files, list(paths), refused)
            summary.failed.extend(refused)
            for path in files:
                try:
                    data = await asyncio.to_thread(
                        read_file, path, max_bytes=self.limits.max_article_bytes, bulk_max_bytes=self.limits.max_bulk_file_bytes
                    )
                    items = await preparer.parse_file(
                        data,
                        str(path),
                        _sidecar_meta(path),
                        max_bytes=self.limits.max_article_bytes,
                        piece_bytes=PARSE_PIECE_BYTES,
                    )
                    del data
                except (ArticleError, OSError) as exc:
                    summary.failed.append((str(path), str(exc) if isinstance(exc, ArticleError) else exc.strerror or str(exc)))
                    continue
                pending.extend(items)
                while len(pending) >= BULK_BATCH:
                    await self._store_batch(pending[:BULK_BATCH], scope, added_by, summary, preserve_scope, preparer, progress)
                    del pending[:BULK_BATCH]
            await self._store_batch(pending, scope, added_by, summary, preserve_scope, preparer, progress)
        finally:
            await preparer.close()
        if len(summary.added) >= BULK_BATCH:
            await self.compact_fully()
            await self.save_index()  # a start after a crash then catches up from here
        return summary

    async def _store_batch(
        self,
        items: Sequence[ParsedItem],
        default_scope: int,
        added_by: str | None,
        summary: ImportSummary,
        preserve_scope: bool,
        preparer: Preparer,
        progress: Callable[[int], None] | None,
    ) -> None:
        """Split, store (one transaction) and index a batch of parsed articles."""
        good = []
        for item in items:
            if item.draft is None:
                summary.failed.append((item.where, item.error or "unreadable"))
            else:
                good.append(item)
        records = await preparer.run([item.draft for item in good])
        by_scope: dict[int, list[tuple[ParsedItem, list[SentenceRecord]]]] = {}
        for item, recs in zip(good, records):
            if isinstance(recs, ArticleError):
                summary.failed.append((item.where, str(recs)))
                continue
            if not any(r.tokens for r in recs):
                summary.failed.append((item.where, "The article has no searchable words."))
                continue
            scope = item.scope if preserve_scope and item.scope is not None else default_scope
            by_scope.setdefault(scope, []).append((item, recs))
        for scope, batch in by_scope.items():
            async with self._writing() as before:
                room = max(await self._room(scope), 0)
                for item, _ in batch[room:]:
                    summary.failed.append((item.where, f"This server already has {self.limits.max_articles_per_scope:,} articles, the limit."))
                batch = batch[:room]
                results = await self.store.add_articles(
                    [(item.draft, recs) for item, recs in batch],  # type: ignore[misc]
                    scope=scope,
                    added_by=added_by,
                    provenance=[_provenance(item) for item, _ in batch] if preserve_scope else None,
                )
                stored = []
                added_ids = []
                for (item, recs), result in zip(batch, results):
                    if isinstance(result, DuplicateArticle):
                        summary.duplicates.append((item.where, result.existing_id))
                    else:
                        article_id, ids = result
                        stored.append((article_id, ids, recs))
                        added_ids.append((article_id, len(recs), item.draft.dropped))  # type: ignore[union-attr]
                await _index_update(self._index_stored, scope, stored)
                self._written(before)
            self._after_change()
            _freeze_heap()
            infos = await self.store.articles_by_ids(a for a, _, _ in added_ids)
            summary.added.extend(Added(infos[a], n, dropped) for a, n, dropped in added_ids)
        if progress:
            progress(len(items))

    def _index_stored(self, scope: int, stored: Sequence[tuple[int, Sequence[int], Sequence[SentenceRecord]]]) -> None:
        """Index stored articles (article id, sentence ids, records); runs in a worker thread
        (a batch is tens of thousands of rows: building them on the loop stalled it ~60 ms)."""
        if not self.holds(scope):
            return
        rows = [row for article_id, ids, recs in stored for row in _index_rows(article_id, scope, ids, recs)]
        # In slices: one add holds the GIL for stretches that grow with its size.
        start = 0
        while start < len(rows):
            end, tokens = start + 1, len(rows[start].tokens)
            while end < len(rows) and end - start < INDEX_SLICE and tokens + len(rows[end].tokens) <= INDEX_SLICE_TOKENS:
                tokens += len(rows[end].tokens)
                end += 1
            self.retriever.add(rows[start:end])
            start = end

    async def remove(self, article_id: int, *, scopes: Sequence[int] | None) -> ArticleInfo:
        """Remove an article the caller manages (`scopes` None: any). Raises ArticleError if not found."""
        info = await self.store.get_article(article_id)
        if info is None or (scopes is not None and info.scope not in scopes):
            raise ArticleError(f"No article {article_id} here.")
        async with self._writing() as before:
            ids = await self.store.remove_article(article_id)
            await _index_update(self.retriever.remove, ids)
            self._written(before)
        self._after_change()
        return info

    async def get(self, article_id: int, *, scopes: Sequence[int] | None) -> ArticleInfo:
        info = await self.store.get_article(article_id)
        if info is None or (scopes is not None and info.scope not in scopes):
            raise ArticleError(f"No article {article_id} here.")
        return info

    async def dropped_lines(self, article_id: int) -> list[str]:
        """The lines the importer dropped from the article as page debris (the first few KB)."""
        return await self.store.dropped_lines(article_id)

    async def first_sentences(self, article_id: int, n: int = 3) -> list[str]:
        return [s.text for s in await self.store.sentences_of(article_id, limit=n + 1) if s.kind != "title"][:n]

    async def count(self, *, scopes: Sequence[int] | None) -> int:
        if scopes is None:
            return await self.store.count_articles()
        return sum([await self.store.count_articles(scope) for scope in scopes])

    async def find(self, text: str, *, scopes: Sequence[int], limit: int = 25) -> list[ArticleInfo]:
        """Articles by title (any part, any case) or id (its first digits), newest first."""
        return await self.store.find_articles(scopes, " ".join(text.split()), limit=limit)

    async def list(self, *, scopes: Sequence[int] | None, page: int = 1, per_page: int = 10) -> list[ArticleInfo]:
        return await self.store.list_articles(scopes, limit=per_page, offset=max(0, page - 1) * per_page)


async def _index_update(fn: Callable[..., None], *args: object) -> None:
    """fn(*args) in a worker thread, finished before the caller lets go of the change lock even
    when the caller is cancelled: a thread cannot be stopped, and an index update still running
    after the lock is released would race the change log applying the same rows."""
    update = asyncio.ensure_future(asyncio.to_thread(fn, *args))
    try:
        await asyncio.shield(update)
    except asyncio.CancelledError:
        while not update.done():  # the update lands; the cancellation goes on once it has
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.wait([update])
        if not update.cancelled() and update.exception() is not None:
            log.warning("An index update cut short by a cancellation failed", exc_info=update.exception())
        raise


def _freeze_heap() -> None:
    """Move what lives now out of the cyclic collector's sight. A full collection walks every
    tracked object while holding the GIL: with a large library (and discord.py, NLTK and the
    import's batches in memory) that is a 100-400 ms event-loop stall. Frozen objects are still
    freed by reference counting when dropped."""
    gc.freeze()


def _provenance(item: ParsedItem) -> tuple[str | None, str | None] | None:
    """Who added an exported article when, if its export says so."""
    return (item.added_by, item.added_at) if item.added_at else None


def _describe(
    weights: QuestionWords, best: float, kept: Sequence[tuple[Hit, SentenceInContext]]
) -> tuple[list[np.ndarray], list[float]]:
    """The confidence features of each candidate and the chance that it answers; runs in a
    worker thread."""
    rows = []
    for hit, c in kept:
        context = TokenText(c.paragraph_tokens or c.sentence.tokens)
        rows.append(features(weights, hit.score, best, frozenset(c.sentence.tokens.split()), context))
    rows = with_best(rows)
    return rows, load_model().passage_confidences(rows)


def _adjacent(group: list[Candidate], s: StoredSentence) -> bool:
    return any(
        g.article_id == s.article_id and g.paragraph == s.paragraph and g.kind == s.kind and abs(g.seq - s.seq) == 1
        for g in (c.sentence for c in group)
    )


def _index_rows(article_id: int, scope: int, ids: Sequence[int], records: Sequence[SentenceRecord]) -> list[IndexRow]:
    return [IndexRow(i, scope, paragraph_key(article_id, r.paragraph), r.tokens) for i, r in zip(ids, records)]


def collect_files(paths: Sequence[Path], refused: list[tuple[str, str]] | None = None) -> list[Path]:
    """The importable files under `paths`. Inside a folder, a link that leads out of it is not
    followed (an unpacked archive with `passwd.txt -> /etc/passwd` would import the host's
    file); each such link is added to `refused` with the reason."""
    files: list[Path] = []
    for path in paths:
        if not path.is_dir():
            files.append(path)  # named by the operator: taken as given
            continue
        root = path.resolve()
        for p in sorted(path.rglob("*")):
            importable = p.suffix.lower() in IMPORTABLE_SUFFIXES
            if not (importable or p.is_symlink()):
                continue
            try:
                outside = not p.resolve().is_relative_to(root)
            except (OSError, RuntimeError):  # a link loop (RuntimeError before Python 3.13)
                outside = True
            if outside:
                if refused is not None and (importable or p.is_dir()):
                    refused.append((str(p), "a link to a place outside the imported folder; not followed"))
            elif importable and p.is_file():
                files.append(p)
    return files


def _sidecar_meta(path: Path) -> Metadata:
    """Metadata shipped beside a plain-text file as `NAME.meta.json` (how corpus/ documents its seed)."""
    import json

    sidecar = path.with_name(path.name + ".meta.json")
    if not sidecar.is_file():
        return Metadata()
    try:
        data = json.loads(sidecar.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        log.warning("Ignoring unreadable metadata file %s", sidecar)
        return Metadata()
    return Metadata(**{k: str(v) for k, v in data.items() if k in Metadata.__slots__ and v})


def _cache_path(db_path: Path | None, shards: Shards | None = None) -> Path | None:
    if db_path is None or str(db_path) == ":memory:":
        return None
    # A process holding some shards keeps a cache of its own: it holds only their scopes.
    return db_path.with_name(db_path.name + (f".{shards.name}" if shards else "") + ".index")
