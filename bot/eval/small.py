"""Small libraries: one SQuAD article (all of its paragraphs) beside the shipped corpus.

Most servers hold a few dozen articles, not ten thousand: there every word looks rare to
BM25, and a question about anything else still finds a sentence sharing one of its words.
For each chosen article a fresh library is built, then asked that article's own questions
(it should answer) and other articles' questions (it should decline).
"""
from __future__ import annotations

import contextlib
import tempfile
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

from ..core.articles import GLOBAL_SCOPE, DuplicateArticle
from ..core.library import Library
from .squad import Corpus, Question

CORPUS_DIR = Path(__file__).resolve().parents[2] / "corpus"


def chosen_articles(corpus: Corpus, questions: Sequence[Question], count: int) -> list[int]:
    """`count` SQuAD articles spread over those that have questions."""
    have = sorted({q.article for q in questions})
    if count >= len(have):
        return have
    step = len(have) / count
    return [have[int(i * step)] for i in range(count)]


def other_questions(questions: Sequence[Question], article: int, count: int) -> list[Question]:
    """`count` questions of other articles, spread over the list."""
    others = [q for q in questions if q.article != article]
    if count >= len(others):
        return others
    step = len(others) / count
    return [others[int(i * step)] for i in range(count)]


@contextlib.asynccontextmanager
async def small_library(
    corpus: Corpus, article: int, workdir: str | Path | None = None, paragraph: int | None = None
) -> AsyncIterator[Library]:
    """A new library holding the shipped corpus and one SQuAD article's paragraphs (or only
    its `paragraph`-th: a library as small as a new server's)."""
    drafts = corpus.drafts[article] if paragraph is None else corpus.drafts[article][paragraph : paragraph + 1]
    with tempfile.TemporaryDirectory(prefix="small-library-", dir=workdir) as tmp:
        library = await Library.open(Path(tmp) / "small.sqlite3", corpus_dir=CORPUS_DIR)
        try:
            for draft in drafts:
                with contextlib.suppress(DuplicateArticle):
                    await library.add_draft(draft, scope=GLOBAL_SCOPE, added_by="squad-eval")
            yield library
        finally:
            await library.close()
