"""Load: a busy evening on three servers. 200 questions from many members arrive through the
`ask` command while each server's admin adds and removes articles at the same time. Every
question gets one reply, nothing raises, no reply quotes an article that did not exist in that
server while the question was being answered, and afterwards the database and the index agree."""
from __future__ import annotations

import asyncio
import random
import re
from dataclasses import dataclass, field
from types import SimpleNamespace
from unittest.mock import AsyncMock, MagicMock

from discord.ext import commands

from bot.core.articles import GLOBAL_SCOPE, ArticleDraft, ArticleError
from bot.core.library import Library
from conftest import index_agrees_with_database

GUILDS = (101, 102, 103)
ADMINS = {101: 9101, 102: 9102, 103: 9103}
MEMBERS = list(range(5000, 5060))  # sixty members
QUESTIONS = 200
DYNAMIC_ARTICLES = 21  # seven per server, added and (mostly) removed while questions arrive
TOPICS = ("school", "railway", "museum", "festival", "hospital", "market", "library", "stadium")


def story(word: str, where: str) -> ArticleDraft:
    return ArticleDraft(
        title=f"Council decision on {word}",
        body=(
            f"The council in {where} said the {word} project would go ahead next spring. "
            f"Residents of {where} welcomed the {word} plan at a packed meeting on Tuesday."
        ),
    )


@dataclass
class Article:
    word: str
    scope: int
    id: int | None = None
    added_from: float | None = None  # the add call started
    removed_at: float | None = None  # the remove call returned


@dataclass
class Question:
    guild: int
    member: int
    word: str
    started: float = 0.0
    finished: float = 0.0
    replies: list[dict] = field(default_factory=list)

    def quoted_ids(self) -> list[int]:
        ids = []
        for reply in self.replies:
            for embed in reply.get("embeds") or []:
                ids += [int(m) for m in re.findall(r"article (\d+)$", embed.description or "", re.M)]
        return ids


def fake_ctx(guild_id: int, author_id: int, sink: list[dict]) -> MagicMock:
    """What the `ask` and `article` callbacks use of a Context; every send lands in `sink`."""
    ctx = MagicMock(spec=commands.Context)
    ctx.guild = SimpleNamespace(id=guild_id)
    ctx.channel = SimpleNamespace(id=guild_id + 1)  # the question log records the channel
    ctx.author = SimpleNamespace(id=author_id, bot=False)
    ctx.interaction = None
    ctx.message = MagicMock()
    ctx.defer = AsyncMock()

    async def send(**kwargs):
        sink.append(kwargs)

    ctx.send = AsyncMock(side_effect=send)
    return ctx


async def test_two_hundred_questions_on_three_servers_while_admins_add_and_remove(fake, library):
    rng = random.Random(20261125)
    loop = asyncio.get_running_loop()
    ask_cog = fake.bot.get_cog("Ask")
    articles_cog = fake.bot.get_cog("Articles")
    assert ask_cog is not None and articles_cog is not None

    # Always there: unrelated stories (so BM25 has a collection), two global ones, two per server.
    for i, topic in enumerate(TOPICS):
        await library.add_draft(
            ArticleDraft(title=f"{topic} news", body=f"The {topic} committee met on Monday about the {topic} budget."),
            scope=GLOBAL_SCOPE,
            added_by="corpus",
        )
    standing: list[Article] = []
    for scope in (GLOBAL_SCOPE, *GUILDS):
        for n in range(2):
            article = Article(f"standing{scope}x{n}", scope, added_from=-1.0)
            article.id = (await library.add_draft(story(article.word, f"town {scope}"), scope=scope, added_by="seed")).article.id
            standing.append(article)
    dynamic = [Article(f"zorblat{i}", GUILDS[i % 3]) for i in range(DYNAMIC_ARTICLES)]
    # Admin actions that failed because the store read its own fresh write through the reader
    # connection, whose snapshot can be older than the commit while questions keep it busy.
    stale_reads: list[str] = []
    everything = standing + dynamic

    async def admin(guild: int) -> None:
        mine = [a for a in dynamic if a.scope == guild]
        for article in mine:
            await asyncio.sleep(rng.random() * 0.08)
            article.added_from = loop.time()
            try:
                added = await library.add_draft(story(article.word, f"town {guild}"), scope=guild, added_by=str(ADMINS[guild]))
                article.id = added.article.id
            except AssertionError:
                # Known bug (see stale_reads): stored and indexed, but read back through a stale snapshot.
                stale_reads.append(f"add {article.word}")
                async with library.store._writer.execute("SELECT id FROM articles WHERE title = ?", (f"Council decision on {article.word}",)) as cur:
                    article.id = (await cur.fetchone())[0]
        for article in mine[: len(mine) - 2]:  # the last two stay
            for _attempt in range(20):
                await asyncio.sleep(rng.random() * 0.05)
                sink: list[dict] = []
                try:
                    await articles_cog.remove.callback(articles_cog, fake_ctx(guild, ADMINS[guild], sink), article.id)
                except ArticleError:
                    stale_reads.append(f"remove {article.id}")  # "No article N here" for a stored article
                    continue
                article.removed_at = loop.time()
                assert "Removed article" in sink[0]["content"]
                break

    async def ask(question: Question) -> None:
        await asyncio.sleep(rng.random() * 0.3)
        ctx = fake_ctx(question.guild, question.member, question.replies)
        question.started = loop.time()
        await ask_cog.ask.callback(ask_cog, ctx, question=f"What did the council say about the {question.word} plan?")
        question.finished = loop.time()

    questions = []
    for _ in range(QUESTIONS):
        target = rng.choice(everything)
        # Mostly asked where the article lives; a third of the time in another server, to catch leaks.
        guild = target.scope if target.scope != GLOBAL_SCOPE and rng.random() < 0.67 else rng.choice(GUILDS)
        questions.append(Question(guild, rng.choice(MEMBERS), target.word))
    await asyncio.gather(*(ask(q) for q in questions), *(admin(g) for g in GUILDS))

    by_id = {a.id: a for a in everything}
    served = answered = 0
    for q in questions:
        assert len(q.replies) == 1, (q, q.replies)  # one reply each, and nothing raised
        served += 1
        quoted = q.quoted_ids()
        answered += bool(quoted)
        for article_id in quoted:
            article = by_id.get(article_id)
            if article is None:  # one of the unrelated topic stories: global, always there
                continue
            assert article.scope in (GLOBAL_SCOPE, q.guild), f"server {q.guild} was shown article {article_id} of {article.scope}"
            assert article.added_from is not None and article.added_from <= q.finished, "quoted before it was added"
            assert article.removed_at is None or article.removed_at >= q.started, "quoted after it was removed"
        # A standing article of this server (or a global one) is always found.
        target = next(a for a in everything if a.word == q.word)
        if target in standing and target.scope in (GLOBAL_SCOPE, q.guild):
            assert target.id in quoted, q
        if target.scope not in (GLOBAL_SCOPE, q.guild):
            assert target.id not in quoted
    assert served == QUESTIONS
    # Every question is in its own server's log, with whether it was answered.
    for guild in GUILDS:
        asked_here = [q for q in questions if q.guild == guild]
        logged = await library.store.read("SELECT COUNT(*), SUM(answered) FROM questions WHERE guild_id = ?", (guild,))
        assert logged == [(len(asked_here), sum(bool(q.quoted_ids()) for q in asked_here))]
    print(f"load: {served} questions served, {answered} answered with quotes, {DYNAMIC_ARTICLES} articles added concurrently")

    # Afterwards the database and the index hold exactly the same sentences.
    await index_agrees_with_database(library)
    async with library.store._reader.execute(
        "SELECT COUNT(*) FROM articles a WHERE sentence_count != (SELECT COUNT(*) FROM sentences s WHERE s.article_id = a.id)"
    ) as cur:
        assert (await cur.fetchone())[0] == 0
    removed = [a for a in dynamic if a.removed_at is not None]
    assert len(removed) >= 1
    for article in removed:
        assert await library.store.get_article(article.id) is None
        answer = await library.ask(f"What did the council say about the {article.word} plan?", guild_id=article.scope)
        assert article.id not in [p.article_id for p in answer.passages]
    for article in dynamic:
        if article.removed_at is None:
            answer = await library.ask(f"What did the council say about the {article.word} plan?", guild_id=article.scope)
            assert answer.passages and answer.passages[0].article_id == article.id

    # A second process opening the same database builds the same index.
    other = await Library.open(library.store.path)
    try:
        await index_agrees_with_database(other)
    finally:
        await other.close()

    assert not stale_reads, f"admin action(s) read a stale snapshot under load: {stale_reads[:4]}"


async def test_a_burst_of_identical_questions_from_one_server_all_get_the_same_answer(fake, library):
    for topic in TOPICS:
        await library.add_draft(
            ArticleDraft(title=f"{topic} news", body=f"The {topic} committee met on Monday about the {topic} budget."),
            scope=GLOBAL_SCOPE,
            added_by="corpus",
        )
    await library.add_draft(story("ferry", "Kestrel Bay"), scope=101, added_by="seed")
    ask_cog = fake.bot.get_cog("Ask")
    sinks: list[list[dict]] = [[] for _ in range(100)]
    await asyncio.gather(
        *(
            ask_cog.ask.callback(ask_cog, fake_ctx(101, MEMBERS[i % len(MEMBERS)], sink), question="What did the council say about the ferry?")
            for i, sink in enumerate(sinks)
        )
    )
    descriptions = {tuple(e.description for e in sink[0]["embeds"]) for sink in sinks}
    assert all(len(sink) == 1 for sink in sinks)
    assert len(descriptions) == 1 and "ferry" in next(iter(descriptions))[0]
