"""Answers members can work with, in the simulated Discord: the buttons under an answer (after a
restart too), "Ask Quotebot" on a message, article autocomplete and search, global articles for
managers, the help card, "typing…" and Discord timestamps.

Button clicks, the context menu and autocomplete arrive as real gateway INTERACTION_CREATE
payloads, parsed by discord.py into real `discord.Interaction`s and dispatched as Discord would;
what the bot answers is caught where discord.py would call Discord's interaction endpoints."""
from __future__ import annotations

import asyncio
import itertools
from dataclasses import dataclass
from typing import Any
from unittest.mock import AsyncMock, patch

import discord
import discord.ext.test as dpytest
import discord.ext.test.factories as facts
import pytest
from discord.ext import commands
from discord.webhook.async_ import AsyncWebhookAdapter

from bot.core.articles import GLOBAL_SCOPE
from bot.core.importers import Metadata
from bot.core.library import Library

from conftest import SEED_ARTICLE, FakeDiscord, make_settings, mock_interaction, slash_context, start_fake_discord
from test_discord_bot import assert_within_limits, record_sends, say, text_of

QUESTION = "who released the footage?"
EPHEMERAL = 64  # message flag


# --- the simulated Discord's interaction side --------------------------------------------------


@dataclass
class Sent:
    """One call the bot made to Discord's interaction endpoints."""

    method: str
    path: str
    payload: dict

    @property
    def kind(self) -> int | None:
        """The interaction callback type (4 message, 5 deferred, 6 deferred update, 7 update, 8 choices)."""
        return self.payload.get("type") if self.path.endswith("/callback") else None

    @property
    def data(self) -> dict:
        return self.payload.get("data") or {} if self.path.endswith("/callback") else self.payload

    @property
    def ephemeral(self) -> bool:
        return bool((self.data.get("flags") or 0) & EPHEMERAL)

    @property
    def text(self) -> str:
        data = self.data
        parts = [data.get("content") or ""]
        for e in data.get("embeds") or []:
            parts += [e.get("title") or "", e.get("description") or ""]
            parts += [f"{f['name']}: {f['value']}" for f in e.get("fields") or []]
        return "\n".join(parts)


def custom_ids(components: list[dict]) -> dict[str, dict]:
    return {c["custom_id"]: c for row in components for c in row["components"]}


class Gateway:
    """Sends interactions to the bot as Discord's gateway would, and records its answers."""

    _ids = itertools.count(1)

    def __init__(self, fake: FakeDiscord, monkeypatch: pytest.MonkeyPatch) -> None:
        self.fake = fake
        self.sent: list[Sent] = []
        gateway = self

        async def request(adapter: Any, route: Any, session: Any, *, payload: dict | None = None, params: dict | None = None, **kw: Any) -> Any:
            gateway.sent.append(Sent(route.method, route.path, payload or {}))
            if route.path.endswith("/callback"):
                return {"interaction": {"id": str(route.webhook_id), "type": (payload or {}).get("type", 4)}}
            if route.method == "PATCH" or (params or {}).get("wait"):
                return facts.make_message_dict(fake.channel_a, fake.bot.user, id_num=gateway.snowflake())
            return None

        monkeypatch.setattr(AsyncWebhookAdapter, "request", request)

    def snowflake(self) -> int:
        return discord.utils.time_snowflake(discord.utils.utcnow()) + next(self._ids)

    def payload(self, member: discord.Member, channel: discord.TextChannel, kind: int, data: dict, **extra: Any) -> dict:
        user = {"id": str(member.id), "username": member.name, "discriminator": "0000", "avatar": None, "global_name": None}
        return {
            "id": str(self.snowflake()),
            "application_id": str(self.fake.bot.user.id),
            "type": kind,
            "token": f"token-{next(self._ids)}",
            "version": 1,
            "guild_id": str(channel.guild.id),
            "channel_id": str(channel.id),
            "member": {
                "user": user,
                "roles": [str(r.id) for r in member.roles if not r.is_default()],
                "joined_at": "2026-01-01T00:00:00+00:00",
                "deaf": False,
                "mute": False,
                "flags": 0,
                "permissions": str(channel.permissions_for(member).value),
            },
            "data": data,
            "app_permissions": str(discord.Permissions.all().value),
            "locale": "en-US",
            "guild_locale": "en-US",
            "entitlements": [],
            "authorizing_integration_owners": {"0": str(channel.guild.id)},
            "context": 0,
            "attachment_size_limit": 10 * 1024 * 1024,
            **extra,
        }

    async def deliver(self, payload: dict) -> list[Sent]:
        """INTERACTION_CREATE, then wait for the bot to finish with it; what it sent meanwhile."""
        before = len(self.sent)
        state = self.fake.bot._connection
        state.parse_interaction_create(payload)
        view_tasks = state._view_store._ViewStore__tasks
        for _ in range(100):
            current = asyncio.current_task()
            pending = [
                t for t in asyncio.all_tasks()
                if t is not current and not t.done() and (t in view_tasks or t.get_name() == "CommandTree-invoker")
            ]
            if not pending:
                break
            await asyncio.wait(pending, timeout=10)
        return self.sent[before:]

    async def click(self, member: discord.Member, message: dict, custom_id: str) -> list[Sent]:
        channel = self.fake.bot.get_channel(int(message["channel_id"]))
        data = {"custom_id": custom_id, "component_type": 2}
        return await self.deliver(self.payload(member, channel, 3, data, message=message))


def message_dict(message: discord.Message, components: list[dict]) -> dict:
    """The message as Discord sends it inside a component interaction: with its buttons."""
    return {
        **facts.dict_from_message(message),
        "channel_id": str(message.channel.id),
        "timestamp": message.created_at.isoformat(),
        "components": components,
    }


@pytest.fixture
def gateway(fake: FakeDiscord, monkeypatch: pytest.MonkeyPatch) -> Gateway:
    return Gateway(fake, monkeypatch)


FERRIES = ["Aurora", "Boreas", "Calypso", "Dorado", "Eos", "Fenix", "Gaia", "Helios"]


async def add_ferry_log(library: Library, guild_id: int) -> int:
    """Eight paragraphs, each with one sentence answering "which ferry sailed from the harbour?"
    between two that do not: eight passages, three to a message."""
    paragraphs = [
        f"Day {n} began with fog over the water. The {name} ferry sailed from the harbour at {n + 5} o'clock. "
        f"Gulls followed it out to sea on day {n}."
        for n, name in enumerate(FERRIES, start=1)
    ]
    summary = await library.add_bytes(
        "\n\n".join(paragraphs).encode(), "log.txt", scope=guild_id, added_by="test", meta=Metadata(title="Ferry log")
    )
    return summary.added[0].article.id


def ferries_in(text: str) -> set[str]:
    return {name for name in FERRIES if name in text}


# --- the buttons under an answer ---------------------------------------------------------------


async def test_an_answer_comes_with_buttons_and_a_declined_one_without(
    fake: FakeDiscord, library: Library, monkeypatch: pytest.MonkeyPatch
) -> None:
    sends = record_sends(monkeypatch)
    await add_ferry_log(library, fake.guild_a.id)
    reply = await say("!ask which ferry sailed from the harbour?", fake.member_a)
    assert len(ferries_in(text_of(reply))) == 3
    buttons = custom_ids(sends[-1]["components"])
    answer_id = int(next(iter(buttons)).split(":")[2])
    assert list(buttons) == [f"qb:more:{answer_id}:0", f"qb:ctx:{answer_id}:0", f"qb:vote:{answer_id}:up", f"qb:vote:{answer_id}:down"]
    assert [b["label"] for b in buttons.values()] == ["More", "Context", "Helpful", "Not helpful"]
    assert not buttons[f"qb:more:{answer_id}:0"].get("disabled")  # five more ferries to show
    assert all(len(custom_id) <= 100 for custom_id in buttons)  # Discord's custom_id limit

    declined = await say("!ask what is the boiling point of tungsten?", fake.member_a)
    assert declined.content == "No stored article answers that."
    assert not sends[-1].get("components")


async def test_more_shows_the_next_passages_until_there_are_none(
    fake: FakeDiscord, library: Library, gateway: Gateway, monkeypatch: pytest.MonkeyPatch
) -> None:
    sends = record_sends(monkeypatch)
    await add_ferry_log(library, fake.guild_a.id)
    first = await say("!ask which ferry sailed from the harbour?", fake.member_a)
    components = sends[-1]["components"]
    more_id = next(c for c in custom_ids(components) if c.startswith("qb:more:"))
    seen = ferries_in(text_of(first))

    # Another member clicks More: the original's More is disabled, the next three follow below.
    out = await gateway.click(fake.admin_a, message_dict(first, components), more_id)
    edited = next(s for s in out if s.method == "PATCH")
    assert custom_ids(edited.payload["components"])[more_id]["disabled"] is True
    follow_up = next(s for s in out if s.method == "POST" and not s.path.endswith("/callback"))
    second = ferries_in(follow_up.text)
    assert len(second) == 3 and second.isdisjoint(seen)
    assert_within_limits(content=follow_up.payload.get("content"), embeds=[discord.Embed.from_dict(e) for e in follow_up.payload["embeds"]])
    next_buttons = custom_ids(follow_up.payload["components"])
    answer_id = more_id.split(":")[2]
    assert f"qb:more:{answer_id}:1" in next_buttons and f"qb:ctx:{answer_id}:1" in next_buttons

    # More from the second message: the last two ferries, and no More left.
    second_message = facts.make_message_dict(fake.channel_a, fake.bot.user, id_num=gateway.snowflake())
    out = await gateway.click(fake.member_a, {**second_message, "components": follow_up.payload["components"]}, f"qb:more:{answer_id}:1")
    last = next(s for s in out if s.method == "POST" and not s.path.endswith("/callback"))
    third = ferries_in(last.text)
    assert third == set(FERRIES) - seen - second
    assert custom_ids(last.payload["components"])[f"qb:more:{answer_id}:2"]["disabled"] is True

    # A stale click on the first message's More (shown before it was disabled) adds nothing.
    out = await gateway.click(fake.member_a, message_dict(first, components), more_id)
    assert any("already shown" in s.text and s.ephemeral for s in out)
    record = await fake.bot.feedback.get(int(answer_id))
    assert len(record.pages) == 3


async def test_context_shows_the_quote_with_the_sentences_around_it_to_the_clicker_only(
    fake: FakeDiscord, library: Library, gateway: Gateway, monkeypatch: pytest.MonkeyPatch
) -> None:
    sends = record_sends(monkeypatch)
    await add_ferry_log(library, fake.guild_a.id)
    answer = await say("!ask which ferry sailed from the harbour?", fake.member_a)
    components = sends[-1]["components"]
    ctx_id = next(c for c in custom_ids(components) if c.startswith("qb:ctx:"))

    out = await gateway.click(fake.member_a, message_dict(answer, components), ctx_id)
    (response,) = out
    assert response.kind == 4 and response.ephemeral
    embeds = response.data["embeds"]
    assert len(embeds) == 3
    for embed in embeds:
        quote = embed["description"].splitlines()[0]
        # Before, the quoted sentence in bold, after: in the article's order.
        name = ferries_in(quote).pop()
        n = FERRIES.index(name) + 1
        assert quote == (
            f"> Day {n} began with fog over the water. **The {name} ferry sailed from the harbour at {n + 5} o'clock.** "
            f"Gulls followed it out to sea on day {n}."
        )
        assert "Ferry log" in embed["description"]
    assert_within_limits(embeds=[discord.Embed.from_dict(e) for e in embeds])


async def test_votes_are_one_per_member_and_changeable(
    fake: FakeDiscord, library: Library, gateway: Gateway, monkeypatch: pytest.MonkeyPatch
) -> None:
    sends = record_sends(monkeypatch)
    await say("!article add", fake.admin_a, attachments=[str(SEED_ARTICLE)])
    answer = await say(f"!ask {QUESTION}", fake.member_a)
    components = sends[-1]["components"]
    message = message_dict(answer, components)
    answer_id = int(next(iter(custom_ids(components))).split(":")[2])

    (thanks,) = await gateway.click(fake.member_a, message, f"qb:vote:{answer_id}:up")
    assert thanks.ephemeral and thanks.text.startswith("Thanks: you marked this answer helpful.")
    assert "(1 helpful, 0 not helpful" in thanks.text
    (again,) = await gateway.click(fake.member_a, message, f"qb:vote:{answer_id}:up")
    assert again.text.startswith("You had already marked this answer helpful.")
    (changed,) = await gateway.click(fake.member_a, message, f"qb:vote:{answer_id}:down")
    assert changed.text.startswith("Changed: you now mark this answer not helpful.")
    assert "(0 helpful, 1 not helpful" in changed.text
    (other,) = await gateway.click(fake.admin_a, message, f"qb:vote:{answer_id}:up")
    assert "(1 helpful, 1 not helpful" in other.text

    rows = await library.store._fetch("SELECT user_id, helpful FROM answer_votes WHERE answer_id = ?", (answer_id,))
    assert sorted(rows) == sorted([(fake.member_a.id, 0), (fake.admin_a.id, 1)])


async def test_buttons_still_work_after_a_restart(
    fake: FakeDiscord, library: Library, settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    sends = record_sends(monkeypatch)
    await add_ferry_log(library, fake.guild_a.id)
    first = await say("!ask which ferry sailed from the harbour?", fake.member_a)
    components = sends[-1]["components"]
    buttons = list(custom_ids(components))
    seen = ferries_in(text_of(first))

    # A new process: a new library over the same database, a new bot, nothing in memory.
    for extension in list(fake.bot.extensions):
        await fake.bot.unload_extension(extension)
    restarted_library = await Library.open(settings.db_path, corpus_dir=None)
    try:
        world = await start_fake_discord(settings, restarted_library)
        gateway = Gateway(world, monkeypatch)
        message = {**message_dict(first, components), "channel_id": str(world.channel_a.id)}
        member = world.member_a
        out = await gateway.click(member, message, buttons[0])  # More
        follow_up = next(s for s in out if s.method == "POST" and not s.path.endswith("/callback"))
        assert len(ferries_in(follow_up.text)) == 3 and ferries_in(follow_up.text).isdisjoint(seen)
        (context,) = await gateway.click(member, message, buttons[1])
        assert context.ephemeral and ferries_in(context.text) == seen
        (vote,) = await gateway.click(member, message, buttons[2])
        assert vote.text.startswith("Thanks")

        # An answer whose record is gone (older than the retention) says so instead of failing.
        store = restarted_library.store
        async with store._write_transaction():
            await store._writer.execute("DELETE FROM answer_records")
        (gone,) = await gateway.click(member, message, buttons[1])
        assert gone.ephemeral and "too old" in gone.text
    finally:
        for extension in list(world.bot.extensions):
            await world.bot.unload_extension(extension)
        await restarted_library.close()


async def test_a_read_only_library_still_answers_in_discord_without_buttons(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The operator serves a library from a read-only disk. Members' questions, asked or
    answered unasked in an answer channel, still get their quote: only the buttons (which need
    a stored record) and the question log (a write) are left out, and nothing is written."""
    from test_command_line import make_read_only, make_writable

    folder = tmp_path / "library"
    folder.mkdir()
    settings = make_settings(tmp_path, db_path=folder / "db.sqlite3")
    writable = await Library.open(settings.db_path, corpus_dir=None)
    await writable.add_bytes(SEED_ARTICLE.read_bytes(), SEED_ARTICLE.name, scope=GLOBAL_SCOPE, added_by="owner")
    await writable.close()
    before = settings.db_path.read_bytes()
    make_read_only(folder)
    library = world = None
    try:
        library = await Library.open(settings.db_path, corpus_dir=None)
        assert library.store.read_only
        world = await start_fake_discord(settings, library)
        sends = record_sends(monkeypatch)
        reply = await say(f"!ask {QUESTION}", world.member_a)
        assert any("Kim Sung-Eun" in e.description for e in reply.embeds)
        assert not sends[-1].get("components")  # no buttons: they would need a record

        # A channel answered unasked: the quiet path shows an answer it cannot record too.
        world.bot.settings = make_settings(tmp_path, db_path=settings.db_path, answer_channel_ids=[world.channel_a.id])
        await world.bot.reload_extension("bot.cogs.ask")
        reply = await say("Who released the footage from North Korea?", world.member_a)
        assert any("Kim Sung-Eun" in e.description for e in reply.embeds)
        assert not sends[-1].get("components")
        assert await world.bot.questions.stats(world.guild_a.id) == await world.bot.questions.stats(world.guild_b.id)
    finally:
        if world is not None:
            for extension in list(world.bot.extensions):
                await world.bot.unload_extension(extension)
        if library is not None:
            await library.close()
        make_writable(folder)
    assert settings.db_path.read_bytes() == before


# --- "Ask Quotebot" on a message ---------------------------------------------------------------


async def test_ask_quotebot_answers_a_message_in_a_reply_to_it(
    fake: FakeDiscord, library: Library, gateway: Gateway, monkeypatch: pytest.MonkeyPatch
) -> None:
    sends = record_sends(monkeypatch)
    await say("!article add", fake.admin_a, attachments=[str(SEED_ARTICLE)])
    # A member asks in passing, not addressed to the bot: nobody answers...
    question_message = await dpytest.message(QUESTION, channel=fake.channel_a, member=fake.member_a)
    assert dpytest.verify().message().nothing()
    assert question_message.content == QUESTION

    # ...until another member right-clicks it → Apps → Ask Quotebot.
    data = {
        "id": str(gateway.snowflake()),
        "name": "Ask Quotebot",
        "type": 3,
        "target_id": str(question_message.id),
        "resolved": {"messages": {str(question_message.id): message_dict(question_message, [])}},
    }
    out = await gateway.deliver(gateway.payload(fake.admin_a, fake.channel_a, 2, data))
    assert out[0].kind == 5 and out[0].ephemeral  # "thinking…", seen only by the clicker
    reply = dpytest.get_message()
    assert any("Kim Sung-Eun" in e.description for e in reply.embeds)
    # A reply to the question's message (dpytest drops references: read what was sent).
    assert int(sends[-1]["message_reference"]["message_id"]) == question_message.id
    assert custom_ids(sends[-1]["components"])  # with its buttons
    assert_within_limits(reply)
    assert out[-1].ephemeral and "Answered:" in out[-1].text and str(reply.id) in out[-1].text


async def test_ask_quotebot_on_a_message_without_text_says_so(fake: FakeDiscord, gateway: Gateway) -> None:
    message = facts.make_message_dict(fake.channel_a, fake.member_a, id_num=gateway.snowflake(), content="")
    data = {"id": "1", "name": "Ask Quotebot", "type": 3, "target_id": message["id"], "resolved": {"messages": {message["id"]: message}}}
    (out,) = await gateway.deliver(gateway.payload(fake.member_a, fake.channel_a, 2, data))
    assert out.ephemeral and out.text == "That message has no text to answer."
    assert dpytest.verify().message().nothing()


# --- finding articles: autocomplete and search --------------------------------------------------


async def add_reports(library: Library, guild_id: int) -> list[int]:
    ids = []
    for n, title in enumerate(["Ferry times for winter", "Harbour dues 2026", "Night ferry to the islands"]):
        summary = await library.add_bytes(
            f"Report {n}: the harbour master published notice number {n}.".encode(),
            f"r{n}.txt", scope=guild_id, added_by="test", meta=Metadata(title=title),
        )
        ids.append(summary.added[0].article.id)
    return ids


def autocomplete_data(sub: str, typed: str) -> dict:
    return {
        "id": "77", "name": "article", "type": 1,
        "options": [{"type": 1, "name": sub, "options": [{"type": 4, "name": "article_id", "value": typed, "focused": True}]}],
    }


async def test_show_and_remove_complete_ids_and_titles_for_managers_only(
    fake: FakeDiscord, library: Library, gateway: Gateway
) -> None:
    ids = await add_reports(library, fake.guild_a.id)
    corpus = await library.add_bytes(SEED_ARTICLE.read_bytes(), "seed.txt", scope=GLOBAL_SCOPE, added_by="corpus")
    global_id = corpus.added[0].article.id
    await add_reports(library, fake.guild_b.id)  # another server's: never offered in A

    (out,) = await gateway.deliver(gateway.payload(fake.admin_a, fake.channel_a, 4, autocomplete_data("show", "ferry")))
    assert out.kind == 8
    choices = out.data["choices"]
    assert [c["value"] for c in choices] == [ids[2], ids[0]]  # newest first
    assert choices[0]["name"] == f"{ids[2]} · Night ferry to the islands"
    assert all(len(c["name"]) <= 100 for c in choices)

    # Global articles are offered for show, marked, but not for remove.
    (out,) = await gateway.deliver(gateway.payload(fake.admin_a, fake.channel_a, 4, autocomplete_data("show", "korea")))
    assert [(c["value"], c["name"].endswith("(global)")) for c in out.data["choices"]] == [(global_id, True)]
    (out,) = await gateway.deliver(gateway.payload(fake.admin_a, fake.channel_a, 4, autocomplete_data("remove", "korea")))
    assert out.data["choices"] == []
    # By id: the digits typed so far.
    (out,) = await gateway.deliver(gateway.payload(fake.admin_a, fake.channel_a, 4, autocomplete_data("remove", str(ids[1]))))
    assert ids[1] in [c["value"] for c in out.data["choices"]]

    # A member who is not a manager learns no titles.
    (out,) = await gateway.deliver(gateway.payload(fake.member_a, fake.channel_a, 4, autocomplete_data("show", "ferry")))
    assert out.data["choices"] == []


async def test_search_finds_articles_by_title_on_both_paths(fake: FakeDiscord, library: Library) -> None:
    ids = await add_reports(library, fake.guild_a.id)
    reply = await say("!article search FERRY", fake.admin_a)
    embed = reply.embeds[0]
    assert "ferry" in embed.title.lower()
    rows = embed.description.splitlines()
    assert [row.split("`")[1] for row in rows] == [str(ids[2]), str(ids[0])]
    assert_within_limits(reply)
    nothing = await say("!article search 100% tungsten_", fake.admin_a)
    assert nothing.content.startswith("No article title here contains")

    search = fake.bot.get_command("article search")
    interaction = mock_interaction(fake.bot, fake.admin_a, fake.channel_a, search, permissions=discord.Permissions(manage_guild=True))
    ctx = await slash_context(interaction)
    assert await search.can_run(ctx)
    await search.callback(fake.bot.get_cog("Articles"), ctx, text="harbour")
    interaction.response.defer.assert_awaited_once()
    sent = interaction.followup.send.await_args.kwargs["embeds"][0]
    assert "Harbour dues 2026" in sent.description and "Ferry times" not in sent.description


# --- global articles ----------------------------------------------------------------------------


async def test_managers_see_the_shipped_global_articles_but_cannot_remove_them(fake: FakeDiscord, library: Library) -> None:
    corpus = await library.add_bytes(SEED_ARTICLE.read_bytes(), "seed.txt", scope=GLOBAL_SCOPE, added_by="corpus")
    global_id = corpus.added[0].article.id
    # Answers cite it in every server...
    answer = await say(f"!ask {QUESTION}", fake.member_b, channel=fake.channel_b)
    assert f"article {global_id}" in text_of(answer)
    # ...and a manager there finds it in the list, marked global, and can open it.
    listed = await say("!article list", fake.admin_b, channel=fake.channel_b)
    row = listed.embeds[0].description.splitlines()[0]
    assert row.startswith(f"`{global_id}`") and "global" in row
    shown = await say(f"!article show {global_id}", fake.admin_b, channel=fake.channel_b)
    assert {f.name: f.value for f in shown.embeds[0].fields}["Scope"] == "global"
    with pytest.raises(commands.CommandInvokeError):
        await dpytest.message(f"!article remove {global_id}", channel=fake.channel_b, member=fake.admin_b)
    refused = dpytest.get_message()
    assert "global article" in refused.content and "can't be removed" in refused.content
    assert await library.store.count_articles(GLOBAL_SCOPE) == 1


# --- help, typing, timestamps --------------------------------------------------------------------


async def test_help_is_one_card_for_members_and_managers(fake: FakeDiscord) -> None:
    reply = await say("!help", fake.member_a)
    assert len(reply.embeds) == 1
    card = text_of(reply)
    for expected in (
        "!ask who released the footage?", "Ask Quotebot", "More", "Context", "Helpful", "!article search",
        "!channel mode", "!feed add", "!article gaps", "!stats", "marks it resolved",
    ):
        assert expected in card
    assert reply.embeds[0].footer.text is None  # not a manager
    assert_within_limits(reply)
    assert "You can manage" in (await say("!help", fake.admin_a)).embeds[0].footer.text
    # `!article` alone (no subcommand) shows the same card to a manager.
    assert "!article search" in text_of(await say("!article", fake.admin_a))

    help_cmd = fake.bot.get_command("help")
    interaction = mock_interaction(fake.bot, fake.member_a, fake.channel_a, help_cmd)
    await help_cmd.callback(fake.bot.get_cog("Help"), await slash_context(interaction))
    sent = interaction.response.send_message.await_args.kwargs
    assert sent["ephemeral"] is True and "/ask who released the footage?" in sent["embeds"][0].fields[0].value


async def test_typing_shows_while_an_answer_is_composed(fake: FakeDiscord) -> None:
    await say("!article add", fake.admin_a, attachments=[str(SEED_ARTICLE)])
    order: list[str] = []
    real_ask = fake.bot.library.ask

    async def ask(*args: Any, **kwargs: Any) -> Any:
        order.append("compose")
        return await real_ask(*args, **kwargs)

    typing = AsyncMock(side_effect=lambda channel_id: order.append(f"typing {channel_id}"))
    with patch.object(fake.bot.http, "send_typing", typing), patch.object(fake.bot.library, "ask", ask):
        await say(f"!ask {QUESTION}", fake.member_a)
        await say(f"<@{fake.bot.user.id}> {QUESTION}", fake.member_a)
    assert order == [f"typing {fake.channel_a.id}", "compose"] * 2


# --- what is kept, and how a quote in context is shown -------------------------------------------


async def test_answer_records_and_their_votes_are_deleted_after_the_retention(fake: FakeDiscord, library: Library) -> None:
    from bot.core.feedback import RECORD_DAYS

    await add_ferry_log(library, fake.guild_a.id)
    feedback = fake.bot.feedback
    _, old_id = await feedback.ask("which ferry sailed from the harbour?", guild_id=fake.guild_a.id, asker_id=fake.member_a.id)
    assert (await feedback.vote(old_id, fake.member_a.id, False)).not_helpful_count == 1
    store = library.store
    async with store._write_transaction():
        await store._writer.execute(
            "UPDATE answer_records SET created_at = '2000-01-01T00:00:00+00:00' WHERE id = ?", (old_id,)
        )
    _, new_id = await feedback.ask("which ferry sailed from the harbour?", guild_id=fake.guild_a.id, asker_id=fake.member_a.id)
    assert RECORD_DAYS == 90  # what the README and docs promise
    assert await feedback.get(old_id) is None and await feedback.get(new_id) is not None
    assert await store._fetch("SELECT * FROM answer_votes WHERE answer_id = ?", (old_id,)) == []
    assert await feedback.vote(old_id, fake.member_a.id, True) is None  # its buttons say "too old"


async def test_context_of_a_pinging_article_pings_nobody(fake: FakeDiscord, library: Library, gateway: Gateway, monkeypatch: pytest.MonkeyPatch) -> None:
    from test_discord_bot import PINGING_ARTICLE

    sends = record_sends(monkeypatch)
    await library.add_bytes(PINGING_ARTICLE.encode(), "dam.txt", scope=fake.guild_a.id, added_by="test", meta=Metadata(title="Dam"))
    answer = await say("!ask what did farmers downstream move?", fake.member_a)
    components = sends[-1]["components"]
    ctx_id = next(c for c in custom_ids(components) if c.startswith("qb:ctx:"))
    (shown,) = await gateway.click(fake.member_a, message_dict(answer, components), ctx_id)
    assert "**Farmers downstream moved their cattle" in shown.text
    assert "warned @\u200beveryone, @\u200bhere" in shown.text and "@everyone" not in shown.text
    assert "\\_\\_noon\\_\\_" in shown.text
    assert shown.data["allowed_mentions"] == {"parse": []}
