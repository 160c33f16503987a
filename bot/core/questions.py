"""The question log, and what managers learn from it: the gaps and the numbers.

What is stored, per question asked in a server (never in direct messages): the server and
channel ids, the question's text and a normalised form of it (to group the same question asked
different ways), when it was asked, and whether the bot answered it. No user id is stored in
the log. `QUOTEBOT_STORE_QUESTIONS=false` turns the log off: nothing is stored, and the gaps
and the question counts are then empty.

Apart from the log, each answer message sent in a server is linked to its answer record
(`feedback.py`, which knows who asked), so the asker's 👍 or Helpful marks it resolved; that
needs no question text and is kept whether the log is on or not, as long as the record.
"""
from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from .storage import ArticleStore
from .tokens import normalise

# Logged questions older than this are deleted (as answer records are): /stats covers 30 days,
# and /article gaps is about what members ask now. Trimmed with a logged question, hourly.
QUESTION_RETENTION_DAYS = 90
TRIM_EVERY = timedelta(hours=1)
# Periods the stats cover, in days.
STATS_PERIODS = (7, 30)

_NOT_WORD = re.compile(r"[^\w\s]+")


def normalised_question(text: str) -> str:
    """Case, accents, punctuation and spacing removed: "Who runs the ferry?" and
    "who runs the ferry" are one question in the gaps."""
    return " ".join(_NOT_WORD.sub(" ", normalise(text)).split())


def utc_now() -> datetime:
    return datetime.now(timezone.utc).replace(microsecond=0)


def iso_stamp(when: datetime) -> str:
    return when.astimezone(timezone.utc).replace(microsecond=0).isoformat()


@dataclass(frozen=True, slots=True)
class Gap:
    """One question the bot could not answer (or whose answer did not help), however often asked."""

    question: str  # as last asked
    normalised: str
    count: int
    last_asked: str
    not_helpful: int = 0  # of `count`: answered, but voted more Not helpful than Helpful


@dataclass(frozen=True, slots=True)
class PeriodStats:
    days: int
    asked: int
    answered: int
    declined: int
    resolved: int
    helpful: int  # votes on answers given in the period
    not_helpful: int


@dataclass(frozen=True, slots=True)
class AnswerMessage:
    """The message that showed an answer, and who asked (from the answer's record)."""

    message_id: int
    channel_id: int
    answer_id: int
    question_id: int | None
    asker_id: int
    resolved_at: str | None


class QuestionLog:
    def __init__(self, store: ArticleStore, *, enabled: bool = True, clock: Callable[[], datetime] = utc_now) -> None:
        self.store = store
        self.enabled = enabled
        self._clock = clock
        self._trimmed_at: datetime | None = None

    async def record(self, guild_id: int | None, channel_id: int | None, question: str, *, answered: bool) -> int | None:
        """Log a question asked in a server; its id, or None when nothing is stored (log off,
        a direct message, or a read-only library)."""
        question = " ".join(question.split())
        if not self.enabled or guild_id is None or not question or self.store.read_only:
            return None
        now = self._clock()
        statements = [
            (
                "INSERT INTO questions (guild_id, channel_id, question, normalised, asked_at, answered)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (guild_id, channel_id, question, normalised_question(question), iso_stamp(now), int(answered)),
            )
        ]
        if self._trimmed_at is None or now - self._trimmed_at >= TRIM_EVERY:
            cutoff = iso_stamp(now - timedelta(days=QUESTION_RETENTION_DAYS))
            statements.append(("DELETE FROM questions WHERE asked_at < ?", (cutoff,)))
            self._trimmed_at = now
        [(row_id, _), *_] = await self.store.write(*statements)
        return row_id

    async def remember_answer(
        self, message_id: int, *, answer_id: int, question_id: int | None, guild_id: int, channel_id: int
    ) -> None:
        """The message that showed answer `answer_id` in a server: so its asker can resolve it."""
        if self.store.read_only:
            return
        await self.store.write(
            (
                "INSERT INTO answer_messages (message_id, answer_id, question_id, guild_id, channel_id, answered_at)"
                " VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (message_id) DO UPDATE SET answer_id = excluded.answer_id,"
                " question_id = excluded.question_id, guild_id = excluded.guild_id, channel_id = excluded.channel_id,"
                " answered_at = excluded.answered_at, resolved_at = NULL",
                (message_id, answer_id, question_id, guild_id, channel_id, iso_stamp(self._clock())),
            )
        )

    async def answer_message(self, *, message_id: int | None = None, answer_id: int | None = None) -> AnswerMessage | None:
        """The answer message with this id, or the one that showed answer `answer_id`."""
        rows = await self.store.read(
            "SELECT m.message_id, m.channel_id, m.answer_id, m.question_id, r.asker_id, m.resolved_at"
            " FROM answer_messages m JOIN answer_records r ON r.id = m.answer_id"
            " WHERE m.message_id = ? OR m.answer_id = ?",
            (message_id, answer_id),
        )
        return AnswerMessage(*rows[0]) if rows else None

    async def resolve(
        self, user_id: int, *, message_id: int | None = None, answer_id: int | None = None
    ) -> AnswerMessage | None:
        """Mark an answer (by its message, or by its record) resolved if `user_id` asked it; the
        answer's message if it is marked now, None if not (not the asker, unknown, or already)."""
        found = await self.answer_message(message_id=message_id, answer_id=answer_id)
        if found is None or found.asker_id != user_id or found.resolved_at is not None:
            return None
        [(_, changed)] = await self.store.write(
            (
                "UPDATE answer_messages SET resolved_at = ? WHERE message_id = ? AND resolved_at IS NULL",
                (iso_stamp(self._clock()), found.message_id),
            )
        )
        return found if changed else None

    async def gaps(self, guild_id: int, *, limit: int = 15) -> list[Gap]:
        """The questions declined, or answered and voted more Not helpful than Helpful, grouped
        by normalised text: most asked first, then most recent."""
        rows = await self.store.read(
            "WITH unhelpful AS ("
            "  SELECT m.question_id FROM answer_messages m JOIN answer_votes v ON v.answer_id = m.answer_id"
            "  WHERE m.guild_id = ? AND m.question_id IS NOT NULL"
            "  GROUP BY m.question_id"
            "  HAVING SUM(CASE WHEN v.helpful = 0 THEN 1 ELSE 0 END) > SUM(CASE WHEN v.helpful = 1 THEN 1 ELSE 0 END)"
            "), gap AS ("
            "  SELECT q.id, q.question, q.normalised, q.asked_at, CAST(q.id IN (SELECT question_id FROM unhelpful) AS INTEGER) AS voted"
            "  FROM questions q WHERE q.guild_id = ?"
            "  AND (q.answered = 0 OR q.id IN (SELECT question_id FROM unhelpful))"
            ")"
            " SELECT normalised, COUNT(*) AS n, MAX(asked_at) AS last, SUM(voted),"
            " (SELECT g2.question FROM gap g2 WHERE g2.normalised = gap.normalised ORDER BY g2.asked_at DESC, g2.id DESC LIMIT 1)"
            " FROM gap GROUP BY normalised ORDER BY n DESC, last DESC LIMIT ?",
            (guild_id, guild_id, limit),
        )
        return [Gap(question=r[4], normalised=r[0], count=r[1], last_asked=r[2], not_helpful=r[3]) for r in rows]

    async def stats(self, guild_id: int) -> list[PeriodStats]:
        """Questions asked, answered and declined, answers resolved, and votes on the answers
        given, over each period."""
        now = self._clock()
        out = []
        for days in STATS_PERIODS:
            since = iso_stamp(now - timedelta(days=days))
            [(asked, answered)] = await self.store.read(
                "SELECT COUNT(*), COALESCE(SUM(answered), 0) FROM questions WHERE guild_id = ? AND asked_at >= ?",
                (guild_id, since),
            )
            [(resolved,)] = await self.store.read(
                "SELECT COUNT(*) FROM answer_messages WHERE guild_id = ? AND answered_at >= ? AND resolved_at IS NOT NULL",
                (guild_id, since),
            )
            [(helpful, not_helpful)] = await self.store.read(
                "SELECT COALESCE(SUM(CASE WHEN v.helpful = 1 THEN 1 ELSE 0 END), 0),"
                " COALESCE(SUM(CASE WHEN v.helpful = 0 THEN 1 ELSE 0 END), 0)"
                " FROM answer_votes v JOIN answer_records r ON r.id = v.answer_id"
                " WHERE r.guild_id = ? AND r.created_at >= ?",
                (guild_id, since),
            )
            out.append(PeriodStats(days, asked, answered, asked - answered, resolved, helpful, not_helpful))
        return out
