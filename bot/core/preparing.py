"""Sentence splitting and tokenising (and parsing large JSON Lines files) for many articles
at once, on every core.

Punkt and stemming are pure Python and hold the GIL, so a bulk import spreads them over
worker processes; a handful of articles is not worth a process start and runs in a thread.
"""
from __future__ import annotations

import asyncio
import functools
import multiprocessing
import os
import threading
import time
from collections.abc import Sequence
from concurrent.futures import Executor, ProcessPoolExecutor

from .articles import ArticleDraft, SentenceRecord
from .importers import ParsedItem, parse_jsonl_piece
from .sentences import article_sentences

POOL_THRESHOLD = 64  # articles; below this a process start costs more than it saves
CHUNK = 16  # articles per task handed to a worker


def _start_worker(parent: int) -> None:
    """Pool initializer. The worker yields the CPU to its parent (the event loop answering
    members, SQLite, the index) and exits if the parent is killed (kill -9 skips every
    clean-up) instead of lingering."""
    try:
        os.nice(10)
    except OSError:
        pass  # not allowed here: run at normal priority

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(1)
        os._exit(0)

    threading.Thread(target=watch, daemon=True).start()


def prepare(drafts: Sequence[ArticleDraft]) -> list[list[SentenceRecord]]:
    return [article_sentences(d.title, d.body, d.caption) for d in drafts]


class Preparer:
    """Hands batches of drafts to a process pool, created on first need and closed with `close`."""

    def __init__(self, workers: int | None = None) -> None:
        self._workers = workers or max(1, min(4, os.cpu_count() or 1))
        self._pool: Executor | None = None

    async def run(self, drafts: Sequence[ArticleDraft]) -> list[list[SentenceRecord]]:
        if len(drafts) < POOL_THRESHOLD or self._workers == 1:
            return await asyncio.to_thread(prepare, drafts)
        pool = self._ensure_pool()
        loop = asyncio.get_running_loop()
        # Small chunks: each result is unpickled in one call that holds the GIL, and a long one
        # would stall the event loop.
        size = CHUNK
        chunks = [drafts[i : i + size] for i in range(0, len(drafts), size)]
        parts = await asyncio.gather(*(loop.run_in_executor(pool, prepare, chunk) for chunk in chunks))
        return [records for part in parts for records in part]

    async def parse(self, pieces: Sequence[tuple[bytes, int]], name: str, *, max_bytes: int) -> list[ParsedItem]:
        """The articles of a large JSON Lines file's pieces (importers.jsonl_pieces), in order."""
        parse = functools.partial(parse_jsonl_piece, name=name, max_bytes=max_bytes)
        if self._workers == 1:
            parts = [await asyncio.to_thread(parse, piece, first_line=line) for piece, line in pieces]
        else:
            pool, loop = self._ensure_pool(), asyncio.get_running_loop()
            parts = await asyncio.gather(
                *(loop.run_in_executor(pool, functools.partial(parse, piece, first_line=line)) for piece, line in pieces)
            )
        return [item for part in parts for item in part]

    def _ensure_pool(self) -> Executor:
        if self._pool is None:
            # spawn, not fork: the parent has aiosqlite and discord threads that fork would copy mid-flight.
            self._pool = ProcessPoolExecutor(
                self._workers,
                mp_context=multiprocessing.get_context("spawn"),
                initializer=_start_worker,
                initargs=(os.getpid(),),
            )
        return self._pool

    async def close(self) -> None:
        if self._pool is not None:
            pool, self._pool = self._pool, None
            # Joining the workers takes tens to hundreds of milliseconds: not on the event loop.
            await asyncio.to_thread(pool.shutdown, wait=True, cancel_futures=True)
