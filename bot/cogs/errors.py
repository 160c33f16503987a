"""The one error handler: errors users cause get a short reply (ephemeral for slash commands);
anything else is logged with its traceback and answered with an apology and a reference id
that can be found in the log."""
from __future__ import annotations

import logging
import secrets
from typing import TYPE_CHECKING

import discord
from discord import app_commands
from discord.ext import commands

from bot.core.answers import QuestionError
from bot.core.storage import StoreBusy
from bot.core.articles import ArticleError

from .rendering import escape, message_reply, send_reply

if TYPE_CHECKING:
    from bot.discord_bot import QuoteBot

log = logging.getLogger(__name__)


def new_reference() -> str:
    return secrets.token_hex(4)


def user_message(ctx: commands.Context | None, error: Exception) -> str | None:
    """The reply for an error a user can cause, or None for one they cannot (a bug, an outage)."""
    if isinstance(error, (ArticleError, QuestionError)):
        return escape(str(error))  # may quote a file name or URL the user gave
    if isinstance(error, StoreBusy):
        return str(error)  # busy or full: nothing changed, and trying later is the advice
    if isinstance(error, commands.CommandOnCooldown):
        return f"Slow down: try again in {max(1, round(error.retry_after))} s."
    if isinstance(error, commands.MaxConcurrencyReached):
        return "That command is busy; try again in a moment."
    if isinstance(error, commands.NoPrivateMessage):
        return "That command works only in a server."
    if isinstance(error, commands.NotOwner):
        return "Only the bot owner can do that."
    if isinstance(error, commands.MissingPermissions | app_commands.MissingPermissions):
        return "You need the " + ", ".join(p.replace("_", " ").title() for p in error.missing_permissions) + " permission for that."
    if isinstance(error, commands.BotMissingPermissions | app_commands.BotMissingPermissions):
        return "I need the " + ", ".join(p.replace("_", " ").title() for p in error.missing_permissions) + " permission for that."
    if isinstance(error, commands.CheckFailure | app_commands.CheckFailure):
        # Our own checks carry a message meant for the user; discord.py's generic one does not.
        text = str(error)
        return text if text and not text.startswith("The check functions") else "You can't use that command here."
    if isinstance(error, commands.UserInputError):
        usage = ""
        if ctx is not None and ctx.command is not None:
            prefix = "/" if ctx.interaction is not None else ctx.clean_prefix
            syntax = f"{prefix}{ctx.command.qualified_name} {ctx.command.signature}".strip()
            usage = f"\nUsage: `{syntax}`"
        return f"{escape(str(error))}{usage}"
    if isinstance(error, app_commands.TransformerError):
        return escape(str(error))
    return None


def _unwrap(error: BaseException) -> BaseException:
    # CommandInvokeError, HybridCommandError and app_commands.CommandInvokeError wrap the real one.
    while isinstance(error, (commands.CommandInvokeError, commands.HybridCommandError, app_commands.CommandInvokeError)):
        error = error.original
    return error


class ErrorHandler(commands.Cog):
    def __init__(self, bot: QuoteBot) -> None:
        self.bot = bot

    async def cog_load(self) -> None:
        # Hybrid commands report through on_command_error on both paths; pure app commands
        # (if any are added) report through the tree.
        self._previous_tree_handler = self.bot.tree.on_error
        self.bot.tree.on_error = self.on_app_command_error

    async def cog_unload(self) -> None:
        self.bot.tree.on_error = self._previous_tree_handler  # type: ignore[method-assign]

    @commands.Cog.listener()
    async def on_command_error(self, ctx: commands.Context[QuoteBot], error: commands.CommandError) -> None:
        if isinstance(error, commands.CommandNotFound):
            return
        original = _unwrap(error)
        text = user_message(ctx, original) if isinstance(original, Exception) else None
        if text is None:
            if isinstance(original, discord.Forbidden):
                # Missing permissions in a channel: nothing to apologise through, and not a bug.
                log.warning("Forbidden while running %s in channel %s: %s", ctx.command, ctx.channel.id, original)
                return
            reference = new_reference()
            log.error(
                "Command %s failed [ref %s] (user %s, guild %s)",
                ctx.command and ctx.command.qualified_name,
                reference,
                ctx.author.id,
                ctx.guild and ctx.guild.id,
                exc_info=original,
            )
            text = f"Sorry, something went wrong on my side (reference `{reference}`)."
        await send_reply(ctx, message_reply(text), ephemeral=True)

    async def on_app_command_error(self, interaction: discord.Interaction, error: app_commands.AppCommandError) -> None:
        original = _unwrap(error)
        text = user_message(None, original) if isinstance(original, Exception) else None
        if text is None:
            reference = new_reference()
            log.error(
                "App command %s failed [ref %s]",
                interaction.command and interaction.command.qualified_name,
                reference,
                exc_info=original,
            )
            text = f"Sorry, something went wrong on my side (reference `{reference}`)."
        reply = message_reply(text)
        try:
            if interaction.response.is_done():
                await interaction.followup.send(**reply.kwargs(), ephemeral=True)
            else:
                await interaction.response.send_message(**reply.kwargs(), ephemeral=True)
        except discord.HTTPException:
            log.exception("Could not report an app command error")


async def setup(bot: QuoteBot) -> None:
    await bot.add_cog(ErrorHandler(bot))
