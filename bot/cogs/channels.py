"""Where the bot speaks: `/channel mode` (and `!channel mode`) for managers, `/channel list`;
and resolving: the asker's 👍 on an answer (or their Helpful button) marks their question
resolved (a ✅ on the answer).

`mark_resolved` is the one way an answer is marked resolved; anything that knows the answer
message and the member (a reaction, a button) calls it.
"""
from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Literal

import discord
from discord import app_commands
from discord.ext import commands

from bot.core.channels import ChannelMode

from .checks import manager_only
from .rendering import message_reply, send_reply

if TYPE_CHECKING:
    from bot.discord_bot import QuoteBot

log = logging.getLogger(__name__)

RESOLVE_EMOJI = "👍"
RESOLVED_EMOJI = "✅"

_MEANING = {
    ChannelMode.ALWAYS: "I answer every message that looks like a question (in a forum: every new post, in its thread), and stay quiet when no article answers",
    ChannelMode.CONFIDENT: "I answer questions unasked only when I am confident of the answer",
    ChannelMode.MENTION: "I answer only when asked: a mention, /ask or !ask",
    ChannelMode.OFF: "I answer nothing unasked, not even a mention; commands still work",
}


async def mark_resolved(
    bot: QuoteBot, user_id: int, *, message_id: int | None = None, answer_id: int | None = None
) -> bool:
    """Mark an answer resolved if `user_id` asked it, found by its message (a 👍 on it) or by
    its record (a Helpful button, on any message of the answer), and show it on the answer's
    message with a ✅. True if it was marked now (False: not the asker, an answer the bot does
    not remember, or resolved already)."""
    resolved = await bot.questions.resolve(user_id, message_id=message_id, answer_id=answer_id)
    if resolved is None:
        return False
    message = discord.utils.get(bot.cached_messages, id=resolved.message_id) or bot.get_partial_messageable(
        resolved.channel_id
    ).get_partial_message(resolved.message_id)
    try:
        await message.add_reaction(RESOLVED_EMOJI)
    except discord.HTTPException:
        log.warning("Could not mark answer message %d as resolved", resolved.message_id, exc_info=True)
    return True


class Channels(commands.Cog):
    def __init__(self, bot: QuoteBot) -> None:
        self.bot = bot

    @commands.hybrid_group(name="channel", invoke_without_command=True)
    @commands.guild_only()
    @manager_only()
    async def channel(self, ctx: commands.Context[QuoteBot]) -> None:
        """Where the bot answers unasked."""
        await ctx.send_help(ctx.command)

    @channel.command(name="mode")
    @commands.guild_only()
    @manager_only()
    @app_commands.describe(
        mode="always: every question; confident: only sure answers; mention: only when asked; off: never",
        channel="A text channel or forum (default: this one)",
    )
    async def mode(
        self,
        ctx: commands.Context[QuoteBot],
        mode: Literal["always", "confident", "mention", "off"],
        channel: discord.TextChannel | discord.ForumChannel | None = None,
    ) -> None:
        """Set where the bot answers unasked in a channel or forum."""
        assert ctx.guild is not None
        target = channel or ctx.channel
        if isinstance(target, discord.Thread):
            target = target.parent  # a thread follows its channel: set the channel
        if not isinstance(target, discord.TextChannel | discord.ForumChannel):
            raise commands.BadArgument("Choose a text channel or a forum.")
        chosen = ChannelMode(mode)
        await self.bot.channel_modes.set(ctx.guild.id, target.id, chosen, set_by=str(ctx.author.id))
        log.info("Channel %d of server %d set to %s by %s", target.id, ctx.guild.id, chosen.value, ctx.author.id)
        text = f"{target.mention} is now `{chosen.value}`: {_MEANING[chosen]}."
        if chosen.answers_unasked and not self.bot.intents.message_content:
            text += (
                "\nNote: this bot runs without the Message Content intent, so it cannot read messages here;"
                " turn the intent on (see docs/discord-setup.md)."
            )
        await send_reply(ctx, message_reply(text))

    @channel.command(name="list")
    @commands.guild_only()
    @manager_only()
    async def list_(self, ctx: commands.Context[QuoteBot]) -> None:
        """Show the channels whose mode was set, and the default."""
        assert ctx.guild is not None
        stored = await self.bot.channel_modes.stored(ctx.guild.id)
        lines = [f"<#{channel_id}>: `{mode.value}`" for channel_id, mode in sorted(stored.items())]
        defaults = [f"<#{c}>" for c in self.bot.settings.answer_channel_ids if c not in stored and ctx.guild.get_channel(c)]
        if defaults:
            lines.append("`always` by the bot's settings: " + ", ".join(defaults))
        lines.append("Every other channel: `mention` (answers only when asked).")
        await send_reply(ctx, message_reply("\n".join(lines)))

    @commands.Cog.listener()
    async def on_raw_reaction_add(self, payload: discord.RawReactionActionEvent) -> None:
        # Raw: the answer may be older than the message cache, or from before a restart.
        if payload.guild_id is None or str(payload.emoji) != RESOLVE_EMOJI:
            return
        if self.bot.user is not None and payload.user_id == self.bot.user.id:
            return
        await mark_resolved(self.bot, payload.user_id, message_id=payload.message_id)


async def setup(bot: QuoteBot) -> None:
    await bot.add_cog(Channels(bot))
