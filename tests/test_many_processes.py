"""Many processes, one library (SQLite or PostgreSQL): the bot runs (here: a Library open in the test process)
while an admin imports or removes articles from the command line in another process. Whatever
another process changes is answered (or gone) in the running bot, and after its restart."""
from __future__ import annotations

import asyncio
import json
import logging
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from bot.core.articles import ArticleDraft
from bot.core.library import Library
from conftest import index_agrees_with_database

REPO = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "QUOTEBOT_CORPUS_DIR": "/nonexistent-quotebot-corpus", "DISCORD_TOKEN": ""}
TOWNS = "Ashford Brampton Cheswick Dunmore Elsworth Fairlie Glenrock Harwick".split()


def write_articles(path: Path, prefix: str, n: int) -> None:
    """n small articles as JSON Lines; article i of `prefix` answers `question(prefix, i)`."""
    with path.open("w", encoding="utf-8") as handle:
        for i in range(n):
            handle.write(json.dumps({"title": f"{prefix.title()} report {i}", "text": sentence(prefix, i), "source": "Wire"}) + "\n")


def sentence(prefix: str, i: int) -> str:
    return f"The {prefix}{i} committee in {TOWNS[i % len(TOWNS)]} approved a new footbridge over the canal on day {i}."


def question(prefix: str, i: int) -> str:
    return f"What did the {prefix}{i} committee approve?"


def cli(*args: str, db: Path | str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "bot", *args, "--db", str(db)],
        cwd=REPO, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )


async def finished(proc: subprocess.Popen) -> str:
    """What the command printed, once it ended well. Waited for off the event loop, as the bot
    would be: its loop keeps running (on PostgreSQL, taking in the NOTIFY of every change)."""
    out, err = await asyncio.to_thread(proc.communicate, timeout=300)
    assert proc.returncode == 0, err
    return out


async def in_another_process(code: str, db: Path | str) -> str:
    """Run `code` (with `lib`, a Library on `db`, open) in a separate Python process, off the
    event loop."""
    script = textwrap.dedent(
        """
        import asyncio, sys
        from bot.core.articles import ArticleDraft
        from bot.core.library import Library

        async def main(lib):
        {body}

        async def run():
            lib = await Library.open(sys.argv[1], corpus_dir=None)
            try:
                await main(lib)
            finally:
                await lib.close()

        asyncio.run(run())
        """
    ).format(body=textwrap.indent(textwrap.dedent(code), "    "))
    result = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-c", script, str(db)], cwd=REPO, env=ENV, capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


async def quoted(lib: Library, text: str) -> list[str]:
    return [p.text for p in (await lib.ask(text)).passages]


BAKERY = ArticleDraft(title="Bakery opens", body="A bakery opened on Mill Lane selling rye bread to early commuters.")
OTHERS = [
    ArticleDraft(title="Tide tables", body="High tide at the pier is at six in the morning."),
    ArticleDraft(title="Library hours", body="The library opens at nine on weekdays and at ten on Saturdays."),
]


async def library_with_a_bakery(db: Path | str) -> tuple[Library, int]:
    lib = await Library.open(db, corpus_dir=None)
    for draft in OTHERS:
        await lib.add_draft(draft, scope=0, added_by="admin")
    bakery = await lib.add_draft(BAKERY, scope=0, added_by="admin")
    assert (await lib.ask("Where did the bakery open?")).answered
    return lib, bakery.article.id


@pytest.fixture(params=["sqlite", "postgres"])
def db(request: pytest.FixtureRequest, tmp_path: Path) -> Path | str:
    """The library: a SQLite file, or a fresh database on the throwaway PostgreSQL."""
    if request.param == "sqlite":
        return tmp_path / "library.sqlite3"
    return request.getfixturevalue("pg_url")


async def test_an_import_from_the_command_line_is_answered_by_the_running_bot_and_after_its_restart(db, tmp_path, caplog):
    lib, _ = await library_with_a_bakery(db)
    try:
        write_articles(tmp_path / "wire.jsonl", "harbour", 40)
        assert "added 40" in await finished(cli("import", str(tmp_path / "wire.jsonl"), db=db))

        # The very next question, with no restart and no wait, quotes the new article.
        with caplog.at_level(logging.INFO, logger="bot.core.library"):
            assert await quoted(lib, question("harbour", 7)) == [sentence("harbour", 7)]
        # Caught up from the change log the import left, not by rebuilding the whole index.
        assert "rebuild" not in caplog.text.lower()
        await index_agrees_with_database(lib)
    finally:
        await lib.close()  # saves the index cache: it must not claim what it lacks

    lib = await Library.open(db, corpus_dir=None)
    try:
        assert await quoted(lib, question("harbour", 39)) == [sentence("harbour", 39)]
        assert (await lib.ask("Where did the bakery open?")).answered
        await index_agrees_with_database(lib)
    finally:
        await lib.close()


async def test_the_running_bot_picks_up_an_import_without_being_asked(db, tmp_path):
    lib = await Library.open(db, corpus_dir=None)
    try:
        write_articles(tmp_path / "wire.jsonl", "harbour", 10)
        await finished(cli("import", str(tmp_path / "wire.jsonl"), db=db))
        for _ in range(100):  # the background look runs twice a second
            if len(lib.retriever) == 20:  # 10 titles and 10 sentences
                break
            await asyncio.sleep(0.05)
        await index_agrees_with_database(lib)
    finally:
        await lib.close()


async def test_an_article_removed_by_another_process_is_never_quoted_again(db):
    lib, bakery_id = await library_with_a_bakery(db)
    try:
        await in_another_process(f"await lib.remove({bakery_id}, scopes=None)", db)
        answer = await lib.ask("Where did the bakery open on Mill Lane?")
        assert not answer.answered and answer.passages == ()
        await index_agrees_with_database(lib)
    finally:
        await lib.close()


async def test_after_another_process_removes_an_article_and_adds_one_the_old_question_never_gets_the_new_sentence(db):
    lib, bakery_id = await library_with_a_bakery(db)
    try:
        old_ids = {s.id for s in await lib.store.sentences_of(bakery_id)}
        out = await in_another_process(
            f"""
            await lib.remove({bakery_id}, scopes=None)
            ferry = await lib.add_draft(
                ArticleDraft(title="Ferry resumes", body="The island ferry resumed its morning crossings after the storm."),
                scope=0, added_by="other",
            )
            print(ferry.article.id)
            """,
            db,
        )
        ferry_id = int(out.split()[-1])
        assert ferry_id > bakery_id  # "article 2" still means the bakery, which is gone
        assert not {s.id for s in await lib.store.sentences_of(ferry_id)} & old_ids
        for text in ("Where did the bakery open?", "What did the bakery on Mill Lane sell?"):
            answer = await lib.ask(text)
            assert all("ferry" not in p.text for p in answer.passages) and not answer.answered
        assert await quoted(lib, "When did the island ferry resume its crossings?") == [
            "The island ferry resumed its morning crossings after the storm."
        ]
        await index_agrees_with_database(lib)
    finally:
        await lib.close()


async def test_two_imports_at_once_are_both_answered_while_running_and_after_a_restart(db, tmp_path):
    lib = await Library.open(db, corpus_dir=None)
    try:
        write_articles(tmp_path / "north.jsonl", "north", 600)
        write_articles(tmp_path / "south.jsonl", "south", 600)
        imports = [cli("import", str(tmp_path / f"{side}.jsonl"), db=db) for side in ("north", "south")]
        for proc in imports:
            assert "added 600" in await finished(proc)
        for side in ("north", "south"):
            for i in (0, 299, 599):
                assert await quoted(lib, question(side, i)) == [sentence(side, i)]
        await index_agrees_with_database(lib)
    finally:
        await lib.close()

    lib = await Library.open(db, corpus_dir=None)
    try:
        assert await lib.store.count_articles() == 1200
        for side in ("north", "south"):
            assert (await lib.ask(question(side, 450))).answered
        await index_agrees_with_database(lib)
    finally:
        await lib.close()


async def test_two_libraries_starting_on_a_new_database_at_once_both_work(db, tmp_path):
    # Both create the schema: the second must see the first's migrations, not apply them again.
    procs = [cli("list", db=db) for _ in range(3)]
    for proc in procs:
        assert "0 article(s)" in await finished(proc)


async def test_a_cache_saved_before_the_bot_saw_an_import_is_caught_up_after_a_restart(db, tmp_path):
    # The bot saves its index cache (as it does after a bulk import of its own) before it has
    # looked at the change log: the cache must be labelled with what this index holds.
    lib, _ = await library_with_a_bakery(db)
    lib._watcher.cancel()  # it has not looked yet
    write_articles(tmp_path / "wire.jsonl", "harbour", 5)
    await finished(cli("import", str(tmp_path / "wire.jsonl"), db=db))
    await lib.save_index()
    await lib.store.close()  # then it stops the hard way: nothing else saved

    lib = await Library.open(db, corpus_dir=None)
    try:
        assert await quoted(lib, question("harbour", 3)) == [sentence("harbour", 3)]
        await index_agrees_with_database(lib)
    finally:
        await lib.close()


async def test_the_change_log_keeps_what_another_process_may_still_need(tmp_path):
    # A save trims only entries older than the retention window, and only a prefix of the log
    # that this process's cache holds; a process still behind catches up from the rest.
    # (SQLite: the log is trimmed when the index cache file is saved, and PostgreSQL keeps none.)
    from bot.core.storage import CHANGE_LOG_RETENTION_SECONDS

    db = tmp_path / "library.sqlite3"
    lib, _ = await library_with_a_bakery(db)  # generations 1-3
    try:
        long_ago = int(time.time()) - CHANGE_LOG_RETENTION_SECONDS - 60
        await lib.store._writer.execute("UPDATE changes SET at = ? WHERE generation <= 2", (long_ago,))
        behind = await lib.store.read_changes(0)
        assert behind is not None and [c.generation for c in behind.changes] == [1, 2, 3]
        await lib.save_index()
        kept = await lib.store.read_changes(2)
        assert kept is not None and [c.generation for c in kept.changes] == [3]
        assert await lib.store.read_changes(0) is None  # older than the window: a rebuild for that one
    finally:
        await lib.close()
