"""Faults: a bulk import killed half-way, SIGTERM, a locked database, a full disk, a corrupt
index cache, and Discord refusing a reply. Whatever breaks, nothing stored is lost, nothing
is half-stored, and the bot keeps answering."""
from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bot.core.articles import GLOBAL_SCOPE, ArticleDraft
from bot.core.library import Library
from bot.core.storage import StoreError
from conftest import index_agrees_with_database, said

REPO = Path(__file__).resolve().parents[1]
NO_CORPUS = {"QUOTEBOT_CORPUS_DIR": "/nonexistent-quotebot-corpus", "DISCORD_TOKEN": ""}
BULK_ARTICLES = 4000
WORDS = "harbour bridge council river ferry storm market school hospital railway station museum festival mayor budget".split()


# --- helpers ----------------------------------------------------------------------------------


def write_bulk(path: Path, n: int = BULK_ARTICLES) -> None:
    """n small, distinct articles as JSON Lines (what an admin's bulk file looks like)."""
    with path.open("w", encoding="utf-8") as handle:
        for i in range(n):
            w1, w2 = WORDS[i % len(WORDS)], WORDS[(i // len(WORDS)) % len(WORDS)]
            handle.write(
                json.dumps(
                    {
                        "title": f"Report {i} on the {w1}",
                        "text": (
                            f"Article number {i} says the {w1} and the {w2} were discussed on day {i}. "
                            f"Officials said item{i} would follow within the week."
                        ),
                        "source": "Bulk Wire",
                    }
                )
                + "\n"
            )


def start_cli(*args: str, db: Path, out: Path, stdin=subprocess.DEVNULL) -> subprocess.Popen:
    env = {**os.environ, **NO_CORPUS}
    return subprocess.Popen(
        [sys.executable, "-m", "bot", *args, "--db", str(db)],
        cwd=REPO,
        env=env,
        stdin=stdin,
        stdout=(out.with_suffix(".out")).open("w"),
        stderr=(out.with_suffix(".err")).open("w"),
    )


def run_cli(*args: str, db: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "bot", *args, "--db", str(db)],
        cwd=REPO, env={**os.environ, **NO_CORPUS}, capture_output=True, text=True, timeout=300,
    )


def stored_count(db: Path) -> int:
    if not db.exists():
        return 0
    try:
        with sqlite3.connect(db, timeout=30) as conn:
            return conn.execute("SELECT COUNT(*) FROM articles").fetchone()[0]
    except sqlite3.OperationalError:  # the schema is not created yet
        return 0


def wait_until_stored(proc: subprocess.Popen, db: Path, at_least: int, timeout: float = 240) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        count = stored_count(db)
        if count >= at_least:
            return count
        if proc.poll() is not None:
            pytest.fail(f"the import ended (rc {proc.returncode}) before {at_least} articles were stored")
        time.sleep(0.02)
    proc.kill()
    pytest.fail("the import did not store anything in time")


def descendants(pid: int) -> list[int]:
    """Child processes (Linux /proc), e.g. the import's worker pool and resource tracker."""
    found: list[int] = []
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return found
    for tid in tids:
        try:
            children = Path(f"/proc/{pid}/task/{tid}/children").read_text().split()
        except OSError:
            continue
        for child in map(int, children):
            found.append(child)
            found.extend(descendants(child))
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def kill_hard(proc: subprocess.Popen, grace: float = 15.0) -> list[int]:
    """SIGKILL the process; its children get `grace` seconds to notice and exit on their own.
    Returns the children that did not (they are then killed, so the test leaves nothing behind)."""
    children = descendants(proc.pid)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and any(alive(c) for c in children):
        time.sleep(0.1)
    survivors = [c for c in children if alive(c)]
    for child in survivors:
        try:
            os.kill(child, signal.SIGKILL)
        except OSError:
            pass
    return survivors


def check_integrity(db: Path) -> int:
    """The database is sound and holds only whole articles. Returns the article count."""
    with sqlite3.connect(db, timeout=30) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        assert conn.execute("PRAGMA foreign_key_check").fetchall() == []
        partial = conn.execute(
            "SELECT a.id, a.sentence_count, COUNT(s.id) FROM articles a LEFT JOIN sentences s ON s.article_id = a.id"
            " GROUP BY a.id HAVING a.sentence_count != COUNT(s.id)"
        ).fetchall()
        assert partial == [], f"articles without all of their sentences: {partial[:5]}"
        orphans = conn.execute(
            "SELECT COUNT(*) FROM sentences WHERE article_id NOT IN (SELECT id FROM articles)"
        ).fetchone()[0]
        assert orphans == 0
        empty = conn.execute("SELECT COUNT(*) FROM articles WHERE sentence_count = 0").fetchone()[0]
        assert empty == 0
        return conn.execute("SELECT COUNT(*) FROM articles").fetchone()[0]


def summary_counts(stdout: str) -> tuple[int, int, int]:
    line = stdout.strip().splitlines()[-1]  # "added A, duplicates D, failed F"
    parts = dict(p.strip().split(" ") for p in line.split(","))
    return int(parts["added"]), int(parts["duplicates"]), int(parts["failed"])


async def snapshot(lib: Library) -> tuple:
    infos = await lib.store.list_articles(None, limit=-1)
    async with lib.store._reader.execute("SELECT COUNT(*) FROM sentences") as cur:
        sentences = (await cur.fetchone())[0]
    return (
        await lib.store.generation(),
        [(i.id, i.title, i.sentence_count) for i in infos],
        sentences,
        len(lib.retriever),
    )


HARBOUR = ArticleDraft(
    title="Harbour reopens after the storm",
    body="The harbour at Kestrel Bay reopened on Wednesday after the storm closed it for four days, the port authority said.",
    source="Coast News",
)
# Unrelated stories, so that BM25 has a real collection to weigh words against.
FILLERS = [
    ArticleDraft(title=f"{topic} news", body=f"The {topic} committee met on Monday to discuss the {topic} budget for next year.")
    for topic in ("school", "railway", "museum", "festival", "hospital", "market")
]
LIGHTHOUSE = ArticleDraft(
    title="Lighthouse restored",
    body="The old lighthouse at Marrow Point was restored with a new lamp in May, the trust said.",
)


@pytest.fixture
async def library(tmp_path):
    lib = await Library.open(tmp_path / "library.sqlite3")
    for draft in (HARBOUR, *FILLERS):
        await lib.add_draft(draft, scope=GLOBAL_SCOPE, added_by="admin")
    yield lib
    await lib.close()


# --- the process dies half-way ------------------------------------------------------------------


def test_a_bulk_import_killed_half_way_leaves_whole_articles_and_resumes(tmp_path):
    bulk, db = tmp_path / "big.jsonl", tmp_path / "library.sqlite3"
    write_bulk(bulk)
    proc = start_cli("import", str(bulk), db=db, out=tmp_path / "import1")
    try:
        wait_until_stored(proc, db, at_least=200)
    finally:
        orphans = kill_hard(proc)
    assert proc.returncode == -signal.SIGKILL

    # The database opens, is sound, and every stored article has all of its sentences.
    stored = check_integrity(db)
    assert 200 <= stored < BULK_ARTICLES, "the kill should land in the middle of the import"

    # Running the same import again adds exactly what is missing.
    again = run_cli("import", str(bulk), db=db)
    assert again.returncode == 0, again.stderr
    added, duplicates, failed = summary_counts(again.stdout)
    assert (added, duplicates, failed) == (BULK_ARTICLES - stored, stored, 0)
    assert check_integrity(db) == BULK_ARTICLES

    # And the restarted library's index matches the database and answers.
    async def reopen() -> None:
        lib = await Library.open(db)
        try:
            await index_agrees_with_database(lib)
            answer = await lib.ask("What did officials say about item3999?")
            assert answer.answered and answer.passages[0].title == "Report 3999 on the railway"
        finally:
            await lib.close()

    asyncio.run(reopen())
    assert not orphans, f"{len(orphans)} worker process(es) of the killed import kept running"


def test_sigterm_during_a_bulk_import_exits_and_rolls_back_the_current_write(tmp_path):
    bulk, db = tmp_path / "big.jsonl", tmp_path / "library.sqlite3"
    write_bulk(bulk)
    proc = start_cli("import", str(bulk), db=db, out=tmp_path / "import")
    try:
        wait_until_stored(proc, db, at_least=200)
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=120)  # the process exits: it neither hangs nor finishes the whole import
    finally:
        if proc.poll() is None:
            proc.kill()
    stored = check_integrity(db)
    assert stored < BULK_ARTICLES
    again = run_cli("import", str(bulk), db=db)
    assert summary_counts(again.stdout) == (BULK_ARTICLES - stored, stored, 0)
    assert check_integrity(db) == BULK_ARTICLES

    stderr = (tmp_path / "import.err").read_text()
    assert proc.returncode in (0, 1, 130, 143), stderr
    assert "Traceback" not in stderr, stderr


def test_sigterm_while_answering_a_batch_exits(tmp_path):
    db = tmp_path / "library.sqlite3"
    bulk = tmp_path / "some.jsonl"
    write_bulk(bulk, 50)
    assert run_cli("import", str(bulk), db=db).returncode == 0
    questions = tmp_path / "questions.txt"
    questions.write_text("".join(f"What was discussed on day {i % 50}?\n" for i in range(20_000)))
    with questions.open() as stdin:
        proc = start_cli("ask", "--batch", "-", "--json", db=db, out=tmp_path / "ask", stdin=stdin)
        out = tmp_path / "ask.out"
        try:
            deadline = time.monotonic() + 240
            while time.monotonic() < deadline and proc.poll() is None and out.stat().st_size < 10_000:
                time.sleep(0.05)
            assert proc.poll() is None, "the batch should still be running when the signal arrives"
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=120)
        finally:
            if proc.poll() is None:
                proc.kill()
    assert check_integrity(db) == 50
    lines = out.read_text().splitlines()
    # Every complete line printed before the signal is a whole answer.
    for line in lines[:-1]:
        assert json.loads(line)["answered"] is True
    assert proc.returncode in (0, 1, 130, 143)


# --- the database is locked by another process ----------------------------------------------------


class ExclusiveLock:
    """Another process's connection holding the database with BEGIN EXCLUSIVE."""

    def __init__(self, db: Path) -> None:
        self.conn = sqlite3.connect(db, timeout=30, isolation_level=None, check_same_thread=False)

    def __enter__(self) -> ExclusiveLock:
        self.conn.execute("BEGIN EXCLUSIVE")
        return self

    def __exit__(self, *exc) -> None:
        self.conn.execute("ROLLBACK")
        self.conn.close()


async def test_a_locked_database_gives_a_clear_error_and_loses_nothing(library):
    """An admin adds an article while a backup tool holds the database: the add fails after the
    busy timeout with an error, the library is unchanged, and once the lock goes the add works."""
    before = await snapshot(library)
    with ExclusiveLock(library.store.path):
        with pytest.raises(Exception) as caught:
            await library.add_draft(LIGHTHOUSE, scope=GLOBAL_SCOPE, added_by="admin")
        # Members can still ask while the database is locked (WAL readers are not blocked).
        assert (await library.ask("When did the harbour at Kestrel Bay reopen?")).answered
    assert await snapshot(library) == before
    assert not (await library.ask("What was restored at Marrow Point?")).answered

    added = await library.add_draft(LIGHTHOUSE, scope=GLOBAL_SCOPE, added_by="admin")
    assert (await library.ask("What was restored at Marrow Point?")).passages[0].article_id == added.article.id
    await index_agrees_with_database(library)

    assert isinstance(caught.value, StoreError), repr(caught.value)
    assert "lock" in str(caught.value).lower() or "busy" in str(caught.value).lower()


async def test_removing_from_a_locked_database_keeps_the_article_and_its_index(library):
    infos = await library.list(scopes=None)
    before = await snapshot(library)
    with ExclusiveLock(library.store.path):
        with pytest.raises(Exception):
            await library.remove(infos[0].id, scopes=None)
    assert await snapshot(library) == before
    assert (await library.ask("When did the harbour at Kestrel Bay reopen?")).answered


# --- the disk is full ------------------------------------------------------------------------------


async def test_a_full_disk_during_the_insert_changes_nothing(library, monkeypatch):
    """The disk fills while the sentences are written: the transaction rolls back, the index
    is not touched, and the next add (after space is freed) works."""
    before = await snapshot(library)
    writer = library.store._writer
    real = writer.executemany

    async def full(sql, *args, **kwargs):
        if "INSERT INTO sentences" in sql:
            raise sqlite3.OperationalError("database or disk is full")
        return await real(sql, *args, **kwargs)

    monkeypatch.setattr(writer, "executemany", full)
    with pytest.raises((StoreError, sqlite3.OperationalError), match="full"):
        await library.add_draft(LIGHTHOUSE, scope=GLOBAL_SCOPE, added_by="admin")
    assert await snapshot(library) == before
    assert not (await library.ask("What was restored at Marrow Point?")).answered

    monkeypatch.setattr(writer, "executemany", real)
    await library.add_draft(LIGHTHOUSE, scope=GLOBAL_SCOPE, added_by="admin")
    assert (await library.ask("What was restored at Marrow Point?")).answered
    await index_agrees_with_database(library)


async def test_a_size_capped_database_file_refuses_a_big_article_and_keeps_the_rest(library):
    """A real SQLITE_FULL: the database file may not grow (max_page_count), like a full disk."""
    async with library.store._writer.execute("PRAGMA page_count") as cur:
        pages = (await cur.fetchone())[0]
    await library.store._writer.execute(f"PRAGMA max_page_count = {pages + 2}")
    before = await snapshot(library)
    big = ArticleDraft(
        title="A long report on the ferry timetable",
        body=" ".join(f"Ferry {i} leaves the quay at dawn with cargo number {i}." for i in range(3000)),
    )
    with pytest.raises((StoreError, sqlite3.OperationalError), match="full"):
        await library.add_draft(big, scope=GLOBAL_SCOPE, added_by="admin")
    assert await snapshot(library) == before
    assert (await library.ask("When did the harbour at Kestrel Bay reopen?")).answered
    await library.store._writer.execute("PRAGMA max_page_count = 1073741823")
    await library.add_draft(big, scope=GLOBAL_SCOPE, added_by="admin")
    await index_agrees_with_database(library)
    assert check_integrity(library.store.path) == 1 + len(FILLERS) + 1


# --- a corrupt index cache --------------------------------------------------------------------------


def _corruptions(data: bytes) -> dict[str, bytes | None]:
    mid = len(data) // 2
    flipped = bytearray(data)
    flipped[mid] ^= 0xFF
    header = bytearray(data)
    header[10] ^= 0x55
    return {
        "empty": b"",
        "truncated at a quarter": data[: len(data) // 4],
        "truncated": data[:mid],
        "truncated at three quarters": data[: 3 * len(data) // 4],
        "last byte missing": data[:-1],
        "flipped byte": bytes(flipped),
        "damaged header": bytes(header),
        "zeros": bytes(len(data)),
        "random": os.urandom(len(data)),
        "a text file": b"not an index\n" * 100,
        "a directory": None,
    }


@pytest.mark.parametrize("kind", list(_corruptions(b"x" * 64)))
async def test_a_corrupt_index_cache_is_rebuilt_and_answers_stay_right(tmp_path, kind):
    db = tmp_path / "library.sqlite3"
    lib = await Library.open(db)
    for draft in (HARBOUR, *FILLERS):
        await lib.add_draft(draft, scope=GLOBAL_SCOPE, added_by="admin")
    await lib.add_draft(LIGHTHOUSE, scope=77, added_by="admin")
    questions = [("When did the harbour at Kestrel Bay reopen?", None), ("What was restored at Marrow Point?", 77)]
    expected = [await lib.ask(q, guild_id=g) for q, g in questions]
    await lib.close()

    cache = Path(str(db) + ".index")
    assert cache.is_file()
    bad = _corruptions(cache.read_bytes())[kind]
    cache.unlink()
    if bad is None:
        cache.mkdir()
    else:
        cache.write_bytes(bad)

    for _restart in range(2):  # no crash loop: the second start is as good as the first
        lib = await Library.open(db)
        try:
            assert [await lib.ask(q, guild_id=g) for q, g in questions] == expected
            assert not (await lib.ask("What was restored at Marrow Point?", guild_id=78)).answered
            await index_agrees_with_database(lib)
        finally:
            await lib.close()


# --- Discord refuses a reply --------------------------------------------------------------------------

discord = pytest.importorskip("discord")
dpytest = pytest.importorskip("discord.ext.test")


def http_error(status: int) -> Exception:
    response = type("Response", (), {"status": status, "reason": {400: "Bad Request", 403: "Forbidden", 429: "Too Many Requests"}[status]})()
    data = {"code": {400: 50035, 403: 50013, 429: 0}[status], "message": "simulated"}
    return (discord.Forbidden if status == 403 else discord.HTTPException)(response, data)


@pytest.mark.parametrize("status", [400, 403, 429])
async def test_a_reply_discord_rejects_is_logged_and_the_next_question_is_answered(fake, library, monkeypatch, caplog, status):
    real_send = discord.abc.Messageable.send
    failures = {"left": 1}

    async def flaky_send(self, *args, **kwargs):
        if failures["left"]:
            failures["left"] -= 1
            raise http_error(status)
        return await real_send(self, *args, **kwargs)

    monkeypatch.setattr(discord.abc.Messageable, "send", flaky_send)
    question = "!ask When did the harbour at Kestrel Bay reopen?"
    with caplog.at_level(logging.WARNING):
        error, sent = await said(question, fake.channel_a, fake.member_a)
    assert error is None and sent == []  # the reply was lost, the command did not fail
    assert any("Could not send a reply" in r.getMessage() for r in caplog.records)

    # The next questions, by prefix and by mention, are answered as usual.
    error, sent = await said(question, fake.channel_a, fake.member_a)
    assert error is None and "closed it for four days" in sent[0].embeds[0].description
    error, sent = await said(f"<@{fake.bot.user.id}> When did the harbour at Kestrel Bay reopen?", fake.channel_a, fake.admin_a)
    assert error is None and "closed it for four days" in sent[0].embeds[0].description


async def test_an_error_reply_discord_rejects_does_not_take_the_handler_down(fake, library, monkeypatch, caplog):
    real_send = discord.abc.Messageable.send
    failures = {"left": 1}

    async def flaky_send(self, *args, **kwargs):
        if failures["left"]:
            failures["left"] -= 1
            raise http_error(429)
        return await real_send(self, *args, **kwargs)

    monkeypatch.setattr(discord.abc.Messageable, "send", flaky_send)
    with caplog.at_level(logging.WARNING):
        error, sent = await said("!ask " + "x" * 600, fake.channel_a, fake.member_a)  # too long: a QuestionError reply
    assert sent == []
    assert any("Could not send a reply" in r.getMessage() for r in caplog.records)
    error, sent = await said("!ask When did the harbour at Kestrel Bay reopen?", fake.channel_a, fake.member_a)
    assert error is None and "closed it for four days" in sent[0].embeds[0].description


async def test_a_database_failure_during_a_question_is_an_apology_with_a_reference(fake, library, monkeypatch, caplog):
    async def broken(*args, **kwargs):
        raise sqlite3.OperationalError("disk I/O error")

    monkeypatch.setattr(library.store, "sentences_in_context", broken)
    with caplog.at_level(logging.ERROR):
        error, sent = await said("!ask When did the harbour at Kestrel Bay reopen?", fake.channel_a, fake.member_a)
    assert "something went wrong" in sent[0].content and "reference" in sent[0].content
    assert "disk I/O" not in sent[0].content
    monkeypatch.undo()
    error, sent = await said("!ask When did the harbour at Kestrel Bay reopen?", fake.channel_a, fake.member_a)
    assert error is None and "closed it for four days" in sent[0].embeds[0].description


async def test_a_manager_asking_for_article_99999999999999999999_is_told_there_is_none(fake):
    for command in ("!article show 99999999999999999999", "!article remove 99999999999999999999"):
        error, sent = await said(command, fake.channel_a, fake.admin_a)
        text = " ".join((m.content or "") + " ".join(e.description or "" for e in m.embeds) for m in sent)
        assert "No article 99999999999999999999 here." in text
        assert "something went wrong" not in text


# --- export and re-import ---------------------------------------------------------------------------------


async def test_an_export_imported_into_an_empty_database_reproduces_every_article_exactly(tmp_path):
    from bot.core.export import export_jsonl

    lib = await Library.open(tmp_path / "library.sqlite3")
    odd = ArticleDraft(
        title="'); DROP TABLE articles;-- \u202eRTL\u202c 😀 Cafe\u0301",
        body="First paragraph with @everyone and **bold**.\n\nSecond one,\twith a tab and \u200bzero width.",
        source="<@&987654321098765432>",
        author="A. Writer",
        url="https://example.org/a_(b)?q=1&r=2",
        published="2014-03-27",
        caption="Second one,\twith a tab and \u200bzero width.",
    )
    for n, (draft, scope) in enumerate(((HARBOUR, GLOBAL_SCOPE), (LIGHTHOUSE, 111), (odd, 222), (HARBOUR, 222))):
        await lib.add_draft(draft, scope=scope, added_by=f"manager {n}")
    export = tmp_path / "library.jsonl"
    assert await export_jsonl(lib.store, str(export)) == 4
    original = [row async for rows in lib.store.iter_articles() for row in rows]
    await lib.close()

    fresh = await Library.open(tmp_path / "fresh.sqlite3")
    try:
        summary = await fresh.import_paths([export], scope=GLOBAL_SCOPE, added_by="cli", preserve_scope=True)
        assert (len(summary.added), summary.duplicates, summary.failed) == (4, [], [])
        copied = [row async for rows in fresh.store.iter_articles() for row in rows]
        # (id, scope, title, source, author, url, published, caption, body, added_by, added_at):
        # everything but the id, including who added each article and when.
        assert [r[1:] for r in copied] == [r[1:] for r in original]
        assert [r[9] for r in copied] == ["manager 0", "manager 1", "manager 2", "manager 3"]
        await index_agrees_with_database(fresh)
        assert (await fresh.ask("What was restored at Marrow Point?", guild_id=111)).answered
        assert not (await fresh.ask("What was restored at Marrow Point?", guild_id=222)).answered
    finally:
        await fresh.close()
