"""The composition root: settings -> store -> library. Every skin starts here and nowhere else."""
from __future__ import annotations

from .core.library import Library, Limits
from .settings import Settings


def limits_from(settings: Settings) -> Limits:
    return Limits(
        max_question_chars=settings.max_question_chars,
        max_article_bytes=settings.max_article_bytes,
        max_articles_per_scope=settings.max_articles_per_server,
    )


async def open_library(settings: Settings) -> Library:
    return await Library.open(
        settings.db_path, limits=limits_from(settings), top_k=settings.top_k, corpus_dir=settings.corpus_dir
    )
