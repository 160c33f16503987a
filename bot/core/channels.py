"""Where the bot speaks: a mode per channel (or forum), set by the server's managers.

- `always`: every message that looks like a question is answered (in a forum: every new post,
  in its thread); nothing is said when nothing answers, so conversation is not interrupted.
- `confident`: the same, but only answers the bot is confident of are sent.
- `mention`: only when asked (a mention, `/ask`, `!ask`).
- `off`: the bot answers nothing there unasked, not even a mention; commands still work.

A thread follows its parent channel's mode. A channel with no mode stored follows the
environment's `QUOTEBOT_ANSWER_CHANNEL_IDS` (listed: `always`; not listed: `mention`).
"""
from __future__ import annotations

import asyncio
import enum
import time
from collections.abc import Collection

from .answers import Answer
from .questions import iso_stamp, utc_now
from .storage import ArticleStore
from .tokens import tokenize

# How long a server's modes are trusted from memory: another process sharing the database
# (or a manager's change made there) is seen within this time.
CACHE_SECONDS = 60.0
# An answer is "confident" from this confidence up (see `answer_confidence`).
CONFIDENT_AT = 0.75


class ChannelMode(str, enum.Enum):
    ALWAYS = "always"
    CONFIDENT = "confident"
    MENTION = "mention"
    OFF = "off"

    @property
    def answers_unasked(self) -> bool:
        return self in (ChannelMode.ALWAYS, ChannelMode.CONFIDENT)


def answer_confidence(answer: Answer) -> float:
    """How sure the bot is of `answer`, in [0, 1]. A calibrated `answer.confidence` is used
    when the Answer carries one; otherwise the share of the question's words that the best
    passage contains (every passage already covers most of the question's weight, or the
    library would have declined)."""
    calibrated = getattr(answer, "confidence", None)
    if calibrated is not None:
        return float(calibrated)
    if not answer.passages or not answer.terms:
        return 0.0
    found = set(tokenize(answer.passages[0].text)) & answer.terms
    return len(found) / len(answer.terms)


def is_confident(answer: Answer) -> bool:
    return answer.answered and answer_confidence(answer) >= CONFIDENT_AT


class ChannelModes:
    def __init__(self, store: ArticleStore) -> None:
        self.store = store
        self._cache: dict[int, tuple[float, dict[int, ChannelMode]]] = {}
        self._loading: dict[int, asyncio.Lock] = {}
        # Bumped by every change made here: a read that started before it is not cached.
        self._changes = 0

    async def set(self, guild_id: int, channel_id: int, mode: ChannelMode, *, set_by: str | None) -> None:
        await self.store.write(
            (
                "INSERT INTO channel_modes (channel_id, guild_id, mode, set_by, set_at) VALUES (?, ?, ?, ?, ?)"
                " ON CONFLICT (channel_id) DO UPDATE SET mode = excluded.mode, set_by = excluded.set_by,"
                " set_at = excluded.set_at",
                (channel_id, guild_id, mode.value, set_by, iso_stamp(utc_now())),
            )
        )
        self._changes += 1
        self._cache.pop(guild_id, None)

    async def stored(self, guild_id: int) -> dict[int, ChannelMode]:
        """The modes a server's managers set: channel id -> mode."""
        cached = self._cache.get(guild_id)
        if cached is not None and time.monotonic() - cached[0] < CACHE_SECONDS:
            return cached[1]
        async with self._loading.setdefault(guild_id, asyncio.Lock()):
            cached = self._cache.get(guild_id)
            if cached is not None and time.monotonic() - cached[0] < CACHE_SECONDS:
                return cached[1]
            changes = self._changes
            rows = await self.store.read("SELECT channel_id, mode FROM channel_modes WHERE guild_id = ?", (guild_id,))
            modes = {channel_id: ChannelMode(mode) for channel_id, mode in rows}
            if changes == self._changes:
                self._cache[guild_id] = (time.monotonic(), modes)
            return modes

    async def mode_for(
        self, guild_id: int, channel_id: int, parent_id: int | None = None, *, default_always: Collection[int] = ()
    ) -> ChannelMode:
        """The mode of a channel, or of a thread (its own if set, else its parent's). Unset:
        `always` in the `default_always` channels (the environment's), else `mention`."""
        modes = await self.stored(guild_id)
        for cid in (channel_id, parent_id):
            if cid is not None and cid in modes:
                return modes[cid]
        if channel_id in default_always or (parent_id is not None and parent_id in default_always):
            return ChannelMode.ALWAYS
        return ChannelMode.MENTION
