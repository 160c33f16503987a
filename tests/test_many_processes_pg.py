"""Many bot processes over one PostgreSQL: two real processes (tests/replica.py, the library as
the bot opens it, driven through stdin) on a throwaway server. An article an admin adds through
one is answered in the other; removed, it is gone from both; a process killed mid-import
loses nothing and catches up. And logins: two processes' shards in one login bucket never
identify within 5 s of each other."""
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

from bot.core.cluster import IDENTIFY_SPACING_SECONDS, LoginGate

REPO = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "QUOTEBOT_CORPUS_DIR": "/nonexistent-quotebot-corpus", "DISCORD_TOKEN": ""}
TOWNS = "Ashford Brampton Cheswick Dunmore Elsworth Fairlie Glenrock Harwick".split()


class Replica:
    """A bot process without Discord; call it with a command, get its reply."""

    def __init__(self, url: str, log: Path, *args: str) -> None:
        self.log = log.open("a")
        self.proc = subprocess.Popen(
            [sys.executable, str(REPO / "tests" / "replica.py"), url, *args],
            cwd=REPO, env=ENV, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.log, text=True,
        )
        self.ready = self._reply()

    def _reply(self) -> dict:
        line = self.proc.stdout.readline()  # type: ignore[union-attr]
        assert line, f"the process ended; its log: {Path(self.log.name).read_text()[-2000:]}"
        return json.loads(line)

    def send(self, **cmd: object) -> None:
        self.proc.stdin.write(json.dumps(cmd) + "\n")  # type: ignore[union-attr]
        self.proc.stdin.flush()  # type: ignore[union-attr]

    def __call__(self, **cmd: object) -> dict:
        self.send(**cmd)
        reply = self._reply()
        assert "error" not in reply, reply
        return reply

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.stdin.close()  # type: ignore[union-attr]
            assert self.proc.wait(timeout=60) == 0, Path(self.log.name).read_text()[-2000:]
        self.log.close()

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)
        self.log.close()


def sentence(prefix: str, i: int) -> str:
    return f"The {prefix}{i} committee in {TOWNS[i % len(TOWNS)]} approved a new footbridge over the canal on day {i}."


def question(prefix: str, i: int) -> str:
    return f"What did the {prefix}{i} committee approve?"


def write_articles(path: Path, prefix: str, n: int) -> None:
    with path.open("w", encoding="utf-8") as handle:
        for i in range(n):
            body = " ".join([sentence(prefix, i), f"Work on the {prefix}{i} bridge starts in spring.", "Residents were consulted."])
            handle.write(json.dumps({"title": f"{prefix.title()} report {i}", "text": body, "source": "Wire"}) + "\n")


GLOBAL = [
    ("Tide tables", "High tide at the pier is at six in the morning."),
    ("Library hours", "The library opens at nine on weekdays and at ten on Saturdays."),
    ("Bin days", "Green bins are emptied every second Tuesday from March."),
]


async def test_an_article_added_in_one_process_is_answered_in_the_other_and_removed_from_both(pg_url, tmp_path):
    one = Replica(pg_url, tmp_path / "one.log")
    other = Replica(pg_url, tmp_path / "other.log")
    try:
        for title, body in GLOBAL:
            one(op="add", title=title, body=body)
        bakery = one(op="add", title="Bakery opens", body="A bakery opened on Mill Lane selling rye bread to early commuters.")
        # The process that added it answers at once: it indexed the article before replying.
        assert set(one(op="ask", q="Where did the bakery open?")["titles"]) == {"Bakery opens"}
        # The other answers it within a second (LISTEN wakes it; the change log says what changed).
        waited = other(op="wait", q="Where did the bakery open?", title="Bakery opens", timeout=1.0)
        assert "timeout" not in waited

        other(op="remove", id=bakery["id"])
        assert "Bakery opens" not in other(op="ask", q="Where did the bakery open?")["titles"]
        assert "timeout" not in one(op="wait", q="Where did the bakery open?", title="Bakery opens", present=False, timeout=1.0)
        assert one(op="state")["sentences"] == other(op="state")["sentences"] == 2 * len(GLOBAL)
    finally:
        one.close()
        other.close()


async def test_a_process_killed_mid_import_loses_nothing_and_catches_up(pg_url, tmp_path):
    total = 4000  # several batches of 500 articles, each committed whole
    write_articles(tmp_path / "wire.jsonl", "harbour", total)
    watcher = Replica(pg_url, tmp_path / "watcher.log")
    importer = Replica(pg_url, tmp_path / "importer.log")
    conn = await asyncpg.connect(pg_url)
    try:
        importer.send(op="import", path=str(tmp_path / "wire.jsonl"))
        deadline = time.monotonic() + 120
        while (stored := await conn.fetchval("SELECT count(*) FROM articles")) == 0:
            assert time.monotonic() < deadline, "the import stored nothing"
            await asyncio.sleep(0.01)
        importer.kill()
        stored = await conn.fetchval("SELECT count(*) FROM articles")
        assert 0 < stored < total, "killed too late to test anything"
        # Nothing half-written: every stored article has all its sentences (title + 3).
        assert await conn.fetchval("SELECT count(*) FROM sentences") == 4 * stored

        # The process that kept running has caught up with every committed batch.
        for _ in range(500):
            if watcher(op="state")["sentences"] == 4 * stored:
                break
            await asyncio.sleep(0.02)
        assert watcher(op="state")["sentences"] == 4 * stored

        # Restarted, the killed one holds exactly what was stored, and the import, run again,
        # adds only the rest.
        importer = Replica(pg_url, tmp_path / "importer.log")
        assert importer.ready["sentences"] == 4 * stored
        again = importer(op="import", path=str(tmp_path / "wire.jsonl"))
        assert again == {"added": total - stored, "duplicates": stored}
        last = f"Harbour report {total - 1}"
        assert set(importer(op="ask", q=question("harbour", total - 1))["titles"]) == {last}
        assert "timeout" not in watcher(op="wait", q=question("harbour", total - 1), title=last, timeout=10)
        assert watcher(op="state")["sentences"] == importer(op="state")["sentences"] == 4 * total
    finally:
        await conn.close()
        importer.close()
        watcher.close()


async def test_two_processes_shards_in_one_login_bucket_identify_at_least_5_s_apart(pg_url):
    first, second = LoginGate(pg_url), LoginGate(pg_url)  # two processes: two connections
    when: dict[str, float] = {}

    async def identify(gate: LoginGate, shard_id: int, name: str) -> None:
        await gate.before_identify(shard_id, max_concurrency=2)
        when[name] = time.monotonic()

    try:
        start = time.monotonic()
        # Shards 0 and 2 share bucket 0 (with max_concurrency 2); shard 1 is in bucket 1.
        await asyncio.gather(identify(first, 0, "a"), identify(second, 2, "b"), identify(second, 1, "c"))
        assert abs(when["a"] - when["b"]) >= 5.0
        assert when["c"] - start < 2.0  # another bucket does not wait
        assert IDENTIFY_SPACING_SECONDS >= 5.0
    finally:
        await first.close()
        await second.close()


async def test_a_process_running_shard_1_of_2_follows_only_its_servers_changes(pg_url, tmp_path):
    on_shard_0, on_shard_1 = 400_000_000_000 << 22, 400_000_000_001 << 22
    everything = Replica(pg_url, tmp_path / "all.log")  # the command line: every server
    shard_1 = Replica(pg_url, tmp_path / "shard1.log", "--shards", "1/2")
    try:
        for title, body in GLOBAL:
            everything(op="add", title=title, body=body)
        everything(op="add", title="Ferry news", body="The island ferry added a late sailing on Fridays.", scope=on_shard_0)
        everything(op="add", title="Ferry times", body="The island ferry added a late sailing on Fridays.", scope=on_shard_1)
        generation = everything(op="state")["generation"]
        assert "timeout" not in shard_1(op="until", generation=generation, timeout=2)
        assert shard_1(op="state")["sentences"] == 2 * len(GLOBAL) + 2  # not the shard-0 server's
        assert set(shard_1(op="ask", q="When does the island ferry sail late?", guild=on_shard_1)["titles"]) == {"Ferry times"}
        assert shard_1(op="ask", q="Which pier has high tide at six?", guild=None)["titles"][0] == "Tide tables"
    finally:
        everything.close()
        shard_1.close()
