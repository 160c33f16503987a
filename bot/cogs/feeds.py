"""`/feed add|list|remove` (and `!feed ...`): managers keep a server's library fresh from RSS
and Atom feeds. The polling lives in `bot.core.feeds`; this cog starts its scheduler, takes the
commands and tells a server's managers when one of its feeds is paused."""
from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING

import discord
from discord import app_commands
from discord.ext import commands

from bot.core.feeds import FAILURES_TO_PAUSE, Feed, Feeds, FeedScheduler, parse_every

from .checks import manager_only
from .rendering import ANSWER_COLOUR, EMBED_DESCRIPTION_LIMIT, Reply, escape, fit, message_reply, one_line, send_reply

if TYPE_CHECKING:
    from bot.discord_bot import QuoteBot

log = logging.getLogger(__name__)


def _every(minutes: int) -> str:
    if minutes % 1440 == 0:
        return f"{minutes // 1440} d"
    if minutes % 60 == 0:
        return f"{minutes // 60} h"
    return f"{minutes} min"


def _when(stamp: str | None) -> str:
    if not stamp:
        return "not yet"
    return discord.utils.format_dt(datetime.fromisoformat(stamp), "R")


def _name(feed: Feed) -> str:
    return fit(one_line(feed.title or feed.url), 120)


def feed_list_reply(feeds: Sequence[Feed]) -> Reply:
    if not feeds:
        return message_reply("No feeds followed here. Add one with /feed add URL.")
    rows = []
    for feed in feeds:
        state = "**paused**" if feed.paused else f"every {_every(feed.every_minutes)}"
        row = f"`{feed.id}` **{_name(feed)}** — {state} · last poll {_when(feed.last_poll)} · {feed.items_added} added"
        if feed.last_error:
            row += f"\n  last error: {fit(one_line(feed.last_error), 200)}"
        rows.append(row)
    embed = discord.Embed(
        title=f"Feeds ({len(feeds)})",
        description=fit("\n".join(rows), EMBED_DESCRIPTION_LIMIT, render=lambda s: s),
        colour=ANSWER_COLOUR,
    )
    return Reply(embeds=[embed])


class FeedCommands(commands.Cog, name="Feeds"):
    def __init__(self, bot: QuoteBot) -> None:
        self.bot = bot
        self.feeds = Feeds(bot.library, bot.fetch_policy, session=bot.http_session, on_paused=self._tell_managers)
        self.scheduler = FeedScheduler(self.feeds)

    async def cog_load(self) -> None:
        self.scheduler.start()

    async def cog_unload(self) -> None:
        await self.scheduler.stop()

    async def _tell_managers(self, feed: Feed) -> None:
        """Once, when a feed is paused: in the channel where it was added (or the server's
        system channel)."""
        guild = self.bot.get_guild(feed.guild_id)
        channel = self.bot.get_channel(feed.channel_id) if feed.channel_id else None
        if channel is None and guild is not None:
            channel = guild.system_channel
        if not isinstance(channel, discord.abc.Messageable):
            log.warning("Feed %d of server %d is paused; no channel to say so in", feed.id, feed.guild_id)
            return
        text = (
            f"Feed {feed.id} ({escape(feed.url)}) failed {FAILURES_TO_PAUSE} polls in a row and is paused."
            f" Last error: {escape(feed.last_error or 'unknown')}\n"
            "Managers: `/feed add` the same URL again to resume it, or `/feed remove` it."
        )
        await channel.send(**message_reply(text).kwargs())

    @commands.hybrid_group(name="feed", invoke_without_command=True)
    @commands.guild_only()
    @manager_only()
    async def feed(self, ctx: commands.Context[QuoteBot]) -> None:
        """Follow RSS and Atom feeds: new items become articles."""
        await ctx.send_help(ctx.command)

    @feed.command(name="add")
    @commands.guild_only()
    @manager_only()
    @app_commands.describe(url="The feed's address (RSS or Atom)", every="How often to check: 30m, 2h, 1d (default 1h)")
    async def add(self, ctx: commands.Context[QuoteBot], url: str, every: str | None = None) -> None:
        """Follow a feed: its items, and each new one, are imported as articles of this server."""
        assert ctx.guild is not None
        minutes = parse_every(every)
        await ctx.defer()
        added = await self.feeds.add(
            ctx.guild.id, url, every_minutes=minutes, channel_id=ctx.channel.id, added_by=str(ctx.author.id)
        )
        self.scheduler.poll_soon(added.feed.id)
        verb = "Resumed" if added.resumed else "Following"
        text = (
            f"{verb} feed {added.feed.id}: **{_name(added.feed)}** ({added.items} items now), checked every"
            f" {_every(minutes)}. Its items are being imported; `/feed list` shows how it goes."
        )
        log.info("Feed %d (%s) added in server %d by %s", added.feed.id, added.feed.url, ctx.guild.id, ctx.author.id)
        await send_reply(ctx, message_reply(text))

    @feed.command(name="list")
    @commands.guild_only()
    @manager_only()
    async def list_(self, ctx: commands.Context[QuoteBot]) -> None:
        """The feeds followed here: last poll, items added, last error."""
        assert ctx.guild is not None
        await ctx.defer()
        await send_reply(ctx, feed_list_reply(await self.feeds.list(ctx.guild.id)))

    @feed.command(name="remove")
    @commands.guild_only()
    @manager_only()
    @app_commands.describe(feed_id="The feed's id (see /feed list)")
    async def remove(self, ctx: commands.Context[QuoteBot], feed_id: int) -> None:
        """Stop following a feed; the articles it added stay."""
        assert ctx.guild is not None
        await ctx.defer()
        feed = await self.feeds.remove(ctx.guild.id, feed_id)
        log.info("Feed %d removed from server %d by %s", feed.id, ctx.guild.id, ctx.author.id)
        await send_reply(
            ctx,
            message_reply(f"Stopped following feed {feed.id}: **{_name(feed)}**. The {feed.items_added} articles it added stay."),
        )


async def setup(bot: QuoteBot) -> None:
    await bot.add_cog(FeedCommands(bot))
