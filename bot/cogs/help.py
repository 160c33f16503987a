"""`/help` and `!help`: one embed saying what members and managers can do (discord.py's default
help, a code block of command signatures, is replaced: `help_command=None` on the bot)."""
from __future__ import annotations

from typing import TYPE_CHECKING

import discord
from discord.ext import commands

from .checks import is_manager
from .rendering import ANSWER_COLOUR, Reply, send_reply

if TYPE_CHECKING:
    from bot.discord_bot import QuoteBot


def help_reply(prefix: str, *, manager: bool) -> Reply:
    """The help card; `prefix` is what the reader types ("/" or e.g. "!")."""
    p = prefix
    embed = discord.Embed(
        title="Quotebot",
        description=(
            "I answer questions by quoting the articles stored here, word for word, each quote "
            "with its source. When no stored article answers, I say so."
        ),
        colour=ANSWER_COLOUR,
    )
    embed.add_field(
        name="Asking",
        value=(
            f"• `{p}ask who released the footage?`, or mention me with the question\n"
            "• Right-click a message → *Apps* → **Ask Quotebot**: I answer its text in a reply\n"
            "• In direct messages, just write the question"
        ),
        inline=False,
    )
    embed.add_field(
        name="Under an answer",
        value=(
            "**More**: the next passages for the same question · **Context**: the quote with the "
            "sentences around it (only you see it) · **Helpful / Not helpful**: your vote, one per "
            "answer, which you can change. Asked it yourself? Your Helpful (or a 👍 on the answer) "
            "marks it resolved ✅"
        ),
        inline=False,
    )
    embed.add_field(
        name="Managers (Manage Server or a manager role)",
        value=(
            f"• `{p}article add` pasted text, an attached .txt/.md/.html/.jsonl file, or a url\n"
            f"• `{p}article list [page]` · `{p}article show ID` · `{p}article search WORDS` (titles)\n"
            f"• `{p}article remove ID`: it stops answering at once\n"
            f"• `{p}channel mode always|confident|mention|off`: where I answer unasked\n"
            f"• `{p}feed add URL [every]` · `{p}feed list` · `{p}feed remove ID`: RSS/Atom feeds become articles\n"
            f"• `{p}article gaps`: questions I could not answer · `{p}stats`: the last 7 and 30 days\n"
            "Articles added here answer only here; articles marked *global* ship with the bot, "
            "answer everywhere, and only the bot owner can remove them."
        ),
        inline=False,
    )
    if manager:
        embed.set_footer(text="You can manage this server's articles.")
    return Reply(embeds=[embed])


class Help(commands.Cog):
    def __init__(self, bot: QuoteBot) -> None:
        self.bot = bot

    @commands.hybrid_command(name="help")
    async def help(self, ctx: commands.Context[QuoteBot]) -> None:
        """What I can do, for members and for managers."""
        prefix = "/" if ctx.interaction is not None else ctx.clean_prefix
        await send_reply(ctx, help_reply(prefix, manager=await is_manager(ctx)), ephemeral=True)


async def setup(bot: QuoteBot) -> None:
    await bot.add_cog(Help(bot))
