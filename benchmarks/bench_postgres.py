"""Bulk import into PostgreSQL (COPY through asyncpg) against SQLite, in the same run.

The same synthetic articles (50 sentences each, from `benchmarks/synthetic.py`) go through each
store's `add_articles` in batches of `Library`'s BULK_BATCH articles, one transaction a batch,
as a bulk import does; then every sentence is read back with `iter_index_rows`, as an index
rebuild does. Splitting and tokenising are not timed: the sentences are made ready beforehand,
so the figures are the stores'. For reference, the same sentence rows are also COPYed into a
bare table with the constraints added afterwards (the fastest PostgreSQL can take them).

    .venv/bin/python benchmarks/bench_postgres.py --sentences 1000000

Without `--url`, a throwaway PostgreSQL is started in a temporary folder with the server's
default durability (fsync on), as tests/postgres.py does for the tests; SQLite runs as the bot
runs it (WAL, synchronous=NORMAL). Figures are printed, never asserted.
"""
from __future__ import annotations

import argparse
import asyncio
import gc
import shutil
import sys
import tempfile
import time
from pathlib import Path

import asyncpg
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from bench_library import Ticker  # noqa: E402
from bot.core.articles import GLOBAL_SCOPE, ArticleDraft, SentenceRecord  # noqa: E402
from bot.core.library import BULK_BATCH  # noqa: E402
from bot.core.stores import Store, open_store  # noqa: E402
from postgres import start_server  # noqa: E402
from synthetic import SyntheticCorpus  # noqa: E402

Batch = list[tuple[ArticleDraft, list[SentenceRecord]]]


def make_batches(n_sentences: int, seed: int = 7) -> list[Batch]:
    """Synthetic articles ready to store: title and body text, sentences with offsets and tokens."""
    corpus = SyntheticCorpus()
    rng = np.random.default_rng(seed)
    per = corpus.config.sentences_per_article
    sentences = corpus.sentences(rng, n_sentences)
    articles = []
    for a in range(0, len(sentences), per):
        body_parts, records, offset = [], [], 0
        title = f"Synthetic report {a // per}"
        records.append(SentenceRecord(0, 0, "title", 0, len(title), title, ("synthetic", "report")))
        for words in sentences[a : a + per - 1]:
            text = " ".join(words).capitalize() + "."
            records.append(SentenceRecord(len(records), 1, "body", offset, offset + len(text), text, tuple(words)))
            body_parts.append(text)
            offset += len(text) + 1
        articles.append((ArticleDraft(title=title, body=" ".join(body_parts), source="Synthetic Wire"), records))
    return [articles[i : i + BULK_BATCH] for i in range(0, len(articles), BULK_BATCH)]


async def import_into(store: Store, batches: list[Batch]) -> dict:
    rows = sum(len(recs) for batch in batches for _, recs in batch)
    with Ticker() as ticker:
        t0 = time.perf_counter()
        for batch in batches:
            await store.add_articles(batch, scope=GLOBAL_SCOPE, added_by="bench")
        imported = time.perf_counter() - t0
        stall = ticker.max_stall
    t0 = time.perf_counter()
    read = 0
    async for got in store.iter_index_rows():
        read += len(got)
    read_back = time.perf_counter() - t0
    assert read == rows, (read, rows)
    return {"rows": rows, "import_s": imported, "rows_per_s": rows / imported, "stall_ms": stall * 1000, "read_s": read_back}


async def disk_mb(target: Path | str) -> float:
    """What the library takes on disk: the SQLite file and its WAL, or the PostgreSQL database."""
    if isinstance(target, Path):
        return sum(p.stat().st_size for p in target.parent.glob(target.name + "*") if not p.name.endswith(".index")) / 2**20
    conn = await asyncpg.connect(target)
    try:
        return await conn.fetchval("SELECT pg_database_size(current_database())") / 2**20
    finally:
        await conn.close()


async def raw_copy(url: str, batches: list[Batch]) -> dict:
    """COPY the sentence rows into a bare table, then add the keys: PostgreSQL's ceiling."""
    conn = await asyncpg.connect(url)
    try:
        await conn.execute(
            'CREATE TABLE raw_sentences (id BIGINT, article_id BIGINT, seq INTEGER, paragraph INTEGER, kind TEXT,'
            ' start INTEGER, "end" INTEGER, text TEXT, tokens TEXT)'
        )
        records = []
        sid = 0
        for a, (draft, recs) in enumerate(article for batch in batches for article in batch):
            for r in recs:
                sid += 1
                records.append((sid, a + 1, r.seq, r.paragraph, r.kind, r.start, r.end, r.text, " ".join(r.tokens)))
        t0 = time.perf_counter()
        await conn.copy_records_to_table("raw_sentences", records=records)
        copied = time.perf_counter() - t0
        await conn.execute("ALTER TABLE raw_sentences ADD PRIMARY KEY (id), ADD UNIQUE (article_id, seq)")
        total = time.perf_counter() - t0
    finally:
        await conn.close()
    return {"rows": len(records), "copy_s": copied, "with_keys_s": total}


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sentences", type=int, default=1_000_000)
    parser.add_argument("--url", help="an existing, empty PostgreSQL database (default: start a throwaway server)")
    args = parser.parse_args()

    t0 = time.perf_counter()
    batches = make_batches(args.sentences)
    gc.freeze()  # as the library does: the cyclic collector would walk these ready rows again and again
    print(f"{sum(len(b) for b in batches):,} articles, {args.sentences:,} sentences made in {time.perf_counter() - t0:.1f} s", flush=True)

    server = None
    url = args.url
    if url is None:
        server = await asyncio.to_thread(start_server, durable=True)
        admin = await asyncpg.connect(server.url())
        await admin.execute("CREATE DATABASE bench")
        await admin.close()
        url = server.url("bench")
    workdir = Path(tempfile.mkdtemp(prefix="quotebot-bench-"))
    results = {}
    try:
        for name, target in (("SQLite", workdir / "bench.sqlite3"), ("PostgreSQL", url)):
            store = await open_store(target)
            try:
                results[name] = await import_into(store, batches)
            finally:
                await store.close()
            r = results[name]
            r["disk_mb"] = await disk_mb(target)
            print(f"{name}: {r['rows']:,} rows in {r['import_s']:.1f} s", flush=True)
        raw = await raw_copy(url, batches)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
        if server is not None:
            await asyncio.to_thread(server.stop)
            shutil.rmtree(server.root, ignore_errors=True)

    print()
    print(f"Bulk import of {args.sentences:,} sentence rows, {BULK_BATCH} articles (~{BULK_BATCH * 50:,} rows) a transaction:")
    print()
    print("| store | import s | rows/s | max loop stall, import (ms) | read back for a rebuild (s) | on disk (MB) |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, r in results.items():
        print(
            f"| {name} | {r['import_s']:.1f} | {r['rows_per_s']:,.0f} | {r['stall_ms']:.0f} | {r['read_s']:.1f} | {r['disk_mb']:,.0f} |"
        )
    print()
    print(
        f"Reference, one COPY of the {raw['rows']:,} sentence rows into a bare PostgreSQL table: {raw['copy_s']:.1f} s,"
        f" {raw['with_keys_s']:.1f} s with the keys added after."
    )


if __name__ == "__main__":
    asyncio.run(main())
