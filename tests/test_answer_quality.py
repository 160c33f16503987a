"""Answer quality: a SQuAD regression guard (ReQA protocol, docs/answer-quality.md) and the
retriever's promises (exact incremental context scoring, a cache that round-trips)."""
from __future__ import annotations

import asyncio
import os
import random
from pathlib import Path

import numpy as np
import pytest

from bot.core.bm25_index import BM25Index
from bot.core.retrieval import Retriever
from bot.core.sentences import article_sentences
from bot.core.storage import IndexRow, paragraph_key
from bot.core.tokens import answer_types, is_answer_type, is_question, matched_word_spans, tokenize, words_of

SQUAD = Path(__file__).resolve().parents[2] / "shared" / "data" / "squad-dev-v1.1.json.zip"

# --- the SQuAD guard ----------------------------------------------------------------------------
# 600 questions spread over the dev set, against all 2,067 paragraphs. Measured on this subset:
# bot R@1 0.690, R@3 0.842, MRR 0.778; plain BM25 R@1 0.585, MRR 0.663; declined 1.3% of SQuAD
# questions and 66% of 165 questions asked with their article removed; in 6 one-article
# libraries, own questions answered 99% (of 100), other articles' declined 97.8% (of 600).
# Floors sit a little under.
LIMIT, OOL_ARTICLES, SMALL_LIBRARIES = 600, 12, 6
SMALL_OWN_ANSWERED, SMALL_OTHER_DECLINED = 0.93, 0.94


@pytest.fixture(scope="module")
def report():
    if not SQUAD.is_file():
        # CI always has shared/ beside the clone: there a missing file is a failure, not a skip.
        if os.environ.get("CI"):
            pytest.fail(f"SQuAD dev set not found at {SQUAD}")
        pytest.skip(f"SQuAD dev set not found at {SQUAD} (clone the repo beside shared/)")
    from bot.eval.squad import evaluate

    return asyncio.run(
        evaluate(SQUAD, limit=LIMIT, out_of_library_articles=OOL_ARTICLES, small_libraries=SMALL_LIBRARIES)
    )


def test_the_protocol_sees_the_whole_dev_set(report):
    assert report.questions == LIMIT
    assert report.paragraphs == 2067
    assert 10_000 < report.candidates < 11_000  # every paragraph sentence, once per paragraph


def test_the_plain_bm25_baseline_scores_what_rank_bm25_scores(report):
    # On the full set it is R@1 0.611 / MRR 0.690, as the data README says.
    assert 0.55 <= report.baseline["R@1"] <= 0.62
    assert 0.63 <= report.baseline["MRR"] <= 0.70


def test_the_bot_ranks_the_answer_sentence_well(report):
    assert report.bot["R@1"] >= 0.67
    assert report.bot["R@3"] >= 0.81
    assert report.bot["R@10"] >= 0.91
    assert report.bot["MRR"] >= 0.76


def test_the_bot_beats_plain_bm25_on_the_same_questions(report):
    assert report.bot["R@1"] - report.baseline["R@1"] >= 0.07
    assert report.bot["R@3"] - report.baseline["R@3"] >= 0.08
    assert report.bot["MRR"] - report.baseline["MRR"] >= 0.07


def test_squad_questions_are_answered_and_questions_about_absent_articles_mostly_declined(report):
    assert report.declined_in_library <= 0.05
    assert report.out_of_library_questions >= 100
    assert report.declined_out_of_library >= 0.5


def test_one_article_libraries_answer_their_own_questions_and_decline_the_others(report):
    assert report.small_libraries == SMALL_LIBRARIES
    assert report.small_own_questions >= 50 and report.small_other_questions >= 500
    assert report.small_own_answered >= SMALL_OWN_ANSWERED
    assert report.small_other_declined >= SMALL_OTHER_DECLINED


def test_the_confidence_is_calibrated(report):
    """Of the answers given with confidence about c, about c quote the right sentence first
    (from 0.5 up; below, the model is too modest: those answers are right more often)."""
    checked = 0
    for row in report.reliability:
        if row["from"] >= 0.5 and row["answers"] >= 30:
            assert abs(row["mean confidence"] - row["right"]) <= 0.1, row
            checked += 1
        elif row["answers"] >= 30:
            assert row["right"] >= row["mean confidence"] - 0.05, row
    assert checked >= 4
    curve = report.coverage_risk
    # Answering only from a higher confidence answers fewer and gets more of them right.
    assert curve[0]["answered"] >= curve[-1]["answered"]
    assert curve[-1]["right"] >= curve[0]["right"] + 0.15


def test_a_question_is_answered_fast(report):
    assert report.latency_ms["p50"] < 20  # about 1 ms on a quiet machine
    assert report.ask_latency_ms["p50"] < 50


# --- tokens ------------------------------------------------------------------------------------


def test_questions_ask_for_an_answer_type_and_statements_hold_one():
    assert is_question("When did Tesla move to New York?") and is_question("how many seasons did it run")
    assert not is_question("When the war ended, the troops went home.")
    assert answer_types("When did Tesla move to New York?") == ["#when", "#when"]
    assert answer_types("What percentage of farmland grows wheat?").count("#pct") == 2
    assert set(answer_types("On 15 June 1899, Tesla began his experiments.")) == {"#when", "#num"}
    assert "#when" not in answer_types("About 12 people came.")
    # Alone, an answer type is no question: nothing to look for.
    assert tokenize("When?") == []


def test_irregular_verbs_decades_and_won_are_matched():
    assert "meet" in tokenize("The committee met on Monday.")
    assert "win" in tokenize("Denver won the game.") and "win" in tokenize("Who won the game?")
    assert {"1950s", "1950"} <= set(tokenize("In the early 1950s applications fell."))
    assert tokenize("It won't.") == []


def test_paragraph_context_takes_every_word_token_and_no_answer_type():
    seed = (Path(__file__).resolve().parents[1] / "corpus" / "000_07a41ce63a0344ef.txt").read_text()
    texts = [line for line in seed.splitlines() if line.strip()] + [
        "On 15 June 1899, Tesla began his experiments.", "About 12 people came.", "84 percent of households"
    ]
    for text in texts:
        tokens = tuple(tokenize(text))
        assert list(words_of(tokens)) == [t for t in tokens if not is_answer_type(t)]


def test_answer_types_are_never_bolded():
    text = "In 1899 Tesla moved to Colorado."
    assert matched_word_spans(text, {"tesla", "#when", "#num"}) == [(8, 13)]


# --- the retriever -----------------------------------------------------------------------------

ARTICLES = [
    (
        "Harbour reopens after the storm",
        "The harbour at Kestrel Bay reopened on Wednesday after the storm.\n\n"
        "Fishing boats returned to the harbour by noon. The port authority said the quay was safe.\n\n"
        "Repairs to the lighthouse will cost 2 million pounds and finish in 2025.",
    ),
    (
        "Lighthouse restored",
        "The old lighthouse at Marrow Point was restored with a new lamp in May.\n\n"
        "The trust said volunteers painted the tower. Visitors can climb it on Sundays.",
    ),
    (
        "Railway budget",
        "The railway committee met on Monday to discuss the budget.\n\n"
        "It approved three new stations. The first opens in 2026, the committee said.",
    ),
]
QUESTIONS = [
    "When did the harbour at Kestrel Bay reopen?",
    "How much will the lighthouse repairs cost?",
    "Who painted the tower at Marrow Point?",
    "When does the first new railway station open?",
    "What did the committee approve?",
    "lighthouse",
]


def rows_of(articles, first_article=1, first_id=1, scope=0):
    rows, sid = [], first_id
    for a, (title, body) in enumerate(articles, start=first_article):
        for r in article_sentences(title, body, None):
            rows.append(IndexRow(sid, scope, paragraph_key(a, r.paragraph), r.tokens))
            sid += 1
    return rows


def results(retriever, k=10, scopes=None):
    return [[(h.sentence_id, h.score) for h in retriever.search(tokenize(q), k, scopes)] for q in QUESTIONS]


def test_search_is_the_top_of_scores_with_ties_by_id():
    retriever = Retriever()
    retriever.add(rows_of(ARTICLES))
    for q in QUESTIONS:
        terms = tokenize(q)
        ids, scores = retriever.scores(terms)
        order = np.lexsort((ids, -scores))[:5]
        assert [h.sentence_id for h in retriever.search(terms, 5)] == ids[order].tolist()


def test_adding_in_any_batches_gives_the_same_ranking_as_adding_at_once():
    rows = rows_of(ARTICLES)
    whole = Retriever()
    whole.add(rows)
    rng = random.Random(7)
    for _ in range(5):
        cuts = sorted(rng.sample(range(1, len(rows)), 4))  # paragraphs cut across add() calls
        split = Retriever()
        for a, b in zip([0, *cuts], [*cuts, len(rows)]):
            split.add(rows[a:b])
        assert results(split) == results(whole)


def test_removing_an_article_gives_the_ranking_of_a_library_without_it():
    with_all = Retriever()
    with_all.add(rows_of(ARTICLES))
    first = rows_of(ARTICLES[:1])
    with_all.remove(r.sentence_id for r in first)
    without = Retriever()
    without.add(rows_of(ARTICLES[1:], first_article=2, first_id=len(first) + 1))
    assert results(with_all) == results(without)
    assert len(with_all) == len(without)


def test_context_lifts_the_sentence_of_the_right_paragraph():
    retriever = Retriever()
    retriever.add(rows_of(ARTICLES))
    # "Visitors can climb it on Sundays." holds only "climb"; its paragraph names the tower.
    best = retriever.search(tokenize("Can visitors climb the Marrow Point tower?"), 1)[0]
    texts = {r.sentence_id: r for r in rows_of(ARTICLES)}
    assert "climb" in texts[best.sentence_id].tokens


def test_scopes_filter_and_unknown_words_do_not_crash():
    retriever = Retriever()
    retriever.add(rows_of(ARTICLES[:2], scope=0))
    retriever.add(rows_of(ARTICLES[2:], first_article=3, first_id=100, scope=42))
    assert all(h.sentence_id < 100 for h in retriever.search(tokenize("railway committee budget"), 5, [0]))
    assert retriever.search(tokenize("railway committee budget"), 5, [42])
    assert retriever.search(["zzzunknown"], 5) == []
    assert retriever.information(["zzzunknown"]) > retriever.information(["harbour"]) > 0


def test_sparse_sentence_ids_work_too():
    retriever = Retriever()
    retriever.add(rows_of(ARTICLES[:1], first_id=5))
    retriever.add(rows_of(ARTICLES[1:], first_article=2, first_id=10**12))
    hits = retriever.search(tokenize("Who painted the tower at Marrow Point?"), 3)
    assert hits and hits[0].sentence_id >= 10**12
    retriever.remove(range(10**12, 10**12 + 50))
    assert all(h.sentence_id < 10**12 for h in retriever.search(tokenize("tower Marrow Point"), 3))


def test_the_cache_round_trips_and_turns_away_what_it_cannot_trust(tmp_path):
    retriever = Retriever()
    retriever.add(rows_of(ARTICLES))
    path = tmp_path / "library.sqlite3.index"
    retriever.index.save(path, "7")  # what Library.save_index calls: saves everything
    found = Retriever.load(path, "7")
    assert found is not None and found[1] == "7"
    loaded = found[0]
    assert results(loaded) == results(retriever)
    assert Retriever.load(path)[1] == "7"  # any stamp: the library then catches up from "7"
    loaded.add(rows_of([("Ferry news", "The ferry runs at noon.")], first_article=9, first_id=500))
    assert loaded.search(tokenize("When does the ferry run?"), 1)[0].sentence_id == 501
    assert Retriever.load(path, "8") is None  # stale
    assert BM25Index.load(path, "7") is None  # never mistaken for a sentence-only index
    data = path.read_bytes()
    for bad in (b"", data[: len(data) // 2], data[:-1], b"x" * 100):
        path.write_bytes(bad)
        assert Retriever.load(path, "7") is None
        assert BM25Index.load(path, "7") is None


