"""End-to-end benchmark of the library: bulk import, start-up, questions, add-to-answerable,
and event-loop stalls, through the same `Library` the bot uses. While the bulk import runs, a
member asks a question every 100 ms (a busy server); those answers are timed too.

Libraries: the SQuAD v1.1 dev paragraphs (real text) first, then synthetic articles from
`benchmarks/synthetic.py` (Zipf-like vocabulary, lognormal sentence lengths, 50 sentences an
article) up to the requested size. Questions: real SQuAD questions and synthetic ones.

    .venv/bin/python benchmarks/bench_library.py --sizes 10000,100000,1000000

Figures are printed, never asserted: this machine is shared and noisy.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import shutil
import statistics
import sys
import tempfile
import threading
import time
import traceback
import zipfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bot.core.articles import GLOBAL_SCOPE  # noqa: E402
from bot.core.library import Library  # noqa: E402
from synthetic import SyntheticConfig, SyntheticCorpus  # noqa: E402

DEFAULT_SQUAD = Path(__file__).resolve().parents[2] / "shared" / "data" / "squad-dev-v1.1.json.zip"


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def load_squad(path: Path) -> tuple[list[dict], list[str]]:
    if path.suffix == ".zip":
        with zipfile.ZipFile(path) as z:
            data = json.loads(z.read(z.namelist()[0]))
    else:
        data = json.loads(path.read_text())
    articles, questions = [], []
    for art in data["data"]:
        for i, para in enumerate(art["paragraphs"]):
            articles.append({"title": f"{art['title'].replace('_', ' ')} ({i + 1})", "text": para["context"], "source": "Wikipedia"})
            questions.extend(qa["question"] for qa in para["qas"])
    return articles, questions


def synthetic_articles(corpus: SyntheticCorpus, n_sentences: int, seed: int) -> list[dict]:
    rng = np.random.default_rng(seed)
    sentences = corpus.sentences(rng, n_sentences)
    per = corpus.config.sentences_per_article
    out = []
    for a in range(0, len(sentences), per):
        text = " ".join(" ".join(s).capitalize() + "." for s in sentences[a : a + per])
        out.append({"title": f"Synthetic report {seed}-{a // per}", "text": text, "source": "Synthetic Wire"})
    return out


class Ticker:
    """Measures how late a 10 ms timer fires: the event loop's longest stall.

    With `explain_ms`, a watchdog thread prints every thread's stack to stderr whenever the
    loop has not ticked for that long: the busy thread is usually the one that held the GIL.
    (The watchdog itself competes for the GIL, so stall figures are taken without it.)"""

    def __init__(self, explain_ms: float | None = None) -> None:
        self.max_stall = 0.0
        self._task: asyncio.Task | None = None
        self._explain = explain_ms / 1000 if explain_ms else None
        self._beat = time.perf_counter()
        self._stop = threading.Event()

    async def _run(self) -> None:
        while True:
            start = self._beat = time.perf_counter()
            await asyncio.sleep(0.01)
            self.max_stall = max(self.max_stall, time.perf_counter() - start - 0.01)

    def _watch(self) -> None:
        assert self._explain is not None
        reported = None
        while not self._stop.wait(0.005):
            beat = self._beat
            late = time.perf_counter() - beat - 0.01
            if late > self._explain and reported != beat:
                reported = beat
                lines = [f"--- event loop late by {late * 1000:.0f} ms; busy threads:"]
                for ident, frame in sys._current_frames().items():
                    if ident == threading.get_ident():
                        continue
                    stack = traceback.extract_stack(frame)[-5:]
                    if stack and stack[-1].name in _IDLE:
                        continue
                    lines.append(f"  thread {ident}")
                    lines.extend(f"    {Path(f.filename).name}:{f.lineno} {f.name}: {f.line}" for f in stack)
                print("\n".join(lines), file=sys.stderr, flush=True)

    def __enter__(self) -> "Ticker":
        self._task = asyncio.get_running_loop().create_task(self._run())
        if self._explain:
            threading.Thread(target=self._watch, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()
        self._stop.set()


# Where an idle thread sits: not what stalls the loop.
_IDLE = {"wait", "get", "select", "poll", "_worker", "acquire", "_connection_worker_thread"}


async def ask_meanwhile(library: Library, questions: list[str], times: list[float]) -> None:
    for i in range(10**9):
        t0 = time.perf_counter()
        await library.ask(questions[i % len(questions)])
        times.append(time.perf_counter() - t0)
        await asyncio.sleep(0.1)


async def bench_size(size: int, squad: Path, workdir: Path, n_questions: int, explain_ms: float | None = None) -> dict:
    real, real_questions = load_squad(squad)
    corpus = SyntheticCorpus(SyntheticConfig())
    # Count real sentences roughly (5 per paragraph) and fill the rest synthetically.
    real_count = min(len(real), max(1, size // 5))
    articles = real[:real_count] + synthetic_articles(corpus, max(0, size - real_count * 5), seed=size)
    jsonl = workdir / f"lib-{size}.jsonl"
    with jsonl.open("w") as f:
        for a in articles:
            f.write(json.dumps(a) + "\n")
    db = workdir / f"lib-{size}.sqlite3"

    row: dict = {"size": size}
    library = await Library.open(db, corpus_dir=None)
    busy_times: list[float] = []
    with Ticker(explain_ms) as ticker:
        # A busy server: a member asks every 100 ms while the admin's import runs.
        member = asyncio.get_running_loop().create_task(ask_meanwhile(library, real_questions, busy_times))
        t0 = time.perf_counter()
        summary = await library.import_paths([jsonl], scope=GLOBAL_SCOPE, added_by="bench")
        elapsed = time.perf_counter() - t0
        member.cancel()
    busy_times.sort()
    sentences = len(library.retriever)
    row.update(
        sentences=sentences,
        articles=len(summary.added),
        import_s=elapsed,
        import_rate=sentences / elapsed,
        import_stall_ms=ticker.max_stall * 1000,
        busy_ask_p50_ms=statistics.median(busy_times) * 1000,
        busy_ask_p99_ms=busy_times[max(int(len(busy_times) * 0.99) - 1, 0)] * 1000,
    )
    t0 = time.perf_counter()
    await library.close()
    row["save_s"] = time.perf_counter() - t0

    # Start-up with the cache file, then without it (rebuilt from the stored tokens).
    for label, drop_cache in (("start_cache_s", False), ("start_rebuild_s", True)):
        if drop_cache:
            for p in workdir.glob(f"lib-{size}.sqlite3.index*"):
                p.unlink() if p.is_file() else shutil.rmtree(p)
        before = rss_mb()
        t0 = time.perf_counter()
        library = await Library.open(db, corpus_dir=None)
        row[label] = time.perf_counter() - t0
        row["index_mb"] = library.retriever.memory_bytes() / 2**20
        row["rss_growth_mb"] = rss_mb() - before
        if not drop_cache:
            await library.close()

    # Half SQuAD questions (their paragraphs are in the library), half bags of random words
    # from the synthetic vocabulary (nobody's question: declining them is right).
    real_asked = real_questions[: n_questions // 2]
    questions = real_asked + [" ".join(q) for q in corpus.questions(n_questions - n_questions // 2)]
    times = []
    answered: list[bool] = []
    with Ticker() as ticker:
        for q in questions:
            t0 = time.perf_counter()
            answer = await library.ask(q)
            times.append(time.perf_counter() - t0)
            answered.append(answer.answered)
        ask_stall = ticker.max_stall
    times.sort()
    row.update(
        ask_p50_ms=statistics.median(times) * 1000,
        ask_p99_ms=times[int(len(times) * 0.99) - 1] * 1000,
        answered=sum(answered) / len(questions),
        answered_squad=sum(answered[: len(real_asked)]) / max(1, len(real_asked)),
        answered_random_words=sum(answered[len(real_asked) :]) / max(1, len(questions) - len(real_asked)),
        ask_stall_ms=ask_stall * 1000,
    )

    # A new 50-sentence article: how long until a question finds it.
    fresh = synthetic_articles(SyntheticCorpus(SyntheticConfig(seed=777)), 50, seed=424242)[0]
    marker = "Quarzellion observatory reported a bright flare over Velmora."
    text = marker + " " + fresh["text"]
    adds = []
    for attempt in range(5):
        body = text + f" Bulletin number {attempt}."
        t0 = time.perf_counter()
        await library.add_bytes(json.dumps({"title": f"Flare {attempt}", "text": body}).encode(), "new.jsonl", scope=GLOBAL_SCOPE, added_by="bench")
        answer = await library.ask("Which observatory reported a flare over Velmora?")
        adds.append(time.perf_counter() - t0)
        assert answer.answered and "Quarzellion" in answer.passages[0].text
    row["add_to_answer_ms"] = statistics.median(adds) * 1000
    await library.close()

    # A crash after changes: the cache on disk is behind the database and catches up from its
    # change log (instead of a rebuild). The crash skips every clean-up, as kill -9 would.
    library = await Library.open(db, corpus_dir=None)
    await library.add_bytes(json.dumps({"title": "Late news", "text": text + " Late edition."}).encode(), "late.jsonl", scope=GLOBAL_SCOPE, added_by="bench")
    library._watcher.cancel()
    await library.store.close()
    t0 = time.perf_counter()
    library = await Library.open(db, corpus_dir=None)
    row["start_after_crash_s"] = time.perf_counter() - t0
    answer = await library.ask("Which observatory reported a flare over Velmora?")
    assert answer.answered
    await library.close()
    row["peak_rss_mb"] = peak_rss_mb()
    return row


def print_table(rows: list[dict]) -> None:
    cols = [
        ("size", "library (sentences)", "{:,}"),
        ("import_rate", "bulk import (sentences/s)", "{:,.0f}"),
        ("import_stall_ms", "max loop stall, import (ms)", "{:.1f}"),
        ("busy_ask_p50_ms", "ask p50 during import (ms)", "{:.1f}"),
        ("busy_ask_p99_ms", "ask p99 during import (ms)", "{:.1f}"),
        ("start_cache_s", "start-up, cache (s)", "{:.2f}"),
        ("start_rebuild_s", "start-up, from SQLite (s)", "{:.2f}"),
        ("start_after_crash_s", "start-up after a crash, cache + change log (s)", "{:.2f}"),
        ("index_mb", "index memory, all parts (MB)", "{:.0f}"),
        ("ask_p50_ms", "ask p50 (ms)", "{:.1f}"),
        ("ask_p99_ms", "ask p99 (ms)", "{:.1f}"),
        ("ask_stall_ms", "max loop stall, asking (ms)", "{:.1f}"),
        ("add_to_answer_ms", "add 50-sentence article → answerable (ms)", "{:.0f}"),
        ("peak_rss_mb", "peak RSS of the run (MB)", "{:.0f}"),
    ]
    print("| " + " | ".join(c[1] for c in cols) + " |")
    print("|" + "---|" * len(cols))
    for r in rows:
        print("| " + " | ".join(fmt.format(r[key]) for key, _, fmt in cols) + " |")


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10000,100000,1000000")
    parser.add_argument("--squad", type=Path, default=DEFAULT_SQUAD)
    parser.add_argument("--questions", type=int, default=400)
    parser.add_argument("--workdir", type=Path, help="keep the databases here (default: a temp dir)")
    parser.add_argument(
        "--explain-stalls", type=float, metavar="MS",
        help="during the import, print every thread's stack when the event loop is late by MS (diagnosis only)",
    )
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="quotebot-bench-"))
    workdir.mkdir(parents=True, exist_ok=True)
    rows = []
    try:
        for size in sizes:
            row = await bench_size(size, args.squad, workdir, args.questions, args.explain_stalls)
            print(json.dumps(row), flush=True)
            rows.append(row)
    finally:
        if args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)
    print()
    print_table(rows)


if __name__ == "__main__":
    asyncio.run(main())
