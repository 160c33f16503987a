"""The buttons under an answer: More, Context, Helpful and Not helpful.

Each button is a `discord.ui.DynamicItem`: its custom_id names the answer record and the message
of the answer it sits on (`qb:more:12:0`), and the items are registered with the bot when this
extension loads (from `setup_hook`), so a click on a button sent before a restart still finds
its handler. What a button needs beyond the id (the question, the quoted sentences) is in the
answer record (`bot.core.feedback`).
"""
from __future__ import annotations

import logging
import re
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import discord

from bot.core.feedback import AnswerRecord, Page

from .channels import mark_resolved
from .errors import new_reference, user_message
from .rendering import answer_reply, context_reply, message_reply

if TYPE_CHECKING:
    from bot.discord_bot import QuoteBot

log = logging.getLogger(__name__)

GONE = "That answer is too old for its buttons; ask again."


def answer_view(answer_id: int, page: Page) -> discord.ui.View:
    """The buttons for one message of an answer (persistent: no timeout)."""
    return _view(answer_id, page.number, more=page.has_more)


def _view(answer_id: int, number: int, *, more: bool) -> discord.ui.View:
    view = discord.ui.View(timeout=None)
    view.add_item(MoreButton(answer_id, number, disabled=not more))
    view.add_item(ContextButton(answer_id, number))
    view.add_item(VoteButton(answer_id, True))
    view.add_item(VoteButton(answer_id, False))
    return view


def _bot(interaction: discord.Interaction) -> QuoteBot:
    return interaction.client  # type: ignore[return-value]


async def _say(interaction: discord.Interaction, text: str) -> None:
    """A short ephemeral reply, as the response or, once responded, as a follow-up."""
    reply = message_reply(text)
    if interaction.response.is_done():
        await interaction.followup.send(**reply.kwargs(), ephemeral=True)
    else:
        await interaction.response.send_message(**reply.kwargs(), ephemeral=True)


async def _record(interaction: discord.Interaction, answer_id: int) -> AnswerRecord | None:
    record = await _bot(interaction).feedback.get(answer_id)
    if record is None:
        await _say(interaction, GONE)
    return record


async def _guarded(interaction: discord.Interaction, custom_id: str, clicked: Callable[[discord.Interaction], Awaitable[None]]) -> None:
    """Errors in a button become a short ephemeral reply (or an apology with a log reference),
    as for commands, instead of Discord's bare "This interaction failed"."""
    try:
        await clicked(interaction)
    except Exception as exc:
        text = user_message(None, exc)
        if text is None:
            reference = new_reference()
            log.error("Button %s failed [ref %s]", custom_id, reference, exc_info=exc)
            text = f"Sorry, something went wrong on my side (reference `{reference}`)."
        try:
            await _say(interaction, text)
        except discord.HTTPException:
            log.exception("Could not report a button error")


class MoreButton(discord.ui.DynamicItem[discord.ui.Button[Any]], template=r"qb:more:(?P<answer_id>[0-9]{1,19}):(?P<page>[0-9]{1,2})"):
    """The next passages for the same question, as a new message under this one (this
    message's More is then disabled). Disabled when the answer has nothing more."""

    def __init__(self, answer_id: int, page: int, *, disabled: bool = False) -> None:
        super().__init__(
            discord.ui.Button(
                label="More",
                emoji="➕",
                style=discord.ButtonStyle.secondary,
                custom_id=f"qb:more:{answer_id}:{page}",
                disabled=disabled,
            )
        )
        self.answer_id = answer_id
        self.page = page

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction, item: discord.ui.Item[Any], match: re.Match[str], /
    ) -> MoreButton:
        return cls(int(match["answer_id"]), int(match["page"]))

    async def callback(self, interaction: discord.Interaction) -> None:  # type: ignore[override]
        await _guarded(interaction, self.custom_id, self.clicked)

    async def clicked(self, interaction: discord.Interaction) -> None:
        feedback = _bot(interaction).feedback
        spent = _view(self.answer_id, self.page, more=False)
        # Two clicks at once must not both add "the next page".
        async with feedback.more_lock:
            record = await _record(interaction, self.answer_id)
            if record is None:
                return
            if len(record.pages) > self.page + 1:
                # Someone already asked for more from this message.
                await interaction.response.edit_message(view=spent)
                await _say(interaction, "The next passages are already shown below this answer.")
                return
            await interaction.response.defer()
            page = await feedback.more(record)
        await interaction.edit_original_response(view=spent)
        if page is None:
            await _say(interaction, "No more passages answer that question.")
            return
        reply = answer_reply(page.answer)
        await interaction.followup.send(**reply.kwargs(), view=answer_view(self.answer_id, page))


class ContextButton(discord.ui.DynamicItem[discord.ui.Button[Any]], template=r"qb:ctx:(?P<answer_id>[0-9]{1,19}):(?P<page>[0-9]{1,2})"):
    """The quoted sentences of this message with the sentences around them, for the clicker only."""

    def __init__(self, answer_id: int, page: int) -> None:
        super().__init__(
            discord.ui.Button(
                label="Context", emoji="📖", style=discord.ButtonStyle.secondary, custom_id=f"qb:ctx:{answer_id}:{page}"
            )
        )
        self.answer_id = answer_id
        self.page = page

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction, item: discord.ui.Item[Any], match: re.Match[str], /
    ) -> ContextButton:
        return cls(int(match["answer_id"]), int(match["page"]))

    async def callback(self, interaction: discord.Interaction) -> None:  # type: ignore[override]
        await _guarded(interaction, self.custom_id, self.clicked)

    async def clicked(self, interaction: discord.Interaction) -> None:
        record = await _record(interaction, self.answer_id)
        if record is None:
            return
        feedback = _bot(interaction).feedback
        contexts = await feedback.context(record, self.page)
        reply = context_reply(contexts)
        await interaction.response.send_message(**reply.kwargs(), ephemeral=True)


class VoteButton(discord.ui.DynamicItem[discord.ui.Button[Any]], template=r"qb:vote:(?P<answer_id>[0-9]{1,19}):(?P<vote>up|down)"):
    """Helpful / Not helpful: one vote per answer and member, changeable; the reply is private."""

    def __init__(self, answer_id: int, helpful: bool) -> None:
        super().__init__(
            discord.ui.Button(
                label="Helpful" if helpful else "Not helpful",
                emoji="👍" if helpful else "👎",
                style=discord.ButtonStyle.success if helpful else discord.ButtonStyle.secondary,
                custom_id=f"qb:vote:{answer_id}:{'up' if helpful else 'down'}",
            )
        )
        self.answer_id = answer_id
        self.helpful = helpful

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction, item: discord.ui.Item[Any], match: re.Match[str], /
    ) -> VoteButton:
        return cls(int(match["answer_id"]), match["vote"] == "up")

    async def callback(self, interaction: discord.Interaction) -> None:  # type: ignore[override]
        await _guarded(interaction, self.custom_id, self.clicked)

    async def clicked(self, interaction: discord.Interaction) -> None:
        vote = await _bot(interaction).feedback.vote(self.answer_id, interaction.user.id, self.helpful)
        if vote is None:
            await _say(interaction, GONE)
            return
        word = "helpful" if vote.helpful else "not helpful"
        if vote.previous is None:
            text = f"Thanks: you marked this answer {word}."
        elif vote.previous == vote.helpful:
            text = f"You had already marked this answer {word}."
        else:
            text = f"Changed: you now mark this answer {word}."
        text += f" ({vote.helpful_count} helpful, {vote.not_helpful_count} not helpful so far.)"
        # The asker's Helpful resolves their question, as their 👍 on the answer does.
        if vote.helpful and await mark_resolved(_bot(interaction), interaction.user.id, answer_id=self.answer_id):
            text += " Your question is marked resolved."
        await _say(interaction, text)


DYNAMIC_ITEMS = (MoreButton, ContextButton, VoteButton)


async def setup(bot: QuoteBot) -> None:
    bot.add_dynamic_items(*DYNAMIC_ITEMS)


async def teardown(bot: QuoteBot) -> None:
    bot.remove_dynamic_items(*DYNAMIC_ITEMS)
