"""Questions in, quoted passages out: the library answers from the shipped seed article."""
from __future__ import annotations

import asyncio
import json
import logging
import sqlite3
import threading
import time
from pathlib import Path

import pytest

from bot.core.answers import QuestionError
from bot.core.articles import GLOBAL_SCOPE, ArticleDraft, ArticleError
from bot.core.library import Library, Limits
from bot.core.render import answer_json, answer_text
from bot.core.tokens import TOKENIZER_VERSION, tokenize
from conftest import index_agrees_with_database

REPO = Path(__file__).resolve().parents[1]
CORPUS = REPO / "corpus"
SEED_TITLE = "Rare N. Korea video shows karaoke salons, markets"


@pytest.fixture
async def library(tmp_path):
    lib = await Library.open(tmp_path / "library.sqlite3", corpus_dir=CORPUS, limits=Limits(max_article_bytes=100_000))
    yield lib
    await lib.close()


async def snapshot(lib: Library) -> tuple:
    infos = await lib.store.list_articles(None, limit=-1)
    return (await lib.store.generation(), [(i.id, i.title, i.sentence_count) for i in infos], len(lib.retriever))


async def test_first_start_imports_the_shipped_corpus_as_global(library):
    infos = await library.store.list_articles(None, limit=-1)
    assert [(i.title, i.source, i.published, i.scope) for i in infos] == [
        (SEED_TITLE, "Agence France-Presse", "2014-03-27", GLOBAL_SCOPE)
    ]
    assert infos[0].sentence_count == len(library.retriever) > 20


async def test_a_member_asks_who_released_the_footage(library):
    answer = await library.ask("Who released the footage?")
    assert answer.answered
    texts = [p.text for p in answer.passages]
    assert any("released by a South Korean pastor, Kim Sung-Eun" in t for t in texts)
    first = answer.passages[0]
    assert (first.title, first.source, first.published) == (SEED_TITLE, "Agence France-Presse", "2014-03-27")


async def test_the_84_percent_sentence_answers_the_share_of_households(library):
    answer = await library.ask("What share of households had borderline or poor food consumption?")
    assert answer.passages[0].text == (
        "The assessment described food consumption for 84 percent of households across the country as borderline or poor."
    )


async def test_where_the_footage_was_shot_names_chongjin_and_rajin(library):
    answer = await library.ask("Where was the footage shot?")
    assert "Chongjin" in answer.passages[0].text and "Rajin" in answer.passages[0].text


async def test_quotes_are_verbatim_stored_sentences(library):
    body = (CORPUS / "000_07a41ce63a0344ef.txt").read_text()
    for question in ("How were the women dressed?", "What do families rely on to feed themselves?", "Who died of starvation?"):
        answer = await library.ask(question)
        assert answer.answered, question
        for passage in answer.passages:
            assert passage.text in body


async def test_nothing_unrelated_is_quoted_when_nothing_matches(library):
    for question in ("Who won the 2018 World Cup final?", "How do I bake sourdough bread?", "zzyzx quux"):
        answer = await library.ask(question)
        assert not answer.answered and answer.declined == "No stored article answers that.", question


async def test_a_question_of_only_stop_words_is_declined_plainly(library):
    answer = await library.ask("What is the?")
    assert not answer.answered and "common words" in answer.declined


@pytest.mark.parametrize("question", ["", "   \n\t ", "x" * 5000])
async def test_empty_or_huge_questions_get_a_clear_error(library, question):
    with pytest.raises(QuestionError):
        await library.ask(question)


async def test_identical_sentences_are_quoted_once_and_adjacent_hits_merge(library):
    story = (
        "The river rose three metres overnight in the valley town of Arden. "
        "The river flooded the market square in Arden by dawn."
    )
    for scope, source in ((GLOBAL_SCOPE, "Wire A"), (GLOBAL_SCOPE, "Wire B")):
        await library.add_draft(ArticleDraft(title=f"Flood in Arden ({source})", body=story, source=source), scope=scope, added_by="t")
    answer = await library.ask("How far did the river rise in Arden overnight?")
    texts = [p.text for p in answer.passages]
    assert len(texts) == len(set(texts))
    assert sum("three metres overnight" in t for t in texts) == 1
    # Both sentences of one article match, and they are neighbours: one passage, verbatim.
    assert texts[0] == story


async def test_json_answer_has_the_documented_shape(library):
    answer = await library.ask("Who released the footage?")
    data = json.loads(answer_json(answer))
    assert set(data) == {"question", "answered", "confidence", "answerable", "passages"}
    assert data["answered"] is True
    passage = data["passages"][0]
    assert set(passage) == {"article_id", "title", "source", "url", "published", "text", "score", "confidence"}
    assert isinstance(passage["article_id"], int) and isinstance(passage["score"], float)
    assert "Agence France-Presse" in answer_text(answer)


async def test_readding_the_same_article_is_a_duplicate_not_a_second_copy(library):
    data = (CORPUS / "000_07a41ce63a0344ef.txt").read_bytes()
    summary = await library.add_bytes(data, "again.txt", scope=GLOBAL_SCOPE, added_by="admin")
    assert summary.added == [] and summary.duplicates == [("again.txt", 1)]
    assert await library.store.count_articles() == 1
    # The same text in another server's scope is that server's own copy.
    summary = await library.add_bytes(data, "again.txt", scope=42, added_by="admin")
    assert len(summary.added) == 1


@pytest.mark.parametrize(
    "data",
    [b"", b"\x00\x01\x02binary\x00", "na\u00efve caf\u00e9".encode("latin-1"), b"<html><p>broken", b"word " * 30_000],
)
async def test_bad_input_changes_nothing(library, data):
    before = await snapshot(library)
    with pytest.raises(ArticleError):
        await library.add_bytes(data, "upload.txt", scope=GLOBAL_SCOPE, added_by="admin")
    assert await snapshot(library) == before


async def test_an_added_article_answers_at_once_and_a_removed_one_never_again(library):
    added = await library.add_draft(
        ArticleDraft(title="Lighthouse restored", body="The old lighthouse at Marrow Point was restored with a new lamp in May."),
        scope=GLOBAL_SCOPE,
        added_by="admin",
    )
    answer = await library.ask("What was restored at Marrow Point?")
    assert answer.passages[0].article_id == added.article.id
    await library.remove(added.article.id, scopes=None)
    answer = await library.ask("What was restored at Marrow Point?")
    assert all(p.article_id != added.article.id for p in answer.passages)


async def test_server_articles_answer_only_in_their_server(library):
    await library.add_draft(
        ArticleDraft(title="Club news", body="The chess club meets on Thursdays in the Elm Street library basement."),
        scope=111,
        added_by="admin",
    )
    assert (await library.ask("When does the chess club meet?", guild_id=111)).answered
    assert not (await library.ask("When does the chess club meet?", guild_id=222)).answered
    assert not (await library.ask("When does the chess club meet?", guild_id=None)).answered
    # Global articles answer everywhere.
    assert (await library.ask("Who released the footage?", guild_id=222)).answered


async def test_the_index_survives_a_restart_and_matches_the_database(tmp_path):
    db = tmp_path / "library.sqlite3"
    lib = await Library.open(db, corpus_dir=CORPUS)
    await lib.add_draft(ArticleDraft(title="Bakery opens", body="A bakery opened on Mill Lane selling rye bread."), scope=5, added_by="a")
    first = await lib.ask("Where did the bakery open?", guild_id=5)
    await lib.close()
    lib = await Library.open(db, corpus_dir=CORPUS)
    try:
        assert await lib.store.count_articles() == 2  # the corpus is not imported twice
        again = await lib.ask("Where did the bakery open?", guild_id=5)
        assert again == first
    finally:
        await lib.close()


async def first_start(tmp_path: Path) -> Path:
    """A library started and stopped once: its index cache matches its database."""
    db = tmp_path / "library.sqlite3"
    lib = await Library.open(db, corpus_dir=CORPUS)
    await lib.close()
    return db


def set_stored_tokens_as_an_older_release(db: Path, tokens: str, version: int) -> None:
    conn = sqlite3.connect(db)
    with conn:
        conn.execute("UPDATE sentences SET tokens = ?", (tokens,))
        conn.execute("UPDATE library_state SET value = ? WHERE key = 'tokenizer'", (version,))
    conn.close()


async def test_after_a_tokenizer_upgrade_stored_sentences_are_retokenised_on_start(tmp_path):
    # An older release stored other tokens (here: nonsense) and its index cache was built on
    # them; the new release must not answer from either.
    db = tmp_path / "library.sqlite3"
    lib = await Library.open(db, corpus_dir=CORPUS)
    before = await lib.ask("Who released the footage?")
    await lib.close()
    set_stored_tokens_as_an_older_release(db, "zzold", TOKENIZER_VERSION - 1)

    lib = await Library.open(db, corpus_dir=CORPUS)
    try:
        assert await lib.store.tokenizer_version() == TOKENIZER_VERSION
        assert await lib.ask("Who released the footage?") == before
        assert not (await lib.ask("zzold")).answered
        sentences = await lib.store.sentences_of(1)
        assert sentences and all(s.tokens == " ".join(tokenize(s.text)) for s in sentences)
        assert await lib.store.count_articles() == 1  # the corpus is not imported again
    finally:
        await lib.close()


async def test_an_interrupted_retokenising_is_done_again_on_the_next_start(tmp_path, monkeypatch):
    db = await first_start(tmp_path)
    set_stored_tokens_as_an_older_release(db, "zzold", TOKENIZER_VERSION - 1)

    calls = 0

    def tokenize_then_die(text: str) -> list[str]:
        nonlocal calls
        calls += 1
        if calls > 10:
            raise KeyboardInterrupt  # the process is stopped in the middle of the first batch
        return tokenize(text)

    monkeypatch.setattr("bot.core.library.tokenize", tokenize_then_die)
    with pytest.raises(KeyboardInterrupt):
        await Library.open(db, corpus_dir=CORPUS)
    monkeypatch.undo()

    lib = await Library.open(db, corpus_dir=CORPUS)
    try:
        assert await lib.store.tokenizer_version() == TOKENIZER_VERSION
        answer = await lib.ask("Who released the footage?")
        assert any("Kim Sung-Eun" in p.text for p in answer.passages)
    finally:
        await lib.close()


async def crash(lib: Library) -> None:
    """Stop the way kill -9 does for the index: nothing saved, the database as committed."""
    lib._watcher.cancel()
    await lib.store.close()


BAKERY = ArticleDraft(title="Bakery opens", body="A bakery opened on Mill Lane selling rye bread to early commuters.")
FERRY = ArticleDraft(title="Ferry resumes", body="The island ferry resumed its morning crossings after the storm.")


async def test_after_a_crash_the_saved_index_catches_up_with_the_database(tmp_path, caplog):
    db = tmp_path / "library.sqlite3"
    lib = await Library.open(db, corpus_dir=CORPUS)
    await lib.close()  # the index cache now matches the database
    lib = await Library.open(db, corpus_dir=CORPUS)
    await lib.add_draft(BAKERY, scope=5, added_by="admin")
    await crash(lib)

    with caplog.at_level("INFO", logger="bot.core.library"):
        lib = await Library.open(db, corpus_dir=CORPUS)
    try:
        assert "caught up" in caplog.text and "Built the index" not in caplog.text
        answer = await lib.ask("Where did the bakery open?", guild_id=5)
        assert answer.passages[0].text.startswith("A bakery opened on Mill Lane")
        await index_agrees_with_database(lib)
    finally:
        await lib.close()


async def test_a_removed_articles_ids_are_never_handed_out_again(tmp_path, caplog):
    # The newest article is removed and another added: without AUTOINCREMENT SQLite would give
    # the new one the old article id (a stale "remove 8" deletes it) and the old sentence ids.
    db = tmp_path / "library.sqlite3"
    lib = await Library.open(db, corpus_dir=CORPUS)
    bakery = await lib.add_draft(BAKERY, scope=5, added_by="admin")
    bakery_ids = {s.id for s in await lib.store.sentences_of(bakery.article.id)}
    await lib.close()
    lib = await Library.open(db, corpus_dir=CORPUS)
    await lib.remove(bakery.article.id, scopes=None)
    ferry = await lib.add_draft(FERRY, scope=5, added_by="admin")
    ferry_ids = {s.id for s in await lib.store.sentences_of(ferry.article.id)}
    assert ferry.article.id > bakery.article.id
    assert min(ferry_ids) > max(bakery_ids)
    await crash(lib)

    with caplog.at_level("INFO", logger="bot.core.library"):
        lib = await Library.open(db, corpus_dir=CORPUS)
    try:
        assert "caught up" in caplog.text
        assert not (await lib.ask("Where did the bakery open on Mill Lane?", guild_id=5)).answered
        answer = await lib.ask("When did the island ferry resume its crossings?", guild_id=5)
        assert answer.passages[0].text == "The island ferry resumed its morning crossings after the storm."
        await index_agrees_with_database(lib)
    finally:
        await lib.close()


async def test_a_cache_the_change_log_does_not_cover_is_rebuilt(tmp_path, caplog):
    db = await first_start(tmp_path)
    lib = await Library.open(db, corpus_dir=CORPUS)
    await lib.add_draft(BAKERY, scope=5, added_by="admin")
    await lib.store.forget_changes(await lib.store.generation())  # as if the log were lost
    await crash(lib)

    with caplog.at_level("INFO", logger="bot.core.library"):
        lib = await Library.open(db, corpus_dir=CORPUS)
    try:
        assert "Built the index" in caplog.text
        assert (await lib.ask("Where did the bakery open?", guild_id=5)).answered
        await index_agrees_with_database(lib)
    finally:
        await lib.close()


async def test_an_index_update_cut_short_is_applied_again_from_the_change_log(tmp_path, monkeypatch):
    # The article is committed to the database, then indexing it fails (or the task is
    # cancelled). The index must not count it as held: the change log brings it in.
    db = await first_start(tmp_path)
    lib = await Library.open(db, corpus_dir=CORPUS)

    def index_then_fail(*args, **kwargs):
        raise MemoryError("out of memory while indexing")

    monkeypatch.setattr(lib, "_index_stored", index_then_fail)
    with pytest.raises(MemoryError):
        await lib.add_draft(BAKERY, scope=5, added_by="admin")
    assert (await lib.ask("Where did the bakery open?", guild_id=5)).answered
    await index_agrees_with_database(lib)
    await lib.close()

    lib = await Library.open(db, corpus_dir=CORPUS)
    try:
        assert (await lib.ask("Where did the bakery open?", guild_id=5)).answered
        await index_agrees_with_database(lib)
    finally:
        await lib.close()


async def test_an_add_cancelled_while_it_is_indexed_keeps_the_change_lock_until_the_index_is_done(tmp_path, monkeypatch, caplog):
    # A SIGTERM'd import cancels the add while a worker thread is putting its rows into the
    # index; a thread cannot be stopped. The change log (applied as soon as the lock is free)
    # must not race that thread with the same rows: the index ends holding each sentence once.
    db = await first_start(tmp_path)
    lib = await Library.open(db, corpus_dir=CORPUS)
    try:
        started = threading.Event()
        index_stored = lib._index_stored

        def slow_index(*args, **kwargs):
            started.set()
            time.sleep(0.5)
            index_stored(*args, **kwargs)

        monkeypatch.setattr(lib, "_index_stored", slow_index)
        adding = asyncio.ensure_future(lib.add_draft(BAKERY, scope=5, added_by="admin"))
        while not started.is_set():
            await asyncio.sleep(0.01)
        adding.cancel()
        with pytest.raises(asyncio.CancelledError):
            await adding
        # The cancelled add let go of the lock only once its rows were in the index.
        await index_agrees_with_database(lib)
        monkeypatch.setattr(lib, "_index_stored", index_stored)
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="bot.core.library"):
            await lib.refresh(wait=None)
        assert "does not fit" not in caplog.text
        assert (await lib.ask("Where did the bakery open?", guild_id=5)).answered
        await index_agrees_with_database(lib)
    finally:
        await lib.close()


def a_library_from_before_autoincrement(db: Path) -> None:
    """A database at schema version 3, as the release before this one left it: articles 1-3
    stored, article 4 added and removed (so only the change log remembers id 4 and its
    sentence ids 7-8), and article 3's sentence the newest."""
    from bot.core.storage import MIGRATIONS

    conn = sqlite3.connect(db)
    for migration in MIGRATIONS[:3]:
        conn.executescript(migration)
    conn.execute("PRAGMA user_version = 3")
    with conn:
        for n, (title, text) in enumerate(
            [("Tide tables", "High tide at the pier is at six."), ("Bakery opens", "A bakery opened on Mill Lane."),
             ("Ferry resumes", "The island ferry resumed its crossings.")],
            start=1,
        ):
            conn.execute(
                "INSERT INTO articles (id, scope, title, body, added_by, added_at, content_hash, sentence_count)"
                " VALUES (?, 0, ?, ?, 'admin', '2025-01-01T00:00:00+00:00', ?, 2)",
                (n, title, text, f"hash{n}"),
            )
            for seq, (kind, sentence) in enumerate([("title", title), ("body", text)]):
                conn.execute(
                    'INSERT INTO sentences (id, article_id, seq, paragraph, kind, start, "end", text, tokens)'
                    " VALUES (?, ?, ?, ?, ?, 0, ?, ?, ?)",
                    (2 * n - 1 + seq, n, seq, seq, kind, len(sentence), sentence, " ".join(tokenize(sentence))),
                )
        conn.execute("INSERT INTO changes (generation, article_id, removed) VALUES (4, 4, NULL), (5, 4, '7 8')")
        conn.execute("UPDATE library_state SET value = 5 WHERE key = 'generation'")
    conn.close()


async def test_an_older_library_is_upgraded_so_no_id_it_ever_used_is_handed_out_again(tmp_path):
    db = tmp_path / "library.sqlite3"
    a_library_from_before_autoincrement(db)
    lib = await Library.open(db, corpus_dir=None)
    try:
        assert [a.title for a in await lib.store.list_articles(None, limit=-1)] == ["Ferry resumes", "Bakery opens", "Tide tables"]
        assert await lib.store.tokenizer_version() == TOKENIZER_VERSION
        news = await lib.add_draft(ArticleDraft(title="Market day", body="The market moves to Friday."), scope=0, added_by="a")
        assert news.article.id == 5  # not 4, which the change log remembers
        assert min(s.id for s in await lib.store.sentences_of(news.article.id)) == 9
        assert (await lib.ask("When does the market move to Friday?")).answered
        # The rebuilt tables still reference each other: removing an article takes its sentences.
        await lib.remove(2, scopes=None)
        assert await lib.store.sentences_of(2) == []
        assert not (await lib.ask("Where did the bakery open on Mill Lane?")).answered
        await index_agrees_with_database(lib)
    finally:
        await lib.close()
    conn = sqlite3.connect(db)
    assert conn.execute("PRAGMA foreign_key_check").fetchall() == []
    assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    conn.close()


async def test_a_copy_differing_only_by_invisible_characters_is_a_duplicate(library):
    original = ArticleDraft(title="Bakery opens", body="A bakery opened on Mill Lane selling rye bread.")
    first = await library.add_draft(original, scope=5, added_by="admin")
    sneaky = ArticleDraft(
        title="Bakery\u200b opens", body="A bak\u200cery opened on Mill\u2060 Lane sel\u00adling rye\ufeff bread.\u200d"
    )
    with pytest.raises(ArticleError) as caught:
        await library.add_draft(sneaky, scope=5, added_by="admin")
    assert f"id {first.article.id}" in str(caught.value)
    assert await library.store.count_articles(5) == 1
    answer = await library.ask("Where did the bakery open?", guild_id=5)
    assert {p.article_id for p in answer.passages} == {first.article.id}
    # The same text may be stored once globally too; a member of server 5 sees it quoted once.
    await library.add_draft(sneaky, scope=GLOBAL_SCOPE, added_by="owner")
    answer = await library.ask("Where did the bakery open on Mill Lane?", guild_id=5)
    bodies = [p.text for p in answer.passages if "Mill" in p.text]
    assert len(bodies) == 1


def test_paragraph_keys_of_a_very_long_article_never_reach_the_next_article():
    from bot.core.retrieval import Retriever
    from bot.core.storage import IndexRow, paragraph_key

    # Paragraph 100,000 of article 1 once had the key of article 2's headline.
    retriever = Retriever()
    retriever.add([
        IndexRow(1, 0, paragraph_key(1, 100_000), ("late", "paragraph")),
        IndexRow(2, 0, paragraph_key(2, 0), ("headline",)),
    ])
    assert paragraph_key(1, 100_000) != paragraph_key(2, 0)
    assert len(retriever.paragraphs) == 1  # article 1's paragraph is a paragraph, not a headline
