"""The same library stories over both stores: the SQLite file (the default) and PostgreSQL
(the throwaway server of tests/postgres.py). Then what only a server database can do to us:
a connection killed in the middle of an import, the server restarted under a running bot, two
processes writing at once."""
from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import asyncpg
import pytest

from bot.app import open_library
from bot.core.feedback import Feedback
from bot.core.articles import GLOBAL_SCOPE, ArticleDraft, ArticleError, DuplicateArticle
from bot.core.library import BULK_BATCH, POLL_SECONDS, Library
from bot.core.pg_store import CHANGES_CHANNEL, PgArticleStore
from bot.core.storage import ArticleStore, StoreBusy, StoreError
from bot.core.stores import Store, describe, open_store
from conftest import ROOT, SEED_ARTICLE, make_settings
from postgres import PostgresServer, without_postgres

SYLLABLES = [c + v for c in "bdfgklmnprstvz" for v in "aeiou"]


def place(i: int) -> str:
    """A made-up town name per number, a word no other article uses ("Bakedo", "Bakefi", ...)."""
    return "Ba" + "".join(SYLLABLES[(i // len(SYLLABLES) ** k) % len(SYLLABLES)] for k in range(3))


TOPICS = ("school", "railway", "museum", "festival", "hospital", "market", "library", "stadium")


async def background(library: Library) -> int:
    """Unrelated stories, so BM25 has a collection to weigh words against; how many."""
    for topic in TOPICS:
        await library.add_draft(
            ArticleDraft(title=f"{topic} news", body=f"The {topic} committee met on Monday about the {topic} budget."),
            scope=GLOBAL_SCOPE,
            added_by="corpus",
        )
    return len(TOPICS)


def harbour_story(i: int) -> dict:
    town = place(i)
    return {
        "title": f"Harbour of {town} reopens",
        "text": (
            f"The harbour of {town} reopened on Monday after the winter storms.\n\n"
            f"Fishermen in {town} said the new breakwater held during the last gale. "
            f"The mayor of {town} thanked the engineers."
        ),
        "source": "Coastal Gazette",
        "published": "2026-03-01",
    }


@pytest.fixture
def lib(library_on_each_store: Library) -> Library:
    return library_on_each_store


async def stored_sentence_ids(store: Store) -> list[int]:
    return [i async for batch in store.iter_index_rows() for i in batch.sentence_ids.tolist()]


async def index_matches_store(library: Library) -> None:
    """The index holds exactly the sentences the store holds, and every article all of its own."""
    ids = await stored_sentence_ids(library.store)
    assert len(library.retriever) == len(ids)
    assert all(i in library.retriever.index for i in ids)
    for info in await library.store.list_articles(limit=-1):
        assert len(await library.store.sentences_of(info.id)) == info.sentence_count


# --- the same story on both stores ----------------------------------------------------------------


async def test_an_added_article_answers_with_its_source(lib: Library) -> None:
    summary = await lib.add_bytes(SEED_ARTICLE.read_bytes(), SEED_ARTICLE.name, scope=GLOBAL_SCOPE, added_by="admin")
    assert len(summary.added) == 1
    article = summary.added[0].article
    answer = await lib.ask("who released the footage?")
    assert answer.passages, answer
    top = answer.passages[0]
    assert top.article_id == article.id
    assert top.source == "Agence France-Presse"
    title, body = await lib.store.article_text(article.id)
    assert top.text in body  # quoted word for word
    assert (await lib.store.get_article(article.id)).added_by == "admin"


async def test_the_debris_dropped_from_an_article_is_kept_with_it(lib: Library) -> None:
    draft = ArticleDraft(**_draft(harbour_story(90)), dropped=("Home | World | Sport", "Share"))
    added = await lib.add_draft(draft, scope=GLOBAL_SCOPE, added_by="admin")
    assert await lib.dropped_lines(added.article.id) == ["Home | World | Sport", "Share"]
    plain = await lib.add_draft(ArticleDraft(**_draft(harbour_story(91))), scope=GLOBAL_SCOPE, added_by="admin")
    assert await lib.dropped_lines(plain.article.id) == []


async def test_a_removed_article_no_longer_answers(lib: Library) -> None:
    others = await background(lib)
    added = await lib.add_draft(ArticleDraft(**_draft(harbour_story(1))), scope=GLOBAL_SCOPE, added_by="admin")
    kept = await lib.add_draft(ArticleDraft(**_draft(harbour_story(2))), scope=GLOBAL_SCOPE, added_by="admin")
    town = place(1)
    assert (await lib.ask(f"when did the harbour of {town} reopen?")).passages[0].article_id == added.article.id

    await lib.remove(added.article.id, scopes=None)

    answer = await lib.ask(f"when did the harbour of {town} reopen?")
    assert added.article.id not in [p.article_id for p in answer.passages]
    assert await lib.store.get_article(added.article.id) is None
    assert await lib.store.sentences_of(added.article.id) == []
    with pytest.raises(ArticleError):
        await lib.remove(added.article.id, scopes=None)
    assert [i.id for i in await lib.store.list_articles(limit=1)] == [kept.article.id]
    assert await lib.store.count_articles() == others + 1
    await index_matches_store(lib)


async def test_the_same_article_twice_is_refused_and_changes_nothing(lib: Library) -> None:
    story = _draft(harbour_story(3))
    first = await lib.add_draft(ArticleDraft(**story), scope=GLOBAL_SCOPE, added_by="admin")
    generation = await lib.store.generation()
    with pytest.raises(DuplicateArticle) as refused:
        await lib.add_draft(ArticleDraft(**story), scope=GLOBAL_SCOPE, added_by="admin")
    assert refused.value.existing_id == first.article.id
    assert await lib.store.count_articles() == 1
    assert await lib.store.generation() == generation
    # The same text in a server is that server's own article, not a duplicate of the global one.
    own = await lib.add_draft(ArticleDraft(**story), scope=101, added_by="admin")
    assert own.article.id != first.article.id


async def test_a_bulk_import_stores_every_article_whole_and_each_answers(lib: Library, tmp_path: Path) -> None:
    count = BULK_BATCH + 100  # more than one transaction
    bulk = tmp_path / "harbours.jsonl"
    lines = [json.dumps(harbour_story(i)) for i in range(count)]
    lines.insert(7, json.dumps(harbour_story(5)))  # a copy inside the same file
    bulk.write_text("\n".join(lines) + "\n", encoding="utf-8")

    summary = await lib.import_paths([bulk], scope=GLOBAL_SCOPE, added_by="cli")

    assert (len(summary.added), len(summary.duplicates), len(summary.failed)) == (count, 1, 0)
    ids = [a.article.id for a in summary.added]
    assert len(set(ids)) == count
    assert summary.duplicates[0][1] == ids[5]
    assert await lib.store.count_articles() == count
    await index_matches_store(lib)
    for i in (0, 250, count - 1):
        answer = await lib.ask(f"what did the mayor of {place(i)} say?")
        assert answer.passages and answer.passages[0].article_id == ids[i]
        assert answer.passages[0].source == "Coastal Gazette"


async def test_the_change_log_lists_each_change_once_in_the_order_made(target: Path | str) -> None:
    store = await open_store(target)
    try:
        start = await store.generation()
        first = await _add(store, 10)
        second = await _add(store, 11)
        removed = await store.remove_article(first[0])
        assert removed == first[1]
        assert await store.generation() == start + 3
        # Everything since the start: the removed sentences, and both added articles (the first
        # is gone, so a replica catching up finds no rows for it).
        log = await store.read_changes(start)
        assert log.generation == start + 3
        # In order: both added articles (the first is gone now, so a replica catching up finds
        # no rows for it), then the removal with its sentence ids.
        assert [(c.generation, c.article_id, c.removed) for c in log.changes] == [
            (start + 1, first[0], None), (start + 2, second[0], None), (start + 3, first[0], tuple(first[1]))
        ]
        assert [c.generation for c in (await store.read_changes(start + 2)).changes] == [start + 3]
        assert (await store.read_changes(start + 3)).changes == ()
        assert await store.read_changes(start + 4) is None  # from the future: rebuild
        assert [r.sentence_id for r in await store.index_rows_of([first[0], second[0]])] == second[1]

        await store.forget_changes(start + 2)
        assert await store.read_changes(start) is None  # the log no longer covers it
        assert [c.generation for c in (await store.read_changes(start + 2)).changes] == [start + 3]
    finally:
        await store.close()


async def test_an_unknown_article_reads_as_nothing(target: Path | str) -> None:
    store = await open_store(target)
    try:
        assert await store.get_article(404) is None
        assert await store.article_text(404) is None
        assert await store.sentences_by_ids([404]) == {}
        assert await store.neighbours(404, [0, 1]) == {}
        assert await store.remove_article(404) == []
        article_id, sentence_ids = await _add(store, 12)
        found = await store.neighbours(article_id, [0, 1, 99])
        assert sorted(found) == [0, 1] and found[1].id == sentence_ids[1]
        by_id = await store.sentences_by_ids(sentence_ids[:2])
        assert sorted(by_id) == sentence_ids[:2] and by_id[sentence_ids[0]].kind == "title"
        assert await store.list_articles([999]) == []
        assert [i.id for i in await store.list_articles([GLOBAL_SCOPE], limit=-1)] == [article_id]
    finally:
        await store.close()


async def test_a_candidate_is_read_with_its_paragraph_and_article_in_one_query(target: Path | str) -> None:
    """What a question reads of a candidate: the sentence, every sentence's tokens of its
    paragraph (a headline: its own), and its article; an unknown id is left out."""
    store = await open_store(target)
    try:
        article_id, sentence_ids = await _add(store, 3)
        everything = await store.sentences_by_ids(sentence_ids)
        found = await store.sentences_in_context([*sentence_ids, 404])
        assert sorted(found) == sorted(sentence_ids)
        for sentence_id, c in found.items():
            s = everything[sentence_id]
            assert c.sentence == s and c.article.id == article_id and c.article.title == _draft(harbour_story(3))["title"]
            same_paragraph = [o.tokens for o in everything.values() if (o.paragraph, o.kind) == (s.paragraph, s.kind)]
            expected = [s.tokens] if s.kind == "title" else same_paragraph
            assert sorted(c.paragraph_tokens.split("\n")) == sorted(expected)
        assert any(len(c.paragraph_tokens.split("\n")) > 1 for c in found.values())
        assert await store.sentences_in_context([]) == {}
    finally:
        await store.close()


async def test_an_answer_record_keeps_its_pages_and_one_vote_per_member(lib: Library) -> None:
    others = await background(lib)
    for i in range(8):
        await lib.add_draft(ArticleDraft(**_draft(harbour_story(60 + i))), scope=101, added_by="admin")
    feedback = Feedback(lib)
    page, answer_id = await feedback.ask("what did the fishermen say about the breakwater?", guild_id=101, asker_id=7)
    assert answer_id is not None and page.answer.passages
    record = await feedback.get(answer_id)
    assert (record.guild_id, record.asker_id, record.question) == (101, 7, "what did the fishermen say about the breakwater?")
    assert record.pages == ((tuple(page.answer.passages[0].sentence_ids),) + tuple(
        tuple(p.sentence_ids) for p in page.answer.passages[1:]
    ),)

    more = await feedback.more(record)
    assert more is not None and more.number == 1
    assert len((await feedback.get(answer_id)).pages) == 2

    first = await feedback.vote(answer_id, 8, True)
    assert (first.previous, first.helpful_count, first.not_helpful_count) == (None, 1, 0)
    changed = await feedback.vote(answer_id, 8, False)
    assert (changed.previous, changed.helpful_count, changed.not_helpful_count) == (True, 0, 1)
    assert (await feedback.vote(answer_id, 9, False)).not_helpful_count == 2
    assert await feedback.vote(answer_id + 1000, 8, True) is None  # no such record
    assert await feedback.get(answer_id + 1000) is None
    assert await lib.store.count_articles() == others + 8


async def test_articles_are_found_by_title_words_or_id_in_their_scope(lib: Library) -> None:
    ours = await lib.add_draft(ArticleDraft(**_draft(harbour_story(70))), scope=101, added_by="admin")
    await lib.add_draft(ArticleDraft(**_draft(harbour_story(71))), scope=102, added_by="admin")
    found = await lib.store.find_articles([GLOBAL_SCOPE, 101], "harbour OF " + place(70).upper())
    assert [i.id for i in found] == [ours.article.id]
    assert [i.id for i in await lib.store.find_articles([101], str(ours.article.id))] == [ours.article.id]
    assert await lib.store.find_articles([101], place(71)) == []  # another server's
    assert await lib.store.find_articles([101], "%") == []  # a wildcard is a plain character
    assert len(await lib.store.find_articles([101, 102], "harbour")) == 2


async def test_settings_choose_the_store(tmp_path: Path, pg_url: str) -> None:
    sqlite = await open_library(make_settings(tmp_path))
    try:
        assert isinstance(sqlite.store, ArticleStore)
    finally:
        await sqlite.close()
    postgres = await open_library(make_settings(tmp_path, database_url=pg_url))
    try:
        assert isinstance(postgres.store, PgArticleStore)
        assert postgres.store.path is None  # no index cache file for a server database
    finally:
        await postgres.close()


# --- what a server database adds ------------------------------------------------------------------


async def test_article_ids_are_never_reused(pg_url: str) -> None:
    store = await open_store(pg_url)
    try:
        article_id, sentence_ids = await _add(store, 20)
        await store.remove_article(article_id)
        again, again_sentences = await _add(store, 20)
        assert again > article_id
        assert min(again_sentences) > max(sentence_ids)
    finally:
        await store.close()


async def test_a_connection_killed_mid_import_leaves_nothing_half_written(
    postgres_server: PostgresServer, pg_url: str, tmp_path: Path
) -> None:
    lib = await Library.open(pg_url, corpus_dir=None)
    admin, watcher = await asyncpg.connect(pg_url), await asyncpg.connect(pg_url)
    try:
        others = await background(lib)
        before = await lib.add_draft(ArticleDraft(**_draft(harbour_story(0))), scope=GLOBAL_SCOPE, added_by="admin")
        generation = await lib.store.generation()
        bulk = tmp_path / "bulk.jsonl"
        bulk.write_text("".join(json.dumps(harbour_story(i)) + "\n" for i in range(1, 41)), encoding="utf-8")

        # Hold the change log so the import's transaction stops after writing its articles and
        # sentences; kill its connection there, every time it tries again.
        await admin.execute("BEGIN; LOCK TABLE changes IN ACCESS EXCLUSIVE MODE")
        importing = asyncio.create_task(lib.import_paths([bulk], scope=GLOBAL_SCOPE, added_by="cli"))
        kills = 0
        while not importing.done():
            pid = await _blocked_backend(watcher)
            if pid is not None:
                # It has written its articles and sentences inside the open transaction.
                kills += await watcher.fetchval("SELECT pg_terminate_backend($1)", pid)
            await asyncio.sleep(0.02)
        with pytest.raises(StoreBusy):
            await importing
        await admin.execute("ROLLBACK")
        assert kills >= 2  # the first try and at least one retry, all killed mid-transaction

        assert await lib.store.count_articles() == others + 1
        assert (await lib.store.list_articles(limit=1))[0].id == before.article.id
        assert await lib.store.generation() == generation
        assert await admin.fetchval("SELECT count(*) FROM sentences") == await admin.fetchval(
            "SELECT sum(sentence_count) FROM articles"
        )
        assert (await lib.store.read_changes(generation)).changes == ()
        await index_matches_store(lib)

        # The bot carries on: the same import, with no one killing it, stores every article once.
        summary = await lib.import_paths([bulk], scope=GLOBAL_SCOPE, added_by="cli")
        assert (len(summary.added), len(summary.duplicates), len(summary.failed)) == (40, 0, 0)
        assert await lib.store.count_articles() == others + 41
        await index_matches_store(lib)
        assert (await lib.ask(f"what did the mayor of {place(17)} say?")).passages[0].title == f"Harbour of {place(17)} reopens"
    finally:
        await admin.close()
        await watcher.close()
        await lib.close()


async def test_a_write_whose_connection_dies_once_is_tried_again_and_stored_once(pg_url: str) -> None:
    lib = await Library.open(pg_url, corpus_dir=None)
    admin, watcher = await asyncpg.connect(pg_url), await asyncpg.connect(pg_url)
    try:
        others = await background(lib)
        await admin.execute("BEGIN; LOCK TABLE changes IN ACCESS EXCLUSIVE MODE")
        adding = asyncio.create_task(lib.add_draft(ArticleDraft(**_draft(harbour_story(30))), scope=101, added_by="admin"))
        while (pid := await _blocked_backend(watcher)) is None:
            await asyncio.sleep(0.02)
        assert await watcher.fetchval("SELECT pg_terminate_backend($1)", pid)
        while await _blocked_backend(watcher) in (None, pid):  # the retry, on a new connection
            await asyncio.sleep(0.02)
        await admin.execute("ROLLBACK")
        added = await adding
        assert await lib.store.count_articles() == others + 1
        assert (await lib.ask(f"when did the harbour of {place(30)} reopen?", guild_id=101)).passages[0].article_id == added.article.id
        await index_matches_store(lib)
    finally:
        await admin.close()
        await watcher.close()
        await lib.close()


async def test_the_library_carries_on_after_the_server_restarts(postgres_server: PostgresServer, pg_url: str) -> None:
    lib = await Library.open(pg_url, corpus_dir=None)
    try:
        await background(lib)
        first = await lib.add_draft(ArticleDraft(**_draft(harbour_story(40))), scope=GLOBAL_SCOPE, added_by="admin")

        await asyncio.to_thread(postgres_server.restart)  # every connection of the pool is dropped

        answer = await lib.ask(f"when did the harbour of {place(40)} reopen?")
        assert answer.passages and answer.passages[0].article_id == first.article.id
        second = await lib.add_draft(ArticleDraft(**_draft(harbour_story(41))), scope=GLOBAL_SCOPE, added_by="admin")
        assert (await lib.ask(f"when did the harbour of {place(41)} reopen?")).passages[0].article_id == second.article.id
        await lib.remove(first.article.id, scopes=None)
        answer = await lib.ask(f"when did the harbour of {place(40)} reopen?")
        assert first.article.id not in [p.article_id for p in answer.passages]
        await index_matches_store(lib)
    finally:
        await lib.close()


async def test_generations_follow_the_order_changes_commit_in_across_processes(pg_url: str) -> None:
    """Two stores (as two bot processes would have) write at once; every change gets the next
    generation in commit order, and the notifications arrive in that order with no gap."""
    heard: list[int] = []
    listener = await asyncpg.connect(pg_url)
    stores = [await open_store(pg_url) for _ in range(2)]
    try:
        await listener.add_listener(CHANGES_CHANNEL, lambda *args: heard.append(int(args[3])))

        added_ids: set[int] = set()
        removed_ids: set[int] = set()

        async def writer(store: Store, offset: int) -> None:
            for i in range(offset, offset + 15):
                article_id, sentence_ids = await _add(store, i)
                added_ids.add(article_id)
                if i % 3 == 0:
                    assert await store.remove_article(article_id) == sentence_ids
                    removed_ids.update(sentence_ids)

        await asyncio.gather(writer(stores[0], 100), writer(stores[1], 200))
        total = 30 + 10
        for _ in range(100):
            if len(heard) == total:
                break
            await asyncio.sleep(0.02)
        assert heard == list(range(1, total + 1))
        assert await stores[1].generation() == total
        log = await stores[0].read_changes(0)
        assert [c.generation for c in log.changes] == list(range(1, total + 1))
        assert {c.article_id for c in log.changes if c.removed is None} == added_ids
        assert {i for c in log.changes if c.removed for i in c.removed} == removed_ids
    finally:
        for store in stores:
            await store.close()
        await listener.close()


async def test_a_change_in_one_process_wakes_the_other_and_a_lost_listener_comes_back(
    postgres_server: PostgresServer, pg_url: str
) -> None:
    watching, writing = await open_store(pg_url), await open_store(pg_url)
    watcher = await asyncpg.connect(pg_url)
    try:
        assert await watching.wait_for_change(0.3) is False  # nothing happened: the timeout
        waiting = asyncio.create_task(watching.wait_for_change(10))
        while not await watcher.fetchval("SELECT count(*) FROM pg_stat_activity WHERE application_name = 'quotebot-listen'"):
            await asyncio.sleep(0.02)
        started = time.monotonic()
        await _add(writing, 80)
        assert await waiting is True
        assert time.monotonic() - started < 1.0
        # The wake-up carries the generation: a question needs no read to know the index is behind.
        assert watching.announced_generation() == writing.last_generation == await writing.generation()

        # The listening connection is killed: it is made again, and the wake-up says "read the log".
        await watcher.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'quotebot-listen'")
        await _add(writing, 82)  # likely made while nobody listens: learnt by reading once LISTEN is back
        assert await watching.wait_for_change(10) is True
        deadline = time.monotonic() + 10
        while watching.announced_generation() != await writing.generation():
            assert time.monotonic() < deadline
            await asyncio.sleep(0.01)
        await asyncio.to_thread(postgres_server.restart)
        assert await watching.wait_for_change(15) is True
        waiting = asyncio.create_task(watching.wait_for_change(10))
        await asyncio.sleep(0.2)
        await _add(writing, 81)  # the pool's connections were dropped too: the write is tried again
        assert await waiting is True
    finally:
        await watcher.close()
        await writing.close()
        await watching.close()


async def test_a_question_on_postgresql_reads_no_generation_while_listen_holds(pg_url: str) -> None:
    """Each question asked whether another process changed the library: on PostgreSQL the
    NOTIFY that every change sends answers it, so questions make one read of the database, and
    another process's article is still quoted within a second."""
    member_side = await Library.open(pg_url, corpus_dir=None)
    admin_side = await Library.open(pg_url, corpus_dir=None)
    reads = 0
    real = member_side.store.generation

    async def counted() -> int:
        nonlocal reads
        reads += 1
        return await real()

    member_side.store.generation = counted  # type: ignore[method-assign]
    try:
        await background(admin_side)
        await admin_side.add_draft(ArticleDraft(**_draft(harbour_story(1))), scope=GLOBAL_SCOPE, added_by="admin")
        question = f"When did the harbour of {place(1)} reopen?"
        deadline = time.monotonic() + 5
        while member_side.store.announced_generation() is None or harbour_story(1)["title"] not in [
            p.title for p in (await member_side.ask(question)).passages
        ]:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.02)
        before, started = reads, time.monotonic()
        for _ in range(20):
            assert (await member_side.ask(question)).passages
        # Twenty questions, no generation read of their own: only the background look's, one
        # every POLL_SECONDS (questions asking would make twenty).
        assert reads - before <= (time.monotonic() - started) / POLL_SECONDS + 1

        await admin_side.add_draft(ArticleDraft(**_draft(harbour_story(2))), scope=GLOBAL_SCOPE, added_by="admin")
        started = time.monotonic()
        while harbour_story(2)["title"] not in [p.title for p in (await member_side.ask(f"When did the harbour of {place(2)} reopen?")).passages]:
            assert time.monotonic() - started < 1.0
            await asyncio.sleep(0.01)
    finally:
        await admin_side.close()
        await member_side.close()


def test_without_postgresql_ci_fails_and_a_developer_skips(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="CI needs PostgreSQL"):
        without_postgres("no initdb")
    monkeypatch.delenv("CI")
    with pytest.raises(pytest.skip.Exception, match="PostgreSQL tests skipped: no initdb"):
        without_postgres("no initdb")


async def test_a_bad_database_url_is_a_short_error_without_the_password() -> None:
    url = "postgresql://quotebot:hunter2@127.0.0.1:1/library"
    with pytest.raises(StoreError) as failed:
        await open_store(url)
    assert "hunter2" not in str(failed.value)
    assert "127.0.0.1" in str(failed.value)
    assert describe(url) == "postgresql://quotebot:***@127.0.0.1:1/library"


def test_the_command_line_imports_into_postgresql_and_another_process_answers(pg_url: str, tmp_path: Path) -> None:
    env = {**os.environ, "QUOTEBOT_CORPUS_DIR": str(tmp_path / "none"), "DISCORD_TOKEN": ""}
    imported = subprocess.run(
        [sys.executable, "-m", "bot", "--db", pg_url, "import", str(SEED_ARTICLE)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120,
    )
    assert imported.returncode == 0, imported.stderr
    assert imported.stdout.startswith("added 1 ") and imported.stdout.rstrip().endswith("duplicates 0, failed 0")
    asked = subprocess.run(
        [sys.executable, "-m", "bot", "ask", "--db", pg_url, "--json", "who released the footage?"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120,
    )
    assert asked.returncode == 0, asked.stderr
    answer = json.loads(asked.stdout)
    assert answer["answered"] and answer["passages"][0]["source"] == "Agence France-Presse"
    assert "Kim" in answer["passages"][0]["text"] or "footage" in answer["passages"][0]["text"]


# --- helpers ----------------------------------------------------------------------------------------


def _draft(story: dict) -> dict:
    return {"title": story["title"], "body": story["text"], "source": story["source"], "published": story["published"]}


async def _add(store: Store, i: int) -> tuple[int, list[int]]:
    """One harbour story straight into a store, split as the library would."""
    from bot.core.sentences import article_sentences

    draft = ArticleDraft(**_draft(harbour_story(i)))
    records = article_sentences(draft.title, draft.body, draft.caption)
    [result] = await store.add_articles([(draft, records)], scope=GLOBAL_SCOPE, added_by="test")
    assert not isinstance(result, DuplicateArticle)
    return result


async def _blocked_backend(watcher: asyncpg.Connection) -> int | None:
    """The bot's connection that waits for a lock (on the held change log), if any. Asked
    outside any transaction: inside one, pg_stat_activity keeps showing its first snapshot."""
    return await watcher.fetchval(
        "SELECT pid FROM pg_stat_activity WHERE application_name = 'quotebot' AND wait_event_type = 'Lock' LIMIT 1"
    )


def test_an_import_killed_mid_way_keeps_whole_batches_and_a_rerun_stores_the_rest(pg_url: str, tmp_path: Path) -> None:
    """A real `python -m bot import` into PostgreSQL, killed with SIGKILL after its first
    batches committed: what is stored is whole batches of whole articles; running the same
    import again stores the rest, and another process answers from all of it."""
    count = BULK_BATCH * 6
    bulk = tmp_path / "harbours.jsonl"
    bulk.write_text("".join(json.dumps(harbour_story(i)) + "\n" for i in range(count)), encoding="utf-8")
    env = {**os.environ, "QUOTEBOT_CORPUS_DIR": str(tmp_path / "none"), "DISCORD_TOKEN": ""}
    command = [sys.executable, "-m", "bot", "--db", pg_url, "import", str(bulk)]

    async def stored() -> int:
        conn = await asyncpg.connect(pg_url)
        try:
            if not await conn.fetchval("SELECT to_regclass('articles') IS NOT NULL"):
                return 0
            return await conn.fetchval("SELECT count(*) FROM articles")
        finally:
            await conn.close()

    importing = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while asyncio.run(stored()) == 0 and importing.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        importing.send_signal(signal.SIGKILL)
    finally:
        importing.wait(timeout=30)
    kept = asyncio.run(stored())
    assert 0 < kept < count, "killed before its first batch or after its last: nothing to check"
    assert kept % BULK_BATCH == 0  # whole batches only

    async def whole() -> tuple[int, int]:
        conn = await asyncpg.connect(pg_url)
        try:
            broken = await conn.fetchval(
                "SELECT count(*) FROM articles a"
                " WHERE sentence_count != (SELECT count(*) FROM sentences s WHERE s.article_id = a.id)"
            )
            generation = await conn.fetchval("SELECT value FROM library_state WHERE key = 'generation'")
            logged = await conn.fetchval("SELECT count(DISTINCT generation) FROM changes")
            return broken, generation - logged
        finally:
            await conn.close()

    assert asyncio.run(whole()) == (0, 0)  # every article whole; every generation in the log

    rerun = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    assert f"added {count - kept}, duplicates {kept}, failed 0" in rerun.stdout
    assert asyncio.run(stored()) == count
    asked = subprocess.run(
        [sys.executable, "-m", "bot", "ask", "--db", pg_url, "--json", f"what did the mayor of {place(count - 1)} say?"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120,
    )
    assert asked.returncode == 0, asked.stderr
    assert json.loads(asked.stdout)["passages"][0]["title"] == f"Harbour of {place(count - 1)} reopens"
