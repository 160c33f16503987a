"""Feeds: RSS and Atom feeds a server follows, polled on a schedule; each new item's page is
fetched and imported as an article of that server.

- Polls are conditional (ETag / Last-Modified): an unchanged feed costs one "304 Not Modified".
- The feed and its pages go through the SSRF-safe fetcher (`fetch.py`), pages are imported
  as URLs are (`Library.add_url`), so the server's article limit and the content dedup apply.
- An item is known by its link: a link already imported in the server (by any of its feeds,
  or as an article with that URL) is not fetched again. A page that fails is retried on the
  next polls, `ITEM_ATTEMPTS` times in all.
- A feed that fails `FAILURES_TO_PAUSE` polls in a row is paused, and `on_paused` is called
  once (the Discord skin tells the managers). Adding it again resumes it.
- Nothing here blocks the event loop: network I/O is async, the XML is parsed in a worker
  thread, and the scheduler runs polls as tasks beside the answering.
"""
from __future__ import annotations

import asyncio
import calendar
import io
import logging
import re
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING

import feedparser

from .articles import ArticleError
from .fetch import FetchPolicy, check_url, fetch_page
from .importers import Metadata
from .library import Library
from .questions import iso_stamp, utc_now

if TYPE_CHECKING:
    import aiohttp

log = logging.getLogger(__name__)

DEFAULT_EVERY_MINUTES = 60
MIN_EVERY_MINUTES = 15
MAX_EVERY_MINUTES = 7 * 24 * 60
MAX_FEEDS_PER_SERVER = 20
# Items looked at per poll (the newest); a first poll of a long feed imports these only.
MAX_ITEMS_PER_POLL = 30
FAILURES_TO_PAUSE = 5
ITEM_ATTEMPTS = 3
# How long a process's claim on a due feed keeps other processes off it (see Feeds.claim):
# longer than a poll can take (30 items, each fetched with its own timeout).
CLAIM_MINUTES = 15

_EVERY = re.compile(r"^\s*(\d{1,6})\s*(m|min|mins|minutes?|h|hours?|d|days?)?\s*$", re.IGNORECASE)
_UNIT_MINUTES = {"m": 1, "h": 60, "d": 24 * 60}

_FEED_COLUMNS = (
    "id, guild_id, url, title, every_minutes, channel_id, added_by, added_at, etag, last_modified,"
    " last_poll, next_poll, items_added, failures, last_error, paused"
)
_SELECT_FEEDS = "SELECT " + _FEED_COLUMNS + " FROM feeds"


@dataclass(frozen=True, slots=True)
class Feed:
    id: int
    guild_id: int
    url: str
    title: str | None
    every_minutes: int
    channel_id: int | None
    added_by: str | None
    added_at: str
    etag: str | None
    last_modified: str | None
    last_poll: str | None
    next_poll: str
    items_added: int
    failures: int
    last_error: str | None
    paused: bool


@dataclass(frozen=True, slots=True)
class FeedEntry:
    link: str
    title: str | None
    published: str | None  # ISO date, e.g. 2026-11-30


@dataclass(frozen=True, slots=True)
class PollResult:
    feed: Feed  # as it is after the poll
    added: int = 0
    duplicates: int = 0
    failed: int = 0
    not_modified: bool = False
    error: str | None = None  # the feed itself could not be read
    paused_now: bool = False


@dataclass(frozen=True, slots=True)
class AddedFeed:
    feed: Feed
    items: int  # entries the feed has now
    resumed: bool  # it was followed already (and is resumed if it was paused)


def parse_every(text: str | None) -> int:
    """`30m`, `2h`, `1d` or a number of minutes -> minutes; None: the default (hourly)."""
    if text is None or not text.strip():
        return DEFAULT_EVERY_MINUTES
    match = _EVERY.match(text)
    if match is None:
        raise ArticleError("Give the interval as minutes, hours or days, e.g. 30m, 2h or 1d.")
    minutes = int(match.group(1)) * _UNIT_MINUTES[(match.group(2) or "m")[0].lower()]
    if not MIN_EVERY_MINUTES <= minutes <= MAX_EVERY_MINUTES:
        raise ArticleError(f"Poll between every {MIN_EVERY_MINUTES} minutes and every {MAX_EVERY_MINUTES // 1440} days.")
    return minutes


def parse_feed(data: bytes, base_url: str) -> tuple[str | None, list[FeedEntry]]:
    """(feed title, entries in the feed's order) from RSS or Atom bytes; runs in a worker
    thread. Raises ArticleError if the bytes are not a feed."""
    # A stream, never bytes or str: given those, feedparser first tries them as a file name
    # (and a str that looks like a URL it would fetch by itself, around our guarded fetcher).
    parsed = feedparser.parse(io.BytesIO(data), response_headers={"content-location": base_url})
    title = parsed.feed.get("title") or None
    if parsed.get("version", "") == "" and not parsed.entries:
        raise ArticleError("That address is not an RSS or Atom feed.")
    entries = []
    for entry in parsed.entries:
        link = (entry.get("link") or "").strip()
        if not link:
            continue
        when = entry.get("published_parsed") or entry.get("updated_parsed")
        published = (
            datetime.fromtimestamp(calendar.timegm(when), timezone.utc).date().isoformat() if when else None
        )
        entries.append(FeedEntry(link.split("#", 1)[0], (entry.get("title") or "").strip() or None, published))
    return title, entries


class Feeds:
    """The feeds of every server, in the library's database."""

    def __init__(
        self,
        library: Library,
        policy: FetchPolicy,
        *,
        session: aiohttp.ClientSession | None = None,
        on_paused: Callable[[Feed], Awaitable[None]] | None = None,
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        self.library = library
        self.store = library.store
        self.policy = policy
        self.session = session
        self.on_paused = on_paused
        self._clock = clock
        self._locks: dict[int, asyncio.Lock] = {}

    # --- managing -------------------------------------------------------------------------------

    async def add(
        self, guild_id: int, url: str, *, every_minutes: int, channel_id: int | None, added_by: str | None
    ) -> AddedFeed:
        """Follow a feed (fetched once to check it is one); its items are imported by the next
        poll. Adding a feed already followed resumes it and sets its interval."""
        url = str(check_url(url, self.policy))
        existing = await self._feed_by_url(guild_id, url)
        if existing is None and len(await self.list(guild_id)) >= MAX_FEEDS_PER_SERVER:
            raise ArticleError(f"This server already follows {MAX_FEEDS_PER_SERVER} feeds, the limit.")
        page = await fetch_page(url, self.policy, self.session, feed=True)
        title, entries = await asyncio.to_thread(parse_feed, page.data, page.final_url)
        now = iso_stamp(self._clock())
        if existing is not None:
            await self.store.write(
                (
                    "UPDATE feeds SET every_minutes = ?, paused = 0, failures = 0, next_poll = ?, channel_id = ?"
                    " WHERE id = ?",
                    (every_minutes, now, channel_id, existing.id),
                )
            )
            return AddedFeed(await self.get(existing.id), len(entries), resumed=True)
        [(feed_id, _)] = await self.store.write(
            (
                "INSERT INTO feeds (guild_id, url, title, every_minutes, channel_id, added_by, added_at, next_poll)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (guild_id, url, title, every_minutes, channel_id, added_by, now, now),
            )
        )
        assert feed_id is not None
        return AddedFeed(await self.get(feed_id), len(entries), resumed=False)

    async def list(self, guild_id: int) -> list[Feed]:
        rows = await self.store.read(_SELECT_FEEDS + " WHERE guild_id = ? ORDER BY id", (guild_id,))
        return [_feed(r) for r in rows]

    async def get(self, feed_id: int, *, guild_id: int | None = None) -> Feed:
        """A feed of `guild_id` (None: of any server). Raises ArticleError if there is none."""
        rows = await self.store.read(_SELECT_FEEDS + " WHERE id = ?", (feed_id,))
        if not rows or (guild_id is not None and rows[0][1] != guild_id):
            raise ArticleError(f"No feed {feed_id} here.")
        return _feed(rows[0])

    async def remove(self, guild_id: int, feed_id: int) -> Feed:
        """Stop following a feed; the articles it imported stay."""
        feed = await self.get(feed_id, guild_id=guild_id)
        await self.store.write(("DELETE FROM feeds WHERE id = ?", (feed_id,)))
        return feed

    async def due(self) -> list[int]:
        """Feeds of the servers this process holds whose next poll is due, oldest due first."""
        rows = await self.store.read(
            "SELECT id, guild_id FROM feeds WHERE paused = 0 AND next_poll <= ? ORDER BY next_poll",
            (iso_stamp(self._clock()),),
        )
        return [feed_id for feed_id, guild_id in rows if self.library.holds(guild_id)]

    async def claim(self, feed_id: int) -> bool:
        """Take a due feed's next poll for this process: False when another process (several
        may run over one database) took it first. The claim moves the next poll CLAIM_MINUTES
        ahead; the poll then sets the real one, and a process that died mid-poll leaves the
        feed to be claimed again after that."""
        now = self._clock()
        [(_, changed)] = await self.store.write(
            (
                "UPDATE feeds SET next_poll = ? WHERE id = ? AND paused = 0 AND next_poll <= ?",
                (iso_stamp(now + timedelta(minutes=CLAIM_MINUTES)), feed_id, iso_stamp(now)),
            )
        )
        return changed == 1

    async def _feed_by_url(self, guild_id: int, url: str) -> Feed | None:
        rows = await self.store.read(_SELECT_FEEDS + " WHERE guild_id = ? AND url = ?", (guild_id, url))
        return _feed(rows[0]) if rows else None

    # --- polling --------------------------------------------------------------------------------

    async def poll(self, feed_id: int) -> PollResult:
        """Fetch a feed (conditionally) and import its new items. One poll of a feed at a time."""
        async with self._locks.setdefault(feed_id, asyncio.Lock()):
            feed = await self.get(feed_id)
            try:
                page = await fetch_page(
                    feed.url, self.policy, self.session, feed=True, etag=feed.etag, last_modified=feed.last_modified
                )
                entries: list[FeedEntry] = []
                title = feed.title
                if not page.not_modified:
                    title, entries = await asyncio.to_thread(parse_feed, page.data, page.final_url)
            except ArticleError as exc:
                return await self._failed(feed, str(exc))
            except Exception:
                log.exception("Polling feed %d (%s) failed", feed.id, feed.url)
                return await self._failed(feed, "An unexpected error; the details are in the bot's log.")
            added, duplicates, failed, item_error = await self._import(feed, entries)
            now = self._clock()
            await self.store.write(
                (
                    "UPDATE feeds SET title = ?, etag = ?, last_modified = ?, last_poll = ?, next_poll = ?,"
                    " items_added = items_added + ?, failures = 0, last_error = ? WHERE id = ?",
                    (
                        title or feed.title,
                        page.etag or feed.etag,
                        page.last_modified or feed.last_modified,
                        iso_stamp(now),
                        iso_stamp(now + timedelta(minutes=feed.every_minutes)),
                        added,
                        item_error,
                        feed.id,
                    ),
                )
            )
            if added:
                log.info("Feed %d of server %d: %d new article(s)", feed.id, feed.guild_id, added)
            return PollResult(await self.get(feed.id), added, duplicates, failed, page.not_modified)

    async def _failed(self, feed: Feed, error: str) -> PollResult:
        now = self._clock()
        failures = feed.failures + 1
        paused = failures >= FAILURES_TO_PAUSE
        await self.store.write(
            (
                "UPDATE feeds SET last_poll = ?, next_poll = ?, failures = ?, last_error = ?, paused = ? WHERE id = ?",
                (iso_stamp(now), iso_stamp(now + timedelta(minutes=feed.every_minutes)), failures, error, int(paused), feed.id),
            )
        )
        log.info("Feed %d (%s) failed (%d in a row): %s", feed.id, feed.url, failures, error)
        after = replace(feed, failures=failures, last_error=error, paused=paused, last_poll=iso_stamp(now))
        if paused and not feed.paused and self.on_paused is not None:
            try:
                await self.on_paused(after)
            except Exception:
                log.exception("Could not tell server %d that feed %d was paused", feed.guild_id, feed.id)
        return PollResult(after, error=error, paused_now=paused and not feed.paused)

    async def _import(self, feed: Feed, entries: Sequence[FeedEntry]) -> tuple[int, int, int, str | None]:
        """Import the entries not seen yet, oldest first: (added, duplicates, failed, error to show)."""
        entries = list(dict((e.link, e) for e in reversed(entries[:MAX_ITEMS_PER_POLL])).values())
        if not entries:
            return 0, 0, 0, None
        known = await self._known_links(feed.guild_id, [e.link for e in entries])
        added = duplicates = failed = 0
        error: str | None = None
        limit = self.library.limits.max_articles_per_scope
        for entry in entries:
            if entry.link in known:
                continue
            if await self.library.count(scopes=[feed.guild_id]) >= limit:
                # Not counted as tries: the items are imported once the server has room again.
                error = f"The server has {limit:,} articles, the limit; new items wait for room."
                break
            meta = Metadata(title=entry.title, published=entry.published)
            try:
                summary = await self.library.add_url(
                    entry.link, scope=feed.guild_id, added_by=f"feed {feed.id}", policy=self.policy, meta=meta, session=self.session
                )
            except ArticleError as exc:
                failed += 1
                error = f"{entry.link}: {exc}"
                await self._item(feed, entry.link, None, error)
                continue
            if summary.added:
                added += 1
                await self._item(feed, entry.link, summary.added[0].article.id, None, done=True)
            elif summary.duplicates:
                duplicates += 1
                await self._item(feed, entry.link, summary.duplicates[0][1], None, done=True)
            else:
                failed += 1
                reason = summary.failed[0][1] if summary.failed else "nothing to import"
                error = f"{entry.link}: {reason}"
                await self._item(feed, entry.link, None, reason)
        return added, duplicates, failed, error

    async def _known_links(self, guild_id: int, links: Sequence[str]) -> set[str]:
        """Links the server has already: imported or given up on by a feed, or an article's URL."""
        marks = ",".join("?" * len(links))
        rows = await self.store.read(
            f"SELECT link FROM feed_items WHERE guild_id = ? AND done = 1 AND link IN ({marks})", (guild_id, *links)
        )
        rows += await self.store.read(
            f"SELECT url FROM articles WHERE scope = ? AND url IN ({marks})", (guild_id, *links)
        )
        return {r[0] for r in rows}

    async def _item(self, feed: Feed, link: str, article_id: int | None, error: str | None, *, done: bool = False) -> None:
        """Record an item's outcome; after ITEM_ATTEMPTS failures it is given up on."""
        await self.store.write(
            (
                "INSERT INTO feed_items (feed_id, guild_id, link, article_id, attempts, error, done, seen_at)"
                " VALUES (?, ?, ?, ?, 1, ?, ?, ?) ON CONFLICT (feed_id, link) DO UPDATE SET"
                " article_id = excluded.article_id, attempts = feed_items.attempts + 1, error = excluded.error,"
                " done = CASE WHEN excluded.done = 1 OR feed_items.attempts + 1 >= ? THEN 1 ELSE 0 END",
                (feed.id, feed.guild_id, link, article_id, error, int(done or ITEM_ATTEMPTS <= 1), iso_stamp(self._clock()), ITEM_ATTEMPTS),
            )
        )


def _feed(row: Sequence) -> Feed:
    return Feed(*row[:15], paused=bool(row[15]))


class FeedScheduler:
    """Polls due feeds in the background, a few at a time, so no poll waits on another
    server's slow feed for long and none holds up answering."""

    def __init__(self, feeds: Feeds, *, tick_seconds: float = 60.0, concurrency: int = 2) -> None:
        self.feeds = feeds
        self.tick_seconds = tick_seconds
        self._slots = asyncio.Semaphore(concurrency)
        self._runner: asyncio.Task[None] | None = None
        self._polls: dict[int, asyncio.Task[PollResult | None]] = {}

    def start(self) -> None:
        if self._runner is None:
            self._runner = asyncio.get_running_loop().create_task(self._run(), name="feed-scheduler")

    async def stop(self) -> None:
        tasks = [t for t in (self._runner, *self._polls.values()) if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._runner = None
        self._polls.clear()

    async def idle(self) -> None:
        """Wait for the polls running now (tests, and a clean shutdown)."""
        while pending := [t for t in self._polls.values() if not t.done()]:
            await asyncio.gather(*pending, return_exceptions=True)

    def poll_soon(self, feed_id: int) -> asyncio.Task[PollResult | None]:
        """Start a poll of `feed_id` now (unless one is running); the task returns its result."""
        running = self._polls.get(feed_id)
        if running is not None and not running.done():
            return running
        task = asyncio.get_running_loop().create_task(self._poll(feed_id), name=f"feed-poll-{feed_id}")
        self._polls[feed_id] = task
        task.add_done_callback(lambda t: self._polls.pop(feed_id, None) if self._polls.get(feed_id) is t else None)
        return task

    async def _poll(self, feed_id: int) -> PollResult | None:
        async with self._slots:
            try:
                return await self.feeds.poll(feed_id)
            except ArticleError:
                return None  # removed meanwhile
            except Exception:
                log.exception("Feed poll %d failed", feed_id)
                return None

    async def _run(self) -> None:
        while True:
            try:
                for feed_id in await self.feeds.due():
                    if await self.feeds.claim(feed_id):
                        self.poll_soon(feed_id)
            except Exception:
                # A busy database now and then must not end the schedule.
                log.exception("Could not read the due feeds")
            await asyncio.sleep(self.tick_seconds)
