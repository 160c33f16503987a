"""The Discord skin, end to end in a simulated server (dpytest) and on mocked slash interactions."""
from __future__ import annotations

import logging
import os
import re
import signal
from pathlib import Path
from typing import Any
from unittest.mock import AsyncMock, MagicMock, patch

import discord
import discord.ext.test as dpytest
import pytest
from discord.ext import commands

from bot.cogs import rendering
from bot.cogs.articles import AddFlags
from bot.cogs.checks import NotManager
from bot.core.answers import Answer, Passage
from bot.core.articles import GLOBAL_SCOPE
from bot.core.library import Library
from bot.core.tokens import tokenize
from bot.discord_bot import QuoteBot, build_intents, needs_message_content, run_bot

from conftest import SEED_ARTICLE, FakeDiscord, make_settings, mock_interaction, slash_context

QUESTION = "who released the footage?"


# --- helpers -----------------------------------------------------------------------------------


def assert_within_limits(message: discord.Message | None = None, *, content: str | None = None, embeds: list[discord.Embed] | None = None) -> None:
    """Discord's limits, asserted one by one (dpytest does not enforce them)."""
    if message is not None:
        content, embeds = message.content, message.embeds
    embeds = embeds or []
    assert len(content or "") <= 2000
    assert len(embeds) <= 10
    assert sum(len(e) for e in embeds) <= 6000
    for e in embeds:
        assert len(e.title or "") <= 256
        assert len(e.description or "") <= 4096
        assert len(e.fields) <= 25
        for f in e.fields:
            assert len(f.name or "") <= 256
            assert len(f.value or "") <= 1024
        assert len(e.footer.text or "") <= 2048


def text_of(message: discord.Message) -> str:
    parts = [message.content or ""]
    for e in message.embeds:
        parts += [e.title or "", e.description or ""] + [f"{f.name}: {f.value}" for f in e.fields]
    return "\n".join(parts)


async def say(content: str, member: discord.Member, channel: discord.abc.Messageable | None = None, **kwargs: Any) -> discord.Message:
    """Send a message as `member` and return the bot's reply."""
    await dpytest.message(content, channel=channel or member.guild.text_channels[0], member=member, **kwargs)
    return dpytest.get_message()


async def say_failing(
    content: str, member: discord.Member, error: type[Exception], channel: discord.abc.Messageable | None = None, **kwargs: Any
) -> discord.Message:
    """Send a command that fails with `error` (dpytest re-raises it) and return the bot's reply."""
    with pytest.raises(error):
        await dpytest.message(content, channel=channel or member.guild.text_channels[0], member=member, **kwargs)
    return dpytest.get_message()


def pings_nobody(allowed_mentions: dict) -> bool:
    """An allowed_mentions payload that lets nothing ping: no parsed mention types, no listed
    users or roles, and no ping of the author of the message replied to."""
    return (
        allowed_mentions.get("parse") == []
        and not allowed_mentions.get("users")
        and not allowed_mentions.get("roles")
        and not allowed_mentions.get("replied_user", False)
    )


def add_flags(**values: str | None) -> AddFlags:
    """AddFlags as the slash path builds them: every option given or None."""
    flags = AddFlags.__new__(AddFlags)
    for flag in AddFlags.get_flags().values():
        setattr(flags, flag.attribute, values.get(flag.attribute, flag.default))
    return flags


def record_sends(monkeypatch: pytest.MonkeyPatch) -> list[dict]:
    """Capture the JSON payload of every channel message the bot sends, as it would go to Discord."""
    payloads: list[dict] = []
    original = discord.abc.handle_message_parameters

    def spy(*args: Any, **kwargs: Any) -> Any:
        params = original(*args, **kwargs)
        payloads.append(params.payload)
        return params

    monkeypatch.setattr(discord.abc, "handle_message_parameters", spy)
    return payloads


async def add_seed(fake: FakeDiscord) -> discord.Message:
    return await say("!article add", fake.admin_a, attachments=[str(SEED_ARTICLE)])


# --- asking ------------------------------------------------------------------------------------


async def test_admin_adds_seed_article_and_member_gets_the_quote(fake: FakeDiscord, library: Library) -> None:
    reply = await add_seed(fake)
    assert "Stored article" in reply.content
    assert "Rare N. Korea video shows karaoke salons, markets" in reply.content
    assert "Agence France-Presse" in reply.content

    answer = await say(f"!ask {QUESTION}", fake.member_a)
    assert answer.embeds, answer.content
    quote = next(e.description for e in answer.embeds if "Kim Sung-Eun" in e.description)
    assert "was **released** by a South Korean pastor, Kim Sung-Eun" in quote
    assert "hidden-camera **footage**" in quote
    assert "Agence France-Presse" in quote
    assert "2014-03-27" in quote
    info = (await library.list(scopes=[fake.guild_a.id]))[0]
    assert f"article {info.id}" in quote
    assert_within_limits(answer)


async def test_slash_add_and_ask_defer_then_follow_up(fake: FakeDiscord, library: Library) -> None:
    bot = fake.bot
    articles = bot.get_cog("Articles")
    ask_cog = bot.get_cog("Ask")
    admin_perms = discord.Permissions(manage_guild=True, send_messages=True)

    add_cmd = bot.get_command("article add")
    interaction = mock_interaction(bot, fake.admin_a, fake.channel_a, add_cmd, permissions=admin_perms)
    ctx = await slash_context(interaction)
    assert await add_cmd.can_run(ctx)
    text = SEED_ARTICLE.read_text(encoding="utf-8")
    await add_cmd.callback(articles, ctx, file=None, flags=add_flags(text=text, source="Agence France-Presse"))
    interaction.response.defer.assert_awaited_once()
    sent = interaction.followup.send.await_args.kwargs
    assert "Stored article" in sent["content"]
    assert await library.store.count_articles(fake.guild_a.id) == 1

    ask_cmd = bot.get_command("ask")
    interaction = mock_interaction(bot, fake.member_a, fake.channel_a, ask_cmd)
    ctx = await slash_context(interaction)
    await ask_cmd.callback(ask_cog, ctx, question=QUESTION)
    # Deferred before the work, then answered with a follow-up.
    interaction.response.defer.assert_awaited_once()
    interaction.response.send_message.assert_not_awaited()
    sent = interaction.followup.send.await_args.kwargs
    assert any("Kim Sung-Eun" in e.description and "Agence France-Presse" in e.description for e in sent["embeds"])
    assert sent["allowed_mentions"].to_dict() == {"parse": []}
    assert_within_limits(content=sent["content"], embeds=sent["embeds"])


async def test_mention_with_a_question_is_answered(fake: FakeDiscord) -> None:
    await add_seed(fake)
    reply = await say(f"<@{fake.bot.user.id}> {QUESTION}", fake.member_a)
    assert any("Kim Sung-Eun" in e.description for e in reply.embeds)


async def test_nothing_matches_is_said_honestly(fake: FakeDiscord) -> None:
    await add_seed(fake)
    reply = await say("!ask what is the boiling point of tungsten?", fake.member_a)
    assert reply.content == "No stored article answers that."
    assert not reply.embeds


async def test_auto_answer_channel_answers_questions_and_ignores_chatter(fake: FakeDiscord, tmp_path: Path) -> None:
    await add_seed(fake)
    fake.bot.settings = make_settings(tmp_path, answer_channel_ids=[fake.channel_a.id])
    await fake.bot.reload_extension("bot.cogs.ask")

    reply = await say("Who released the footage from North Korea?", fake.member_a)
    assert any("Kim Sung-Eun" in e.description for e in reply.embeds)
    await dpytest.message("nice weather today, everyone", channel=fake.channel_a, member=fake.member_a)
    await dpytest.message("what is the boiling point of tungsten?", channel=fake.channel_a, member=fake.member_a)
    assert dpytest.verify().message().nothing()  # chatter and unanswered questions stay silent
    await dpytest.message("Who released the footage?", channel=fake.channel_b, member=fake.member_b)
    assert dpytest.verify().message().nothing()  # not an answer channel


async def test_ask_cooldown_is_a_short_reply(fake: FakeDiscord, tmp_path: Path) -> None:
    fake.bot.settings = make_settings(tmp_path, ask_cooldown_seconds=60, ask_cooldown_rate=1)
    await fake.bot.reload_extension("bot.cogs.ask")
    await add_seed(fake)
    await say(f"!ask {QUESTION}", fake.member_a)
    reply = await say_failing(f"!ask {QUESTION}", fake.member_a, commands.CommandOnCooldown)
    assert reply.content.startswith("Slow down: try again in")
    # The mention path shares the same per-user budget.
    reply = await say(f"<@{fake.bot.user.id}> {QUESTION}", fake.member_a)
    assert reply.content.startswith("Slow down")


# --- who may manage ----------------------------------------------------------------------------


async def test_non_admin_add_is_refused_and_library_unchanged(fake: FakeDiscord, library: Library) -> None:
    reply = await say_failing("!article add Dam officials released water on Monday.", fake.member_a, NotManager)
    assert "Manage Server" in reply.content
    assert await library.store.count_articles() == 0

    reply = await say_failing("!article add", fake.member_a, NotManager, attachments=[str(SEED_ARTICLE)])
    assert await library.store.count_articles() == 0


async def test_non_admin_slash_add_is_refused_ephemerally(fake: FakeDiscord, library: Library) -> None:
    bot = fake.bot
    add_cmd = bot.get_command("article add")
    interaction = mock_interaction(
        bot, fake.member_a, fake.channel_a, add_cmd, permissions=discord.Permissions(send_messages=True)
    )
    ctx = await slash_context(interaction)
    # The runtime check runs on the slash path too (default_permissions only hides the command).
    with pytest.raises(NotManager) as refused:
        await add_cmd.can_run(ctx)
    await bot.get_cog("ErrorHandler").on_command_error(ctx, refused.value)
    sent = interaction.response.send_message.await_args.kwargs
    assert sent["ephemeral"] is True
    assert "Manage Server" in sent["content"]
    assert await library.store.count_articles() == 0
    assert add_cmd.app_command.parent.default_permissions == discord.Permissions(manage_guild=True)


async def test_manager_role_from_settings_may_add(fake: FakeDiscord, library: Library, tmp_path: Path) -> None:
    import discord.ext.test.backend as backend

    role = backend.make_role("Librarians", fake.guild_a)
    await dpytest.add_role(fake.member_a, role)
    fake.bot.settings = make_settings(tmp_path, manager_role_ids=[role.id])
    reply = await say("!article add Dam officials released water on Monday after heavy rain.", fake.member_a)
    assert reply.content.startswith("Stored article")
    assert await library.store.count_articles(fake.guild_a.id) == 1


async def test_imports_are_rate_limited_per_manager(fake: FakeDiscord, library: Library, tmp_path: Path) -> None:
    fake.bot.settings = make_settings(tmp_path, imports_per_admin_per_hour=2)
    for n in range(2):
        reply = await say(f"!article add Ferry {n} sailed from the harbour at dawn.", fake.admin_a)
        assert reply.content.startswith("Stored article")
    reply = await say_failing("!article add Ferry 3 sailed at dusk.", fake.admin_a, commands.CommandOnCooldown)
    assert reply.content.startswith("Slow down")
    assert await library.store.count_articles() == 2
    # Per manager: another server's manager is not affected.
    reply = await say("!article add Ferry 9 sailed at noon.", fake.admin_b, channel=fake.channel_b)
    assert reply.content.startswith("Stored article")


async def test_owner_manages_global_articles(fake: FakeDiscord, library: Library) -> None:
    summary = await library.add_bytes(SEED_ARTICLE.read_bytes(), "seed.txt", scope=GLOBAL_SCOPE, added_by="corpus")
    global_id = summary.added[0].article.id
    # A server admin sees the global corpus but cannot remove it from their server...
    reply = await say_failing(f"!article remove {global_id}", fake.admin_a, commands.CommandInvokeError)
    assert reply.content.startswith(f"Article {global_id} is a global article")
    assert "can't be removed" in reply.content
    assert await library.store.count_articles(GLOBAL_SCOPE) == 1
    # ...the owner can.
    owner = fake.member_b
    fake.bot.owner_id = owner.id
    reply = await say(f"!article show {global_id}", owner)
    assert reply.embeds[0].title.startswith("Rare N. Korea video")


# --- scopes ------------------------------------------------------------------------------------


async def test_server_a_article_never_answers_in_server_b(fake: FakeDiscord) -> None:
    await add_seed(fake)
    in_b = await say(f"!ask {QUESTION}", fake.member_b, channel=fake.channel_b)
    assert in_b.content == "No stored article answers that."
    assert not in_b.embeds
    in_a = await say(f"!ask {QUESTION}", fake.member_a)
    assert any("Kim Sung-Eun" in e.description for e in in_a.embeds)
    # Server B's admin can neither see nor remove it.
    listed = await say("!article list", fake.admin_b, channel=fake.channel_b)
    assert listed.content == "No articles stored here yet."
    reply = await say_failing("!article remove 1", fake.admin_b, commands.CommandInvokeError, channel=fake.channel_b)
    assert reply.content == "No article 1 here."
    in_a = await say(f"!ask {QUESTION}", fake.member_a)
    assert in_a.embeds


async def test_direct_messages_answer_only_global_articles(fake: FakeDiscord, library: Library) -> None:
    await add_seed(fake)  # server A only
    dm = await fake.member_a.create_dm()
    reply = await say(f"!ask {QUESTION}", fake.member_a, channel=dm)
    assert reply.content == "No stored article answers that."
    await library.add_bytes(SEED_ARTICLE.read_bytes(), "seed.txt", scope=GLOBAL_SCOPE, added_by="corpus")
    reply = await say(f"!ask {QUESTION}", fake.member_a, channel=dm)
    assert any("Kim Sung-Eun" in e.description for e in reply.embeds)
    # In a DM a plain message is a question too.
    reply = await say(QUESTION, fake.member_a, channel=dm)
    assert any("Kim Sung-Eun" in e.description for e in reply.embeds)


# --- safety ------------------------------------------------------------------------------------

PINGING_ARTICLE = (
    "Dam officials warned @everyone, @here, the mayor <@123456789012345678> and the <@&987654321098765432> "
    "team on Monday that the Hoover *reservoir* released water at __noon__. "
    "Farmers downstream moved their cattle to higher ground before the gates opened. "
    "Engineers inspected the spillway twice during the night. "
    "Schools in the valley stayed open as usual."
)


async def test_everyone_in_an_article_is_quoted_without_a_ping(
    fake: FakeDiscord, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sends = record_sends(monkeypatch)
    # As a file: dpytest resolves mentions typed in a message, and these ids belong to nobody.
    upload = tmp_path / "reservoir.txt"
    upload.write_text(PINGING_ARTICLE, encoding="utf-8")
    added = await say("!article add --title Reservoir @everyone update", fake.admin_a, attachments=[str(upload)])
    assert "@everyone" not in added.content and "Reservoir @\u200beveryone update" in added.content

    reply = await say("!ask when did the reservoir release water?", fake.member_a)
    shown = text_of(reply)
    assert "**released** **water** at" in shown
    assert "@everyone" not in shown and "@here" not in shown
    assert "warned @\u200beveryone, @\u200bhere, the mayor <\u200b@\u200b123456789012345678>" in shown  # "<" and "@" both broken
    assert "<@123456789012345678>" not in shown and "<@&987654321098765432>" not in shown
    # Markdown from the article is shown, not applied.
    assert "\\***reservoir**\\*" in shown and "\\_\\_noon\\_\\_" in shown
    assert not reply.mention_everyone and not reply.mentions and not reply.role_mentions
    # Every message the bot sent told Discord to parse no mention at all.
    assert sends and all(pings_nobody(p["allowed_mentions"]) for p in sends)
    # (The bot-wide AllowedMentions.none() is asserted in the start-up test: dpytest swaps the
    # connection state that holds it, which is why every reply also passes it explicitly.)

    # The same on the mention path and the slash path.
    reply = await say(f"<@{fake.bot.user.id}> when did the reservoir release water?", fake.member_a)
    assert "@everyone" not in text_of(reply)
    assert pings_nobody(sends[-1]["allowed_mentions"])
    ask_cmd = fake.bot.get_command("ask")
    interaction = mock_interaction(fake.bot, fake.member_a, fake.channel_a, ask_cmd)
    await ask_cmd.callback(fake.bot.get_cog("Ask"), await slash_context(interaction), question="reservoir released water")
    sent = interaction.followup.send.await_args.kwargs
    assert sent["allowed_mentions"].to_dict() == {"parse": []}
    assert all("@everyone" not in e.description for e in sent["embeds"])


def _words(n: int) -> str:
    vocabulary = ["river", "delta", "harbour", "ferry", "lantern", "orchard", "glacier", "meadow", "quarry", "beacon"]
    return " ".join(f"{vocabulary[i % 10]}{i}" for i in range(n))


async def test_a_passage_longer_than_the_limits_is_cut_within_them(fake: FakeDiscord, library: Library) -> None:
    long_sentence = "The turbine engineers explained " + _words(1500) + " near the turbine hall."
    title = "Turbine " + _words(120)
    body = f"{long_sentence}\n\nA second paragraph about the turbine engineers and their long night.\n"
    await library.add_bytes(
        body.encode(),
        "long.txt",
        scope=fake.guild_a.id,
        added_by="test",
        meta=rendering_meta(title=title, source="Source " + _words(100), url="https://example.com/" + "a" * 3000),
    )
    reply = await say("!ask what did the turbine engineers explain?", fake.member_a)
    assert reply.embeds
    assert_within_limits(reply)
    first = reply.embeds[0].description
    quote = first.splitlines()[0]
    # A run of 15,000 characters without a full stop is stored in pieces of about 1,000 cut at
    # spaces (an upload cannot make one sentence, or one reply, as long as it likes); the
    # renderer's own cut of long passages is covered in test_hostile_input.
    shown_text = quote.removeprefix("> ").removesuffix(" …").replace("**", "")
    assert shown_text.startswith("The turbine engineers explained") and len(shown_text) <= 2_000
    # Cut at a word boundary: the last word shown is a whole word of the article.
    assert shown_text.split()[-1] in long_sentence.split()

    info = (await library.list(scopes=[fake.guild_a.id]))[0]
    shown = await say(f"!article show {info.id}", fake.admin_a)
    assert_within_limits(shown)
    listed = await say("!article list", fake.admin_a)
    assert_within_limits(listed)


def rendering_meta(**values: str):
    from bot.core.importers import Metadata

    return Metadata(**values)


@pytest.mark.parametrize("count", [1, 3, 10])
@pytest.mark.parametrize("url_length", [40, 140, 500, 3000])
def test_answer_rendering_stays_within_every_limit(count: int, url_length: int) -> None:
    passages = tuple(
        Passage(
            article_id=i,
            title="T" * 50 + " " + _words(80),
            source="S " + _words(60),
            url="https://example.com/(x) " + "y" * url_length,
            published="2014-03-27",
            text=("@everyone *bold* _x_ " + _words(900) + ". ") * 2,
            score=1.0,
        )
        for i in range(1, count + 1)
    )
    answer = Answer("q", passages, frozenset(tokenize("river0 delta1")))
    reply = rendering.answer_reply(answer)
    rendering.check_limits(reply)
    assert len(reply.embeds) == count
    assert_within_limits(content=reply.content, embeds=reply.embeds)
    for embed in reply.embeds:
        quote, source = embed.description.split("\n")
        assert "@everyone" not in quote and "@\u200beveryone" in quote
        assert "**river0**" in quote  # matched words stay bold through the cut
        assert quote.endswith(" …")
        assert source.startswith("— ") and "2014-03-27" in source
        if url_length == 40 or (url_length == 140 and count < 10):
            assert "](<https://example.com/%28x%29%20yyy" in source  # linked, parentheses encoded
        elif url_length == 3000:
            assert "https://" not in source  # left out rather than cut


@pytest.mark.parametrize("limit", [5, 20, 77, 300])
def test_fit_cuts_at_word_or_sentence_boundaries(limit: int) -> None:
    text = "First short sentence here. Then a much longer second sentence follows with many words in it."
    out = rendering.fit(text, limit)
    assert len(out) <= limit
    if out != "…":
        kept = out.removesuffix(" …")
        assert text.startswith(kept)
        assert len(kept) == len(text) or text[len(kept)] == " "


# --- removing, listing, showing ----------------------------------------------------------------


async def test_removing_an_article_removes_it_from_answers(fake: FakeDiscord, library: Library) -> None:
    await add_seed(fake)
    assert (await say(f"!ask {QUESTION}", fake.member_a)).embeds
    article_id = (await library.list(scopes=[fake.guild_a.id]))[0].id
    reply = await say(f"!article remove {article_id}", fake.admin_a)
    assert reply.content.startswith(f"Removed article {article_id}")
    after = await say(f"!ask {QUESTION}", fake.member_a)
    assert after.content == "No stored article answers that."
    assert not after.embeds


async def test_list_pages_newest_first_and_show(fake: FakeDiscord, library: Library) -> None:
    ids = []
    for n in range(12):
        summary = await library.add_bytes(
            f"Report {n}: the harbour ferry number {n} sailed at dawn with {n} lanterns.".encode(),
            f"r{n}.txt",
            scope=fake.guild_a.id,
            added_by=str(fake.admin_a.id),
            meta=rendering_meta(title=f"Ferry report {n}", source="Harbour News", published=f"2020-01-{n + 1:02d}"),
        )
        ids.append(summary.added[0].article.id)

    page1 = await say("!article list", fake.admin_a)
    embed = page1.embeds[0]
    assert "page 1 of 2" in embed.title and "12 in all" in embed.title
    rows = embed.description.splitlines()
    assert len(rows) == 10
    assert [int(re.match(r"`(\d+)`", r).group(1)) for r in rows] == ids[::-1][:10]
    assert "Ferry report 11" in rows[0] and "Harbour News" in rows[0] and "sentences" in rows[0]
    assert "list 2" in embed.footer.text

    page2 = await say("!article list 2", fake.admin_a)
    assert len(page2.embeds[0].description.splitlines()) == 2
    page3 = await say("!article list 3", fake.admin_a)
    assert "no page 3" in page3.content

    shown = await say(f"!article show {ids[3]}", fake.admin_a)
    embed = shown.embeds[0]
    assert embed.title == "Ferry report 3"
    fields = {f.name: f.value for f in embed.fields}
    assert fields["Source"] == "Harbour News"
    # Dates are Discord timestamps: each reader sees them in their own locale.
    assert fields["Published"] == "<t:1578096000:d>"  # 2020-01-04 00:00 UTC
    assert re.fullmatch(r"<t:\d+:d> by <@\d+>", fields["Added"])
    assert "harbour ferry number 3" in embed.description
    assert f"<@{fake.admin_a.id}>" in fields["Added"]

    # Paging on the slash path: deferred, then a follow-up.
    list_cmd = fake.bot.get_command("article list")
    interaction = mock_interaction(
        fake.bot, fake.admin_a, fake.channel_a, list_cmd, permissions=discord.Permissions(manage_guild=True)
    )
    ctx = await slash_context(interaction)
    assert await list_cmd.can_run(ctx)
    await list_cmd.callback(fake.bot.get_cog("Articles"), ctx, page=2)
    interaction.response.defer.assert_awaited_once()
    assert "page 2 of 2" in interaction.followup.send.await_args.kwargs["embeds"][0].title


async def test_article_show_lists_the_lines_dropped_as_page_debris(fake: FakeDiscord, tmp_path: Path) -> None:
    """An admin uploads a saved web page; its navigation lines are left out of the article, and
    `!article show` lists them (escaped) so the admin can check nothing of the story went."""
    page = tmp_path / "lake.txt"
    page.write_text(
        "Home | World | Sport\n\nLake town\n\n"
        "Friedrichshafen lies on the northern shore of Lake Constance, where the ferries cross to Romanshorn.\n\n"
        "Follow us on Twitter\n\n__Share__ @everyone\n\nBack to top"
    )
    added = await say("!article add", fake.admin_a, attachments=[str(page)])
    assert "Dropped 4 line(s) of page debris" in added.content
    article_id = (await fake.bot.library.find("Lake town", scopes=[fake.guild_a.id]))[0].id

    shown = await say(f"!article show {article_id}", fake.admin_a)
    assert_within_limits(shown)
    fields = {f.name: f.value for f in shown.embeds[0].fields}
    debris = fields["Dropped as page debris (4 lines)"]
    assert debris.splitlines() == ["Home \\| World \\| Sport", "Follow us on Twitter", "\\_\\_Share\\_\\_ @\u200beveryone", "Back to top"]

    # A page with hundreds of debris lines: the field shows the first that fit and counts the rest.
    many = tmp_path / "busy.txt"
    many.write_text("Home | News | Sport\n\nShare\n\n" * 200 + "Busy page\n\n" + "The market opened at nine and closed at five. " * 200)
    await say("!article add", fake.admin_a, attachments=[str(many)])
    busy_id = (await fake.bot.library.find("Busy page", scopes=[fake.guild_a.id]))[0].id
    shown = await say(f"!article show {busy_id}", fake.admin_a)
    assert_within_limits(shown)
    field = next(f for f in shown.embeds[0].fields if f.name.startswith("Dropped as page debris"))
    lines = field.value.splitlines()
    assert lines[:2] == ["Home \\| News \\| Sport", "Share"] and re.fullmatch(r"… and \d+ more", lines[-1])
    kept = len(await fake.bot.library.dropped_lines(busy_id))
    assert len(lines) - 1 + int(lines[-1].split()[2]) == kept


async def test_bad_arguments_get_usage(fake: FakeDiscord) -> None:
    reply = await say_failing("!article remove twelve", fake.admin_a, commands.BadArgument)
    assert "Usage: `!article remove <article_id>`" in reply.content
    reply = await say_failing("!article add", fake.admin_a, commands.BadArgument)
    assert "attach a file" in reply.content


async def test_sync_is_owner_only_and_explicit(fake: FakeDiscord) -> None:
    with patch.object(fake.bot.tree, "sync", AsyncMock(return_value=["ask", "article"])) as sync:
        reply = await say_failing("!sync", fake.admin_a, commands.NotOwner)
        assert reply.content == "Only the bot owner can do that."
        sync.assert_not_awaited()

        fake.bot.owner_id = fake.admin_a.id
        reply = await say("!sync", fake.admin_a)
        assert reply.content == "Synced 2 command(s) to this server."
        sync.assert_awaited_once_with(guild=fake.guild_a)
        reply = await say("!sync global", fake.admin_a)
        assert reply.content.startswith("Synced 2 command(s) globally")
        assert sync.await_args.kwargs == {}


# --- resilience --------------------------------------------------------------------------------


async def test_http_error_on_send_is_logged_and_bot_keeps_working(
    fake: FakeDiscord, caplog: pytest.LogCaptureFixture
) -> None:
    await add_seed(fake)
    response = MagicMock(status=500, reason="Internal Server Error")
    failing = AsyncMock(side_effect=discord.HTTPException(response, "boom"))
    with caplog.at_level(logging.ERROR), patch.object(fake.bot.http, "send_message", failing):
        await dpytest.message(f"!ask {QUESTION}", channel=fake.channel_a, member=fake.member_a)
        await dpytest.message(f"<@{fake.bot.user.id}> {QUESTION}", channel=fake.channel_a, member=fake.member_a)
    assert failing.await_count == 2
    logged = [r for r in caplog.records if "Could not send a reply" in r.getMessage()]
    assert len(logged) == 2 and all(r.exc_info for r in logged)
    # Still alive and answering.
    reply = await say(f"!ask {QUESTION}", fake.member_a)
    assert any("Kim Sung-Eun" in e.description for e in reply.embeds)


async def test_unexpected_error_is_logged_with_a_reference(fake: FakeDiscord, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.ERROR), patch.object(
        fake.bot.library, "ask", AsyncMock(side_effect=RuntimeError("disk on fire"))
    ):
        reply = await say_failing(f"!ask {QUESTION}", fake.member_a, commands.CommandInvokeError)
    reference = re.search(r"reference `([0-9a-f]+)`", reply.content).group(1)
    assert reply.content.startswith("Sorry")
    assert "disk on fire" not in reply.content
    record = next(r for r in caplog.records if reference in r.getMessage())
    assert record.exc_info and isinstance(record.exc_info[1], RuntimeError)


# --- start-up ----------------------------------------------------------------------------------


async def test_setup_hook_logs_and_skips_a_broken_extension(
    settings: Any, library: Library, caplog: pytest.LogCaptureFixture
) -> None:
    bot = QuoteBot(settings, library, extensions=("bot.cogs.errors", "bot.cogs.does_not_exist", "bot.cogs.ask"))
    with caplog.at_level(logging.ERROR), patch.object(bot.tree, "sync", AsyncMock()) as sync:
        await bot.setup_hook()
    sync.assert_not_awaited()  # syncing is the owner's explicit `sync`, never a start-up step
    assert "bot.cogs.ask" in bot.extensions and "bot.cogs.errors" in bot.extensions
    assert any("bot.cogs.does_not_exist" in r.getMessage() for r in caplog.records)
    assert bot.allowed_mentions.to_dict() == {"parse": []}


def test_message_content_intent_only_when_needed(tmp_path: Path) -> None:
    assert needs_message_content(make_settings(tmp_path))  # "!" prefix
    quiet = make_settings(tmp_path, command_prefix="")
    assert not needs_message_content(quiet)
    assert not build_intents(quiet).message_content
    assert not build_intents(quiet).members
    assert build_intents(make_settings(tmp_path, command_prefix="", answer_channel_ids=[1])).message_content


def test_run_bot_without_token_refuses(tmp_path: Path) -> None:
    assert run_bot(make_settings(tmp_path, DISCORD_TOKEN="")) == 2


def test_run_bot_shuts_down_cleanly_on_sigterm(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    token = "secret-token-value.must-never-be-logged"
    settings = make_settings(tmp_path, DISCORD_TOKEN=token)
    seen: dict[str, Any] = {}

    async def fake_start(self: QuoteBot, given: str, *, reconnect: bool = True) -> None:
        seen["token"] = given
        seen["library_open"] = self.library is not None
        os.kill(os.getpid(), signal.SIGTERM)  # what systemd or docker stop sends
        while not self.is_closed():
            await __import__("asyncio").sleep(0.01)

    with caplog.at_level(logging.DEBUG), patch.object(QuoteBot, "start", fake_start):
        assert run_bot(settings) == 0
    assert seen == {"token": token, "library_open": True}
    assert (tmp_path / "db.sqlite3").exists()
    assert token not in caplog.text
    assert "SIGTERM received" in caplog.text
