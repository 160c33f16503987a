"""Benchmark per-server ranking: many scopes in one index, each question ranked over what its
server sees (the global scope plus its own).

    python benchmarks/bench_scopes.py                     # 1,000 scopes x 1,000 + 100k global
    python benchmarks/bench_scopes.py --scopes 100 --global-size 20000 --questions 300   # quick

Layout: a global corpus (scope 0) added first, then the servers' sentences added a few
servers per add() (so segments mix servers, as after a rebuild), then a full compaction (the
steady state a background compaction reaches). Sentences and questions come from
``benchmarks/synthetic.py``. Each question is asked in one server (they take turns).

Measured, in one run:

* BM25Index: build, compaction, save and load (load recomputes every statistic), index
  memory with and without the per-scope statistics, and top-k latency of a question asked in
  a server (``groups={0, server}``: statistics of that server's view only);
* baseline 1, the same index without scopes: every question over the whole index (the
  whole-index statistics every question used before, and no filtering);
* baseline 2, rank_bm25 built over exactly one server's view, for a few servers: its
  latency, and parity (identical top-k, scores within 1e-9) with the scoped BM25Index;
* the one cold statistic a question may need, the average idf of a server's view (rank_bm25
  floors negative idfs with it; computed once per server and index snapshot).

Figures are printed, never asserted (this machine is shared and noisy).
"""

from __future__ import annotations

import argparse
import gc
import math
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
for p in (str(HERE), str(HERE.parent)):
    if p not in sys.path:
        sys.path.insert(0, p)

from bench_index import pct, rss_mb, time_questions  # noqa: E402
from synthetic import SyntheticConfig, SyntheticCorpus  # noqa: E402

from bot.core.bm25_index import BM25Index  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scopes", type=int, default=1000, help="servers with sentences of their own")
    ap.add_argument("--scope-size", type=int, default=1000, help="sentences per server")
    ap.add_argument("--global-size", type=int, default=100_000, help="sentences in the global scope")
    ap.add_argument("--scopes-per-add", type=int, default=25, help="servers per add() call")
    ap.add_argument("--questions", type=int, default=1000)
    ap.add_argument("--rank-bm25-scopes", type=int, default=3, help="servers compared with rank_bm25")
    ap.add_argument("--rank-bm25-questions", type=int, default=10, help="questions per such server")
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--seed", type=int, default=1234)
    args = ap.parse_args(argv)

    corpus = SyntheticCorpus(SyntheticConfig(seed=args.seed))
    rng = np.random.default_rng(args.seed)
    servers = [int(g) for g in rng.choice(np.arange(10**17, 10**17 + 10**9), args.scopes, replace=False)]
    t = time.perf_counter()
    global_docs = corpus.sentences(rng, args.global_size)
    server_docs = corpus.sentences(rng, args.scopes * args.scope_size)
    total = len(global_docs) + len(server_docs)
    print(f"{total:,} sentences: {args.global_size:,} global + {args.scopes:,} servers x {args.scope_size:,} "
          f"(generated in {time.perf_counter() - t:.1f} s)")
    global_ids = list(range(1, args.global_size + 1))
    server_ids = list(range(args.global_size + 1, total + 1))
    server_groups = np.repeat(np.asarray(servers, dtype=np.int64), args.scope_size).tolist()

    gc.collect()
    rss0 = rss_mb()
    t = time.perf_counter()
    index = BM25Index()
    index.add(global_ids, global_docs, [0] * len(global_ids))
    step = args.scopes_per_add * args.scope_size
    for lo in range(0, len(server_ids), step):
        index.add(server_ids[lo : lo + step], server_docs[lo : lo + step], server_groups[lo : lo + step])
    build_s = time.perf_counter() - t
    t = time.perf_counter()
    index.compact(full=True)
    compact_s = time.perf_counter() - t
    gc.collect()
    memory = index.memory_bytes() / 2**20
    stats = index.statistics_bytes() / 2**20
    print(f"build {build_s:.2f} s (+ full compaction {compact_s:.2f} s); RSS growth {rss_mb() - rss0:.0f} MB")
    print(f"index memory {memory:.0f} MB, of which per-scope statistics {stats:.1f} MB "
          f"(without them: {memory - stats:.0f} MB)")

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "index"
        t = time.perf_counter()
        index.save(path, "bench")
        save_s = time.perf_counter() - t
        t = time.perf_counter()
        loaded = BM25Index.load(path, "bench")
        load_s = time.perf_counter() - t
        assert loaded is not None
        del loaded
    print(f"save {save_s:.2f} s, load {load_s:.2f} s (statistics recomputed on load)")

    questions = corpus.questions(args.questions)
    asked_in = [servers[i % len(servers)] for i in range(len(questions))]
    turn = iter(range(10**9))

    def scoped(q: list[str]) -> None:
        index.top_k(q, args.k, groups=(0, asked_in[next(turn) % len(questions)]))

    # The first question of each server on this snapshot also computes its view's average
    # idf when a term's idf is negative; synthetic words never are, so that is timed apart.
    lat_scoped = time_questions(scoped, questions)
    lat_whole = time_questions(lambda q: index.top_k(q, args.k), questions)
    cold = []
    st = index._state  # noqa: SLF001 - timing one internal step on purpose
    for g in servers:
        t = time.perf_counter()
        st.visible((0, g)).average_idf()
        cold.append((time.perf_counter() - t) * 1e3)
    matched = [index.size((0, g)) for g in servers[:5]]

    print()
    print("| mode | questions | top-k p50 ms | top-k p99 ms |")
    print("|---|---:|---:|---:|")
    print(f"| asked in a server: statistics of its view ({matched[0]:,} sentences) | {len(questions)} "
          f"| {pct(lat_scoped, 50):.2f} | {pct(lat_scoped, 99):.2f} |")
    print(f"| baseline: no scopes, whole-index statistics ({len(index):,} sentences) | {len(questions)} "
          f"| {pct(lat_whole, 50):.2f} | {pct(lat_whole, 99):.2f} |")
    print(f"| average idf of a server's view, cold (once per server and snapshot) | {len(cold)} "
          f"| {pct(cold, 50):.2f} | {pct(cold, 99):.2f} |")

    from rank_bm25 import BM25Okapi

    ref_lat: list[float] = []
    ours_lat: list[float] = []
    same = compared = 0
    worst = 0.0
    for g in servers[: args.rank_bm25_scopes]:
        at = servers.index(g) * args.scope_size
        docs = global_docs + server_docs[at : at + args.scope_size]
        ids = global_ids + server_ids[at : at + args.scope_size]
        ref = BM25Okapi(docs)
        for q in questions[: args.rank_bm25_questions]:
            t = time.perf_counter()
            scores = ref.get_scores(q)
            ref_lat.append((time.perf_counter() - t) * 1e3)
            t = time.perf_counter()
            got = index.top_k(q, args.k, groups=(0, g))
            ours_lat.append((time.perf_counter() - t) * 1e3)
            terms = set(q)
            cand = np.array([i for i, d in enumerate(docs) if not terms.isdisjoint(d)], dtype=np.int64)
            want = cand[np.lexsort((cand, -scores[cand]))][: args.k] if len(cand) else cand
            compared += 1
            if [i for i, _ in got] == [ids[i] for i in want]:
                same += 1
                for (_, s), i in zip(got, want):
                    worst = max(worst, abs(s - scores[i]) / max(abs(scores[i]), 1e-300))
        del ref
    print(f"| rank_bm25 over one server's view only ({len(docs):,} sentences) | {len(ref_lat)} "
          f"| {pct(ref_lat, 50):.2f} | {pct(ref_lat, 99):.2f} |")
    print(f"| the same questions, asked in those servers (BM25Index) | {len(ours_lat)} "
          f"| {pct(ours_lat, 50):.2f} | {pct(ours_lat, 99):.2f} |")
    print()
    ok = same == compared and worst <= 1e-9
    print(f"parity with rank_bm25: identical top-{args.k} for {same}/{compared} questions, "
          f"largest relative score difference {worst:.1e}{'' if ok else '  <-- MISMATCH'}")
    return 0 if ok and not math.isnan(worst) else 1


if __name__ == "__main__":
    raise SystemExit(main())
