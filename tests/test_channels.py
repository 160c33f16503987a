"""Where the bot speaks: managers set each channel's or forum's mode; members see the bot
answer, stay quiet or wait to be asked accordingly; the asker's 👍 resolves an answer."""
from __future__ import annotations

import asyncio
from pathlib import Path

import discord
import discord.ext.test as dpytest
import discord.ext.test.backend as dpytest_backend
import discord.ext.test.factories as dpytest_factories
import pytest

from bot.cogs.channels import RESOLVED_EMOJI, mark_resolved
from bot.cogs.checks import NotManager
from bot.core.channels import ChannelMode, ChannelModes, answer_confidence, is_confident
from bot.core.library import Library

from test_discord_answers import Gateway, custom_ids, message_dict
from test_discord_bot import record_sends

from conftest import SEED_ARTICLE, FakeDiscord, make_settings, mock_interaction, said, slash_context, start_fake_discord

QUESTION = "which pastor released the footage?"
# Answered, but its best passage lacks "ferry": quoted in `always`, withheld in `confident`.
UNSURE_QUESTION = "who released footage from a ferry in Seoul?"
UNANSWERABLE = "what is the boiling point of tungsten?"


@pytest.fixture
def library(library_on_each_store: Library) -> Library:
    """Channel modes live in the library's store: both stores."""
    return library_on_each_store


async def add_seed(fake: FakeDiscord) -> None:
    await fake.bot.library.add_bytes(SEED_ARTICLE.read_bytes(), "seed.txt", scope=fake.guild_a.id, added_by="1")


async def replies_to(content: str, channel: discord.abc.Messageable, member: discord.Member) -> list[discord.Message]:
    error, sent = await said(content, channel, member)
    assert error is None, error
    return sent


def quotes_kim(messages: list[discord.Message]) -> bool:
    return any("Kim Sung-Eun" in (e.description or "") for m in messages for e in m.embeds)


async def set_mode(fake: FakeDiscord, mode: str, where: str = "") -> str:
    sent = await replies_to(f"!channel mode {mode} {where}".strip(), fake.channel_a, fake.admin_a)
    return sent[0].content


# --- gateway objects dpytest does not make ---------------------------------------------------------


def make_forum(guild: discord.Guild, name: str) -> discord.ForumChannel:
    data = {
        "id": dpytest_factories.make_id(),
        "type": discord.ChannelType.forum.value,
        "guild_id": guild.id,
        "name": name,
        "position": len(guild.channels) + 1,
        "permission_overwrites": [],
        "parent_id": None,
        "nsfw": False,
        "topic": None,
        "rate_limit_per_user": 0,
        "available_tags": [],
        "default_reaction_emoji": None,
        "flags": 0,
    }
    dpytest_backend.get_state().parse_channel_create(data)
    forum = guild.get_channel(data["id"])
    assert isinstance(forum, discord.ForumChannel)
    return forum


def make_thread(parent: discord.abc.GuildChannel, name: str, owner: discord.Member) -> discord.Thread:
    data = {
        "id": dpytest_factories.make_id(),
        "guild_id": parent.guild.id,
        "parent_id": parent.id,
        "owner_id": owner.id,
        "name": name,
        "type": discord.ChannelType.public_thread.value,
        "message_count": 0,
        "member_count": 1,
        "rate_limit_per_user": 0,
        "thread_metadata": {
            "archived": False,
            "auto_archive_duration": 1440,
            "archive_timestamp": discord.utils.utcnow().isoformat(),
            "locked": False,
        },
        "newly_created": True,
    }
    dpytest_backend.get_state().parse_thread_create(data)
    thread = parent.guild.get_thread(data["id"])
    assert thread is not None
    return thread


async def forum_post(forum: discord.ForumChannel, title: str, text: str, member: discord.Member) -> tuple[discord.Thread, list[discord.Message]]:
    """A member's new forum post: a thread, and its first message with the thread's id."""
    thread = make_thread(forum, title, member)
    dpytest_backend.make_message(text, member, thread, id_num=thread.id)
    await dpytest.run_all_events()
    sent = []
    while not dpytest.sent_queue.empty():
        sent.append(await dpytest.sent_queue.get())
    return thread, sent


# --- the modes -------------------------------------------------------------------------------------


async def test_always_answers_every_question_and_ignores_chatter(fake: FakeDiscord) -> None:
    await add_seed(fake)
    assert await replies_to(QUESTION, fake.channel_a, fake.member_a) == []  # default: only when asked
    confirmation = await set_mode(fake, "always")
    assert confirmation.startswith(f"<#{fake.channel_a.id}> is now `always`")

    assert quotes_kim(await replies_to("Who released the footage from North Korea?", fake.channel_a, fake.member_a))
    assert await replies_to("nice weather today, everyone", fake.channel_a, fake.member_a) == []
    assert await replies_to(UNANSWERABLE, fake.channel_a, fake.member_a) == []  # silent, not "no article"
    assert quotes_kim(await replies_to(UNSURE_QUESTION, fake.channel_a, fake.member_a))
    # Server B's channel is untouched by server A's setting.
    assert await replies_to(QUESTION, fake.channel_b, fake.member_b) == []


async def test_confident_answers_only_what_the_bot_is_sure_of(fake: FakeDiscord, library: Library) -> None:
    await add_seed(fake)
    await set_mode(fake, "confident")
    sure = await library.ask(QUESTION, guild_id=fake.guild_a.id)
    unsure = await library.ask(UNSURE_QUESTION, guild_id=fake.guild_a.id)
    assert is_confident(sure) and unsure.answered and not is_confident(unsure)
    assert answer_confidence(unsure) < answer_confidence(sure)

    assert quotes_kim(await replies_to(QUESTION, fake.channel_a, fake.member_a))
    assert await replies_to(UNSURE_QUESTION, fake.channel_a, fake.member_a) == []
    # Asked outright, the member still gets the answer.
    assert quotes_kim(await replies_to(f"!ask {UNSURE_QUESTION}", fake.channel_a, fake.member_a))


async def test_mention_answers_only_when_asked(fake: FakeDiscord, tmp_path: Path) -> None:
    await add_seed(fake)
    # The environment made this an answer channel; the managers' choice wins.
    fake.bot.settings = make_settings(tmp_path, answer_channel_ids=[fake.channel_a.id])
    await fake.bot.reload_extension("bot.cogs.ask")
    assert quotes_kim(await replies_to(QUESTION, fake.channel_a, fake.member_a))
    await set_mode(fake, "mention")
    assert await replies_to(QUESTION, fake.channel_a, fake.member_a) == []
    assert quotes_kim(await replies_to(f"<@{fake.bot.user.id}> {QUESTION}", fake.channel_a, fake.member_a))
    assert quotes_kim(await replies_to(f"!ask {QUESTION}", fake.channel_a, fake.member_a))


async def test_off_answers_nothing_unasked_but_commands_still_work(fake: FakeDiscord) -> None:
    await add_seed(fake)
    await set_mode(fake, "off")
    assert await replies_to(QUESTION, fake.channel_a, fake.member_a) == []
    assert await replies_to(f"<@{fake.bot.user.id}> {QUESTION}", fake.channel_a, fake.member_a) == []
    assert quotes_kim(await replies_to(f"!ask {QUESTION}", fake.channel_a, fake.member_a))
    listed = await replies_to(f"<@{fake.bot.user.id}> channel list", fake.channel_a, fake.admin_a)
    assert f"<#{fake.channel_a.id}>: `off`" in listed[0].content


async def test_only_managers_set_modes_and_the_choice_is_stored(fake: FakeDiscord, library: Library) -> None:
    error, sent = await said("!channel mode always", fake.channel_a, fake.member_a)
    assert isinstance(error, NotManager) and "Manage Server" in sent[0].content
    assert await replies_to(QUESTION, fake.channel_a, fake.member_a) == []
    error, sent = await said("!channel mode loudly", fake.channel_a, fake.admin_a)
    assert error is not None and "Usage: `!channel mode" in sent[0].content

    await set_mode(fake, "confident")
    # Another process on the same database (a fresh ChannelModes) reads the same choice.
    other = ChannelModes(library.store)
    assert await other.mode_for(fake.guild_a.id, fake.channel_a.id) is ChannelMode.CONFIDENT
    assert await other.mode_for(fake.guild_b.id, fake.channel_b.id) is ChannelMode.MENTION
    assert await other.mode_for(fake.guild_b.id, fake.channel_b.id, default_always={fake.channel_b.id}) is ChannelMode.ALWAYS


async def test_a_mode_set_while_a_message_was_being_read_is_not_lost(library: Library, monkeypatch: pytest.MonkeyPatch) -> None:
    modes = ChannelModes(library.store)
    gate = asyncio.Event()
    read = library.store.read

    async def slow_read(sql: str, args: tuple = ()) -> list[tuple]:
        rows = await read(sql, args)
        await gate.wait()  # a message's lookup read the modes, and is slow to come back
        return rows

    monkeypatch.setattr(library.store, "read", slow_read)
    looking = asyncio.create_task(modes.mode_for(1, 10))
    await asyncio.sleep(0.05)
    await modes.set(1, 10, ChannelMode.ALWAYS, set_by="7")  # meanwhile a manager sets the mode
    gate.set()
    assert await looking is ChannelMode.MENTION  # that message was read before the change
    assert await modes.mode_for(1, 10) is ChannelMode.ALWAYS  # the next one sees it


async def test_slash_channel_mode_sets_a_forum(fake: FakeDiscord, library: Library) -> None:
    forum = make_forum(fake.guild_a, "help")
    command = fake.bot.get_command("channel mode")
    interaction = mock_interaction(
        fake.bot, fake.admin_a, fake.channel_a, command, permissions=discord.Permissions(manage_guild=True)
    )
    ctx = await slash_context(interaction)
    assert await command.can_run(ctx)
    await command.callback(fake.bot.get_cog("Channels"), ctx, mode="always", channel=forum)
    sent = interaction.response.send_message.await_args.kwargs
    assert sent["content"].startswith(f"<#{forum.id}> is now `always`")
    assert await fake.bot.channel_modes.mode_for(fake.guild_a.id, forum.id) is ChannelMode.ALWAYS
    # The slash command offers exactly the four modes.
    choices = [c.value for c in command.app_command.parameters[0].choices]
    assert choices == ["always", "confident", "mention", "off"]


# --- forums and threads ------------------------------------------------------------------------


async def test_a_forum_post_is_answered_in_its_thread_and_so_is_a_follow_up(fake: FakeDiscord) -> None:
    await add_seed(fake)
    forum = make_forum(fake.guild_a, "help")
    await set_mode(fake, "always", f"<#{forum.id}>")

    # A post is a question by nature; its title asks, around the chatter of its text.
    thread, sent = await forum_post(forum, "Who released the footage?", "Saw the karaoke video, curious.", fake.member_a)
    assert len(sent) == 1 and sent[0].channel == thread and quotes_kim(sent)

    follow_up = await replies_to("Who smuggles the videos out of North Korea?", thread, fake.member_a)
    assert follow_up and all(m.channel == thread for m in follow_up)
    assert any("smuggle" in (e.description or "") for m in follow_up for e in m.embeds)
    assert await replies_to("thanks, that helps", thread, fake.member_a) == []


async def test_threads_follow_their_channels_mode(fake: FakeDiscord) -> None:
    await add_seed(fake)
    thread = make_thread(fake.channel_a, "questions", fake.member_a)
    assert await replies_to(QUESTION, thread, fake.member_a) == []  # channel in `mention`
    await set_mode(fake, "always")
    answer = await replies_to(QUESTION, thread, fake.member_a)
    assert quotes_kim(answer) and answer[0].channel == thread
    # A forum left in `mention` does not answer its posts.
    quiet_forum = make_forum(fake.guild_a, "chat")
    _, sent = await forum_post(quiet_forum, "Who released the footage?", "", fake.member_a)
    assert sent == []


async def test_forum_in_confident_mode_keeps_unsure_answers_back(fake: FakeDiscord) -> None:
    await add_seed(fake)
    forum = make_forum(fake.guild_a, "help")
    await set_mode(fake, "confident", f"<#{forum.id}>")
    _, sent = await forum_post(forum, "Ferry footage", UNSURE_QUESTION, fake.member_a)
    assert sent == []
    _, sent = await forum_post(forum, "Footage", QUESTION, fake.member_a)
    assert quotes_kim(sent)


# --- resolving ---------------------------------------------------------------------------------


async def test_the_askers_thumbs_up_marks_the_answer_resolved(fake: FakeDiscord, library: Library) -> None:
    await add_seed(fake)
    await set_mode(fake, "always")
    [answer] = await replies_to(QUESTION, fake.channel_a, fake.member_a)

    await dpytest.add_reaction(fake.member_b, answer, "👍")  # not the asker: nothing happens
    assert not any(str(r.emoji) == RESOLVED_EMOJI for r in answer.reactions)
    await dpytest.add_reaction(fake.member_a, answer, "👍")
    assert any(str(r.emoji) == RESOLVED_EMOJI and r.me for r in answer.reactions)
    record = await fake.bot.questions.answer_message(message_id=answer.id)
    assert record is not None and record.asker_id == fake.member_a.id and record.resolved_at is not None
    # The same function serves a button: a second time it reports nothing new.
    assert not await mark_resolved(fake.bot, fake.member_a.id, message_id=answer.id)


async def test_the_askers_helpful_button_resolves_too(fake: FakeDiscord, monkeypatch: pytest.MonkeyPatch) -> None:
    gateway = Gateway(fake, monkeypatch)
    sends = record_sends(monkeypatch)
    await add_seed(fake)
    [answer] = await replies_to(f"!ask {QUESTION}", fake.channel_a, fake.member_a)
    components = sends[-1]["components"]
    message = message_dict(answer, components)
    vote = next(c for c in custom_ids(components) if c.startswith("qb:vote:") and c.endswith(":up"))

    (other,) = await gateway.click(fake.admin_a, message, vote)  # someone else's Helpful: a vote only
    assert "resolved" not in other.text
    assert not any(str(r.emoji) == RESOLVED_EMOJI for r in answer.reactions)
    (asker,) = await gateway.click(fake.member_a, message, vote)
    assert asker.text.endswith("Your question is marked resolved.")
    assert any(str(r.emoji) == RESOLVED_EMOJI and r.me for r in answer.reactions)
    error, sent = await said("!stats", fake.channel_a, fake.admin_a)
    assert sent[0].embeds[0].fields[0].value.endswith("resolved **1** · helpful **2** · not helpful **0**")


async def test_resolving_works_without_the_question_log(tmp_path: Path, library: Library) -> None:
    world = await start_fake_discord(make_settings(tmp_path, store_questions=False), library)
    try:
        await library.add_bytes(SEED_ARTICLE.read_bytes(), "seed.txt", scope=world.guild_a.id, added_by="1")
        [answer] = await replies_to(f"!ask {QUESTION}", world.channel_a, world.member_a)
        assert await mark_resolved(world.bot, world.member_a.id, message_id=answer.id)
        assert await library.store.read("SELECT COUNT(*) FROM questions") == [(0,)]
    finally:
        await dpytest.empty_queue()
        for extension in list(world.bot.extensions):
            await world.bot.unload_extension(extension)

