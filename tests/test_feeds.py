"""Feeds: a manager follows an RSS feed served from 127.0.0.1; its items become the server's
articles, unchanged feeds cost a 304, and a feed that keeps failing is paused once."""
from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from email.utils import formatdate

import discord.ext.test as dpytest
import pytest
import pytest_asyncio
from aiohttp import web

from bot.core import feeds as feeds_module
from bot.core.articles import ArticleError
from bot.core.feeds import (
    FAILURES_TO_PAUSE,
    Feed,
    Feeds,
    FeedScheduler,
    parse_every,
)
from bot.core.fetch import FetchPolicy
from bot.core.cluster import Shards
from bot.core.library import Library, Limits

from conftest import SEED_ARTICLE, FakeDiscord, said

GUILD = 1111


@pytest.fixture
def library(library_on_each_store: Library) -> Library:
    """Feeds keep their state in the library's store: both stores, the same stories."""
    return library_on_each_store

POLICY = FetchPolicy(timeout=5, allow_private=True)  # the test server is on 127.0.0.1

STORIES = {
    1: ("Harbour ferry gets a new engine", "The harbour ferry Aurora received a new diesel engine on Monday, the port authority said."),
    2: ("Lighthouse keeper retires", "The last lighthouse keeper of Skerry Point retired after forty-one years of service."),
    3: ("Orchard harvest breaks a record", "Growers in the valley picked a record nine thousand tonnes of apples this autumn."),
    4: ("Glacier trail reopens", "The glacier trail above the village reopened on Friday after rockfall repairs."),
    5: ("Ferry timetable changes", "The winter timetable moves the first ferry of the day to half past six."),
}


def page_html(n: int) -> str:
    title, lead = STORIES[n]
    filler = " ".join(
        f"Paragraph {k} of story {n} tells readers more about {title.lower()} and what it means for the town."
        for k in range(1, 4)
    )
    return (
        f"<html><head><title>{title}</title></head><body><nav>Home | News | Sport</nav>"
        f"<article><h1>{title}</h1><p>{lead}</p><p>{filler}</p></article>"
        "<footer>Copyright the Coast Courier</footer></body></html>"
    )


def title_of(path: str) -> str:
    number = path.rsplit("/", 1)[-1]
    return STORIES[int(number)][0] if number.isdigit() and int(number) in STORIES else path


@dataclass
class FeedServer:
    """An RSS feed and its pages. `items` is what the feed lists (newest first)."""

    base: str = ""
    items: list[str] = field(default_factory=list)  # paths of the pages
    failing: bool = False
    revision: int = 0
    feed_requests: list[dict[str, str]] = field(default_factory=list)
    page_requests: list[str] = field(default_factory=list)
    page_delay: float = 0.0
    pages: dict[str, str] = field(default_factory=dict)

    def etag(self) -> str:
        return '"' + hashlib.sha1(f"{self.revision}|{'|'.join(self.items)}".encode()).hexdigest()[:16] + '"'

    def rss(self) -> str:
        entries = "".join(
            f"<item><title>{title_of(path)}</title>"
            f"<link>{self.base}{path}</link><pubDate>Mon, 30 Nov 2026 0{i % 10}:00:00 GMT</pubDate></item>"
            for i, path in enumerate(self.items)
        )
        return (
            '<?xml version="1.0" encoding="UTF-8"?><rss version="2.0"><channel><title>Coast Courier</title>'
            f"<link>{self.base}/</link><description>Local news</description>{entries}</channel></rss>"
        )


@pytest_asyncio.fixture
async def feed_server() -> AsyncIterator[FeedServer]:
    state = FeedServer(items=["/story/3", "/story/2", "/story/1"])
    last_modified = formatdate(time.time() - 3600, usegmt=True)

    async def feed(request: web.Request) -> web.Response:
        state.feed_requests.append(dict(request.headers))
        if state.failing:
            raise web.HTTPInternalServerError()
        if request.headers.get("If-None-Match") == state.etag():
            return web.Response(status=304, headers={"ETag": state.etag()})
        return web.Response(
            text=state.rss(),
            content_type="application/rss+xml",
            headers={"ETag": state.etag(), "Last-Modified": last_modified},
        )

    async def story(request: web.Request) -> web.Response:
        state.page_requests.append(request.path)
        if state.page_delay:
            await asyncio.sleep(state.page_delay)
        if request.path in state.pages:
            return web.Response(text=state.pages[request.path], content_type="text/html")
        return web.Response(text=page_html(int(request.match_info["n"])), content_type="text/html")

    async def not_a_feed(_: web.Request) -> web.Response:
        return web.Response(text=page_html(1), content_type="text/html")

    async def xml_not_a_feed(_: web.Request) -> web.Response:
        return web.Response(text="<?xml version='1.0'?><invoice><total>12</total></invoice>", content_type="application/xml")

    app = web.Application()
    app.add_routes(
        [
            web.get("/feed.xml", feed),
            web.get("/story/{n}", story),
            web.get("/copy/{n}", story),
            web.get("/page.html", not_a_feed),
            web.get("/invoice.xml", xml_not_a_feed),
        ]
    )
    runner = web.AppRunner(app, shutdown_timeout=0.5)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    state.base = f"http://127.0.0.1:{runner.addresses[0][1]}"
    try:
        yield state
    finally:
        await runner.cleanup()


async def titles(library: Library, guild: int = GUILD) -> list[str]:
    return sorted(info.title for info in await library.list(scopes=[guild], per_page=100))


async def follow(feeds: Feeds, server: FeedServer, every: int = 60) -> Feed:
    added = await feeds.add(GUILD, f"{server.base}/feed.xml", every_minutes=every, channel_id=None, added_by="42")
    return added.feed


# --- polling ---------------------------------------------------------------------------------------


async def test_first_poll_imports_the_items_then_an_unchanged_feed_costs_a_304(
    library: Library, feed_server: FeedServer
) -> None:
    feeds = Feeds(library, POLICY)
    feed = await follow(feeds, feed_server)

    first = await feeds.poll(feed.id)
    assert (first.added, first.duplicates, first.failed, first.not_modified) == (3, 0, 0, False)
    assert await titles(library) == sorted(STORIES[n][0] for n in (1, 2, 3))
    # Each item is an article of that server only, answerable at once, linking its page.
    answer = await library.ask("Who retired from the lighthouse at Skerry Point?", guild_id=GUILD)
    assert answer.passages[0].text.startswith("The last lighthouse keeper of Skerry Point retired")
    assert answer.passages[0].url == f"{feed_server.base}/story/2"
    assert answer.passages[0].published == "2026-11-30"
    assert not (await library.ask("Who retired from the lighthouse at Skerry Point?", guild_id=2222)).passages

    pages_before = len(feed_server.page_requests)
    second = await feeds.poll(feed.id)
    assert second.not_modified and second.added == 0
    sent = feed_server.feed_requests[-1]
    assert sent["If-None-Match"] == feed_server.etag()
    assert "If-Modified-Since" in sent
    assert len(feed_server.page_requests) == pages_before  # no page fetched again
    assert len(await library.list(scopes=[GUILD])) == 3

    feed_server.items.insert(0, "/story/4")
    third = await feeds.poll(feed.id)
    assert (third.added, third.not_modified) == (1, False)
    assert feed_server.page_requests[pages_before:] == ["/story/4"]  # only the new item's page
    assert STORIES[4][0] in await titles(library)
    listed = (await feeds.list(GUILD))[0]
    assert listed.items_added == 4 and listed.failures == 0 and listed.last_error is None
    assert listed.last_poll is not None and listed.title == "Coast Courier"


async def test_items_are_deduplicated_by_link_and_by_content(library: Library, feed_server: FeedServer) -> None:
    feeds = Feeds(library, POLICY)
    # A page a manager already added by URL is not fetched again for the feed.
    await library.add_url(f"{feed_server.base}/story/1", scope=GUILD, added_by="42", policy=POLICY)
    # /copy/3 serves the same story as /story/3: one article.
    feed_server.items = ["/story/3", "/copy/3", "/story/1", "/story/3"]
    feed_server.page_requests.clear()
    feed = await follow(feeds, feed_server)

    result = await feeds.poll(feed.id)
    assert (result.added, result.duplicates) == (1, 1)
    assert sorted(feed_server.page_requests) == ["/copy/3", "/story/3"]  # each link once, /story/1 never
    assert await titles(library) == sorted([STORIES[1][0], STORIES[3][0]])

    # A second feed of the same server listing the same links imports nothing again.
    feed_server.items = ["/story/3", "/story/1"]  # a new ETag: the feed is read again
    again = await feeds.poll(feed.id)
    assert again.added == again.duplicates == 0
    assert sorted(feed_server.page_requests) == ["/copy/3", "/story/3"]


async def test_a_page_that_fails_is_retried_then_given_up(library: Library, feed_server: FeedServer) -> None:
    feeds = Feeds(library, POLICY)
    feed_server.items = ["/story/9"]  # no such story: the page handler fails
    feed = await follow(feeds, feed_server)
    for attempt in range(1, 5):
        feed_server.revision += 1  # the feed changes, so it is read each time
        result = await feeds.poll(feed.id)
        assert feed_server.page_requests.count("/story/9") == min(attempt, 3)
        assert result.error is None  # the feed itself is fine
        listed = await feeds.get(feed.id)
        assert listed.failures == 0
        if attempt <= 3:
            assert result.failed == 1 and "/story/9: 127.0.0.1 answered with HTTP 500" in listed.last_error
        else:
            assert result.failed == 0 and listed.last_error is None


async def test_feeds_share_the_servers_article_limit(tmp_path, feed_server: FeedServer) -> None:
    library = await Library.open(tmp_path / "db.sqlite3", limits=Limits(max_articles_per_scope=2), corpus_dir=None)
    try:
        feeds = Feeds(library, POLICY)
        feed = await follow(feeds, feed_server)
        result = await feeds.poll(feed.id)
        assert result.added == 2
        assert len(await library.list(scopes=[GUILD])) == 2
        assert "limit" in (await feeds.get(feed.id)).last_error
        # Room again: the waiting item comes in at the next poll, as the feed changed.
        await library.remove((await library.list(scopes=[GUILD]))[0].id, scopes=[GUILD])
        feed_server.items.insert(0, "/story/5")
        result = await feeds.poll(feed.id)
        assert result.added == 1
    finally:
        await library.close()


async def test_five_failed_polls_in_a_row_pause_the_feed_and_tell_once(library: Library, feed_server: FeedServer) -> None:
    told: list[Feed] = []

    async def on_paused(feed: Feed) -> None:
        told.append(feed)

    feeds = Feeds(library, POLICY, on_paused=on_paused)
    feed = await follow(feeds, feed_server)
    feed_server.failing = True
    for n in range(1, FAILURES_TO_PAUSE):
        result = await feeds.poll(feed.id)
        assert result.error == "127.0.0.1 answered with HTTP 500." and not result.paused_now
        assert (await feeds.get(feed.id)).failures == n
    assert told == [] and await feeds.due() == []  # not due again before its interval

    result = await feeds.poll(feed.id)
    assert result.paused_now
    assert [f.id for f in told] == [feed.id] and told[0].paused and told[0].failures == FAILURES_TO_PAUSE
    await feeds.poll(feed.id)  # even polled by hand again, the managers are not told twice
    assert len(told) == 1

    # Following it again resumes it.
    feed_server.failing = False
    again = await feeds.add(GUILD, f"{feed_server.base}/feed.xml", every_minutes=60, channel_id=None, added_by="42")
    assert again.resumed and not again.feed.paused and again.feed.failures == 0
    assert (await feeds.poll(feed.id)).added == 3


async def test_a_success_between_failures_starts_the_count_again(library: Library, feed_server: FeedServer) -> None:
    feeds = Feeds(library, POLICY)
    feed = await follow(feeds, feed_server)
    feed_server.failing = True
    for _ in range(FAILURES_TO_PAUSE - 1):
        await feeds.poll(feed.id)
    feed_server.failing = False
    await feeds.poll(feed.id)
    feed_server.failing = True
    for _ in range(FAILURES_TO_PAUSE - 1):
        await feeds.poll(feed.id)
    assert not (await feeds.get(feed.id)).paused


async def test_what_is_not_a_feed_is_refused_and_nothing_is_stored(library: Library, feed_server: FeedServer) -> None:
    feeds = Feeds(library, POLICY)
    with pytest.raises(ArticleError, match="not an RSS or Atom feed"):
        await feeds.add(GUILD, f"{feed_server.base}/page.html", every_minutes=60, channel_id=None, added_by="42")
    with pytest.raises(ArticleError, match="not an RSS or Atom feed"):
        await feeds.add(GUILD, f"{feed_server.base}/invoice.xml", every_minutes=60, channel_id=None, added_by="42")
    with pytest.raises(ArticleError, match="Only http and https"):
        await feeds.add(GUILD, "file:///etc/passwd", every_minutes=60, channel_id=None, added_by="42")
    # A public bot refuses a feed on a private address, as it does a page.
    with pytest.raises(ArticleError, match="private or local"):
        await Feeds(library, FetchPolicy()).add(GUILD, f"{feed_server.base}/feed.xml", every_minutes=60, channel_id=None, added_by="42")
    assert await feeds.list(GUILD) == []


async def test_a_server_follows_at_most_the_feed_limit(
    library: Library, feed_server: FeedServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(feeds_module, "MAX_FEEDS_PER_SERVER", 2)
    feeds = Feeds(library, POLICY)
    for query in ("?a", "?b"):
        await feeds.add(GUILD, f"{feed_server.base}/feed.xml{query}", every_minutes=60, channel_id=None, added_by="42")
    asked = len(feed_server.feed_requests)
    with pytest.raises(ArticleError, match="already follows 2 feeds"):
        await feeds.add(GUILD, f"{feed_server.base}/feed.xml?c", every_minutes=60, channel_id=None, added_by="42")
    assert len(feed_server.feed_requests) == asked  # refused before fetching
    # Another server has its own allowance, and adding a followed feed again is not a new one.
    await feeds.add(GUILD + 1, f"{feed_server.base}/feed.xml", every_minutes=60, channel_id=None, added_by="42")
    again = await feeds.add(GUILD, f"{feed_server.base}/feed.xml?a", every_minutes=30, channel_id=None, added_by="42")
    assert again.resumed and again.feed.every_minutes == 30
    assert len(await feeds.list(GUILD)) == 2


@pytest.mark.parametrize(
    ("text", "minutes"), [(None, 60), ("", 60), ("30m", 30), ("2h", 120), ("1d", 1440), ("90", 90), ("3 hours", 180)]
)
def test_poll_intervals(text: str | None, minutes: int) -> None:
    assert parse_every(text) == minutes


@pytest.mark.parametrize("text", ["1m", "10", "30 days", "soon", "-5m"])
def test_poll_intervals_out_of_range_are_refused(text: str) -> None:
    with pytest.raises(ArticleError):
        parse_every(text)


# --- the schedule, and answering meanwhile ------------------------------------------------------


async def test_a_member_is_answered_while_a_slow_feed_is_polled(library: Library, feed_server: FeedServer) -> None:
    await library.add_bytes(SEED_ARTICLE.read_bytes(), "seed.txt", scope=GUILD, added_by="42")
    feeds = Feeds(library, POLICY)
    feed = await follow(feeds, feed_server)
    feed_server.page_delay = 0.5  # each of the three pages takes half a second
    scheduler = FeedScheduler(feeds, tick_seconds=0.05)
    scheduler.start()
    try:
        while not feed_server.page_requests:
            await asyncio.sleep(0.01)
        answer = await library.ask("who released the footage?", guild_id=GUILD)
        assert any("Kim Sung-Eun" in p.text for p in answer.passages)
        # The poll (1.5 s of pages) was still running: the question did not wait for it.
        assert (await feeds.get(feed.id)).items_added == 0
        await scheduler.idle()
        assert (await feeds.get(feed.id)).items_added == 3
    finally:
        await scheduler.stop()


async def test_the_scheduler_polls_due_feeds_and_not_paused_ones(library: Library, feed_server: FeedServer) -> None:
    feeds = Feeds(library, POLICY)
    due = await follow(feeds, feed_server)
    paused = (await feeds.add(GUILD, f"{feed_server.base}/feed.xml?b", every_minutes=60, channel_id=None, added_by="42")).feed
    await library.store.write(("UPDATE feeds SET paused = 1 WHERE id = ?", (paused.id,)))
    scheduler = FeedScheduler(feeds, tick_seconds=0.05)
    scheduler.start()
    try:
        for _ in range(200):
            if (await feeds.get(due.id)).items_added == 3:
                break
            await asyncio.sleep(0.05)
        await scheduler.idle()
    finally:
        await scheduler.stop()
    assert (await feeds.get(due.id)).items_added == 3
    assert (await feeds.get(paused.id)).last_poll is None
    # Polled once: the next poll is an hour away.
    assert await feeds.due() == []


async def test_two_bot_processes_over_one_database_poll_a_due_feed_once(target, feed_server: FeedServer) -> None:
    """Two processes' schedulers find the same feed due at the same moment: one claims the
    poll, the other leaves it, and the feed is fetched once and its items imported once."""
    first, second = await Library.open(target, corpus_dir=None), await Library.open(target, corpus_dir=None)
    schedulers = [FeedScheduler(Feeds(lib, POLICY), tick_seconds=0.05) for lib in (first, second)]
    try:
        feed = await follow(schedulers[0].feeds, feed_server)
        fetched_before = len(feed_server.feed_requests)
        for scheduler in schedulers:
            scheduler.start()
        for _ in range(200):
            if (await schedulers[1].feeds.get(feed.id)).items_added == 3:
                break
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.3)  # several more ticks of both schedulers
        for scheduler in schedulers:
            await scheduler.idle()
        assert len(feed_server.feed_requests) - fetched_before == 1
        assert (await schedulers[0].feeds.get(feed.id)).items_added == 3
        assert len(await titles(first)) == 3
    finally:
        for scheduler in schedulers:
            await scheduler.stop()
        await second.close()
        await first.close()


async def test_a_process_polls_only_the_feeds_of_servers_on_its_shards(tmp_path, feed_server: FeedServer) -> None:
    on_shard = (GUILD >> 22) % 2
    db = tmp_path / "library.sqlite3"
    holder = await Library.open(db, corpus_dir=None, shards=Shards.of([on_shard], 2))
    other = await Library.open(db, corpus_dir=None, shards=Shards.of([1 - on_shard], 2))
    try:
        feed = await follow(Feeds(holder, POLICY), feed_server)
        assert await Feeds(other, POLICY).due() == []
        assert await Feeds(holder, POLICY).due() == [feed.id]
    finally:
        await other.close()
        await holder.close()


# --- on Discord ---------------------------------------------------------------------------------


async def test_a_manager_follows_a_feed_lists_it_and_removes_it(fake: FakeDiscord, library: Library, feed_server: FeedServer) -> None:
    url = f"{feed_server.base}/feed.xml"
    error, replies = await said(f"!feed add {url} 2h", fake.channel_a, fake.admin_a)
    assert error is None
    assert "Following feed 1: **Coast Courier** (3 items now), checked every 2 h" in replies[0].content
    cog = fake.bot.get_cog("Feeds")
    await cog.scheduler.idle()
    assert len(await library.list(scopes=[fake.guild_a.id])) == 3

    error, replies = await said("!feed list", fake.channel_a, fake.admin_a)
    row = replies[0].embeds[0].description
    assert "`1` **Coast Courier** — every 2 h" in row and "3 added" in row and "last poll <t:" in row

    # A member may not; another server does not see it.
    error, replies = await said(f"!feed add {url}", fake.channel_a, fake.member_a)
    assert error is not None and "Manage Server" in replies[0].content
    error, replies = await said("!feed list", fake.channel_b, fake.admin_b)
    assert replies[0].content.startswith("No feeds followed here")
    error, replies = await said("!feed remove 1", fake.channel_b, fake.admin_b)
    assert replies[0].content == "No feed 1 here."

    error, replies = await said("!feed remove 1", fake.channel_a, fake.admin_a)
    assert replies[0].content.startswith("Stopped following feed 1") and "3 articles it added stay" in replies[0].content
    assert len(await library.list(scopes=[fake.guild_a.id])) == 3


async def test_managers_are_told_once_when_a_feed_is_paused(fake: FakeDiscord, feed_server: FeedServer) -> None:
    await said(f"!feed add {feed_server.base}/feed.xml", fake.channel_a, fake.admin_a)
    cog = fake.bot.get_cog("Feeds")
    await cog.scheduler.idle()
    feed_server.failing = True
    for _ in range(FAILURES_TO_PAUSE + 2):
        await cog.feeds.poll(1)
    messages = []
    while not dpytest.sent_queue.empty():
        messages.append(await dpytest.sent_queue.get())
    assert len(messages) == 1
    told = messages[0]
    assert told.channel == fake.channel_a
    assert f"Feed 1 ({feed_server.base}/feed.xml) failed {FAILURES_TO_PAUSE} polls in a row and is paused" in told.content
    assert "HTTP 500" in told.content
    error, replies = await said("!feed list", fake.channel_a, fake.admin_a)
    assert "**paused**" in replies[0].embeds[0].description
