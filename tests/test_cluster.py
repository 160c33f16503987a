"""Many processes, each running some of the bot's shards: a process holds in memory the global
articles and its own servers' only, skips other shards' changes, and answers DMs from the
global articles. (Real processes over PostgreSQL: test_many_processes_pg.py.)"""
from __future__ import annotations

from pathlib import Path
from unittest.mock import MagicMock

import pytest

from bot.core.articles import ArticleDraft
from bot.core.cluster import Shards, shard_of
from bot.core.library import Library
from bot.settings import Settings

ON_SHARD_0 = (300_000_000_000 + 0) << 22  # a server whose events Discord sends to shard 0 of 2
ON_SHARD_1 = (300_000_000_000 + 1) << 22
ALSO_ON_SHARD_0 = (300_000_000_002 << 22) | 0x3FFFFF  # the low 22 bits do not count

HARBOUR = ArticleDraft(title="Harbour news", body="The harbour master closed the north pier for repairs until May.")
ORCHARD = ArticleDraft(title="Orchard news", body="The orchard cooperative pressed four tonnes of cider apples this autumn.")
MUSEUM = ArticleDraft(title="Museum news", body="The town museum lent its Roman coin hoard to the county archive.")
FERRY = ArticleDraft(title="Ferry news", body="The island ferry added a late sailing on Fridays during the festival.")
# More global articles: with one alone, every word would be in half the visible sentences.
ALMANAC = [
    ArticleDraft(title="Tide tables", body="High tide at the pier is at six in the morning."),
    ArticleDraft(title="Library hours", body="The library opens at nine on weekdays and at ten on Saturdays."),
    ArticleDraft(title="Bin days", body="Green bins are emptied every second Tuesday from March."),
]
GLOBAL_SENTENCES = 2 * (1 + len(ALMANAC))  # a title and a sentence each


def test_a_server_s_shard_is_discord_s_rule():
    assert shard_of(ON_SHARD_0, 2) == 0 and shard_of(ON_SHARD_1, 2) == 1 and shard_of(ALSO_ON_SHARD_0, 2) == 0
    shards = Shards.of([0], 2)
    assert shards.holds(0)  # the global scope, everywhere
    assert shards.holds(ON_SHARD_0) and shards.holds(ALSO_ON_SHARD_0) and not shards.holds(ON_SHARD_1)


def test_shard_settings_are_checked_when_read(monkeypatch):
    monkeypatch.setenv("QUOTEBOT_SHARD_IDS", "2, 0")
    monkeypatch.setenv("QUOTEBOT_SHARD_COUNT", "4")
    assert Settings(_env_file=None).shards == Shards((0, 2), 4)
    monkeypatch.setenv("QUOTEBOT_SHARD_IDS", "4")
    with pytest.raises(ValueError, match="from 0 to 3"):
        Settings(_env_file=None)
    monkeypatch.delenv("QUOTEBOT_SHARD_COUNT")
    with pytest.raises(ValueError, match="QUOTEBOT_SHARD_COUNT"):
        Settings(_env_file=None)
    monkeypatch.delenv("QUOTEBOT_SHARD_IDS")
    assert Settings(_env_file=None).shards is None  # one process, every server


async def quoted(lib: Library, question: str, guild_id: int | None) -> list[str]:
    return [p.title for p in (await lib.ask(question, guild_id=guild_id)).passages]


@pytest.fixture
async def db(tmp_path: Path) -> Path:
    """A library with a global article and one article in each of three servers."""
    path = tmp_path / "library.sqlite3"
    lib = await Library.open(path, corpus_dir=None)
    try:
        await lib.add_draft(HARBOUR, scope=0, added_by="owner")
        for draft in ALMANAC:
            await lib.add_draft(draft, scope=0, added_by="owner")
        await lib.add_draft(ORCHARD, scope=ON_SHARD_0, added_by="admin")
        await lib.add_draft(MUSEUM, scope=ON_SHARD_1, added_by="admin")
    finally:
        await lib.close()
    return path


async def test_a_process_on_shard_0_of_2_holds_the_global_articles_and_its_servers_only(db):
    lib = await Library.open(db, corpus_dir=None, shards=Shards.of([0], 2))
    try:
        assert len(lib.retriever) == GLOBAL_SENTENCES + 2  # and the shard-0 article's title and sentence
        assert lib.retriever.size([ON_SHARD_0]) == 2 and lib.retriever.size([ON_SHARD_1]) == 0
        assert await quoted(lib, "Which pier did the harbour master close?", ON_SHARD_0) == ["Harbour news"]
        assert await quoted(lib, "How much cider did the orchard press?", ON_SHARD_0) == ["Orchard news"]
        # A DM is answered from the global articles.
        assert await quoted(lib, "Which pier did the harbour master close?", None) == ["Harbour news"]
        assert await quoted(lib, "How much cider did the orchard press?", None) == []
    finally:
        await lib.close()

    # Restarted from its own snapshot (not the one of a process holding everything).
    whole = await Library.open(db, corpus_dir=None)
    await whole.close()
    lib = await Library.open(db, corpus_dir=None, shards=Shards.of([0], 2))
    try:
        assert len(lib.retriever) == GLOBAL_SENTENCES + 2
        assert lib._cache_path is not None and lib._cache_path.name.endswith(".shards-0-of-2.index")
        assert lib._cache_path.is_file()
    finally:
        await lib.close()


async def test_a_change_in_another_shard_s_server_is_skipped_and_one_in_its_own_is_applied(db):
    lib = await Library.open(db, corpus_dir=None, shards=Shards.of([0], 2))
    other = await Library.open(db, corpus_dir=None)  # another process (the command line) writing
    try:
        before = len(lib.retriever)
        ferry = await other.add_draft(FERRY, scope=ON_SHARD_1, added_by="admin")
        await lib.refresh(wait=None)
        assert len(lib.retriever) == before  # read in the change log, not indexed
        assert lib._generation == await lib.store.generation()  # and yet caught up

        await other.add_draft(FERRY, scope=ALSO_ON_SHARD_0, added_by="admin")
        await lib.refresh(wait=None)
        assert len(lib.retriever) == before + 2
        assert await quoted(lib, "When does the island ferry sail late?", ALSO_ON_SHARD_0) == ["Ferry news"]

        # Removing another shard's article touches nothing here either.
        await other.remove(ferry.article.id, scopes=None)
        await lib.refresh(wait=None)
        assert len(lib.retriever) == before + 2
    finally:
        await other.close()
        await lib.close()


async def test_a_sharded_process_indexes_only_what_it_holds_of_its_own_writes(db):
    lib = await Library.open(db, corpus_dir=None, shards=Shards.of([1], 2))
    try:
        assert len(lib.retriever) == GLOBAL_SENTENCES + 2  # and the shard-1 server's
        await lib.add_draft(FERRY, scope=ON_SHARD_0, added_by="console")  # not a server of this process
        assert len(lib.retriever) == GLOBAL_SENTENCES + 2
        await lib.add_draft(FERRY, scope=ON_SHARD_1, added_by="admin")
        assert await quoted(lib, "When does the island ferry sail late?", ON_SHARD_1) == ["Ferry news"]
    finally:
        await lib.close()


def test_the_discord_skin_runs_the_configured_shards(monkeypatch):
    from bot.discord_bot import QuoteBot, ShardedQuoteBot, bot_class

    monkeypatch.setenv("QUOTEBOT_SHARD_IDS", "1")
    monkeypatch.setenv("QUOTEBOT_SHARD_COUNT", "2")
    settings = Settings(_env_file=None)
    assert bot_class(settings) is ShardedQuoteBot
    bot = ShardedQuoteBot(settings, MagicMock())
    assert bot.shard_ids == [1] and bot.shard_count == 2
    monkeypatch.delenv("QUOTEBOT_SHARD_IDS")
    monkeypatch.delenv("QUOTEBOT_SHARD_COUNT")
    assert bot_class(Settings(_env_file=None)) is QuoteBot


async def test_with_a_login_gate_each_shard_waits_for_its_bucket_before_identifying(monkeypatch):
    from unittest.mock import AsyncMock

    from bot.discord_bot import ShardedQuoteBot

    monkeypatch.setenv("QUOTEBOT_SHARD_IDS", "16,17")
    monkeypatch.setenv("QUOTEBOT_SHARD_COUNT", "32")
    gate = MagicMock(before_identify=AsyncMock(), close=AsyncMock())
    bot = ShardedQuoteBot(Settings(_env_file=None), MagicMock(), login_gate=gate)
    # Discord tells the bot how many logins it may make at once (its "max concurrency").
    monkeypatch.setattr(bot.http, "get_bot_gateway", AsyncMock(return_value=(32, "wss://gateway", {"max_concurrency": 16})))
    await bot.before_identify_hook(16, initial=True)
    await bot.before_identify_hook(17)
    assert [c.args for c in gate.before_identify.await_args_list] == [(16, 16), (17, 16)]
    assert bot.http.get_bot_gateway.await_count == 1  # asked once
