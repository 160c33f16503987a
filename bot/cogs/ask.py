"""Asking: `/ask` and `!ask` (one hybrid command), a mention of the bot followed by a question,
a direct message, channels where the bot answers unasked, and the message context menu "Ask
Quotebot" (right-click a message: its text is the question). All of them share one per-user
cooldown. An answer that quotes something comes with buttons (`answer_view`).

In a server the answer comes from that server's articles and the global ones; in direct
messages from the global ones only (`Library.ask` restricts by `guild_id`).

Where the bot answers unasked is each channel's mode (`/channel mode`, `bot.core.channels`):
`_unasked` decides, `_after_answer` logs the question and remembers who asked."""
from __future__ import annotations

import contextlib
import logging
import re
from types import SimpleNamespace
from typing import TYPE_CHECKING

import discord
from discord import app_commands
from discord.ext import commands

from bot.core.answers import Answer, QuestionError
from bot.core.channels import ChannelMode, is_confident
from bot.core.storage import StoreError

from .answer_view import answer_view
from .rendering import answer_reply, message_reply, send_reply

if TYPE_CHECKING:
    from bot.discord_bot import QuoteBot

log = logging.getLogger(__name__)

_QUESTION_WORDS = frozenset(
    "who whom whose what when where why how which is are was were do does did can could should would will has have".split()
)
_FIRST_WORD = re.compile(r"[A-Za-z']+")


def looks_like_question(text: str) -> bool:
    """For auto-answer channels: a question mark, or a question word opening a few words."""
    text = text.strip()
    if len(text) < 8 or text.startswith(("http://", "https://")):
        return False
    if text.endswith("?"):
        return True
    first = _FIRST_WORD.match(text)
    return first is not None and first.group().lower() in _QUESTION_WORDS and len(text.split()) >= 4


class Ask(commands.Cog):
    def __init__(self, bot: QuoteBot) -> None:
        self.bot = bot
        settings = bot.settings
        self._cooldown: commands.CooldownMapping | None = None
        if settings.ask_cooldown_seconds > 0:
            self._cooldown = commands.CooldownMapping.from_cooldown(
                settings.ask_cooldown_rate, settings.ask_cooldown_seconds, commands.BucketType.user
            )
        # Channels answered unasked when their managers set no mode.
        self._answer_channels = frozenset(settings.answer_channel_ids)
        # Context menus cannot be declared inside a cog: made here, added to the tree, removed on unload.
        self._menu = app_commands.ContextMenu(name="Ask Quotebot", callback=self.ask_about_message)
        bot.tree.add_command(self._menu)

    async def cog_unload(self) -> None:
        self.bot.tree.remove_command(self._menu.name, type=self._menu.type)

    def _take_ask(self, source: commands.Context | discord.Message | SimpleNamespace) -> commands.CommandOnCooldown | None:
        """Take one of the user's asks; the cooldown error if they have none left."""
        if self._cooldown is None:
            return None
        bucket = self._cooldown.get_bucket(source)
        retry = bucket.update_rate_limit() if bucket is not None else None
        if bucket is None or retry is None:
            return None
        return commands.CommandOnCooldown(bucket, retry, commands.BucketType.user)

    @commands.hybrid_command(name="ask")
    @app_commands.describe(question="Your question, e.g. who released the footage?")
    async def ask(self, ctx: commands.Context[QuoteBot], *, question: str) -> None:
        """Answer a question with quotes from the stored articles."""
        on_cooldown = self._take_ask(ctx)
        if on_cooldown is not None:
            raise on_cooldown
        # On the slash path this defers first (Discord allows 3 seconds before the first reply);
        # on the prefix path it shows "Quotebot is typing…" while the answer is composed.
        async with ctx.typing():
            page, answer_id = await self.bot.feedback.ask(
                question, guild_id=ctx.guild.id if ctx.guild else None, asker_id=ctx.author.id
            )
        sent = await send_reply(ctx, answer_reply(page.answer), view=answer_view(answer_id, page) if answer_id else None)
        await self._after_answer(ctx.guild, ctx.channel, page.answer, answer_id, sent)

    async def ask_about_message(self, interaction: discord.Interaction, message: discord.Message) -> None:
        """"Ask Quotebot" on a message: its text answered as a question, in a reply to it. The
        message's text comes with the interaction, so no Message Content intent is needed."""
        question = message.content.strip()
        if not question:
            await interaction.response.send_message(
                **message_reply("That message has no text to answer.").kwargs(), ephemeral=True
            )
            return
        on_cooldown = self._take_ask(SimpleNamespace(author=interaction.user))
        if on_cooldown is not None:
            text = f"Slow down: try again in {max(1, round(on_cooldown.retry_after))} s."
            await interaction.response.send_message(**message_reply(text).kwargs(), ephemeral=True)
            return
        await interaction.response.defer(ephemeral=True, thinking=True)
        try:
            page, answer_id = await self.bot.feedback.ask(question, guild_id=interaction.guild_id, asker_id=interaction.user.id)
        except QuestionError as exc:
            await interaction.followup.send(**message_reply(str(exc)).kwargs(), ephemeral=True)
            return
        reply = answer_reply(page.answer)
        view = answer_view(answer_id, page) if answer_id else None
        sent = await send_reply(message, reply, view=view)
        if sent is not None:
            await interaction.followup.send(**message_reply(f"Answered: {sent.jump_url}").kwargs(), ephemeral=True)
        else:
            # No reply there (no permission to post in that channel): answer the asker instead.
            await interaction.followup.send(**reply.kwargs(), **({"view": view} if view else {}), ephemeral=True)
        await self._after_answer(interaction.guild, message.channel, page.answer, answer_id, sent)

    @commands.Cog.listener()
    async def on_message(self, message: discord.Message) -> None:
        if message.author.bot or self.bot.user is None:
            return
        mentioned = _after_mention(message.content, self.bot.user.id)
        # A direct message is addressed to the bot, like a mention (and DMs carry content without
        # the Message Content intent).
        in_dm = message.guild is None
        mode = None if in_dm else await self._mode_of(message)
        if mode is ChannelMode.OFF:
            return  # not even a mention; commands are processed apart from this listener
        in_answer_channel = mode is not None and mode.answers_unasked
        if mentioned is None and not in_dm and not in_answer_channel:
            return
        ctx = await self.bot.get_context(message)
        if ctx.command is not None:
            return  # a command (`@bot ask ...`, `!article list`): the command path answers it
        if mentioned is not None:
            await self._answer_message(message, mentioned, quiet=False)
        elif ctx.prefix is not None:
            return  # an unknown command ("!foo"): not a question
        elif in_dm:
            await self._answer_message(message, message.content, quiet=False)
        else:
            assert mode is not None
            await self._unasked(message, mode)

    # --- answering unasked (channel modes) -----------------------------------------------------

    async def _mode_of(self, message: discord.Message) -> ChannelMode:
        assert message.guild is not None
        return await self.bot.channel_modes.mode_for(
            message.guild.id,
            message.channel.id,
            getattr(message.channel, "parent_id", None),
            default_always=self._answer_channels,
        )

    async def _unasked(self, message: discord.Message, mode: ChannelMode) -> None:
        """A message in a channel answered unasked (`always` or `confident`). A new forum post
        is a question by nature: its title and text are asked (then, if that finds nothing, the
        title alone: chatter around a question dilutes it), and answered in its thread."""
        confident_only = mode is ChannelMode.CONFIDENT
        if isinstance(message.channel, discord.Thread) and message.id == message.channel.id:
            # A forum post's first message has the thread's id.
            title = message.channel.name
            question = f"{title}\n{message.content}".strip()
            limit = self.bot.library.limits.max_question_chars
            if len(question) > limit:  # a long post is still asked, by its head
                question = question[:limit].rsplit(None, 1)[0]
            also = (title,) if question != title else ()
            await self._answer_message(message, question, quiet=True, confident_only=confident_only, also=also)
        elif looks_like_question(message.content):
            await self._answer_message(message, message.content, quiet=True, confident_only=confident_only)

    async def _after_answer(
        self,
        guild: discord.Guild | None,
        channel: discord.abc.Messageable,
        answer: Answer,
        answer_id: int | None,
        sent: discord.Message | None,
        *,
        shown: bool | None = None,
    ) -> None:
        """Log the question (in a server, if the log is on; `shown`: whether a quote was shown, if
        not every answer was)
        and remember which message showed the answer, so the asker's 👍 can mark it resolved."""
        if guild is None or not answer.terms:
            return  # DMs are never logged; "only common words" is chatter, not a gap
        questions = self.bot.questions
        try:
            question_id = await questions.record(
                guild.id, getattr(channel, "id", None), answer.question, answered=answer.answered if shown is None else shown
            )
            if answer_id is not None and sent is not None and isinstance(sent.id, int):
                await questions.remember_answer(
                    sent.id, answer_id=answer_id, question_id=question_id, guild_id=guild.id, channel_id=sent.channel.id
                )
        except StoreError:
            # The member has their answer; a busy database costs only this line of the log.
            log.warning("Could not log a question in server %d", guild.id, exc_info=True)

    async def _answer_message(
        self,
        message: discord.Message,
        question: str,
        *,
        quiet: bool,
        confident_only: bool = False,
        also: tuple[str, ...] = (),
    ) -> None:
        """Answer a message. `quiet` (channels answered unasked): say nothing unless something
        answers, so the channel's ordinary conversation is not interrupted; `confident_only`:
        unless the bot is confident of the answer; `also`: other wordings to try if the
        question's answer is not shown."""
        keep = is_confident if confident_only else None
        on_cooldown = self._take_ask(message)
        if on_cooldown is not None:
            if not quiet:
                await send_reply(message, message_reply(f"Slow down: try again in {max(1, round(on_cooldown.retry_after))} s."))
            return
        if not question.strip():
            if not quiet:
                await send_reply(message, message_reply("Ask me a question after the mention, e.g. who released the footage?"))
            return
        guild_id = message.guild.id if message.guild else None
        try:
            for wording in (question, *also):
                # No "typing…" for chatter that may get no answer.
                async with contextlib.nullcontext() if quiet else message.channel.typing():
                    page, answer_id = await self.bot.feedback.ask(
                        wording, guild_id=guild_id, asker_id=message.author.id, keep=keep
                    )
                # Not answer_id: an answer whose record could not be stored (read-only library) is shown without buttons.
                shown = page.answer.answered and (keep is None or keep(page.answer))
                if shown:
                    break
        except QuestionError as exc:
            if not quiet:
                await send_reply(message, message_reply(str(exc)))
            return
        sent = None
        if shown or not quiet:
            sent = await send_reply(message, answer_reply(page.answer), view=answer_view(answer_id, page) if answer_id else None)
        await self._after_answer(message.guild, message.channel, page.answer, answer_id, sent, shown=shown)


def _after_mention(content: str, bot_id: int) -> str | None:
    """The text after a leading mention of the bot, or None if the message does not start with one."""
    for mention in (f"<@{bot_id}>", f"<@!{bot_id}>"):
        if content.startswith(mention):
            return content[len(mention) :].strip()
    return None


async def setup(bot: QuoteBot) -> None:
    await bot.add_cog(Ask(bot))
