"""Shared fixtures: a fresh library per test, and a simulated Discord (dpytest) around the bot.

dpytest never calls `setup_hook`, so the fixture loads the extensions itself; it needs
`intents.members=True`. Slash paths are driven with a mocked `discord.Interaction` (see
`slash_context`), since dpytest does not simulate interactions.
"""
from __future__ import annotations

import asyncio
import glob
import os
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from unittest.mock import AsyncMock, MagicMock

import discord
import discord.ext.test as dpytest
import discord.ext.test.backend as dpytest_backend
import pytest
import pytest_asyncio
from discord.ext import commands

from bot.core.library import Library
from bot.discord_bot import INITIAL_EXTENSIONS, QuoteBot
from bot.settings import Settings
from postgres import pg_url, postgres_server  # noqa: F401  (fixtures: a throwaway PostgreSQL)

ROOT = Path(__file__).resolve().parent.parent
SEED_ARTICLE = ROOT / "corpus" / "000_07a41ce63a0344ef.txt"
OWNER_ID = 4242


@pytest_asyncio.fixture
async def library(tmp_path: Path) -> AsyncIterator[Library]:
    lib = await Library.open(tmp_path / "db.sqlite3", corpus_dir=None)
    try:
        yield lib
    finally:
        await lib.close()


@pytest.fixture(params=["sqlite", "postgres"])
def target(request: pytest.FixtureRequest, tmp_path: Path) -> Path | str:
    """Where a library lives, once on each store: a SQLite file, and a fresh database on the
    throwaway PostgreSQL server (tests/postgres.py)."""
    if request.param == "sqlite":
        return tmp_path / "library.sqlite3"
    return request.getfixturevalue("pg_url")


@pytest_asyncio.fixture
async def library_on_each_store(target: Path | str) -> AsyncIterator[Library]:
    lib = await Library.open(target, corpus_dir=None)
    try:
        yield lib
    finally:
        await lib.close()


def make_settings(tmp_path: Path, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "db_path": tmp_path / "db.sqlite3",
        "corpus_dir": tmp_path / "no-corpus",
        "command_prefix": "!",
        "ask_cooldown_seconds": 0,
        "manager_role_ids": [],
        "answer_channel_ids": [],
        "allow_private_urls": True,
    }
    values.update(overrides)
    # _env_file=None: a developer's .env must not change what the tests see.
    return Settings(_env_file=None, **values)


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return make_settings(tmp_path)


@dataclass
class FakeDiscord:
    """The simulated world: two servers, each with a text channel, a manager and a member."""

    bot: QuoteBot
    guild_a: discord.Guild
    guild_b: discord.Guild
    channel_a: discord.TextChannel
    channel_b: discord.TextChannel
    admin_a: discord.Member
    member_a: discord.Member
    admin_b: discord.Member
    member_b: discord.Member


async def start_fake_discord(settings: Settings, library: Library) -> FakeDiscord:
    intents = discord.Intents.default()
    intents.members = True  # dpytest needs it
    intents.message_content = True
    bot = QuoteBot(settings, library, intents=intents)
    await bot._async_setup_hook()  # what bot.start would do before setup_hook
    # After dpytest.configure: it replaces the connection state, which holds what extensions
    # register there (the answer buttons' dynamic items).
    dpytest.configure(bot, guilds=["Server A", "Server B"], text_channels=1, voice_channels=0, members=["admin", "member"])
    _reaction_payloads_of_today()
    for extension in INITIAL_EXTENSIONS:
        await bot.load_extension(extension)
    config = dpytest.get_config()
    # dpytest's connection state has no loop; "typing…" (channel.typing()) starts a task on it.
    bot._connection.loop = asyncio.get_running_loop()
    # ...and does not know the command tree, which receives interactions (context menus, autocomplete).
    bot._connection._command_tree = bot.tree
    guild_a, guild_b = config.guilds
    channel_a, channel_b = config.channels
    admin_a, member_a, admin_b, member_b = config.members
    # Known owner, so is_owner never asks Discord for the application info.
    bot.owner_id = OWNER_ID
    for guild, admin in ((guild_a, admin_a), (guild_b, admin_b)):
        role = dpytest_backend.make_role("Admins", guild, permissions=discord.Permissions(manage_guild=True).value)
        await dpytest.add_role(admin, role)
    return FakeDiscord(bot, guild_a, guild_b, channel_a, channel_b, admin_a, member_a, admin_b, member_b)


def _reaction_payloads_of_today() -> None:
    """dpytest 0.7 builds MESSAGE_REACTION_ADD without the `type` field today's gateway sends
    (and discord.py 2.7 reads): add it, as Discord does (0, a normal reaction)."""
    state = dpytest_backend.get_state()
    parse = state.parse_message_reaction_add
    state.parse_message_reaction_add = lambda data: parse({"type": 0, "burst": False, **data})


@pytest_asyncio.fixture
async def fake(settings: Settings, library: Library) -> AsyncIterator[FakeDiscord]:
    world = await start_fake_discord(settings, library)
    try:
        yield world
    finally:
        await dpytest.empty_queue()
        for extension in list(world.bot.extensions):
            await world.bot.unload_extension(extension)


@pytest.fixture(autouse=True, scope="session")
def _remove_dpytest_files() -> Iterator[None]:
    # dpytest writes every sent attachment to ./dpytest_*.dat.
    yield
    for path in glob.glob("dpytest_*.dat"):
        os.remove(path)


# --- slash paths -------------------------------------------------------------------------------


def mock_interaction(
    bot: QuoteBot,
    user: discord.Member,
    channel: discord.TextChannel,
    command: commands.HybridCommand | commands.HybridGroup,
    *,
    permissions: discord.Permissions | None = None,
    attachments: list[discord.Attachment] | None = None,
) -> MagicMock:
    """A slash-command interaction: `response.defer`, `response.send_message` and
    `followup.send` are AsyncMocks; `response.is_done()` turns true once one was called."""
    interaction = MagicMock(spec=discord.Interaction)
    interaction.client = bot
    interaction.user = user
    interaction.guild = channel.guild
    interaction.guild_id = channel.guild.id
    interaction.channel = channel
    interaction.channel_id = channel.id
    interaction.id = discord.utils.time_snowflake(discord.utils.utcnow())
    interaction.command = command.app_command
    interaction.data = {"type": 1}
    interaction.message = None
    interaction.namespace = [(f"file{i}", a) for i, a in enumerate(attachments or [])]
    interaction.permissions = permissions if permissions is not None else channel.permissions_for(user)
    interaction.app_permissions = discord.Permissions.all()
    interaction.command_failed = False
    interaction._state = bot._connection
    interaction.is_expired.return_value = False

    responded = {"done": False}

    def mark_done(*args: Any, **kwargs: Any) -> MagicMock:
        responded["done"] = True
        return MagicMock(name="InteractionCallbackResponse")

    interaction.response.defer = AsyncMock(side_effect=mark_done)
    interaction.response.send_message = AsyncMock(side_effect=mark_done)
    interaction.response.is_done = MagicMock(side_effect=lambda: responded["done"])
    interaction.followup.send = AsyncMock()
    interaction.original_response = AsyncMock()
    return interaction


async def slash_context(interaction: MagicMock) -> commands.Context:
    """The Context discord.py builds for a hybrid command invoked as a slash command."""
    return await commands.Context.from_interaction(interaction)


async def index_agrees_with_database(lib: Library) -> None:
    """The index holds exactly the sentences the database holds."""
    rows = await lib.store._fetch("SELECT id FROM sentences")
    assert len(lib.retriever) == len(rows)
    assert all(row[0] in lib.retriever.index for row in rows)


async def said(content: str, channel, member) -> tuple[Exception | None, list]:
    """A member's message through the simulated Discord: (command error if any, bot replies)."""
    error = None
    try:
        await dpytest.message(content, channel=channel, member=member)
    except Exception as exc:  # dpytest re-raises command errors after the bot's handler ran
        error = exc
    sent = []
    while not dpytest.sent_queue.empty():
        sent.append(await dpytest.sent_queue.get())
    return error, sent
