"""What members do with an answer once it is shown: ask for more passages, read a quote in its
context, say whether it helped.

An answer shown with buttons gets a small record: the question, the server it was asked in,
who asked, and which sentences each message of it quoted. The buttons carry only the record's
id, so they keep working after a restart; the question is stored because More has to ask it
again (the README says so). Records older than RECORD_DAYS are deleted with their votes.

Kept by the article store (record_answer, set_answer_pages, answer_record, vote): one database.
"""
from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime, timedelta, timezone

from .answers import Answer, Passage
from .library import Library, scopes_for
from .storage import StoreError

log = logging.getLogger(__name__)

RECORD_DAYS = 90
MAX_PAGES = 5  # messages per answer: the first and four "More"
CONTEXT_AROUND = 2  # sentences shown before and after a quote


@dataclass(frozen=True, slots=True)
class AnswerRecord:
    id: int
    guild_id: int | None
    asker_id: int
    question: str
    # Per message of the answer, per passage, the quoted sentence ids.
    pages: tuple[tuple[tuple[int, ...], ...], ...]
    created_at: str


@dataclass(frozen=True, slots=True)
class Page:
    """One message of an answer: its passages, its number (0 = the first answer), and whether a
    further More would find anything."""

    answer: Answer
    number: int
    has_more: bool


@dataclass(frozen=True, slots=True)
class Vote:
    helpful: bool
    previous: bool | None  # the member's earlier vote on this answer, if any
    helpful_count: int
    not_helpful_count: int


@dataclass(frozen=True, slots=True)
class ContextSentence:
    text: str
    quoted: bool


@dataclass(frozen=True, slots=True)
class PassageContext:
    article_id: int
    title: str
    source: str | None
    url: str | None
    published: str | None
    sentences: tuple[ContextSentence, ...]


def _now() -> datetime:
    return datetime.now(timezone.utc).replace(microsecond=0)


def _pages_of(passages: tuple[Passage, ...]) -> list[list[int]]:
    return [list(p.sentence_ids) for p in passages]


class Feedback:
    def __init__(self, library: Library) -> None:
        self.library = library
        self.store = library.store
        # Held by a More click from reading the record to recording the new page.
        self.more_lock = asyncio.Lock()

    # --- answers and pages ------------------------------------------------------------------

    async def ask(
        self, question: str, *, guild_id: int | None, asker_id: int, keep: Callable[[Answer], bool] | None = None
    ) -> tuple[Page, int | None]:
        """Answer a question; (its first page, the record id for its buttons, None if declined,
        if `keep` says this answer will not be shown, or if the record cannot be stored: the
        answer is then shown without buttons). Raises QuestionError like Library.ask."""
        page = await self._page(question, guild_id, shown=set())
        if not page.answer.answered or (keep is not None and not keep(page.answer)):
            return page, None
        if self.store.read_only:
            return page, None  # the buttons need a record; the answer does not
        try:
            answer_id = await self._record(question, guild_id, asker_id, page.answer.passages)
        except StoreError:
            log.warning("Could not record an answer; it is shown without buttons", exc_info=True)
            return page, None
        return page, answer_id

    async def more(self, record: AnswerRecord) -> Page | None:
        """The next message of an answer (the passages not shown yet), recorded; None if there is
        nothing more (or the answer already has MAX_PAGES messages)."""
        if len(record.pages) >= MAX_PAGES:
            return None
        shown = {sid for page in record.pages for passage in page for sid in passage}
        page = await self._page(record.question, record.guild_id, shown, number=len(record.pages))
        if not page.answer.answered:
            return None
        await self._add_page(record, page.answer.passages)
        return page

    async def _page(self, question: str, guild_id: int | None, shown: set[int], number: int = 0) -> Page:
        k = self.library.top_k
        # Ask for one passage more than fits, so we know whether a More would find anything;
        # passages that overlap what is already shown are skipped.
        answer = await self.library.ask(question, guild_id=guild_id, top_k=len(shown) + k + 1)
        fresh = tuple(p for p in answer.passages if shown.isdisjoint(p.sentence_ids))
        has_more = len(fresh) > k and number + 1 < MAX_PAGES
        if not answer.answered:
            return Page(answer, number, False)
        return Page(replace(answer, passages=fresh[:k]), number, has_more)

    async def _record(self, question: str, guild_id: int | None, asker_id: int, passages: tuple[Passage, ...]) -> int:
        now = _now()
        return await self.store.record_answer(
            guild_id, asker_id, question, json.dumps([_pages_of(passages)]), now.isoformat(),
            (now - timedelta(days=RECORD_DAYS)).isoformat(),
        )

    async def _add_page(self, record: AnswerRecord, passages: tuple[Passage, ...]) -> None:
        pages = [[list(p) for p in page] for page in record.pages] + [_pages_of(passages)]
        await self.store.set_answer_pages(record.id, json.dumps(pages))

    async def get(self, answer_id: int) -> AnswerRecord | None:
        row = await self.store.answer_record(answer_id)
        if row is None:
            return None
        pages = tuple(tuple(tuple(ids) for ids in page) for page in json.loads(row[4]))
        return AnswerRecord(row[0], row[1], row[2], row[3], pages, row[5])

    # --- context ----------------------------------------------------------------------------

    async def context(self, record: AnswerRecord, page: int) -> list[PassageContext]:
        """The quotes of one message of an answer, each with up to CONTEXT_AROUND sentences of its
        paragraph either side (from an article still stored and answering where it was asked)."""
        if not 0 <= page < len(record.pages):
            return []
        passages = record.pages[page]
        quoted_ids = [sid for passage in passages for sid in passage]
        sentences = await self.store.sentences_by_ids(quoted_ids)
        firsts = [sentences[p[0]] for p in passages if p and p[0] in sentences]
        articles = await self.store.articles_by_ids(s.article_id for s in firsts)
        allowed = scopes_for(record.guild_id)
        out: list[PassageContext] = []
        for passage in passages:
            quoted = [sentences[sid] for sid in passage if sid in sentences]
            if not quoted:
                continue
            info = articles.get(quoted[0].article_id)
            if info is None or info.scope not in allowed:
                continue
            seqs = [s.seq for s in quoted]
            around = await self.store.neighbours(
                info.id, range(min(seqs) - CONTEXT_AROUND, max(seqs) + CONTEXT_AROUND + 1)
            )
            quoted_seqs = set(seqs)
            first = quoted[0]
            shown = tuple(
                ContextSentence(s.text, s.seq in quoted_seqs)
                for seq, s in sorted(around.items())
                # Context is the quote's own paragraph (a headline only when it was quoted).
                if seq in quoted_seqs or (s.paragraph == first.paragraph and s.kind == first.kind)
            )
            out.append(PassageContext(info.id, info.title, info.source, info.url, info.published, shown))
        return out

    # --- votes ------------------------------------------------------------------------------

    async def vote(self, answer_id: int, user_id: int, helpful: bool) -> Vote | None:
        """One vote per answer and member; a second vote replaces the first. None if the answer
        record is gone (older than RECORD_DAYS)."""
        counted = await self.store.vote(answer_id, user_id, helpful, _now().isoformat())
        if counted is None:
            return None
        previous, up, down = counted
        return Vote(helpful, previous, up, down)
