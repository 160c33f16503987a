"""The Discord bot: a `commands.Bot` holding the library, and `run_bot`, its start-up and shutdown.

Intents: the Message Content intent is privileged, so it is asked for only when something
needs it: the text prefix (`!ask`, set QUOTEBOT_COMMAND_PREFIX="" to turn it off) or
auto-answer channels (QUOTEBOT_ANSWER_CHANNEL_IDS). Slash commands and messages that mention
the bot work without it; with the prefix off, `@bot article list` style commands still work
because the mention is always a prefix. See docs/discord-setup.md.
"""
from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Sequence

import aiohttp
import discord
from discord.ext import commands

from .app import open_library
from .core.feedback import Feedback
from .core.channels import ChannelModes
from .core.cluster import LoginGate
from .core.fetch import FetchPolicy, fetch_session
from .core.library import Library
from .core.questions import QuestionLog
from .core.stores import is_postgres_url
from .settings import Settings

log = logging.getLogger(__name__)

INITIAL_EXTENSIONS: tuple[str, ...] = (
    "bot.cogs.errors",
    "bot.cogs.answer_view",  # registers the answer buttons, so those sent before a restart work
    "bot.cogs.ask",
    "bot.cogs.help",
    "bot.cogs.articles",
    "bot.cogs.admin",
    "bot.cogs.channels",
    "bot.cogs.stats",
    "bot.cogs.feeds",
)


def needs_message_content(settings: Settings) -> bool:
    return bool(settings.command_prefix.strip()) or bool(settings.answer_channel_ids)


def build_intents(settings: Settings) -> discord.Intents:
    # Intents.default() has guilds and (guild and DM) messages, and no privileged intent.
    intents = discord.Intents.default()
    intents.message_content = needs_message_content(settings)
    return intents


def fetch_policy(settings: Settings) -> FetchPolicy:
    return FetchPolicy(
        timeout=settings.fetch_timeout_seconds,
        max_bytes=settings.fetch_max_bytes,
        max_redirects=settings.fetch_max_redirects,
        allow_private=settings.allow_private_urls,
    )


class QuoteBot(commands.Bot):
    """The bot: the library, the settings and the shared HTTP session live here for the cogs."""

    def __init__(
        self,
        settings: Settings,
        library: Library,
        *,
        http_session: aiohttp.ClientSession | None = None,
        intents: discord.Intents | None = None,
        extensions: Sequence[str] = INITIAL_EXTENSIONS,
        login_gate: LoginGate | None = None,
    ) -> None:
        prefix = settings.command_prefix.strip()
        shards = settings.shards
        sharded = shards is not None and isinstance(self, commands.AutoShardedBot)
        sharding = {"shard_ids": list(shards.ids), "shard_count": shards.count} if sharded else {}
        super().__init__(
            **sharding,
            # A mention always works as a prefix: it needs no Message Content intent.
            command_prefix=commands.when_mentioned_or(prefix) if prefix else commands.when_mentioned,
            intents=intents or build_intents(settings),
            # Set once, so no quoted article text can ever ping @everyone, a role or a user.
            allowed_mentions=discord.AllowedMentions.none(),
            case_insensitive=True,
            strip_after_prefix=True,
            description="Answers questions by quoting stored articles word for word.",
            help_command=None,  # bot.cogs.help: one embed, on the slash and the prefix path
        )
        self.settings = settings
        self.library = library
        self.feedback = Feedback(library)
        self.http_session = http_session
        self.fetch_policy = fetch_policy(settings)
        # Shared by the cogs that answer, set modes and report: one cache, one switch.
        self.channel_modes = ChannelModes(library.store)
        self.questions = QuestionLog(library.store, enabled=settings.store_questions)
        self.initial_extensions = tuple(extensions)
        self.login_gate = login_gate
        self._max_concurrency: int | None = None

    async def setup_hook(self) -> None:
        for extension in self.initial_extensions:
            try:
                await self.load_extension(extension)
            except Exception:
                # One broken extension should not keep the rest of the bot offline.
                log.exception("Failed to load extension %s", extension)

    async def before_identify_hook(self, shard_id: int | None, *, initial: bool = False) -> None:
        """With a gate (PostgreSQL), logins are spaced across every process of the bot, one per
        login bucket every 5 s; without one, discord.py's spacing within this process."""
        if self.login_gate is None:
            await super().before_identify_hook(shard_id, initial=initial)
            return
        if self._max_concurrency is None:
            try:
                _, _, limits = await self.http.get_bot_gateway()
                self._max_concurrency = int(limits.get("max_concurrency", 1))
            except discord.DiscordException:
                self._max_concurrency = 1  # one bucket: slower logins, never too many
        await self.login_gate.before_identify(shard_id or 0, self._max_concurrency)

    async def close(self) -> None:
        await super().close()
        if self.login_gate is not None:
            await self.login_gate.close()

    async def process_commands(self, message: discord.Message) -> None:
        # Only messages that name a real command are invoked: anything else (a question after
        # a mention, chatter starting with "!") belongs to the ask cog or to nobody, so no
        # CommandNotFound noise.
        if message.author.bot:
            return
        ctx = await self.get_context(message)
        if ctx.command is None:
            return
        await self.invoke(ctx)

    async def on_ready(self) -> None:
        assert self.user is not None
        log.info("Logged in as %s (id %s), in %d server(s)", self.user, self.user.id, len(self.guilds))


class ShardedQuoteBot(QuoteBot, commands.AutoShardedBot):
    """The bot running the shards QUOTEBOT_SHARD_IDS of QUOTEBOT_SHARD_COUNT (one process of
    several: docs/deploy.md); its library holds only those shards' servers."""


def bot_class(settings: Settings) -> type[QuoteBot]:
    return ShardedQuoteBot if settings.shards is not None else QuoteBot


# --- running -----------------------------------------------------------------------------------


def run_bot(settings: Settings) -> int:
    """Run the bot until Ctrl-C or SIGTERM; returns the process exit status."""
    token = settings.discord_token.get_secret_value().strip() if settings.discord_token is not None else ""
    if not token:
        log.error("No Discord token: set DISCORD_TOKEN in the environment or in .env")
        return 2
    # The command line sets WARNING for quiet console tools; a running bot should say what it does.
    if logging.getLogger().getEffectiveLevel() > logging.INFO:
        for name in ("bot", "discord"):
            logging.getLogger(name).setLevel(logging.INFO)
    try:
        return asyncio.run(_run(settings, token))
    except KeyboardInterrupt:  # Ctrl-C before the signal handlers were installed
        return 130


async def _run(settings: Settings, token: str) -> int:
    library = await open_library(settings, sharded=True)
    target = settings.store_target()
    # Over PostgreSQL other processes of the bot may be logging in too: space logins across all.
    gate = LoginGate(target) if is_postgres_url(target) else None
    try:
        async with fetch_session(fetch_policy(settings)) as session, bot_class(settings)(
            settings, library, http_session=session, login_gate=gate
        ) as bot:
            _close_on_signals(bot)
            try:
                await bot.start(token)
            except discord.LoginFailure:
                log.error("Discord refused the token; check DISCORD_TOKEN (the bot token, not the client secret)")
                return 1
            except discord.PrivilegedIntentsRequired:
                log.error(
                    "Discord refused the Message Content intent. Enable it for the bot in the Developer "
                    "Portal, or set QUOTEBOT_COMMAND_PREFIX=\"\" and no answer channels to run without it"
                )
                return 1
            except (aiohttp.ClientError, OSError, discord.GatewayNotFound, discord.HTTPException) as exc:
                # An outage or no network: one clear line, not a traceback (the token is in neither).
                log.error("Could not reach Discord: %s", exc)
                return 1
    finally:
        # After the bot: no command can still be writing. close() waits for a write in progress.
        await library.close()
        log.info("Library closed")
    return 0


def _close_on_signals(bot: QuoteBot) -> None:
    """Ctrl-C and SIGTERM close the bot, so `bot.start` returns and everything closes in order."""
    loop = asyncio.get_running_loop()
    tasks: set[asyncio.Task[None]] = set()  # the loop keeps only weak references to tasks

    signals = (signal.SIGINT, signal.SIGTERM)

    def shutdown(name: str) -> None:
        log.info("%s received, shutting down", name)
        # Back to the defaults: a second Ctrl-C interrupts a shutdown that hangs.
        for sig in signals:
            loop.remove_signal_handler(sig)
        task = loop.create_task(bot.close())
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    for sig in signals:
        try:
            loop.add_signal_handler(sig, shutdown, sig.name)
        except (NotImplementedError, RuntimeError):  # Windows: Ctrl-C stays a KeyboardInterrupt
            pass
