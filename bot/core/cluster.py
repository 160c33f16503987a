"""Many bot processes over one database: which servers a process holds, and spacing logins.

A process runs some of the bot's Discord shards. It answers only the servers on them, so its
index holds only their articles plus the global ones (DMs are answered from the global scope).
Discord's rule for a server's shard is `(guild_id >> 22) % shard_count`.

Gateway logins (IDENTIFY) are limited per "bucket" (`shard_id % max_concurrency`) to one
every 5 seconds, across every process of the bot. discord.py spaces the shards of one process;
`LoginGate` spaces those of all processes with a PostgreSQL advisory lock per bucket.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .articles import GLOBAL_SCOPE

if TYPE_CHECKING:
    import asyncpg

log = logging.getLogger(__name__)

# Discord: one IDENTIFY per bucket every 5 s; held a little longer for clock and network slack.
IDENTIFY_SPACING_SECONDS = 5.5
# First key of the advisory locks (pg_advisory_lock(int, int)); the second is the bucket.
# Any fixed number other applications on the database do not use ("QB").
LOGIN_LOCK_CLASS = 0x5142


def shard_of(guild_id: int, shard_count: int) -> int:
    """The shard Discord sends a server's events to."""
    return (guild_id >> 22) % shard_count


@dataclass(frozen=True, slots=True)
class Shards:
    """The shards one process runs, out of `count`."""

    ids: tuple[int, ...]
    count: int

    def __post_init__(self) -> None:
        if self.count < 1:
            raise ValueError("The shard count must be at least 1.")
        if not self.ids:
            raise ValueError("A process must run at least one shard.")
        bad = [i for i in self.ids if not 0 <= i < self.count]
        if bad:
            raise ValueError(f"Shard ids must be from 0 to {self.count - 1}; got {bad}.")

    @classmethod
    def of(cls, ids: Iterable[int], count: int) -> Shards:
        return cls(tuple(sorted(set(ids))), count)

    def holds(self, scope: int) -> bool:
        """Whether this process answers questions over `scope` (the global one, or a server's)."""
        return scope == GLOBAL_SCOPE or shard_of(scope, self.count) in self.ids

    @property
    def name(self) -> str:
        """For file names and logs: `shards-0-2-of-4`."""
        return f"shards-{'-'.join(map(str, self.ids))}-of-{self.count}"


class LoginGate:
    """Spaces gateway logins across processes: before a shard identifies, take the advisory
    lock of its bucket and hold it IDENTIFY_SPACING_SECONDS after. Each hold is a connection of
    its own (a session lock is its connection's), closed when released; a process that dies
    drops its connection, and with it the lock."""

    def __init__(self, dsn: str, *, spacing: float = IDENTIFY_SPACING_SECONDS) -> None:
        self._dsn = dsn
        self._spacing = spacing
        self._holds: set[asyncio.Task[None]] = set()

    async def before_identify(self, shard_id: int, max_concurrency: int) -> None:
        """Returns when shard `shard_id` may identify; the bucket stays locked for the spacing."""
        import asyncpg

        bucket = shard_id % max(max_concurrency, 1)
        try:
            conn = await asyncpg.connect(self._dsn, server_settings={"application_name": "quotebot-login"})
        except (OSError, asyncio.TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            # The database is away: log in anyway after the spacing (Discord may then refuse a
            # login that collides with another process's, and discord.py tries it again).
            log.warning("Cannot take the login lock (%s); waiting %.1f s instead", type(exc).__name__, self._spacing)
            await asyncio.sleep(self._spacing)
            return
        try:
            await conn.execute("SELECT pg_advisory_lock($1, $2)", LOGIN_LOCK_CLASS, bucket)
        except BaseException:
            await _close(conn)
            raise
        log.debug("Shard %d may identify (login bucket %d)", shard_id, bucket)
        task = asyncio.get_running_loop().create_task(self._release_later(conn))
        self._holds.add(task)
        task.add_done_callback(self._holds.discard)

    async def _release_later(self, conn: asyncpg.Connection) -> None:
        try:
            await asyncio.sleep(self._spacing)
        finally:
            await _close(conn)  # closing the session releases its lock

    async def close(self) -> None:
        for task in list(self._holds):
            task.cancel()
        await asyncio.gather(*self._holds, return_exceptions=True)


async def _close(conn: asyncpg.Connection) -> None:
    with contextlib.suppress(Exception):
        await asyncio.shield(conn.close(timeout=2))
