"""Parsing and sentence splitting of untrusted articles, in worker processes with a deadline.

Everything an upload makes the CPU do (decoding, Markdown/HTML/YAML parsing, cleaning, Punkt,
stemming) runs here and never in the event loop's thread pool, which answers questions: a
hostile file then costs a worker, not the bot. Each task has a deadline; a task that passes it
is stopped by killing its worker (pebble starts a fresh one), and only that file, line or
article fails, with a message that says so. Cancelling the awaiting task (SIGTERM, a member's
command timing out) kills the worker too, so an import stops within a second.

One pool per process, started on first need and shared by every import; workers run at a
lower priority, with a memory ceiling, and exit when the parent dies.
"""
from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import logging
import multiprocessing
import os
import pickle
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from pebble import ProcessExpired, ProcessPool

from .articles import ArticleDraft, ArticleError, SentenceRecord
from .importers import Metadata, ParsedItem, jsonl_pieces, parse_bytes, parse_jsonl_piece
from .sentences import article_sentences, punkt_tokenizer
from .tokens import tokenize

log = logging.getLogger(__name__)

# Deadlines, in seconds of wall time on a busy 2-core host. Together they keep any single
# article under the 10 s "stored or refused" goal (SECURITY.md); a benign 2 MB article parses
# in about 0.5 s and splits in about 2 s there (benchmarks/bench_hostile.py).
PARSE_SECONDS = 4.0  # reading one file (or one line of a JSON Lines file)
SPLIT_SECONDS = 5.0  # splitting and tokenising one article
PIECE_SECONDS = 60.0  # one ~1 MB piece of a large JSON Lines file (about a thousand articles)
CHUNK = 16  # articles per splitting task
CHUNK_CHARS = 256_000  # ...and at most about this much text, so a chunk's deadline stays meaningful
# A worker that grows past this is stopped by the kernel (MemoryError, or the task dies):
# a backstop for any expansion the parsers do not bound themselves.
WORKER_MEMORY_BYTES = 2 << 30

T = TypeVar("T")


class Overrun(ArticleError):
    """A task passed its deadline, ran out of memory, or its worker died."""


def _start_worker(parent: int) -> None:
    """Pool initializer. The worker yields the CPU to its parent (the event loop answering
    members, SQLite, the index), is capped in memory, and exits if the parent is killed
    (kill -9 skips every clean-up) instead of lingering."""
    try:
        os.nice(10)
    except OSError:
        pass  # not allowed here: run at normal priority
    try:
        import resource

        resource.setrlimit(resource.RLIMIT_AS, (WORKER_MEMORY_BYTES, WORKER_MEMORY_BYTES))
    except (ImportError, ValueError, OSError):
        pass  # no such limit on this platform

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(1)
        os._exit(0)

    threading.Thread(target=watch, daemon=True).start()
    # Loaded now, not inside the first task's deadline.
    punkt_tokenizer()
    tokenize("warm")


_pool: ProcessPool | None = None
_pool_lock = threading.Lock()


def _shared_pool() -> ProcessPool:
    global _pool
    with _pool_lock:
        if _pool is None or not _pool.active:
            workers = max(1, min(4, os.cpu_count() or 1))
            # spawn, not fork: the parent has aiosqlite and discord threads that fork would copy mid-flight.
            _pool = ProcessPool(
                workers,
                context=multiprocessing.get_context("spawn"),
                initializer=_start_worker,
                initargs=(os.getpid(),),
            )
            # The first task starts the workers (fork and exec): here, in a worker thread,
            # not on the event loop.
            _pool.schedule(os.getpid)
        return _pool


@atexit.register
def shutdown() -> None:
    """Stop the workers (they also exit by themselves when this process is gone)."""
    global _pool
    with _pool_lock:
        pool, _pool = _pool, None
    if pool is not None:
        pool.stop()
        pool.join(timeout=5)


# Sentence records travel back from a worker pickled in slices of this many: the result is
# unpickled in the bot process by a single call that holds the GIL, and 17,000 records (a
# 2 MB article) in one piece stalled the event loop 25-45 ms; slices are unpickled one by one.
RECORDS_PER_SLICE = 1_000


def prepare(drafts: Sequence[ArticleDraft]) -> list[tuple[str, list[bytes]] | str]:
    """(content hash, sentences pickled in slices) of each draft, or why that one draft could
    not be split (it fails alone)."""
    out: list[tuple[str, list[bytes]] | str] = []
    for draft in drafts:
        try:
            records = article_sentences(draft.title, draft.body, draft.caption)
            out.append((
                draft.content_hash(),
                [pickle.dumps(records[i : i + RECORDS_PER_SLICE]) for i in range(0, len(records), RECORDS_PER_SLICE)],
            ))
        except MemoryError:
            out.append("The article is too large to split into sentences.")
        except TimeoutError:  # NLTK runs Punkt's regexes under a time limit of its own
            out.append("The article took too long to split into sentences and was stopped.")
        except Exception as exc:  # a bug or a library's limit on one article spares the others
            log.exception("Splitting one article failed")
            out.append(f"The article could not be split into sentences ({type(exc).__name__}).")
    return out


def _unpickle(slices: Sequence[bytes]) -> list[SentenceRecord]:
    """The records of prepare()'s slices; in a thread, where each slice holds the GIL ~1.5 ms."""
    return [record for piece in slices for record in pickle.loads(piece)]


class Preparer:
    """The worker-process side of one import. `close` stops whatever it still has running."""

    def __init__(self) -> None:
        self._futures: set[concurrent.futures.Future[Any]] = set()

    async def _call(self, fn: Callable[..., T], args: tuple, timeout: float, what: str, **kwargs: Any) -> T:
        """fn(*args, **kwargs) in a worker; raises ArticleError naming `what` if it fails or overruns."""
        pool = _pool if _pool is not None and _pool.active else await asyncio.to_thread(_shared_pool)
        future = pool.schedule(fn, args=args, kwargs=kwargs, timeout=timeout)
        self._futures.add(future)
        try:
            # Cancelling this await cancels the pebble future, which kills the worker running it.
            return await asyncio.wrap_future(future)
        except concurrent.futures.TimeoutError:
            raise Overrun(f"{what} took longer than {timeout:g} s to process and was stopped.") from None
        except ProcessExpired as exc:
            log.warning("A worker died on %s: %s", what, exc)
            raise Overrun(f"{what} could not be processed (the worker stopped: {exc}).") from None
        except ArticleError:
            raise
        except MemoryError:
            raise Overrun(f"{what} needs too much memory to process.") from None
        except Exception as exc:
            log.error("Processing %s failed", what, exc_info=exc)
            raise ArticleError(f"{what} could not be processed ({type(exc).__name__}).") from None
        finally:
            self._futures.discard(future)

    async def parse_file(
        self, data: bytes, name: str, meta: Metadata = Metadata(), *, max_bytes: int, piece_bytes: int
    ) -> list[ParsedItem]:
        """Every article of one file (parse_bytes), read in a worker with a deadline. A large
        JSON Lines file is read in pieces on every worker; a JSON Lines file that overruns is
        read again line by line, so only the slow lines fail. Whole-file problems raise."""
        pieces = await asyncio.to_thread(jsonl_pieces, data, name, piece_bytes)
        if pieces is not None:
            return await self.parse(pieces, name, max_bytes=max_bytes)
        try:
            return await self._call(parse_bytes, (data, name, meta), PARSE_SECONDS, name, max_bytes=max_bytes)
        except Overrun:
            if not (data.lstrip()[:1] == b"{" and b"\n" in data.strip()):
                raise
        return await self._parse_lines(data, name, max_bytes=max_bytes)

    async def parse(self, pieces: Sequence[tuple[bytes, int]], name: str, *, max_bytes: int) -> list[ParsedItem]:
        """The articles of a large JSON Lines file's pieces (importers.jsonl_pieces), in order."""

        async def one(piece: bytes, line: int) -> list[ParsedItem]:
            try:
                return await self._call(parse_jsonl_piece, (piece, name, line), PIECE_SECONDS, name, max_bytes=max_bytes)
            except Overrun:
                return await self._parse_lines(piece, name, max_bytes=max_bytes, first_line=line)

        parts = await asyncio.gather(*(one(piece, line) for piece, line in pieces))
        return [item for part in parts for item in part]

    async def _parse_lines(self, data: bytes, name: str, *, max_bytes: int, first_line: int = 1) -> list[ParsedItem]:
        """One task per line, each with its own deadline: the fallback for a piece that overran."""

        async def one(line: bytes, number: int) -> list[ParsedItem]:
            try:
                return await self._call(parse_jsonl_piece, (line, name, number), PARSE_SECONDS, f"{name}:{number}", max_bytes=max_bytes)
            except ArticleError as exc:
                return [ParsedItem(f"{name}:{number}", error=str(exc).removeprefix(f"{name}:{number} "))]

        lines = data.split(b"\n")
        parts = await asyncio.gather(*(one(line, first_line + i) for i, line in enumerate(lines) if line.strip()))
        return [item for part in parts for item in part]

    async def run(self, drafts: Sequence[ArticleDraft]) -> list[list[SentenceRecord] | ArticleError]:
        """Sentences of each draft, in order; a draft that fails or overruns gets its error."""
        chunks: list[list[ArticleDraft]] = [[]]
        size = 0
        for draft in drafts:
            if chunks[-1] and (len(chunks[-1]) >= CHUNK or size + len(draft.body) > CHUNK_CHARS):
                chunks.append([])
                size = 0
            chunks[-1].append(draft)
            size += len(draft.body)
        parts = await asyncio.gather(*(self._split(chunk) for chunk in chunks if chunk))
        return [records for part in parts for records in part]

    async def _split(self, chunk: list[ArticleDraft]) -> list[list[SentenceRecord] | ArticleError]:
        try:
            results = await self._call(prepare, (chunk,), SPLIT_SECONDS, "The article")
        except ArticleError as exc:
            if len(chunk) == 1:
                return [exc]
            # One slow article in the chunk: split each alone, so only that one fails.
            parts = await asyncio.gather(*(self._split([draft]) for draft in chunk))
            return [part[0] for part in parts]
        slices = [result[1] for result in results if not isinstance(result, str)]
        # A few small articles (a bulk import's usual chunk) are unpickled here: a thread hop
        # each would cost more than the ~1.5 ms a slice holds the GIL.
        if sum(map(len, slices)) <= 1:
            unpickled = [_unpickle(s) for s in slices]
        else:
            unpickled = await asyncio.to_thread(lambda: [_unpickle(s) for s in slices])
        records = iter(unpickled)
        out: list[list[SentenceRecord] | ArticleError] = []
        for draft, result in zip(chunk, results):
            if isinstance(result, str):
                out.append(ArticleError(result))
            else:
                draft.known_hash = result[0]
                out.append(next(records))
        return out

    async def close(self) -> None:
        """Stop this import's work still running (after an error or a cancel); the pool stays."""
        for future in list(self._futures):
            future.cancel()
        self._futures.clear()
