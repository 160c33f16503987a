"""The owner's `sync` command: pushing slash commands to Discord is an explicit act, never done
on start (syncing is rate limited, and every start would re-register needlessly).

- `!sync` (or `@bot sync`): this server only, at once: for trying out changes.
- `!sync global`: every server and DMs; Discord may take a while to show changes.
- `!sync clear`: remove this server's copy (after testing, so commands are not listed twice).
"""
from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Literal

from discord.ext import commands

from .rendering import message_reply, send_reply

if TYPE_CHECKING:
    from bot.discord_bot import QuoteBot

log = logging.getLogger(__name__)


class Admin(commands.Cog):
    def __init__(self, bot: QuoteBot) -> None:
        self.bot = bot

    # A prefix command on purpose: before the first sync no slash command exists to run it.
    @commands.command(name="sync")
    @commands.is_owner()
    async def sync(self, ctx: commands.Context[QuoteBot], where: Literal["guild", "global", "clear"] = "guild") -> None:
        """Register the slash commands with Discord (owner only)."""
        tree = self.bot.tree
        if where == "global":
            synced = await tree.sync()
            text = f"Synced {len(synced)} command(s) globally; Discord may take a while to show them."
        elif ctx.guild is None:
            raise commands.NoPrivateMessage()
        elif where == "clear":
            tree.clear_commands(guild=ctx.guild)
            await tree.sync(guild=ctx.guild)
            text = "Removed this server's copy of the commands; the global ones remain."
        else:
            tree.copy_global_to(guild=ctx.guild)
            synced = await tree.sync(guild=ctx.guild)
            text = f"Synced {len(synced)} command(s) to this server."
        log.info("Command tree sync (%s) by %s in guild %s", where, ctx.author.id, ctx.guild and ctx.guild.id)
        await send_reply(ctx, message_reply(text))


async def setup(bot: QuoteBot) -> None:
    await bot.add_cog(Admin(bot))
