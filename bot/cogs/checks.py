"""Who may manage articles, checked at run time on every path (prefix and slash alike)."""
from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, TypeVar

import discord
from discord import app_commands
from discord.ext import commands

if TYPE_CHECKING:
    from bot.discord_bot import QuoteBot

T = TypeVar("T")


class NotManager(commands.CheckFailure):
    """The member may not manage articles; the message is shown to them."""


async def is_manager(ctx: commands.Context[QuoteBot]) -> bool:
    """The bot owner anywhere; in a server, Manage Server or one of the configured manager roles."""
    # ctx.permissions is the interaction's resolved permissions on the slash path and the
    # channel's computed permissions on the prefix path.
    return await may_manage(ctx.bot, ctx.author, ctx.guild, ctx.permissions)


async def may_manage(
    bot: QuoteBot, user: discord.abc.User, guild: discord.Guild | None, permissions: discord.Permissions
) -> bool:
    """is_manager for what has no Context (an autocomplete interaction)."""
    if await bot.is_owner(user):  # type: ignore[arg-type]
        return True
    if guild is None:
        return False
    if permissions.manage_guild:
        return True
    manager_roles = set(bot.settings.manager_role_ids)
    roles = getattr(user, "roles", ())
    return bool(manager_roles) and any(role.id in manager_roles for role in roles)


def manager_only() -> Callable[[T], T]:
    """The manager check plus `default_permissions(manage_guild=True)`, in one decorator.

    default_permissions only decides who *sees* the slash command by default (server admins can
    change it under Integrations, e.g. for a manager role without Manage Server); the check is
    what enforces, on the prefix path too. Put it on every subcommand: the slash path of a
    hybrid subcommand does not run its group's checks.
    """

    async def predicate(ctx: commands.Context[QuoteBot]) -> bool:
        if await is_manager(ctx):
            return True
        where = "here" if ctx.guild is not None else "in direct messages (only the bot owner can)"
        raise NotManager(f"You can't manage articles {where}: that needs the Manage Server permission or a manager role.")

    def decorator(func: T) -> T:
        commands.check(predicate)(func)
        app_commands.default_permissions(manage_guild=True)(func)
        return func

    return decorator

