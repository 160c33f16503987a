"""BM25Index must rank exactly like rank_bm25.BM25Okapi while staying incremental."""

from __future__ import annotations

import math
import os
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
from rank_bm25 import BM25Okapi

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # allow plain `pytest` as well as `python -m pytest`
    sys.path.insert(0, str(ROOT))

from bot.core import bm25_index as bm25_module  # noqa: E402
from bot.core.bm25_index import BM25Index  # noqa: E402
from bot.core.retrieval import Retriever, RetrieverBuild  # noqa: E402
from bot.core.storage import IndexRow, index_batch, paragraph_key  # noqa: E402

# ---------------------------------------------------------------- helpers


def zipf_corpus(rng: np.random.Generator, n_docs: int, n_types: int = 400) -> list[list[str]]:
    """Zipf-like vocabulary, lognormal lengths, a few empty docs, and one term
    in most docs so that rank_bm25's negative-idf epsilon floor is exercised."""
    p = 1.0 / np.arange(1, n_types + 1) ** 1.1
    p /= p.sum()
    docs: list[list[str]] = []
    for _ in range(n_docs):
        length = int(min(60, rng.lognormal(np.log(10), 0.7)))
        words = [f"w{r}" for r in rng.choice(n_types, size=length, p=p)]
        if rng.random() < 0.7:
            words.append("everywhere")
        if rng.random() < 0.02:
            words = []
        docs.append(words)
    return docs


def random_question(rng: np.random.Generator, n_types: int = 400) -> list[str]:
    q = [f"w{int(r)}" for r in rng.integers(0, n_types + 40, size=int(rng.integers(1, 8)))]
    if rng.random() < 0.3:
        q.append("everywhere")
    if rng.random() < 0.3:
        q.append(q[0])  # repeated term counts twice
    if rng.random() < 0.3:
        q.insert(int(rng.integers(0, len(q) + 1)), "never-seen-term")
    return q


def reference_ranking(
    ref: BM25Okapi, docs: list[list[str]], ids: list[int], question: list[str], k: int
) -> list[tuple[int, float]]:
    """rank_bm25 order (score desc, then corpus position asc), restricted to
    docs containing a query term, mapped to our doc ids."""
    scores = ref.get_scores(question)
    terms = set(question)
    has = np.array([not terms.isdisjoint(d) for d in docs], dtype=bool)
    cand = np.flatnonzero(has)
    order = cand[np.lexsort((cand, -scores[cand]))][:k]
    return [(ids[i], float(scores[i])) for i in order]


def assert_same_ranking(got: list[tuple[int, float]], want: list[tuple[int, float]]) -> None:
    assert [i for i, _ in got] == [i for i, _ in want]
    for (_, g), (_, w) in zip(got, want):
        assert math.isclose(g, w, rel_tol=1e-9, abs_tol=1e-12), (g, w)


def assert_match_equals_reference(
    index: BM25Index, ref: BM25Okapi, docs: list[list[str]], ids: list[int], question: list[str]
) -> None:
    got_ids, got_scores = index.match(question)
    want = dict(reference_ranking(ref, docs, ids, question, k=len(docs)))
    assert sorted(got_ids.tolist()) == sorted(want)
    for i, s in zip(got_ids.tolist(), got_scores.tolist()):
        assert math.isclose(s, want[i], rel_tol=1e-9, abs_tol=1e-12)


# ----------------------------------------------------------------- parity


@pytest.mark.parametrize("seed,n_docs", [(0, 50), (1, 300), (2, 1000), (3, 2000)])
def test_top_ten_matches_rank_bm25_on_random_corpora(seed: int, n_docs: int) -> None:
    rng = np.random.default_rng(seed)
    docs = zipf_corpus(rng, n_docs)
    ids = list(range(n_docs))
    ref = BM25Okapi(docs)
    index = BM25Index()
    index.add(ids, docs)

    assert len(index) == n_docs
    for _ in range(60):
        q = random_question(rng)
        assert_same_ranking(index.top_k(q, 10), reference_ranking(ref, docs, ids, q, 10))


def test_built_in_one_batch_scores_are_bit_identical_to_rank_bm25() -> None:
    rng = np.random.default_rng(11)
    docs = zipf_corpus(rng, 800)
    ref = BM25Okapi(docs)
    index = BM25Index()
    index.add(list(range(800)), docs)
    for _ in range(40):
        q = random_question(rng) + ["everywhere"]  # negative idf -> epsilon floor
        got_ids, got_scores = index.match(q)
        want = ref.get_scores(q)
        assert np.array_equal(got_scores, want[got_ids])


def test_every_matching_doc_is_returned_with_its_score() -> None:
    rng = np.random.default_rng(5)
    docs = zipf_corpus(rng, 600)
    ids = [10_000 + 7 * i for i in range(600)]  # sparse, large ids
    ref = BM25Okapi(docs)
    index = BM25Index()
    index.add(ids, docs)
    for _ in range(30):
        assert_match_equals_reference(index, ref, docs, ids, random_question(rng))


def test_custom_parameters_are_honoured() -> None:
    rng = np.random.default_rng(8)
    docs = zipf_corpus(rng, 400)
    ids = list(range(400))
    ref = BM25Okapi(docs, k1=0.9, b=0.4, epsilon=0.5)
    index = BM25Index(k1=0.9, b=0.4, epsilon=0.5)
    index.add(ids, docs)
    for _ in range(20):
        q = random_question(rng)
        assert_same_ranking(index.top_k(q, 10), reference_ranking(ref, docs, ids, q, 10))


def test_many_small_adds_and_removes_rank_like_a_fresh_rank_bm25() -> None:
    rng = np.random.default_rng(21)
    docs = zipf_corpus(rng, 1500)
    ids = [int(x) for x in np.cumsum(rng.integers(1, 50, size=1500)) + 2**40]
    index = BM25Index(max_segments=4, auto_merge_max_docs=200)
    max_segments_seen = 0
    start = 0
    while start < len(docs):
        step = int(rng.integers(1, 120))
        index.add(ids[start : start + step], docs[start : start + step])
        max_segments_seen = max(max_segments_seen, index.segment_count)
        start += step
    assert max_segments_seen >= 3  # several segments really were queried

    removed = set(int(i) for i in rng.choice(ids, size=400, replace=False))
    removed_list = list(removed)
    index.remove(removed_list[:150])
    index.remove(removed_list[150:] + [123, -5, ids[0] + 1])  # unknown ids are ignored
    keep = [j for j, i in enumerate(ids) if i not in removed]
    live_docs = [docs[j] for j in keep]
    live_ids = [ids[j] for j in keep]
    ref = BM25Okapi(live_docs)

    assert len(index) == len(live_ids)
    for _ in range(50):
        q = random_question(rng)
        assert_same_ranking(index.top_k(q, 10), reference_ranking(ref, live_docs, live_ids, q, 10))
    for _ in range(10):
        assert_match_equals_reference(index, ref, live_docs, live_ids, random_question(rng))

    assert index.needs_compaction
    assert index.compact()
    assert index.compact(full=True) or index.segment_count == 1
    assert index.segment_count == 1
    for _ in range(30):
        q = random_question(rng)
        assert_same_ranking(index.top_k(q, 10), reference_ranking(ref, live_docs, live_ids, q, 10))


def test_merges_done_in_small_gil_slices_rank_exactly_like_rank_bm25(monkeypatch: pytest.MonkeyPatch) -> None:
    # Large merges run their GIL-holding numpy steps in slices so the event loop keeps
    # running; a slice of 7 elements makes every slice boundary land mid-document.
    monkeypatch.setattr(bm25_module, "_GIL_SLICE", 7)
    rng = np.random.default_rng(31)
    docs = zipf_corpus(rng, 900)
    ids = [int(x) for x in np.cumsum(rng.integers(1, 9, size=900))]
    index = BM25Index(auto_merge_max_docs=100)
    for start in range(0, 900, 90):
        index.add(ids[start : start + 90], docs[start : start + 90])
    gone = set(ids[::5])
    index.remove(gone)
    assert index.compact(full=True)
    assert index.segment_count == 1
    keep = [j for j, i in enumerate(ids) if i not in gone]
    live_docs, live_ids = [docs[j] for j in keep], [ids[j] for j in keep]
    ref = BM25Okapi(live_docs)
    for _ in range(40):
        q = random_question(rng)
        assert_same_ranking(index.top_k(q, 10), reference_ranking(ref, live_docs, live_ids, q, 10))


def test_gil_friendly_helpers_equal_numpy_repeat_and_ranges(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(bm25_module, "_GIL_SLICE", 5)
    rng = np.random.default_rng(4)
    for _ in range(300):
        n = int(rng.integers(0, 25))
        counts = rng.integers(0, 4, n) * (rng.random(n) < 0.7)  # zero-length runs included
        starts = rng.integers(0, 100, n)
        want = [x for s, c in zip(starts, counts) for x in range(s, s + c)]
        assert bm25_module._ragged_take(starts, counts).tolist() == want
        values = rng.integers(0, 2**20, n).astype(np.int32)
        assert np.array_equal(bm25_module._repeat(values, counts, np.int32), np.repeat(values, counts))
        mask = rng.random(n) < 0.5
        got = bm25_module._repeat(mask, counts, np.int8).view(np.bool_)
        assert np.array_equal(got, np.repeat(mask, counts))


def test_removal_leaves_the_statistics_of_an_index_built_without_those_docs() -> None:
    rng = np.random.default_rng(3)
    docs = zipf_corpus(rng, 500)
    index = BM25Index()
    index.add(range(0, 250), docs[:250])
    index.add(range(250, 500), docs[250:])
    gone = set(range(0, 500, 3))
    index.remove(gone)
    fresh = BM25Index()
    kept = [i for i in range(500) if i not in gone]
    fresh.add(kept, [docs[i] for i in kept])

    a, f = index._state, fresh._state
    assert (a.n_docs, a.total_len) == (f.n_docs, f.total_len)
    by_term = {t: int(a.df[i]) for i, t in enumerate(index._vocab.terms[: a.n_terms]) if a.df[i]}
    fresh_by_term = {t: int(f.df[i]) for i, t in enumerate(fresh._vocab.terms[: f.n_terms]) if f.df[i]}
    assert by_term == fresh_by_term
    assert math.isclose(a.average_idf(), f.average_idf(), rel_tol=1e-12)
    assert index.vocabulary_size == fresh.vocabulary_size


def test_document_frequencies_count_the_live_docs_holding_each_term() -> None:
    rng = np.random.default_rng(17)
    docs = zipf_corpus(rng, 500)
    index = BM25Index(auto_merge_max_docs=50)
    for start in range(0, 500, 60):
        index.add(list(range(start, min(start + 60, 500))), docs[start : start + 60])
    index.remove(range(0, 500, 3))
    terms = ["w0", "w3", "w150", "everywhere", "never-seen-term"]
    n, dfs = index.document_frequencies(terms)
    live = [d for i, d in enumerate(docs) if i % 3]
    assert n == len(live)
    assert dfs == [sum(t in d for d in live) for t in terms]
    assert dfs[-1] == 0 and dfs[0] > 0


def test_removed_doc_can_be_added_again_and_duplicates_are_refused() -> None:
    index = BM25Index()
    index.add([1, 2, 3], [["apple", "pie"], ["apple"], ["pear"]])
    with pytest.raises(ValueError):
        index.add([3], [["again"]])
    with pytest.raises(ValueError):
        index.add([9, 9], [["a"], ["b"]])
    with pytest.raises(ValueError):
        index.add([10], [["a"], ["b"]])
    with pytest.raises(TypeError):
        index.add([11], ["a string, not tokens"])

    index.remove([2])
    assert 2 not in index and 1 in index and len(index) == 2
    index.add([2], [["banana"]])
    assert 2 in index and len(index) == 3
    assert [i for i, _ in index.top_k(["banana"], 5)] == [2]
    assert [i for i, _ in index.top_k(["apple"], 5)] == [1]


def test_top_k_breaks_score_ties_by_doc_id_and_cuts_exactly_at_k() -> None:
    # Separate, unmerged segments so the tied docs come out of match() in
    # neither id nor insertion order.
    index = BM25Index(auto_merge_max_docs=0)
    same = ["red", "fox"]
    index.add([50, 30], [same, same])
    index.add([12, 7, 99], [same, same, ["blue", "sky", "red", "x", "y", "z"]])
    index.add([3], [["green"]])
    assert index.segment_count == 3
    top = index.top_k(["red", "fox"], 3)
    assert [i for i, _ in top] == [7, 12, 30]
    assert len({s for _, s in top}) == 1
    assert [i for i, _ in index.top_k(["red", "fox"], 10)] == [7, 12, 30, 50, 99]
    assert index.top_k(["red"], 0) == []
    assert index.top_k(["nothing"], 5) == []
    assert index.top_k([], 5) == []


def test_docs_without_any_question_term_are_never_returned() -> None:
    index = BM25Index()
    index.add(range(6), [["a"], ["a", "b"], ["c"], ["a"], ["a"], ["a"]])
    # "a" is in most docs, so its idf is floored to a small positive value;
    # doc 2 still must not appear even though rank_bm25 gives it a 0 score.
    ids, _ = index.match(["a", "zzz"])
    assert sorted(ids.tolist()) == [0, 1, 3, 4, 5]
    assert 2 not in [i for i, _ in index.top_k(["a"], 10)]


def test_empty_index_answers_nothing() -> None:
    index = BM25Index()
    ids, scores = index.match(["x"])
    assert len(ids) == 0 and len(scores) == 0 and ids.dtype == np.int64
    assert index.top_k(["x"], 3) == []
    assert len(index) == 0 and 5 not in index
    index.remove([1, 2])
    assert not index.compact()


# ----------------------------------------------------------------- groups


GUILD_A, GUILD_B, GUILD_C = 2**63 - 1, 987654321098765432, 424242424242424242


class ScopedLibrary:
    """What the index should hold: id -> (tokens, scope), and rank_bm25 over a server's view."""

    def __init__(self) -> None:
        self.docs: dict[int, tuple[list[str], int]] = {}

    def add(self, index: BM25Index, ids: list[int], docs: list[list[str]], scope: int | list[int]) -> None:
        scopes = scope if isinstance(scope, list) else [scope] * len(ids)
        index.add(ids, docs, scopes)
        self.docs.update({i: (d, g) for i, d, g in zip(ids, docs, scopes)})

    def remove(self, index: BM25Index, ids: list[int]) -> None:
        index.remove(ids)
        for i in ids:
            self.docs.pop(i, None)

    def visible(self, scopes: set[int]) -> tuple[list[list[str]], list[int]]:
        ids = sorted(i for i, (_, g) in self.docs.items() if g in scopes)
        return [self.docs[i][0] for i in ids], ids

    def assert_ranks_like_rank_bm25(self, index: BM25Index, scopes: set[int], questions: list[list[str]]) -> None:
        docs, ids = self.visible(scopes)
        ref = BM25Okapi(docs)
        assert index.size(scopes) == len(ids)
        for q in questions:
            assert_same_ranking(index.top_k(q, 10, groups=scopes), reference_ranking(ref, docs, ids, q, 10))
        for q in questions[:5]:
            assert_match_equals_reference_in(index, ref, docs, ids, q, scopes)


def assert_match_equals_reference_in(
    index: BM25Index, ref: BM25Okapi, docs: list[list[str]], ids: list[int], question: list[str], scopes: set[int]
) -> None:
    got_ids, got_scores = index.match(question, groups=scopes)
    want = dict(reference_ranking(ref, docs, ids, question, k=len(docs)))
    assert sorted(got_ids.tolist()) == sorted(want)
    for i, s in zip(got_ids.tolist(), got_scores.tolist()):
        assert math.isclose(s, want[i], rel_tol=1e-9, abs_tol=1e-12)


def test_a_question_in_a_server_ranks_like_rank_bm25_over_only_what_that_server_sees(tmp_path: Path) -> None:
    # The global articles plus server A's own; servers B and C import and delete around them.
    rng = np.random.default_rng(13)
    lib = ScopedLibrary()
    index = BM25Index(max_segments=4, auto_merge_max_docs=150)
    next_id = iter(range(1, 10**6))

    def add(n: int, scope: int | list[int]) -> list[int]:
        ids = [next(next_id) for _ in range(n)]
        lib.add(index, ids, zipf_corpus(rng, n), scope)
        return ids

    def check() -> None:
        questions = [random_question(rng) for _ in range(25)]
        lib.assert_ranks_like_rank_bm25(index, {0, GUILD_A}, questions)
        lib.assert_ranks_like_rank_bm25(index, {0, GUILD_B}, questions[:8])
        lib.assert_ranks_like_rank_bm25(index, {0, GUILD_A, GUILD_B}, questions[:8])
        lib.assert_ranks_like_rank_bm25(index, {GUILD_A}, questions[:8])

    add(400, 0)
    a_ids = add(150, GUILD_A)
    add(300, GUILD_B)
    check()
    # One add() holding several servers, then deletions in the others, and a few in A.
    mixed = add(240, [int(rng.choice([0, GUILD_B, GUILD_C])) for _ in range(240)])
    b_ids = [i for i, (_, g) in lib.docs.items() if g == GUILD_B]
    lib.remove(index, b_ids[::3] + mixed[::5] + a_ids[:10])
    check()
    add(200, GUILD_C)
    lib.remove(index, [i for i, (_, g) in lib.docs.items() if g == GUILD_C][::2])
    assert index.compact()
    check()
    assert index.compact(full=True) or index.segment_count == 1
    check()

    index.save(tmp_path / "idx", "s")
    loaded = BM25Index.load(tmp_path / "idx", "s")
    assert loaded is not None
    index = loaded
    check()
    # Every doc of server B gone: its group statistics leave with them.
    lib.remove(index, [i for i, (_, g) in lib.docs.items() if g == GUILD_B])
    assert index.size({GUILD_B}) == 0 and index.top_k(["w1"], 3, groups={GUILD_B}) == []
    check()


def test_another_server_importing_many_articles_moves_nothing_in_this_one() -> None:
    # Server B imports ten times more text than A sees, all about "korea": A's ranking,
    # scores and document frequencies are the same, to the bit.
    rng = np.random.default_rng(7)
    index = BM25Index(auto_merge_max_docs=100)
    index.add(range(0, 300), zipf_corpus(rng, 300), [0] * 300)
    korea = [["north", "korea", "kim"], ["korea", "seoul"], ["rare", "korea", "video", "footage"]]
    index.add(range(300, 303), korea, [GUILD_A] * 3)
    questions = [random_question(rng) + ["korea"] for _ in range(20)] + [["korea", "footage"], ["everywhere"]]
    before = [index.top_k(q, 10, groups={0, GUILD_A}) for q in questions]
    df_before = index.document_frequencies(["korea", "everywhere", "w1"], groups={0, GUILD_A})

    flood = [["korea", f"w{int(w)}", "north"] for w in rng.integers(0, 400, 3000)]
    for start in range(0, 3000, 500):
        index.add(range(1000 + start, 1500 + start), flood[start : start + 500], [GUILD_B] * 500)
    index.remove(range(1000, 1200))
    index.compact(full=True)

    assert [index.top_k(q, 10, groups={0, GUILD_A}) for q in questions] == before
    assert index.document_frequencies(["korea", "everywhere", "w1"], groups={0, GUILD_A}) == df_before
    assert index.top_k(["korea", "footage"], 1, groups={0, GUILD_A})[0][0] == 302
    # The whole index (no scopes) does see B's articles.
    n_all, (korea_all, *_) = index.document_frequencies(["korea"])
    assert n_all == 303 + 2800 and korea_all == 3 + 2800


def test_document_frequencies_and_size_count_only_the_scopes_asked_for() -> None:
    rng = np.random.default_rng(19)
    docs = zipf_corpus(rng, 600)
    scopes = [[0, GUILD_A, GUILD_B][i % 3] for i in range(600)]
    index = BM25Index(auto_merge_max_docs=50)
    for start in range(0, 600, 70):
        index.add(range(start, min(start + 70, 600)), docs[start : start + 70], scopes[start : start + 70])
    index.remove(range(0, 600, 7))
    terms = ["w0", "w3", "w150", "everywhere", "never-seen-term"]
    for wanted in ({0}, {0, GUILD_A}, {GUILD_B}, {0, GUILD_A, GUILD_B}, {GUILD_C}, set()):
        live = [d for i, d in enumerate(docs) if i % 7 and scopes[i] in wanted]
        assert index.size(wanted) == len(live)
        assert index.document_frequencies(terms, groups=wanted) == (len(live), [sum(t in d for d in live) for t in terms])
    assert index.size() == len(index) == sum(1 for i in range(600) if i % 7)


def test_a_server_with_no_articles_of_its_own_is_ranked_over_the_global_ones_alone() -> None:
    rng = np.random.default_rng(23)
    docs = zipf_corpus(rng, 300)
    index = BM25Index()
    index.add(range(300), docs, [0] * 300)
    index.add([900], [["w1", "w2"]], [GUILD_B])
    ref = BM25Okapi(docs)
    for _ in range(20):
        q = random_question(rng)
        # A server unknown to the index sees exactly the global articles.
        assert_same_ranking(index.top_k(q, 10, groups={0, GUILD_A}), reference_ranking(ref, docs, list(range(300)), q, 10))
    assert index.top_k(["w1"], 5, groups={GUILD_A}) == []


# ------------------------------------------------------------ persistence


def test_saved_index_loads_back_and_answers_identically(tmp_path: Path) -> None:
    rng = np.random.default_rng(17)
    docs = zipf_corpus(rng, 700) + [["naïve", "café", "日本語"]]
    index = BM25Index(k1=1.2, b=0.7)
    index.add(range(400), docs[:400], [i % 3 for i in range(400)])
    index.add(range(400, 701), docs[400:], [7] * 301)
    index.remove(range(0, 700, 10))
    path = tmp_path / "library.bm25"
    index.save(path, stamp="v1:abc")
    assert [p.name for p in tmp_path.iterdir()] == ["library.bm25"]  # no temp file left

    loaded = BM25Index.load(path, stamp="v1:abc")
    assert loaded is not None
    assert (loaded.k1, loaded.b, loaded.epsilon) == (1.2, 0.7, 0.25)
    assert len(loaded) == len(index) and 10 not in loaded and 11 in loaded
    for _ in range(30):
        q = random_question(rng) + ["café"]
        assert loaded.top_k(q, 10) == index.top_k(q, 10)
        assert loaded.top_k(q, 10, groups={7}) == index.top_k(q, 10, groups={7})
    # the loaded index keeps working incrementally
    loaded.add([9999], [["café", "fresh"]])
    assert loaded.top_k(["fresh"], 1)[0][0] == 9999


@pytest.mark.parametrize("scopes", [[0], [0, GUILD_A]])
def test_loaded_index_has_the_scope_statistics_of_the_saved_one(tmp_path: Path, scopes: list[int]) -> None:
    rng = np.random.default_rng(37)
    docs = zipf_corpus(rng, 400)
    index = BM25Index()
    index.add(range(400), docs, [scopes[i % len(scopes)] for i in range(400)])
    index.remove(range(0, 400, 9))
    index.save(tmp_path / "idx", "s")
    loaded = BM25Index.load(tmp_path / "idx", "s")
    assert loaded is not None
    terms = ["w0", "w5", "w77", "everywhere", "never-seen-term"]
    for wanted in ({0}, {GUILD_A}, {0, GUILD_A}):
        assert loaded.document_frequencies(terms, wanted) == index.document_frequencies(terms, wanted)
        for _ in range(10):
            q = random_question(rng) + ["everywhere"]
            assert loaded.top_k(q, 10, wanted) == index.top_k(q, 10, wanted)


def test_load_gives_none_for_missing_stale_or_corrupt_files(tmp_path: Path) -> None:
    index = BM25Index()
    index.add(range(200), zipf_corpus(np.random.default_rng(1), 200))
    path = tmp_path / "idx.npz"
    assert BM25Index.load(path, "s") is None  # missing
    index.save(path, "s")
    assert BM25Index.load(path, "s") is not None
    assert BM25Index.load(path, "other") is None  # stale stamp

    good = path.read_bytes()
    path.write_bytes(good[: len(good) // 2])  # truncated write
    assert BM25Index.load(path, "s") is None
    path.write_bytes(b"definitely not an index")
    assert BM25Index.load(path, "s") is None
    flipped = bytearray(good)
    flipped[len(good) // 3] ^= 0xFF  # bit rot inside an array
    path.write_bytes(bytes(flipped))
    assert BM25Index.load(path, "s") is None


def test_save_replaces_the_previous_file_atomically(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "idx"
    first = BM25Index()
    first.add([1], [["old"]])
    first.save(path, "a")
    second = BM25Index()
    second.add([2], [["new"]])

    def boom(*args: object, **kwargs: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(bm25_module.np, "savez", boom)
    with pytest.raises(OSError):
        second.save(path, "b")
    monkeypatch.undo()
    assert sorted(os.listdir(tmp_path)) == ["idx"]  # temp file cleaned up
    survivor = BM25Index.load(path, "a")
    assert survivor is not None and 1 in survivor

    second.save(path, "b")
    loaded = BM25Index.load(path, "b")
    assert loaded is not None and 2 in loaded and 1 not in loaded


# ------------------------------------------------------------ concurrency


def test_questions_during_concurrent_adds_and_compaction_see_whole_batches() -> None:
    batch = 25
    index = BM25Index(max_segments=3, auto_merge_max_docs=60)
    rng = np.random.default_rng(2)
    added: set[int] = set()
    added_lock = threading.Lock()
    errors: list[BaseException] = []
    stop = threading.Event()

    def writer() -> None:
        try:
            for b in range(120):
                ids = list(range(b * batch, (b + 1) * batch))
                docs = [["marker"] + [f"w{int(x)}" for x in rng.integers(0, 200, 6)] for _ in ids]
                with added_lock:
                    added.update(ids)
                index.add(ids, docs)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)
        finally:
            stop.set()

    def compactor() -> None:
        try:
            while not stop.is_set():
                index.compact()
        except BaseException as exc:  # pragma: no cover
            errors.append(exc)

    seen_sizes: list[int] = []

    def reader() -> None:
        try:
            while True:  # at least once, even when the writer is done before a reader starts
                done = stop.is_set()
                ids, _ = index.match(["marker"])
                # An add publishes its whole batch at once, merges never lose docs.
                assert len(ids) % batch == 0
                assert len(set(ids.tolist())) == len(ids)
                seen_sizes.append(len(ids))
                top = index.top_k(["w3", "w7", "marker"], 10)
                with added_lock:
                    assert all(i in added for i, _ in top)
                if done:
                    break
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=f) for f in (writer, compactor, reader, reader)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors, errors
    assert len(index) == 120 * batch
    assert len(index.match(["marker"])[0]) == 120 * batch
    assert len(seen_sizes) > 0


def test_removals_that_land_during_a_background_merge_are_not_resurrected(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    rng = np.random.default_rng(4)
    docs = zipf_corpus(rng, 600)
    index = BM25Index(max_segments=2, auto_merge_max_docs=0)
    for s in range(0, 600, 100):
        index.add(range(s, s + 100), docs[s : s + 100])
    assert index.segment_count == 6
    real_merge = bm25_module._merge_segments

    def merge_while_someone_writes(uid, segs):  # type: ignore[no-untyped-def]
        result = real_merge(uid, segs)
        index.remove(range(0, 600, 4))  # lands after the merge read its snapshot
        index.add([1000], [["late", "arrival"]])
        return result

    monkeypatch.setattr(bm25_module, "_merge_segments", merge_while_someone_writes)
    assert index.compact(full=True)
    monkeypatch.undo()

    assert 0 not in index and 4 not in index and 1 in index and 1000 in index
    keep = [i for i in range(600) if i % 4]
    live_docs = [docs[i] for i in keep] + [["late", "arrival"]]
    live_ids = keep + [1000]
    ref = BM25Okapi(live_docs)
    assert len(index) == len(live_ids)
    for _ in range(30):
        q = random_question(rng)
        assert_same_ranking(index.top_k(q, 10), reference_ranking(ref, live_docs, live_ids, q, 10))


# ---------------------------------------------------- the retriever's two indexes


def library_rows(rng: np.random.Generator, first_article: int, n_articles: int, scope: int) -> list[IndexRow]:
    """Articles of a headline and paragraphs of a few sentences, as the library indexes them."""
    rows: list[IndexRow] = []
    for article in range(first_article, first_article + n_articles):
        for paragraph in range(int(rng.integers(2, 5))):
            for sentence in zipf_corpus(rng, 1 if paragraph == 0 else int(rng.integers(1, 4))):
                tokens = tuple(sentence) + (("#num",) if rng.random() < 0.3 else ())
                rows.append(IndexRow(article * 100 + len(rows) % 100, scope, paragraph_key(article, paragraph), tokens))
    return rows


def test_a_server_sees_the_sentence_and_paragraph_scores_of_a_library_holding_only_what_it_sees() -> None:
    # Global articles, server A's and server B's in one retriever; a question asked in A is
    # scored (sentence + paragraph context) exactly as by a retriever holding only global + A,
    # and B importing more and deleting changes nothing in A, to the bit.
    rng = np.random.default_rng(29)
    global_rows = library_rows(rng, 1, 60, 0)
    a_rows = library_rows(rng, 100, 25, GUILD_A)
    b_rows = library_rows(rng, 200, 40, GUILD_B)
    everyone = Retriever()
    for rows in (global_rows, b_rows, a_rows):
        everyone.add(rows)
    only_visible = Retriever()
    only_visible.add(global_rows)
    only_visible.add(a_rows)
    seen_by_a = (0, GUILD_A)
    questions = [random_question(rng) + ["#num"] for _ in range(30)]

    def a_view() -> list[tuple[dict[int, float], float, tuple[int, list[int]]]]:
        out = []
        for q in questions:
            ids, scores = everyone.scores(q, seen_by_a)
            out.append((dict(zip(ids.tolist(), scores.tolist())), everyone.information(q, seen_by_a),
                        everyone.document_frequencies(q, seen_by_a)))
        return out

    before = a_view()
    for q, (scores, information, dfs) in zip(questions, before):
        ids, want = only_visible.scores(q)
        assert scores.keys() == set(ids.tolist())
        for i, s in zip(ids.tolist(), want.tolist()):
            assert math.isclose(scores[i], s, rel_tol=1e-9, abs_tol=1e-12)
        assert math.isclose(information, only_visible.information(q), rel_tol=1e-12)
        assert dfs == only_visible.document_frequencies(q)
    assert everyone.size(seen_by_a) == len(only_visible) == len(global_rows) + len(a_rows)
    assert any(everyone.information(q) != information for q, (_, information, _) in zip(questions, before))

    everyone.add(library_rows(rng, 300, 80, GUILD_B))
    everyone.remove(r.sentence_id for r in b_rows[::2])
    everyone.compact(full=True)
    assert a_view() == before


def test_saved_retriever_ranks_each_server_over_its_own_view(tmp_path: Path) -> None:
    rng = np.random.default_rng(31)
    retriever = Retriever()
    retriever.add(library_rows(rng, 1, 30, 0))
    retriever.add(library_rows(rng, 100, 20, GUILD_A))
    retriever.add(library_rows(rng, 200, 20, GUILD_B))
    retriever.save(tmp_path / "cache", "stamp")
    loaded = Retriever.load(tmp_path / "cache", "stamp")
    assert loaded is not None
    for _ in range(15):
        q = random_question(rng)
        for scopes in ((0, GUILD_A), (0, GUILD_B), (0,)):
            assert loaded[0].search(q, 10, scopes) == retriever.search(q, 10, scopes)
            assert loaded[0].information(q, scopes) == retriever.information(q, scopes)


def batch_of(rows: list[IndexRow]) -> object:
    """Rows as a store reads them for a rebuild."""
    return index_batch([(r.sentence_id, r.scope, *r.paragraph_key, " ".join(r.tokens)) for r in rows])


def test_an_index_rebuilt_from_the_store_ranks_to_the_bit_as_the_one_built_as_articles_came() -> None:
    # The library starts without a cache: it reads every stored sentence in batches (by id)
    # and builds both indexes at once. Every server's questions get the scores, idf sums and
    # document frequencies the incrementally built index gives, and later changes behave alike.
    rng = np.random.default_rng(37)
    rows = sorted(
        library_rows(rng, 1, 40, 0) + library_rows(rng, 100, 15, GUILD_A) + library_rows(rng, 200, 15, GUILD_B),
        key=lambda r: r.sentence_id,
    )
    rows.append(IndexRow(rows[-1].sentence_id + 1, 0, paragraph_key(999, 1), ("#num",)))  # no words at all
    added, build = Retriever(), RetrieverBuild()
    for start in range(0, len(rows), 37):  # batches end mid-paragraph
        added.add(rows[start : start + 37])
        build.add(batch_of(rows[start : start + 37]))
    rebuilt = build.finish()
    questions = [random_question(rng) + (["#num"] if rng.random() < 0.5 else []) for _ in range(40)]

    def same() -> None:
        for q in questions:
            for scopes in (None, (0,), (0, GUILD_A), (0, GUILD_B)):
                want_ids, want = added.scores(q, scopes)
                got_ids, got = rebuilt.scores(q, scopes)
                assert dict(zip(got_ids.tolist(), got.tolist())) == dict(zip(want_ids.tolist(), want.tolist()))
                assert rebuilt.information(q, scopes) == added.information(q, scopes)
                assert rebuilt.document_frequencies(q, scopes) == added.document_frequencies(q, scopes)

    assert len(rebuilt) == len(added) == len(rows)
    assert rebuilt.index.segment_count == rebuilt.paragraphs.segment_count == 1
    same()
    later = library_rows(rng, 300, 10, GUILD_A)
    gone = [r.sentence_id for r in rows[::5]]
    for retriever in (added, rebuilt):
        retriever.remove(gone)
        retriever.add(later)
    same()


def test_a_rebuild_refuses_rows_out_of_id_order() -> None:
    build = RetrieverBuild()
    build.add(batch_of([IndexRow(5, 0, paragraph_key(1, 1), ("moon",))]))
    build.add(batch_of([IndexRow(3, 0, paragraph_key(1, 1), ("sun",))]))
    with pytest.raises(ValueError, match="ascending"):
        build.finish()
