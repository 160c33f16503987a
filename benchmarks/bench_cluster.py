"""Many processes over one PostgreSQL: how soon an article added in one process is answered in
another, how fast a process is ready, and what a second process adds to the questions served.

A throwaway PostgreSQL (tests/postgres.py, default durability) is filled with `--sentences`
synthetic sentences (50-sentence articles, COPYed through the store as a bulk import does)
and vacuumed (what autovacuum would do, done before anything is timed), then real bot
processes without Discord (tests/replica.py) are started over it:

* ready from nothing: a process with no snapshot builds its index from the database;
* ready from snapshot + log: a process restarted after others added articles;
* added -> answerable elsewhere: process A adds a new 50-sentence article; from the moment A's
  add returns, process B is asked about it until it answers ("asked at once"), and, separately,
  the time until B's index holds it with no question asked (LISTEN wakes B's follower);
* questions: one process asking alone (the baseline), then A and B at once.

    .venv/bin/python benchmarks/bench_cluster.py --sentences 1000000

Figures are printed, never asserted: the machine is shared and noisy.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import asyncpg

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(ROOT / "tests"))

from bench_postgres import make_batches  # noqa: E402
from postgres import start_server  # noqa: E402
from synthetic import SyntheticCorpus  # noqa: E402

from bot.core.articles import GLOBAL_SCOPE  # noqa: E402
from bot.core.stores import open_store  # noqa: E402
from bot.core.tokens import TOKENIZER_VERSION, tokenize  # noqa: E402

ENV = {"QUOTEBOT_CORPUS_DIR": "/nonexistent-quotebot-corpus", "DISCORD_TOKEN": ""}


class Replica:
    def __init__(self, url: str, snapshot: Path, log: Path) -> None:
        import os

        start = time.perf_counter()
        self.log = log.open("a")
        self.proc = subprocess.Popen(
            [sys.executable, str(ROOT / "tests" / "replica.py"), url, "--snapshot", str(snapshot)],
            cwd=ROOT, env={**os.environ, **ENV}, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.log, text=True,
        )
        self.ready = self._reply()
        self.wall = time.perf_counter() - start  # with the interpreter's start and imports

    def _reply(self) -> dict:
        line = self.proc.stdout.readline()  # type: ignore[union-attr]
        if not line:
            raise RuntimeError(f"replica ended; see {self.log.name}")
        return json.loads(line)

    def __call__(self, **cmd: object) -> dict:
        self.proc.stdin.write(json.dumps(cmd) + "\n")  # type: ignore[union-attr]
        self.proc.stdin.flush()  # type: ignore[union-attr]
        reply = self._reply()
        if "error" in reply:
            raise RuntimeError(reply["error"])
        return reply

    def close(self) -> None:
        self.proc.stdin.close()  # type: ignore[union-attr]
        self.proc.wait(timeout=300)
        self.log.close()


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]


def new_article(i: int, words: list[str]) -> tuple[str, str, str]:
    """A 50-sentence article with a question only it answers."""
    key = f"zqx{i}harbour"
    sentences = [f"The {key} committee approved a footbridge over the canal."]
    sentences += [" ".join(words[(i * 7 + j * 5 + k) % len(words)] for k in range(9)).capitalize() + "." for j in range(49)]
    return f"Bulletin {i}", " ".join(sentences), f"What did the {key} committee approve?"


async def fill(url: str, n_sentences: int) -> float:
    store = await open_store(url)
    start = time.perf_counter()
    try:
        # As a library would on a new database: the stored tokens are of today's tokenizer.
        await store.retokenise(tokenize, TOKENIZER_VERSION)
        for batch in make_batches(n_sentences):
            await store.add_articles(batch, scope=GLOBAL_SCOPE, added_by="bench")
    finally:
        await store.close()
    filled = time.perf_counter() - start
    # What autovacuum would do to the new rows anyway, done before anything is timed: run
    # meanwhile, it takes the machine's cores from whichever phase it lands in.
    conn = await asyncpg.connect(url)
    try:
        await conn.execute("VACUUM ANALYZE")
    finally:
        await conn.close()
    return filled


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sentences", type=int, default=100_000)
    parser.add_argument("--adds", type=int, default=100)
    parser.add_argument("--seconds", type=float, default=10.0, help="per question run")
    parser.add_argument("--url", help="an empty PostgreSQL database (default: a throwaway server)")
    args = parser.parse_args()

    server = None if args.url else start_server(durable=True)
    url = args.url or server.url()  # type: ignore[union-attr]
    work = Path(tempfile.mkdtemp(prefix="quotebot-cluster-"))
    replicas: list[Replica] = []
    rows: list[tuple[str, str]] = []
    try:
        filled = asyncio.run(fill(url, args.sentences))
        print(f"stored {args.sentences:,} sentences in {filled:.1f} s", flush=True)

        a = Replica(url, work / "a.index", work / "a.log")
        replicas.append(a)
        rows.append(("ready from nothing (index built from the database)", f"{a.ready['ready']:.1f} s (process {a.wall:.1f} s)"))
        print(rows[-1], a.ready, flush=True)
        b = Replica(url, work / "b.index", work / "b.log")
        replicas.append(b)
        rows.append(("ready from nothing, a second process (A running)", f"{b.ready['ready']:.1f} s (process {b.wall:.1f} s)"))
        print(rows[-1], flush=True)

        words = SyntheticCorpus().words[100:2100]
        asked, followed = [], []
        for i in range(args.adds):
            title, body, q = new_article(i, words)
            a(op="add", title=title, body=body)
            generation = a(op="state")["generation"]
            followed.append(b(op="until", generation=generation)["seconds"])
            title, body, q = new_article(10_000 + i, words)
            a(op="add", title=title, body=body)
            waited = b(op="wait", q=q, title=title, timeout=10)
            asked.append(waited.get("seconds", float("inf")))
        rows.append((f"added in A -> answered in B, asked at once (p50 / p99 of {args.adds})", f"{pct(asked, 50) * 1000:.0f} / {pct(asked, 99) * 1000:.0f} ms"))
        rows.append((f"added in A -> in B's index, nobody asking (p50 / p99 of {args.adds})", f"{pct(followed, 50) * 1000:.0f} / {pct(followed, 99) * 1000:.0f} ms"))
        print(rows[-2:], flush=True)

        qs = [" ".join(t) for t in SyntheticCorpus().questions(2000)]
        alone = a(op="bench", qs=qs, seconds=args.seconds)
        one_qps = alone["answered"] / args.seconds
        rows.append(("questions, one process: p50 / p99", f"{pct(alone['ms'], 50):.1f} / {pct(alone['ms'], 99):.1f} ms"))
        rows.append(("questions per second, one process (baseline)", f"{one_qps:.0f}"))
        results: dict[str, dict] = {}

        def run(name: str, replica: Replica, offset: int) -> None:
            results[name] = replica(op="bench", qs=qs[offset:] + qs[:offset], seconds=args.seconds)

        threads = [threading.Thread(target=run, args=(n, r, o)) for n, r, o in (("a", a, 0), ("b", b, 1000))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        both_qps = sum(r["answered"] for r in results.values()) / args.seconds
        both_ms = results["a"]["ms"] + results["b"]["ms"]
        rows.append(("questions, two processes at once: p50 / p99", f"{pct(both_ms, 50):.1f} / {pct(both_ms, 99):.1f} ms"))
        rows.append(("questions per second, two processes", f"{both_qps:.0f} ({both_qps / one_qps:.2f}x one)"))
        print(rows[-4:], flush=True)

        rss = a(op="state")["rss_mb"]
        rows.append(("memory of one process holding every sentence (RSS)", f"{rss:.0f} MB"))
        b.close()
        replicas.remove(b)
        for i in range(20):  # B is away: the log grows by 20 articles
            title, body, _ = new_article(20_000 + i, words)
            a(op="add", title=title, body=body)
        b = Replica(url, work / "b.index", work / "b.log")
        replicas.append(b)
        same = b.ready["sentences"] == a(op="state")["sentences"]
        rows.append(("ready from snapshot + log (20 articles behind)", f"{b.ready['ready']:.1f} s (process {b.wall:.1f} s){'' if same else ' MISMATCH'}"))
    finally:
        for r in replicas:
            try:
                r.close()
            except Exception:
                r.proc.kill()
        if server is not None:
            server.stop()
            shutil.rmtree(server.root, ignore_errors=True)
        shutil.rmtree(work, ignore_errors=True)

    print(f"\n{args.sentences:,} sentences in one PostgreSQL, two processes, {args.adds} adds")
    print("| measure | figure |\n|---|---|")
    for name, value in rows:
        print(f"| {name} | {value} |")


if __name__ == "__main__":
    main()
