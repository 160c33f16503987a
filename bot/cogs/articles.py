"""The `/article` group (and `!article ...`): managers add, remove, list and show articles.

Scopes: an article added in a server belongs to that server (answered only there); its
managers list, show and remove that server's articles, and list and show (not remove) the
global ones (the shipped corpus), which answer everywhere and are marked "global". Only the bot
owner removes global articles, and in direct messages only the owner can use these commands,
on the global scope.

`show` and `remove` complete article ids and titles as the manager types (slash path);
`search` finds articles by title on both paths.
"""
from __future__ import annotations

import logging
import math
from pathlib import PurePath
from typing import TYPE_CHECKING

import discord
from discord import app_commands
from discord.ext import commands
from discord.ext.commands.view import StringView, _quotes

# The quotes discord.py accepts around an argument ("...", “...”, «...», ...).
_OPENING_QUOTES = frozenset(_quotes)

from bot.core.articles import GLOBAL_SCOPE, ArticleError
from bot.core.importers import Metadata
from bot.core.library import ImportSummary

from .checks import manager_only, may_manage
from .help import help_reply
from .rendering import (
    article_list_reply,
    article_reply,
    article_search_reply,
    fit,
    import_reply,
    one_line,
    removed_reply,
    send_reply,
)
from .stats import send_gaps

if TYPE_CHECKING:
    from bot.discord_bot import QuoteBot

log = logging.getLogger(__name__)

ATTACHMENT_SUFFIXES = frozenset({".txt", ".md", ".markdown", ".html", ".htm", ".jsonl"})
PER_PAGE = 10
SEARCH_RESULTS = 20
CHOICES_LIMIT = 25  # Discord's limit on autocomplete choices
CHOICE_NAME_LIMIT = 100
IMPORT_WINDOW_SECONDS = 3600.0


class AddFlags(commands.FlagConverter, prefix="--", delimiter=" "):
    """`!article add <text> --title ... --source ... --url ... --published ...`; on the slash
    path each flag is its own option."""

    text: str | None = commands.flag(default=None, positional=True, description="The article text, pasted")
    url: str | None = commands.flag(
        default=None, description="A page to fetch; with text or a file, the article's link instead"
    )
    title: str | None = commands.flag(default=None, description="Title (overrides the parsed one)")
    source: str | None = commands.flag(default=None, description="Publisher (overrides the parsed one)")
    published: str | None = commands.flag(default=None, description="Publication date, e.g. 2014-03-27")

    @classmethod
    def parse_flags(cls, argument: str, *, ignore_extra: bool = True) -> dict[str, list[str]]:
        """discord.py's parse, then a quoted value (`--title "Ferry times"`) is read the way
        discord.py reads a quoted argument, and what follows its closing quote is article text:
        flags may come before the text, after it, or both."""
        values = super().parse_flags(argument, ignore_extra=ignore_extra)
        text = values.pop("text", [])
        for name, given in values.items():
            for i, value in enumerate(given):
                if value[:1] in _OPENING_QUOTES:
                    view = StringView(value)
                    given[i] = view.get_quoted_word() or ""
                    if rest := view.read_rest().strip():
                        text.append(rest)
        if text:
            values["text"] = ["\n".join(text)]
        return values


def _import_cooldown(ctx: commands.Context[QuoteBot]) -> commands.Cooldown | None:
    # Per manager per hour, from settings; the owner is not limited.
    if ctx.bot.owner_id is not None and ctx.author.id == ctx.bot.owner_id:
        return None
    return commands.Cooldown(ctx.bot.settings.imports_per_admin_per_hour, IMPORT_WINDOW_SECONDS)


class Articles(commands.Cog):
    def __init__(self, bot: QuoteBot) -> None:
        self.bot = bot

    async def _managed_scopes(self, guild: discord.Guild | None, user: discord.abc.User) -> list[int]:
        """The scopes this member may remove from (the check already let them in)."""
        scopes = [guild.id] if guild is not None else []
        if await self.bot.is_owner(user):  # type: ignore[arg-type]
            scopes.append(GLOBAL_SCOPE)
        return scopes

    @staticmethod
    def _visible_scopes(guild: discord.Guild | None) -> list[int]:
        """The scopes a manager lists and shows: what answers where they are."""
        return [guild.id, GLOBAL_SCOPE] if guild is not None else [GLOBAL_SCOPE]

    @commands.hybrid_group(name="article", invoke_without_command=True)
    @manager_only()
    async def article(self, ctx: commands.Context[QuoteBot]) -> None:
        """Manage the articles the bot quotes from."""
        # help_command is off (bot.cogs.help): the help card names every article command.
        await send_reply(ctx, help_reply("/" if ctx.interaction else ctx.clean_prefix, manager=True))

    @article.command(name="add", cooldown_after_parsing=True)
    @manager_only()
    @commands.dynamic_cooldown(_import_cooldown, commands.BucketType.user)
    @app_commands.describe(file="A .txt, .md, .html or .jsonl file")
    async def add(
        self, ctx: commands.Context[QuoteBot], file: discord.Attachment | None = None, *, flags: AddFlags
    ) -> None:
        """Store an article: pasted text, an attached file, or a url to fetch."""
        text = flags.text.strip() if flags.text and flags.text.strip() else None
        if file is None and ctx.message.attachments:
            file = ctx.message.attachments[0]
        given = [name for name, value in (("text", text), ("a file", file)) if value is not None]
        if len(given) > 1:
            raise commands.BadArgument("Give the article as text or as a file, not both.")
        if not given and not flags.url:
            raise commands.BadArgument("Give the article text, attach a file, or give a url to fetch.")
        await ctx.defer()
        scope = ctx.guild.id if ctx.guild is not None else GLOBAL_SCOPE
        added_by = str(ctx.author.id)
        # With text or a file, --url is the article's link; alone it is the page to fetch.
        meta = Metadata(
            title=flags.title, source=flags.source, url=flags.url if given else None, published=flags.published
        )
        summary: ImportSummary
        if file is not None:
            summary = await self._add_attachment(file, scope, added_by, meta)
        elif text is not None:
            summary = await self.bot.library.add_bytes(text.encode(), "pasted.txt", scope=scope, added_by=added_by, meta=meta)
        else:
            assert flags.url is not None
            summary = await self.bot.library.add_url(
                flags.url,
                scope=scope,
                added_by=added_by,
                policy=self.bot.fetch_policy,
                meta=meta,
                session=self.bot.http_session,
            )
        for added in summary.added:
            log.info("Article %d added to scope %d by %s", added.article.id, scope, added_by)
        await send_reply(ctx, import_reply(summary))

    async def _add_attachment(self, file: discord.Attachment, scope: int, added_by: str, meta: Metadata) -> ImportSummary:
        suffix = PurePath(file.filename).suffix.lower()
        if suffix not in ATTACHMENT_SUFFIXES:
            raise commands.BadArgument(f"Attach a .txt, .md, .html or .jsonl file, not {suffix or 'a file without extension'}.")
        limit = self.bot.settings.max_article_bytes
        # Refused before downloading: the attachment's size is known from the message.
        if file.size > limit:
            raise commands.BadArgument(f"{file.filename} is {file.size:,} bytes; the limit is {limit:,}.")
        data = await file.read()
        return await self.bot.library.add_bytes(data, file.filename, scope=scope, added_by=added_by, meta=meta)

    @article.command(name="remove")
    @manager_only()
    @app_commands.describe(article_id="The article's id (see /article list)")
    async def remove(self, ctx: commands.Context[QuoteBot], article_id: int) -> None:
        """Remove an article; it stops answering at once."""
        await ctx.defer()
        info = await self.bot.library.get(article_id, scopes=self._visible_scopes(ctx.guild))
        if info.scope == GLOBAL_SCOPE and not await self.bot.is_owner(ctx.author):
            raise ArticleError(
                f"Article {article_id} is a global article: it ships with the bot and answers in every "
                "server, so it can't be removed from one. Only the bot owner can remove it."
            )
        info = await self.bot.library.remove(article_id, scopes=await self._managed_scopes(ctx.guild, ctx.author))
        log.info("Article %d removed from scope %d by %s", info.id, info.scope, ctx.author.id)
        await send_reply(ctx, removed_reply(info))

    @article.command(name="list")
    @manager_only()
    @app_commands.describe(page="Page number, 1 for the newest articles")
    async def list_(self, ctx: commands.Context[QuoteBot], page: commands.Range[int, 1, 100_000] = 1) -> None:
        """List the stored articles, newest first."""
        await ctx.defer()
        scopes = self._visible_scopes(ctx.guild)
        total = await self.bot.library.count(scopes=scopes)
        pages = max(1, math.ceil(total / PER_PAGE))
        infos = await self.bot.library.list(scopes=scopes, page=page, per_page=PER_PAGE)
        hint = f"Next: {'/' if ctx.interaction else ctx.clean_prefix}article list {page + 1}"
        await send_reply(ctx, article_list_reply(infos, page, pages, total, hint))

    @article.command(name="show")
    @manager_only()
    @app_commands.describe(article_id="The article's id (see /article list)")
    async def show(self, ctx: commands.Context[QuoteBot], article_id: int) -> None:
        """Show an article's details and first sentences."""
        await ctx.defer()
        info = await self.bot.library.get(article_id, scopes=self._visible_scopes(ctx.guild))
        first = await self.bot.library.first_sentences(info.id, 3)
        dropped = await self.bot.library.dropped_lines(info.id)
        await send_reply(ctx, article_reply(info, first, dropped))

    @article.command(name="search")
    @manager_only()
    @app_commands.describe(text="Words from the title, e.g. ferry")
    async def search(self, ctx: commands.Context[QuoteBot], *, text: commands.Range[str, 1, 100]) -> None:
        """Find articles by title, newest first."""
        await ctx.defer()
        found = await self.bot.library.find(text, scopes=self._visible_scopes(ctx.guild), limit=SEARCH_RESULTS + 1)
        await send_reply(ctx, article_search_reply(found[:SEARCH_RESULTS], text, more=len(found) > SEARCH_RESULTS))

    @show.autocomplete("article_id")
    async def _complete_visible(self, interaction: discord.Interaction, current: str) -> list[app_commands.Choice[int]]:
        return await self._choices(interaction, current, removable=False)

    @remove.autocomplete("article_id")
    async def _complete_removable(self, interaction: discord.Interaction, current: str) -> list[app_commands.Choice[int]]:
        return await self._choices(interaction, current, removable=True)

    async def _choices(
        self, interaction: discord.Interaction, current: str, *, removable: bool
    ) -> list[app_commands.Choice[int]]:
        """Articles whose id starts with, or whose title contains, what was typed. Offered only to
        managers: checks do not run for autocomplete, and titles are not for everyone."""
        if not await may_manage(self.bot, interaction.user, interaction.guild, interaction.permissions):
            return []
        if removable:
            scopes = await self._managed_scopes(interaction.guild, interaction.user)
        else:
            scopes = self._visible_scopes(interaction.guild)
        found = await self.bot.library.find(current, scopes=scopes, limit=CHOICES_LIMIT)
        return [
            app_commands.Choice(
                name=fit(f"{info.id} · {one_line(info.title)}{' (global)' if info.scope == GLOBAL_SCOPE else ''}", CHOICE_NAME_LIMIT, render=lambda s: s),
                value=info.id,
            )
            for info in found
        ]

    @article.command(name="gaps")
    @commands.guild_only()
    @manager_only()
    async def gaps(self, ctx: commands.Context[QuoteBot]) -> None:
        """The questions asked here that no article answered, most asked first."""
        await send_gaps(ctx)


async def setup(bot: QuoteBot) -> None:
    await bot.add_cog(Articles(bot))
