"""Many processes, one library (SQLite, or PostgreSQL with --postgres): how soon the running bot
answers from an article another process added, and what looking for such changes costs a question.

A library (SQuAD v1.1 dev paragraphs, then synthetic articles up to `--size` sentences) is
opened in this process, as the bot holds it. A second process (this script with `--writer`)
opens the same database and adds one new article at a time when told to. Per add, measured
from the moment the writer's `add_draft` returned:

* asked at once: a member asks about the new article straight away; time until that first
  answer quoting it is back (the question waits for the change log to be applied);
* nobody asks: time until the background look (every 0.5 s; on PostgreSQL at once, woken by
  the NOTIFY of the add) has put it in the index.

Questions: SQuAD questions asked with the change watching as shipped, and the same questions
with it switched off (baseline, same run, interleaved in blocks).

    .venv/bin/python benchmarks/bench_cross_process.py --size 100000 --adds 50 [--postgres]

Figures are printed, never asserted: this machine is shared and noisy.
"""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_library import DEFAULT_SQUAD, load_squad, synthetic_articles  # noqa: E402
from synthetic import SyntheticConfig, SyntheticCorpus  # noqa: E402

from bot.core.articles import GLOBAL_SCOPE, ArticleDraft  # noqa: E402
from bot.core.library import POLL_SECONDS, Library  # noqa: E402


def new_article(n: int) -> tuple[ArticleDraft, str, str]:
    """(draft, a question only it answers, the sentence that answers it)."""
    word = f"zorblat{n}x"
    sentence = f"The {word} lighthouse keeper logged {n} passing ships during the night watch."
    draft = ArticleDraft(title=f"Night watch {n}", body=sentence, source="Harbour Log")
    return draft, f"How many ships did the {word} lighthouse keeper log?", sentence


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def figures(values: list[float]) -> str:
    return f"p50 {percentile(values, 50):8.1f} ms   p99 {percentile(values, 99):8.1f} ms   max {max(values):8.1f} ms"


# --- the other process ------------------------------------------------------------------------------


async def writer(db: str) -> None:
    """Add article n for each line "n" on stdin; answer "done <monotonic time> <generation>"."""
    lib = await Library.open(db, corpus_dir=None)
    loop = asyncio.get_running_loop()
    try:
        print("ready", flush=True)
        while line := (await loop.run_in_executor(None, sys.stdin.readline)).strip():
            draft, _, _ = new_article(int(line))
            await lib.add_draft(draft, scope=GLOBAL_SCOPE, added_by="bench-writer")
            print(f"done {time.monotonic()} {lib.store.last_generation}", flush=True)
    finally:
        await lib.close()


# --- the bot's process --------------------------------------------------------------------------------


async def build(db: Path | str, size: int, squad: Path, workdir: Path) -> list[str]:
    real, questions = load_squad(squad)
    articles = real + synthetic_articles(SyntheticCorpus(SyntheticConfig()), max(0, size - len(real) * 5), seed=size)
    jsonl = workdir / "library.jsonl"
    jsonl.write_text("".join(json.dumps(a) + "\n" for a in articles))
    lib = await Library.open(db, corpus_dir=None)
    try:
        summary = await lib.import_paths([jsonl], scope=GLOBAL_SCOPE, added_by="bench")
        print(f"library: {summary.line()}, {len(lib.retriever):,} sentences", flush=True)
    finally:
        await lib.close()
    return questions


async def time_asks(lib: Library, questions: list[str]) -> list[float]:
    times = []
    for q in questions:
        t0 = time.perf_counter()
        await lib.ask(q)
        times.append((time.perf_counter() - t0) * 1000)
    return times


async def ask_costs(lib: Library, questions: list[str], rounds: int) -> tuple[list[float], list[float]]:
    """(ask ms with change watching, ask ms without), interleaved in blocks of 50 questions."""
    watching, baseline = [], []
    generation, watcher = lib.store.generation, lib._watcher

    async def unchanged() -> int:  # the look at the database, switched off
        return lib._generation

    await time_asks(lib, questions[:50])  # warm-up
    for r in range(rounds):
        block = questions[(r * 50) % len(questions) :][:50]
        watching.extend(await time_asks(lib, block))
        lib.store.generation = unchanged  # type: ignore[method-assign]
        assert watcher is not None
        watcher.cancel()
        baseline.extend(await time_asks(lib, block))
        lib.store.generation = generation  # type: ignore[method-assign]
        watcher = lib._watcher = asyncio.get_running_loop().create_task(lib._watch())
    return watching, baseline


async def cross_process(lib: Library, db: Path | str, adds: int) -> tuple[list[float], list[float]]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, __file__, "--writer", str(db),
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
    )
    assert proc.stdin is not None and proc.stdout is not None
    assert (await proc.stdout.readline()).strip() == b"ready"

    async def add(n: int) -> tuple[float, int]:
        proc.stdin.write(f"{n}\n".encode())  # type: ignore[union-attr]
        await proc.stdin.drain()  # type: ignore[union-attr]
        _, at, generation = (await proc.stdout.readline()).decode().split()  # type: ignore[union-attr]
        return float(at), int(generation)

    asked, unasked = [], []
    phase = random.Random(7)
    try:
        for n in range(adds):
            _, question, sentence = new_article(n)
            done_at, _ = await add(n)
            answer = await lib.ask(question)
            if not any(p.text == sentence for p in answer.passages):
                raise SystemExit(f"article {n} was not answered by the first question after its add")
            asked.append((time.monotonic() - done_at) * 1000)
        for n in range(adds, 2 * adds):
            done_at, generation = await add(n)
            while lib._generation < generation:
                await asyncio.sleep(0.002)
            unasked.append((time.monotonic() - done_at) * 1000)
            _, question, sentence = new_article(n)
            assert any(p.text == sentence for p in (await lib.ask(question)).passages)
            await asyncio.sleep(phase.uniform(0, POLL_SECONDS))  # land at varied points of the look
    finally:
        proc.stdin.close()
        await proc.wait()
    return asked, unasked


@contextlib.contextmanager
def database(postgres: bool, workdir: Path) -> Iterator[Path | str]:
    """A SQLite file in `workdir`, or a database on a throwaway PostgreSQL (tests/postgres.py)."""
    if not postgres:
        yield workdir / "library.sqlite3"
        return
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from postgres import start_server

    server = start_server(durable=True)
    try:
        subprocess.run([*server.run_as, str(server.bin_dir / "createdb"), "-h", "127.0.0.1", "-p", str(server.port), "-U", "postgres", "bench"], check=True)
        yield server.url("bench")
    finally:
        server.stop()
        shutil.rmtree(server.root, ignore_errors=True)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=100_000, help="library size in sentences (about)")
    parser.add_argument("--adds", type=int, default=50, help="articles added by the other process, per mode")
    parser.add_argument("--rounds", type=int, default=10, help="blocks of 50 questions per ask mode")
    parser.add_argument("--squad", type=Path, default=DEFAULT_SQUAD)
    parser.add_argument("--postgres", action="store_true", help="the library in a throwaway PostgreSQL (NOTIFY wakes the look)")
    parser.add_argument("--writer", metavar="DB", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.writer:
        await writer(args.writer)
        return
    with tempfile.TemporaryDirectory(prefix="quotebot-xproc-") as tmp, database(args.postgres, Path(tmp)) as db:
        questions = await build(db, args.size, args.squad, Path(tmp))
        lib = await Library.open(db, corpus_dir=None)
        try:
            asked, unasked = await cross_process(lib, db, args.adds)
            watching, baseline = await ask_costs(lib, questions, args.rounds)
        finally:
            await lib.close()
    print(f"\nstore: {'PostgreSQL' if args.postgres else 'SQLite'}")
    print(f"added in another process -> answerable here ({args.adds} adds each):")
    print(f"  asked at once          {figures(asked)}")
    print(f"  nobody asks (NOTIFY or the 0.5 s look) {figures(unasked)}")
    print(f"\nask, {len(watching)} SQuAD questions each, same run, interleaved:")
    print(f"  with change watching   {figures(watching)}   mean {statistics.fmean(watching):.2f} ms")
    print(f"  without (baseline)     {figures(baseline)}   mean {statistics.fmean(baseline):.2f} ms")


if __name__ == "__main__":
    asyncio.run(main())
