"""Benchmark BM25Index against rank_bm25 (and bm25s when installed).

Usage::

    python benchmarks/bench_index.py                       # 10k, 100k, 1M
    python benchmarks/bench_index.py --quick               # 10k, 100k, fewer questions
    python benchmarks/bench_index.py --sizes 100000 --questions 500 --markdown out.md

Corpus and questions come from ``benchmarks/synthetic.py`` (see its docstring
for the generator).  For every size, in the same process run:

* rank_bm25.BM25Okapi: build, then ``get_scores`` + numpy top-k per question
  (only for sizes <= --rank-bm25-max-size, and always for 100k), plus a parity
  check of the top-k against BM25Index;
* bm25s (optional, if importable): build and ``retrieve`` per question;
* BM25Index: build time, save + load time, file size, retained memory
  (array bytes + vocabulary estimate, and RSS growth), build peak (tracemalloc),
  question latency p50/p99, latency of adding a 50-sentence article and getting
  it back from a question, and a background ``compact()``.

Latencies are wall-clock on whatever machine runs this; on a shared box expect
noise, so compare engines within one run (the speed-up column).
"""

from __future__ import annotations

import argparse
import gc
import logging
import sys
import tempfile
import time
import tracemalloc
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
for p in (str(HERE), str(HERE.parent)):
    if p not in sys.path:
        sys.path.insert(0, p)

from synthetic import Library, SyntheticConfig, SyntheticCorpus  # noqa: E402

from bot.core.bm25_index import BM25Index  # noqa: E402

log = logging.getLogger("bench_index")
ALWAYS_RANK_BM25_SIZE = 100_000


@dataclass
class Row:
    size: int
    engine: str
    build_s: float | None = None
    retained_mb: float | None = None
    peak_mb: float | None = None
    p50_ms: float | None = None
    p99_ms: float | None = None
    speedup_p50: float | None = None
    speedup_p99: float | None = None
    notes: str = ""
    extra: dict[str, float | int | str] = field(default_factory=dict)
    latencies: list[float] = field(default_factory=list)


def rss_mb() -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q)) if values else float("nan")


def time_questions(fn, questions: list[list[str]], warmup: int = 5) -> list[float]:  # type: ignore[no-untyped-def]
    for q in questions[:warmup]:
        fn(q)
    out = []
    for q in questions:
        t = time.perf_counter()
        fn(q)
        out.append((time.perf_counter() - t) * 1e3)
    return out


def rank_bm25_top_k(ref, q: list[str], k: int) -> np.ndarray:  # type: ignore[no-untyped-def]
    scores = ref.get_scores(q)
    if len(scores) > k:
        part = np.argpartition(-scores, k)[:k]
        return part[np.argsort(-scores[part], kind="stable")]
    return np.argsort(-scores, kind="stable")


def rank_bm25_reference(ref, docs: list[list[str]], q: list[str], k: int) -> list[int]:  # type: ignore[no-untyped-def]
    """Score desc then position asc, restricted to docs containing a term."""
    scores = ref.get_scores(q)
    terms = set(q)
    cand = np.array([i for i, d in enumerate(ref.doc_freqs) if not terms.isdisjoint(d)], dtype=np.int64)
    if len(cand) == 0:
        return []
    return cand[np.lexsort((cand, -scores[cand]))][:k].tolist()


def bench_rank_bm25(size: int, lib: Library, questions: list[list[str]], k: int, index: BM25Index) -> Row:
    from rank_bm25 import BM25Okapi

    gc.collect()
    tracemalloc.start()
    probe = BM25Okapi(lib.docs)
    retained, peak = (x / 2**20 for x in tracemalloc.get_traced_memory())
    tracemalloc.stop()
    del probe
    gc.collect()
    t = time.perf_counter()
    ref = BM25Okapi(lib.docs)
    build = time.perf_counter() - t
    lat = time_questions(lambda q: rank_bm25_top_k(ref, q, k), questions, warmup=1)
    # Parity on the same run: identical ids and order for every question.
    same = 0
    for q in questions:
        want = [lib.ids[i] for i in rank_bm25_reference(ref, lib.docs, q, k)]
        got = [i for i, _ in index.top_k(q, k)]
        same += got == want
    row = Row(size, "rank_bm25", build, retained, peak, pct(lat, 50), pct(lat, 99))
    row.notes = f"{len(questions)} q; parity {same}/{len(questions)}"
    row.extra["parity_ok"] = same
    return row


def bench_bm25s(size: int, lib: Library, questions: list[list[str]], k: int) -> Row | None:
    try:
        import bm25s
    except ImportError:
        return None
    logging.getLogger("bm25s").setLevel(logging.ERROR)
    gc.collect()
    rss0 = rss_mb()
    t = time.perf_counter()
    model = bm25s.BM25(method="robertson")
    model.index(lib.docs, show_progress=False)
    build = time.perf_counter() - t
    rss1 = rss_mb()
    kk = min(k, size)
    lat = time_questions(lambda q: model.retrieve([q], k=kk, show_progress=False, n_threads=1), questions)
    row = Row(size, "bm25s", build, rss1 - rss0, None, pct(lat, 50), pct(lat, 99))
    row.notes = "memory = RSS growth; approximate scores (float32, no epsilon floor), speed only"
    return row


def bench_index(
    size: int,
    lib: Library,
    corpus: SyntheticCorpus,
    questions: list[list[str]],
    k: int,
    adds: int,
    measure_peak: bool,
) -> tuple[Row, BM25Index]:
    gc.collect()
    rss0 = rss_mb()
    t = time.perf_counter()
    index = BM25Index()
    index.add(lib.ids, lib.docs, lib.groups)
    build = time.perf_counter() - t
    gc.collect()
    rss_growth = rss_mb() - rss0
    retained = index.memory_bytes() / 2**20

    peak = None
    if measure_peak:
        # Separate build under tracemalloc (it slows Python allocations, so the
        # timed build above runs without it).  numpy reports its buffers too.
        tracemalloc.start()
        probe = BM25Index()
        probe.add(lib.ids, lib.docs, lib.groups)
        _, peak_bytes = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        peak = peak_bytes / 2**20
        del probe
        gc.collect()

    lat = time_questions(lambda q: index.top_k(q, k), questions)
    matched = [len(index.match(q)[0]) for q in questions]
    scoped = time_questions(lambda q: index.top_k(q, k, groups={0, corpus.guilds[0]}), questions)

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "index.bm25"
        t = time.perf_counter()
        index.save(path, "bench")
        save_s = time.perf_counter() - t
        file_mb = path.stat().st_size / 2**20
        t = time.perf_counter()
        loaded = BM25Index.load(path, "bench")
        load_s = time.perf_counter() - t
        assert loaded is not None
        assert all(loaded.top_k(q, k) == index.top_k(q, k) for q in questions[:20])
        del loaded

    # A new 50-sentence article must be answerable right after add() returns.
    rng = np.random.default_rng(size + 1)
    next_id = max(lib.ids) + 1
    add_ms: list[float] = []
    answer_ms: list[float] = []
    for trial in range(adds):
        sentences = corpus.sentences(rng, 50)
        marker = f"article{trial}marker"
        sentences[17] = sentences[17] + [marker]
        ids = list(range(next_id, next_id + 50))
        next_id += 50
        t0 = time.perf_counter()
        index.add(ids, sentences, [corpus.guilds[trial % len(corpus.guilds)]] * 50)
        t1 = time.perf_counter()
        top = index.top_k([marker] + sentences[17][:3], k)
        t2 = time.perf_counter()
        assert top and top[0][0] == ids[17], "new article not answerable"
        add_ms.append((t1 - t0) * 1e3)
        answer_ms.append((t2 - t0) * 1e3)
    segments_after_adds = index.segment_count
    index.remove(range(lib.ids[0], lib.ids[0] + 2000))
    t = time.perf_counter()
    index.compact(full=True)
    compact_s = time.perf_counter() - t

    row = Row(size, "BM25Index", build, retained, peak, pct(lat, 50), pct(lat, 99), latencies=lat)
    row.extra.update(
        rss_growth_mb=rss_growth,
        save_s=save_s,
        load_s=load_s,
        file_mb=file_mb,
        scoped_p50_ms=pct(scoped, 50),
        scoped_p99_ms=pct(scoped, 99),
        add50_p50_ms=pct(add_ms, 50),
        add50_max_ms=max(add_ms) if add_ms else float("nan"),
        add_answer_p50_ms=pct(answer_ms, 50),
        add_answer_max_ms=max(answer_ms) if answer_ms else float("nan"),
        segments_after_adds=segments_after_adds,
        full_compact_s=compact_s,
        matched_p50=int(np.median(matched)),
        matched_max=int(max(matched)),
        vocabulary=index.vocabulary_size,
    )
    return row, index


def fmt(x: float | None, digits: int = 2) -> str:
    if x is None or (isinstance(x, float) and np.isnan(x)):
        return "–"
    return f"{x:.{digits}f}"


def markdown(rows: list[Row]) -> str:
    lines = [
        "| sentences | engine | build s | retained MB | build peak MB | top-k p50 ms | top-k p99 ms "
        "| speed-up p50 / p99 | notes |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        sp = "–" if r.speedup_p50 is None else f"{r.speedup_p50:.0f}× / {r.speedup_p99:.0f}×"
        lines.append(
            f"| {r.size:,} | {r.engine} | {fmt(r.build_s)} | {fmt(r.retained_mb, 0)} | {fmt(r.peak_mb, 0)} "
            f"| {fmt(r.p50_ms)} | {fmt(r.p99_ms)} | {sp} | {r.notes} |"
        )
    lines += [
        "",
        "| sentences | save s | load s | file MB | RSS growth MB | scoped top-k p50/p99 ms "
        "| add 50 p50/max ms | add+answer p50/max ms | segments after adds | full compact s "
        "| matched docs p50/max |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        if r.engine != "BM25Index":
            continue
        e = r.extra
        lines.append(
            f"| {r.size:,} | {fmt(e['save_s'])} | {fmt(e['load_s'])} | {fmt(e['file_mb'], 0)} "
            f"| {fmt(e['rss_growth_mb'], 0)} | {fmt(e['scoped_p50_ms'])} / {fmt(e['scoped_p99_ms'])} "
            f"| {fmt(e['add50_p50_ms'])} / {fmt(e['add50_max_ms'])} "
            f"| {fmt(e['add_answer_p50_ms'])} / {fmt(e['add_answer_max_ms'])} "
            f"| {e['segments_after_adds']} | {fmt(e['full_compact_s'])} "
            f"| {e['matched_p50']:,} / {e['matched_max']:,} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="10000,100000,1000000", help="comma-separated sentence counts")
    ap.add_argument("--questions", type=int, default=200, help="questions timed per engine")
    ap.add_argument(
        "--rank-bm25-max-size",
        type=int,
        default=ALWAYS_RANK_BM25_SIZE,
        help="skip rank_bm25 above this size (100k is always measured)",
    )
    ap.add_argument("--rank-bm25-questions", type=int, default=40, help="rank_bm25 is slow: fewer questions")
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--adds", type=int, default=30, help="50-sentence articles added per size")
    ap.add_argument("--no-bm25s", action="store_true")
    ap.add_argument("--no-peak", action="store_true", help="skip the tracemalloc build")
    ap.add_argument("--quick", action="store_true", help="10k,100k; 50 questions; 10 adds")
    ap.add_argument("--markdown", type=Path, help="also write the final tables here")
    ap.add_argument("--seed", type=int, default=1234)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    if args.quick:
        sizes = [s for s in sizes if s <= ALWAYS_RANK_BM25_SIZE] or [10_000, ALWAYS_RANK_BM25_SIZE]
        args.questions = min(args.questions, 50)
        args.rank_bm25_questions = min(args.rank_bm25_questions, 15)
        args.adds = min(args.adds, 10)

    t = time.perf_counter()
    corpus = SyntheticCorpus(SyntheticConfig(seed=args.seed))
    questions = corpus.questions(args.questions)
    log.info(
        "vocabulary %d types ready in %.1fs; %d questions, mean %.1f terms",
        len(corpus.words),
        time.perf_counter() - t,
        len(questions),
        np.mean([len(q) for q in questions]),
    )
    rows: list[Row] = []
    for size in sizes:
        t = time.perf_counter()
        lib = corpus.library(size)
        tokens = sum(map(len, lib.docs))
        log.info("\n== %d sentences, %.1f tokens/sentence (generated in %.1fs)", size, tokens / size, time.perf_counter() - t)

        row, index = bench_index(size, lib, corpus, questions, args.k, args.adds, not args.no_peak)
        log.info(
            "BM25Index  build %.2fs  retained %.0f MB  peak %s MB  top-k p50 %.2f ms  p99 %.2f ms  "
            "save %.2fs load %.2fs  add50 p50 %.1f ms max %.1f ms",
            row.build_s, row.retained_mb, fmt(row.peak_mb, 0), row.p50_ms, row.p99_ms,
            row.extra["save_s"], row.extra["load_s"], row.extra["add50_p50_ms"], row.extra["add50_max_ms"],
        )
        size_rows = [row]
        del index
        # A fresh index for parity, identical to the one timed (the timed one was modified).
        if size <= args.rank_bm25_max_size or size == ALWAYS_RANK_BM25_SIZE:
            parity_index = BM25Index()
            parity_index.add(lib.ids, lib.docs, lib.groups)
            rq = questions[: args.rank_bm25_questions]
            r = bench_rank_bm25(size, lib, rq, args.k, parity_index)
            del parity_index
            # Same questions on both sides for a fair ratio.
            ours_lat = row.latencies[: len(rq)]
            row.speedup_p50 = r.p50_ms / pct(ours_lat, 50)
            row.speedup_p99 = r.p99_ms / pct(ours_lat, 99)
            log.info(
                "rank_bm25  build %.2fs  top-k p50 %.1f ms  p99 %.1f ms  (%s)  speed-up p50 %.0fx p99 %.0fx",
                r.build_s, r.p50_ms, r.p99_ms, r.notes, row.speedup_p50, row.speedup_p99,
            )
            size_rows.append(r)
        else:
            log.info("rank_bm25  skipped (size > --rank-bm25-max-size)")
        if not args.no_bm25s:
            r2 = bench_bm25s(size, lib, questions, args.k)
            if r2 is None:
                log.info("bm25s      not installed, skipped")
            else:
                log.info("bm25s      build %.2fs  top-k p50 %.2f ms  p99 %.2f ms", r2.build_s, r2.p50_ms, r2.p99_ms)
                size_rows.append(r2)
        rows.extend(size_rows)
        del lib
        gc.collect()

    table = markdown(rows)
    print("\n" + table)
    if args.markdown:
        args.markdown.write_text(table + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
