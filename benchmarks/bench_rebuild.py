"""Start-up without a usable index cache: the index rebuilt from the stored tokens, A/B.

One SQLite library of synthetic 50-sentence articles (`bench_postgres.make_batches`, stored
with today's tokenizer version) is filled once; then each checkout given with `--code` (default:
this one) opens it with the cache deleted, in a fresh process, round after round (alternating,
so both see the same machine load). Each start reports the whole `Library.open` (rebuild and
cache save), the rebuild alone, the event loop's longest stall meanwhile (a 10 ms ticker), and
the median time of 60 questions asked afterwards.

    .venv/bin/python benchmarks/bench_rebuild.py --sentences 1000000 --code /work/main --code . --rounds 3

Figures are printed, never asserted: this machine is shared and noisy.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

# Runs in a fresh process with the checkout under test as its working directory.
_CHILD = """
import asyncio, json, sys, time
from pathlib import Path
sys.path.insert(0, ".")
from bot.core.library import Library

async def main(db):
    for p in Path(db).parent.glob(Path(db).name + ".index*"):
        p.unlink()
    stall = 0.0
    async def tick():
        nonlocal stall
        while True:
            t = time.perf_counter()
            await asyncio.sleep(0.01)
            stall = max(stall, time.perf_counter() - t - 0.01)
    ticker = asyncio.get_running_loop().create_task(tick())
    spent = {}
    rebuild = Library._rebuild
    async def timed(self):
        t = time.perf_counter()
        await rebuild(self)
        spent["rebuild_s"] = time.perf_counter() - t
    Library._rebuild = timed
    t0 = time.perf_counter()
    library = await Library.open(db, corpus_dir=None)
    spent["open_s"] = time.perf_counter() - t0
    ticker.cancel()
    spent["stall_ms"] = stall * 1000
    spent["sentences"] = len(library.retriever)
    # Questions on the rebuilt index (it must answer as fast as one built otherwise).
    sys.path.insert(0, "benchmarks")
    from synthetic import SyntheticConfig, SyntheticCorpus
    times = []
    for q in SyntheticCorpus(SyntheticConfig()).questions(60):
        t = time.perf_counter()
        await library.ask(" ".join(q))
        times.append(time.perf_counter() - t)
    spent["ask_p50_ms"] = sorted(times)[len(times) // 2] * 1000
    await library.close()
    print(json.dumps(spent))

asyncio.run(main(sys.argv[1]))
"""


async def fill(db: Path, n_sentences: int) -> float:
    from bench_postgres import make_batches

    from bot.core.articles import GLOBAL_SCOPE
    from bot.core.stores import open_store
    from bot.core.tokens import TOKENIZER_VERSION, tokenize

    store = await open_store(db)
    start = time.perf_counter()
    try:
        await store.retokenise(tokenize, TOKENIZER_VERSION)  # as a new library records it
        for batch in make_batches(n_sentences):
            await store.add_articles(batch, scope=GLOBAL_SCOPE, added_by="bench")
    finally:
        await store.close()
    return time.perf_counter() - start


def start_once(code: Path, db: Path) -> dict:
    out = subprocess.run(
        [sys.executable, "-c", _CHILD, str(db)], cwd=code, capture_output=True, text=True, check=True,
        env={**os.environ, "PYTHONPATH": ""},
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sentences", type=int, default=1_000_000)
    parser.add_argument("--code", type=Path, action="append", help="a checkout to time (repeatable; default: this one)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--workdir", type=Path, help="keep the database here and reuse it (default: a temp dir)")
    args = parser.parse_args()
    codes = [c.resolve() for c in (args.code or [Path(__file__).resolve().parents[1]])]
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="quotebot-bench-"))
    workdir.mkdir(parents=True, exist_ok=True)
    db = workdir / f"rebuild-{args.sentences}.sqlite3"
    try:
        if not db.exists():
            print(f"filled {args.sentences:,} sentences in {asyncio.run(fill(db, args.sentences)):.1f} s", flush=True)
        runs: dict[Path, list[dict]] = {c: [] for c in codes}
        for r in range(args.rounds):
            for code in codes:
                got = start_once(code, db)
                runs[code].append(got)
                print(f"round {r + 1} {code}: {json.dumps(got)}", flush=True)
    finally:
        if args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)
    print()
    print(f"| checkout | start-up without cache, median of {args.rounds} (s) | rebuild alone (s) | max loop stall (ms) | ask p50 after (ms) |")
    print("|---|---:|---:|---:|---:|")
    for code, got in runs.items():
        print(
            f"| {code} | {statistics.median(g['open_s'] for g in got):.2f} | {statistics.median(g['rebuild_s'] for g in got):.2f}"
            f" | {max(g['stall_ms'] for g in got):.0f} | {statistics.median(g['ask_p50_ms'] for g in got):.1f} |"
        )


if __name__ == "__main__":
    main()
