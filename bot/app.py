"""The composition root: settings -> store -> library. Every skin starts here and nowhere else."""
from __future__ import annotations

import contextlib
import hashlib
from pathlib import Path

from .core.library import Library, Limits
from .core.stores import describe, is_postgres_url, open_store
from .settings import Settings


def limits_from(settings: Settings) -> Limits:
    return Limits(
        max_question_chars=settings.max_question_chars,
        max_article_bytes=settings.max_article_bytes,
        max_articles_per_scope=settings.max_articles_per_server,
    )


async def open_library(settings: Settings, *, sharded: bool = False) -> Library:
    """The store the settings name (PostgreSQL for a database URL, else the SQLite file), and
    the library over it; closing the library closes the store. `sharded`: the library of a
    Discord process, holding only its shards' servers (when QUOTEBOT_SHARD_COUNT is set); the
    console and the command line hold every server."""
    store = await open_store(settings.store_target(), pool_size=settings.database_pool_size)
    return await Library.open(
        store,
        limits=limits_from(settings),
        top_k=settings.top_k,
        corpus_dir=settings.corpus_dir,
        shards=settings.shards if sharded else None,
        snapshot=snapshot_path(settings),
    )


def snapshot_path(settings: Settings) -> Path | None:
    """Where this machine keeps the index snapshot of a PostgreSQL library: a restart loads it
    and catches up from the change log instead of rebuilding (a SQLite library's is beside its
    file). Named after the database, so two databases never share one."""
    target = settings.store_target()
    if not is_postgres_url(target):
        return None
    folder = settings.db_path.parent
    with contextlib.suppress(OSError):  # not writable: the library runs without a snapshot
        folder.mkdir(parents=True, exist_ok=True)
    key = hashlib.sha256(describe(target).encode()).hexdigest()[:16]
    return folder / f"postgres-{key}.index"
