"""What managers learn: members ask, the bot logs each question in that server only; the
manager's `/article gaps` lists what went unanswered, `/stats` counts the last 7 and 30 days."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path

import discord
import discord.ext.test as dpytest
import pytest
from discord.ext import commands

from bot.cogs.checks import NotManager
from bot.core.library import Library
from bot.core.questions import QuestionLog, normalised_question
from bot.core.storage import ArticleStore

from conftest import SEED_ARTICLE, FakeDiscord, make_settings, mock_interaction, said, slash_context, start_fake_discord

QUESTION = "who released the footage?"


@pytest.fixture
def library(library_on_each_store: Library) -> Library:
    """The question log lives in the library's store: both stores."""
    return library_on_each_store


async def add_seed(fake: FakeDiscord) -> None:
    await fake.bot.library.add_bytes(SEED_ARTICLE.read_bytes(), "seed.txt", scope=fake.guild_a.id, added_by="1")


async def ask(fake: FakeDiscord, text: str, member: discord.Member | None = None, channel=None) -> None:
    error, _ = await said(f"!ask {text}", channel or fake.channel_a, member or fake.member_a)
    assert error is None


async def logged(library: Library) -> list[tuple]:
    return await library.store.read("SELECT guild_id, question, normalised, answered FROM questions ORDER BY id")


async def test_questions_are_logged_in_the_server_they_were_asked_in_only(fake: FakeDiscord, library: Library) -> None:
    await add_seed(fake)
    await ask(fake, QUESTION)
    await ask(fake, "What is the boiling point of Tungsten?!")
    await ask(fake, "what is the boiling point of tungsten", fake.member_b, fake.channel_b)
    dm = await fake.member_a.create_dm()
    error, _ = await said(QUESTION, dm, fake.member_a)
    assert error is None

    assert await logged(library) == [
        (fake.guild_a.id, QUESTION, "who released the footage", 1),
        (fake.guild_a.id, "What is the boiling point of Tungsten?!", "what is the boiling point of tungsten", 0),
        (fake.guild_b.id, "what is the boiling point of tungsten", "what is the boiling point of tungsten", 0),
    ]  # and nothing from the DM
    # No user id in the log.
    if isinstance(library.store, ArticleStore):
        columns = [row[0] for row in await library.store.read("SELECT name FROM pragma_table_info('questions')")]
    else:
        columns = [row[0] for row in await library.store.read(
            "SELECT column_name FROM information_schema.columns WHERE table_name = 'questions'"
        )]
    assert "question" in columns and not any("user" in c or "author" in c for c in columns)


async def test_gaps_list_unanswered_questions_most_asked_first(fake: FakeDiscord) -> None:
    await add_seed(fake)
    for text in (
        "What time does the ferry leave?",
        "what time does the ferry leave",
        "What time does the FERRY leave??",
        "Where is the lighthouse?",
        QUESTION,  # answered: not a gap
        "Where is the lighthouse",
        "Who won the regatta?",
    ):
        await ask(fake, text)
    await ask(fake, "Who won the regatta?", fake.member_b, fake.channel_b)  # server B's own

    error, sent = await said("!article gaps", fake.channel_a, fake.admin_a)
    assert error is None
    rows = sent[0].embeds[0].description.splitlines()
    assert len(rows) == 3
    assert rows[0].startswith("**3×** What time does the FERRY leave??") and "last asked <t:" in rows[0]
    assert rows[1].startswith("**2×** Where is the lighthouse")
    assert rows[2].startswith("**1×** Who won the regatta?")
    assert "released" not in sent[0].embeds[0].description

    # Members cannot read the log.
    error, sent = await said("!article gaps", fake.channel_a, fake.member_a)
    assert isinstance(error, NotManager)


async def test_answers_voted_not_helpful_are_gaps_too(fake: FakeDiscord, library: Library) -> None:
    await add_seed(fake)
    for _ in range(2):
        await ask(fake, QUESTION)
    await ask(fake, "what is the boiling point of tungsten?")
    first, second = await library.store.read("SELECT answer_id FROM answer_messages ORDER BY answered_at, message_id")
    feedback = fake.bot.feedback
    # The first answer: two members found it not helpful, one helpful. The second: helpful.
    await feedback.vote(first[0], fake.member_a.id, False)
    await feedback.vote(first[0], fake.member_b.id, False)
    await feedback.vote(first[0], fake.admin_a.id, True)
    await feedback.vote(second[0], fake.member_a.id, True)

    error, sent = await said("!article gaps", fake.channel_a, fake.admin_a)
    rows = sent[0].embeds[0].description.splitlines()
    assert len(rows) == 2
    assert rows[0].startswith("**1×** what is the boiling point of tungsten?")
    assert rows[1].startswith(f"**1×** {QUESTION}") and rows[1].endswith("(1 answered, voted not helpful)")
    error, sent = await said("!stats", fake.channel_a, fake.admin_a)
    assert sent[0].embeds[0].fields[0].value.endswith("helpful **2** · not helpful **2**")


async def test_gap_questions_are_shown_without_pinging_or_formatting(fake: FakeDiscord) -> None:
    await ask(fake, "why did @everyone get the **ferry** times <@&123456789012345678>?")
    error, sent = await said("!article gaps", fake.channel_a, fake.admin_a)
    shown = sent[0].embeds[0].description
    assert "@everyone" not in shown and "@\u200beveryone" in shown
    assert "\\*\\*ferry\\*\\*" in shown and "<@&123456789012345678>" not in shown


async def test_stats_count_the_last_7_and_30_days(fake: FakeDiscord, library: Library) -> None:
    await add_seed(fake)
    now = datetime.now(timezone.utc)
    # Older questions, logged as another process would have at the time.
    for days_ago, answered in ((3, True), (10, False), (20, True), (45, False)):
        past = QuestionLog(library.store, clock=lambda d=days_ago: now - timedelta(days=d))
        await past.record(fake.guild_a.id, fake.channel_a.id, f"asked {days_ago} days ago", answered=answered)
    await ask(fake, QUESTION)
    await ask(fake, "what is the boiling point of tungsten?")
    await ask(fake, QUESTION, fake.member_b, fake.channel_b)  # server B: declined there, not counted here

    error, sent = await said("!stats", fake.channel_a, fake.admin_a)
    assert error is None
    fields = {f.name: f.value for f in sent[0].embeds[0].fields}
    votes = "helpful **0** · not helpful **0**"
    assert fields["Last 7 days"] == f"asked **3** · answered **2** · declined **1** · resolved **0** · {votes}"
    assert fields["Last 30 days"] == f"asked **5** · answered **3** · declined **2** · resolved **0** · {votes}"

    # The slash path: deferred, then the same numbers.
    command = fake.bot.get_command("stats")
    interaction = mock_interaction(fake.bot, fake.admin_a, fake.channel_a, command, permissions=discord.Permissions(manage_guild=True))
    ctx = await slash_context(interaction)
    assert await command.can_run(ctx)
    await command.callback(fake.bot.get_cog("Stats"), ctx)
    interaction.response.defer.assert_awaited_once()
    embed = interaction.followup.send.await_args.kwargs["embeds"][0]
    assert embed.fields[0].value == fields["Last 7 days"]


async def test_logged_questions_are_deleted_after_90_days(library: Library) -> None:
    """A question asked 91 days ago is gone once another is logged; one 89 days old stays."""
    now = datetime.now(timezone.utc)
    for days_ago in (91, 89):
        old = QuestionLog(library.store, clock=lambda d=days_ago: now - timedelta(days=d))
        await old.record(7, 8, f"asked {days_ago} days ago", answered=False)
    assert len(await library.store.read("SELECT id FROM questions")) == 2
    await QuestionLog(library.store, clock=lambda: now).record(7, 8, "asked today", answered=True)
    kept = await library.store.read("SELECT question FROM questions ORDER BY asked_at")
    assert [q for (q,) in kept] == ["asked 89 days ago", "asked today"]


async def test_stats_count_resolved_answers(fake: FakeDiscord, library: Library) -> None:
    await add_seed(fake)
    error, sent = await said(f"!ask {QUESTION}", fake.channel_a, fake.member_a)
    assert await fake.bot.questions.resolve(fake.member_a.id, message_id=sent[0].id)
    error, sent = await said("!stats", fake.channel_a, fake.admin_a)
    assert sent[0].embeds[0].fields[0].value.endswith("resolved **1** · helpful **0** · not helpful **0**")


async def test_with_the_log_off_nothing_is_stored(tmp_path: Path, library: Library) -> None:
    world = await start_fake_discord(make_settings(tmp_path, store_questions=False), library)
    try:
        await library.add_bytes(SEED_ARTICLE.read_bytes(), "seed.txt", scope=world.guild_a.id, added_by="1")
        for text in (QUESTION, "what is the boiling point of tungsten?"):
            error, sent = await said(f"!ask {text}", world.channel_a, world.member_a)
            assert sent  # answering is unchanged
        assert await logged(library) == []
        error, sent = await said("!article gaps", world.channel_a, world.admin_a)
        assert "question log is off" in sent[0].content
        error, sent = await said("!stats", world.channel_a, world.admin_a)
        assert "asked **0**" in sent[0].embeds[0].fields[0].value
        assert "log is off" in sent[0].embeds[0].footer.text
    finally:
        await dpytest.empty_queue()
        for extension in list(world.bot.extensions):
            await world.bot.unload_extension(extension)


async def test_stats_and_gaps_need_a_server(fake: FakeDiscord) -> None:
    fake.bot.owner_id = fake.member_a.id  # even the owner: the log is per server
    dm = await fake.member_a.create_dm()
    error, sent = await said("!stats", dm, fake.member_a)
    assert isinstance(error, commands.NoPrivateMessage) and "only in a server" in sent[0].content


def test_normalised_questions_group_the_same_question() -> None:
    assert normalised_question("  Who runs the Ferry?? ") == normalised_question("who runs the ferry")
    assert normalised_question("Café opening hours?") == "cafe opening hours"
    assert normalised_question("Who runs the ferry?") != normalised_question("Who runs the harbour?")
