"""What managers learn: `/stats` (questions asked, answered, declined, resolved, and votes,
over the last 7 and 30 days) and the `/article gaps` report (the questions the bot could not
answer or whose answer was voted not helpful, most asked first), from the question log
(`bot.core.questions`) and the answers' votes (`bot.core.feedback`)."""
from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING

import discord
from discord.ext import commands

from bot.core.questions import Gap, PeriodStats

from .checks import manager_only
from .rendering import ANSWER_COLOUR, EMBED_DESCRIPTION_LIMIT, Reply, escape, fit, message_reply, one_line, send_reply

if TYPE_CHECKING:
    from bot.discord_bot import QuoteBot

LOG_OFF = "The question log is off on this bot (QUOTEBOT_STORE_QUESTIONS=false), so there is nothing to show."


def _date(stamp: str) -> str:
    """A stored ISO time as a Discord timestamp: each reader sees their own date format."""
    try:
        return discord.utils.format_dt(datetime.fromisoformat(stamp), "d")
    except ValueError:
        return escape(stamp)


def gaps_reply(gaps: Sequence[Gap]) -> Reply:
    if not gaps:
        return message_reply("No unanswered questions logged here yet.")
    rows = [
        f"**{gap.count}×** {fit(one_line(gap.question), 200)} — last asked {_date(gap.last_asked)}"
        + (f" ({gap.not_helpful} answered, voted not helpful)" if gap.not_helpful else "")
        for gap in gaps
    ]
    embed = discord.Embed(
        title="Questions the bot could not answer, or answered unhelpfully",
        description=fit("\n".join(rows), EMBED_DESCRIPTION_LIMIT, render=lambda s: s),
        colour=ANSWER_COLOUR,
    )
    embed.set_footer(text="Most asked first. An article that answers them closes the gap.")
    return Reply(embeds=[embed])


def stats_reply(periods: Sequence[PeriodStats], *, log_on: bool) -> Reply:
    embed = discord.Embed(title="Questions here", colour=ANSWER_COLOUR)
    for p in periods:
        parts = [
            f"asked **{p.asked}**",
            f"answered **{p.answered}**",
            f"declined **{p.declined}**",
            f"resolved **{p.resolved}**",
            f"helpful **{p.helpful}**",
            f"not helpful **{p.not_helpful}**",
        ]
        embed.add_field(name=f"Last {p.days} days", value=" · ".join(parts), inline=False)
    if not log_on:
        embed.set_footer(text="The question log is off (QUOTEBOT_STORE_QUESTIONS=false): questions are not counted.")
    return Reply(embeds=[embed])


async def send_gaps(ctx: commands.Context[QuoteBot]) -> None:
    """The `/article gaps` report (the command lives in the article group)."""
    assert ctx.guild is not None
    if not ctx.bot.questions.enabled:
        await send_reply(ctx, message_reply(LOG_OFF))
        return
    await ctx.defer()
    await send_reply(ctx, gaps_reply(await ctx.bot.questions.gaps(ctx.guild.id)))


class Stats(commands.Cog):
    def __init__(self, bot: QuoteBot) -> None:
        self.bot = bot

    @commands.hybrid_command(name="stats")
    @commands.guild_only()
    @manager_only()
    async def stats(self, ctx: commands.Context[QuoteBot]) -> None:
        """Questions asked, answered, declined, resolved, and votes here: last 7 and 30 days."""
        assert ctx.guild is not None
        await ctx.defer()
        periods = await self.bot.questions.stats(ctx.guild.id)
        await send_reply(ctx, stats_reply(periods, log_on=self.bot.questions.enabled))


async def setup(bot: QuoteBot) -> None:
    await bot.add_cog(Stats(bot))
