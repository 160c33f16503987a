"""SQuAD v1.1 answer-sentence retrieval, measured the ReQA way (Ahmad et al., 2019).

Every paragraph is imported as one article, the way a plain-text file is: `clean_text` on the
paragraph with the SQuAD article title as its title, then the bot's own sentence splitter,
tokenizer, store and index (a real `Library` over a temporary database). The candidates are
the paragraph sentences (headlines are stored and searchable, as always, but are not ReQA
candidates); identical sentences of one paragraph count once. A question's gold sentence is
the stored sentence whose span holds an answer's `answer_start`; its rank is the best rank
of any candidate with a gold sentence's text, ties sharing the average rank; one entry per
unique question string. The same candidates are ranked by a plain rank-bm25 BM25Okapi
(k1=1.5, b=0.75, epsilon=0.25) over lower-cased \\w+ tokens, in the same run.

Declines go through `Library.ask` itself: SQuAD questions against the whole library (should
be answered), and each article's questions against the library without that article (should
mostly be declined).
"""
from __future__ import annotations

import asyncio
import json
import logging
import math
import re
import statistics
import tempfile
import time
import zipfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from ..core.answers import Answer
from ..core.articles import GLOBAL_SCOPE, ArticleDraft, ArticleError, DuplicateArticle
from ..core.cleaning import clean_text
from ..core.library import Library, scopes_for
from ..core.storage import StoredSentence
from ..core.tokens import tokenize

log = logging.getLogger(__name__)

RECALL_AT = (1, 3, 5, 10)


# --- the data set ----------------------------------------------------------------------------


def read_squad(path: str | Path) -> list[dict]:
    """The `data` list of a SQuAD v1.1 file, zipped (one .json inside) or not."""
    path = Path(path)
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as zf:
            names = [n for n in zf.namelist() if n.endswith(".json")]
            if len(names) != 1:
                raise ValueError(f"{path}: expected one .json file inside, found {names}")
            raw = zf.read(names[0])
    else:
        raw = path.read_bytes()
    data = json.loads(raw)
    if not isinstance(data, dict) or not isinstance(data.get("data"), list):
        raise ValueError(f"{path}: not a SQuAD file (no 'data' list)")
    return data["data"]


def paragraph_draft(title: str, context: str) -> tuple[ArticleDraft, bool]:
    """The draft a plain-text import of `context` makes, and whether it kept the text whole.

    When the cleaner would change the paragraph (drop a last line without a full stop, take a
    first line for a headline), the paragraph is stored as it is: the candidates must be all
    of its sentences."""
    body = context.strip()
    try:
        draft = clean_text(context, title=title)
    except ArticleError:
        draft = None
    if draft is not None and draft.body == body:
        return draft, True
    return ArticleDraft(title=title, body=body), False


@dataclass
class Question:
    text: str
    article: int  # index of its SQuAD article
    gold: set[str] = field(default_factory=set)  # gold sentence texts


@dataclass
class Corpus:
    """The library built from the data set, and what the measures need from it."""

    library: Library
    candidates: dict[int, str]  # sentence id -> text (ReQA candidates)
    headlines: set[int]  # sentence ids of stored headlines
    questions: list[Question]
    article_ids: list[list[int]]  # per SQuAD article: the library's article ids
    drafts: list[list[ArticleDraft]]
    paragraphs: int = 0
    kept_whole: int = 0
    import_seconds: float = 0.0


def _gold_sentence(body_sentences: Sequence[StoredSentence], offset: int) -> StoredSentence:
    for s in body_sentences:
        if s.start <= offset < s.end:
            return s
    # An offset between two sentences (whitespace) belongs to the next one.
    return next((s for s in body_sentences if s.start > offset), body_sentences[-1])


async def build_corpus(data: list[dict], db_path: Path) -> Corpus:
    started = time.perf_counter()
    library = await Library.open(db_path)
    corpus = Corpus(library, {}, set(), [], [], [])
    by_text: dict[str, Question] = {}
    for a_index, article in enumerate(data):
        title = str(article.get("title", "")).replace("_", " ").strip() or f"Article {a_index}"
        corpus.article_ids.append([])
        corpus.drafts.append([])
        for paragraph in article["paragraphs"]:
            context = paragraph["context"]
            draft, whole = paragraph_draft(title, context)
            corpus.paragraphs += 1
            corpus.kept_whole += whole
            try:
                added = await library.add_draft(draft, scope=GLOBAL_SCOPE, added_by="squad-eval")
                article_id = added.article.id
                corpus.article_ids[-1].append(article_id)
                corpus.drafts[-1].append(draft)
            except DuplicateArticle as exc:  # the same paragraph twice: one article
                article_id = exc.existing_id
            stored = await library.store.sentences_of(article_id)
            body = [s for s in stored if s.kind != "title"]
            corpus.headlines.update(s.id for s in stored if s.kind == "title")
            seen: set[str] = set()
            for s in body:
                if s.text not in seen:
                    seen.add(s.text)
                    corpus.candidates[s.id] = s.text
            lead = len(context) - len(context.lstrip())
            for qa in paragraph["qas"]:
                text = qa["question"]
                question = by_text.get(text)
                if question is None:
                    question = by_text[text] = Question(text, a_index)
                    corpus.questions.append(question)
                for answer in qa["answers"]:
                    question.gold.add(_gold_sentence(body, int(answer["answer_start"]) - lead).text)
    corpus.import_seconds = time.perf_counter() - started
    return corpus


# --- ranking measures ------------------------------------------------------------------------


def rank_of_gold(scores: np.ndarray, gold: np.ndarray) -> float:
    """Rank (1-based, ties averaged) of the best-scored gold candidate; `scores` covers every
    candidate, `gold` is a boolean mask."""
    best = scores[gold].max()
    above = int(np.count_nonzero(scores > best))
    tied = int(np.count_nonzero(scores == best))
    return above + (tied + 1) / 2


def summarise(ranks: Sequence[float]) -> dict[str, float]:
    r = np.asarray(ranks, dtype=np.float64)
    out = {f"R@{k}": float(np.mean(r <= k)) for k in RECALL_AT}
    out["MRR"] = float(np.mean(1.0 / r))
    return out


def by_half(questions: Sequence[Question], ranks: Sequence[float]) -> dict[str, dict[str, float]]:
    """Measures over the questions of even- and odd-numbered articles: a change that helps
    only one half is tuned to it."""
    out = {}
    for name, parity in (("even articles", 0), ("odd articles", 1)):
        part = [r for q, r in zip(questions, ranks) if q.article % 2 == parity]
        if part:
            out[name] = summarise(part)
    return out


class Candidates:
    """Dense arrays over the candidates, so a question's scores become one vector."""

    def __init__(self, candidates: dict[int, str]) -> None:
        self.ids = np.fromiter(sorted(candidates), dtype=np.int64)
        self.texts = [candidates[int(i)] for i in self.ids]
        self.position = {int(i): n for n, i in enumerate(self.ids)}
        self._by_text: dict[str, list[int]] = {}
        for n, text in enumerate(self.texts):
            self._by_text.setdefault(text, []).append(n)

    def __len__(self) -> int:
        return len(self.ids)

    def gold_mask(self, question: Question) -> np.ndarray:
        mask = np.zeros(len(self.ids), dtype=bool)
        for text in question.gold:
            mask[self._by_text[text]] = True
        return mask

    def dense(self, ids: np.ndarray, scores: np.ndarray) -> np.ndarray:
        """Scores of all candidates (0 for those not matched; headlines are dropped)."""
        out = np.zeros(len(self.ids), dtype=np.float64)
        if len(ids):
            at = np.minimum(np.searchsorted(self.ids, ids), len(self.ids) - 1)
            hit = self.ids[at] == ids
            out[at[hit]] = scores[hit]
        return out


class PlainBM25:
    """rank_bm25.BM25Okapi(k1=1.5, b=0.75, epsilon=0.25) over lower-cased \\w+ tokens, scored
    with numpy postings (get_scores loops in Python over every document for every term; the
    formula, the idf and its epsilon floor are the library's own, checked in `check`)."""

    def __init__(self, texts: Sequence[str]) -> None:
        from rank_bm25 import BM25Okapi

        self.bm25 = BM25Okapi([self.tokens(t) for t in texts], k1=1.5, b=0.75, epsilon=0.25)
        postings: dict[str, tuple[list[int], list[int]]] = {}
        for n, freqs in enumerate(self.bm25.doc_freqs):
            for word, tf in freqs.items():
                docs, tfs = postings.setdefault(word, ([], []))
                docs.append(n)
                tfs.append(tf)
        self.doc_len = np.asarray(self.bm25.doc_len, dtype=np.float64)
        self.postings = {w: (np.asarray(d), np.asarray(t, dtype=np.float64)) for w, (d, t) in postings.items()}
        self.n = len(texts)

    @staticmethod
    def tokens(text: str) -> list[str]:
        return re.findall(r"\w+", text.lower())

    def scores(self, question: str) -> np.ndarray:
        bm = self.bm25
        out = np.zeros(self.n)
        for word in self.tokens(question):
            hit = self.postings.get(word)
            if hit is None:
                continue
            docs, tf = hit
            dl = self.doc_len[docs]
            out[docs] += (bm.idf.get(word) or 0) * (tf * (bm.k1 + 1) / (tf + bm.k1 * (1 - bm.b + bm.b * dl / bm.avgdl)))
        return out

    def check(self, questions: Sequence[str]) -> None:
        for q in questions:
            expected = self.bm25.get_scores(self.tokens(q))
            if not np.allclose(self.scores(q), expected, rtol=1e-9, atol=1e-9):
                raise AssertionError(f"plain BM25 scores differ from rank_bm25 for {q!r}")


def rank_questions(
    corpus: Corpus, questions: Sequence[Question], cands: Candidates
) -> tuple[list[float], list[float], int]:
    """Each question's gold rank under the library's retriever, the time of the search the bot
    makes for it, and how many times a headline came first."""
    library = corpus.library
    retriever = library.retriever
    scopes = scopes_for(None)
    ranks, latencies, headline_first = [], [], 0
    for q in questions:
        terms = tokenize(" ".join(q.text.split()))
        t0 = time.perf_counter()
        hits = retriever.search(terms, max(30, library.top_k * 10), scopes)
        latencies.append(time.perf_counter() - t0)
        headline_first += bool(hits) and hits[0].sentence_id in corpus.headlines
        ids, scores = retriever.scores(terms, scopes)
        ranks.append(rank_of_gold(cands.dense(ids, scores), cands.gold_mask(q)))
    return ranks, latencies, headline_first


# --- the run ---------------------------------------------------------------------------------


@dataclass
class Report:
    questions: int
    candidates: int
    paragraphs: int
    paragraphs_kept_whole: int
    bot: dict[str, float]
    baseline: dict[str, float]
    bot_by_half: dict[str, dict[str, float]]
    baseline_by_half: dict[str, dict[str, float]]
    headline_first: float
    latency_ms: dict[str, float]
    ask_latency_ms: dict[str, float]
    declined_in_library: float
    gold_quoted: float
    declined_out_of_library: float
    out_of_library_questions: int
    out_of_library_articles: int
    small_libraries: int
    small_own_questions: int
    small_own_answered: float
    small_other_questions: int
    small_other_declined: float
    coverage_risk: list[dict[str, float]]
    decline_trade_off: list[dict[str, float]]
    reliability: list[dict[str, float]]
    seconds: dict[str, float]

    def text(self) -> str:
        def row(name: str, m: dict[str, float]) -> str:
            return f"{name:<27}" + "".join(f"{m[k]:>8.4f}" for k in (*(f"R@{k}" for k in RECALL_AT), "MRR"))

        lines = [
            f"SQuAD v1.1 dev, ReQA protocol: {self.questions:,} questions, {self.candidates:,} candidate sentences "
            f"from {self.paragraphs:,} paragraphs ({self.paragraphs - self.paragraphs_kept_whole} stored as-is: the "
            "text cleaner would have cut them)",
            f"{'':<27}" + "".join(f"{k:>8}" for k in (*(f"R@{k}" for k in RECALL_AT), "MRR")),
            row("bot", self.bot),
            row("plain BM25 (rank-bm25)", self.baseline),
        ]
        for half, m in self.bot_by_half.items():
            lines.append(row(f"bot, {half}", m))
            lines.append(row(f"plain BM25, {half}", self.baseline_by_half[half]))
        lat, ask = self.latency_ms, self.ask_latency_ms
        lines += [
            f"headline ranked first (not a candidate): {self.headline_first:.2%} of questions",
            f"retrieval latency per question: mean {lat['mean']:.2f} ms, p50 {lat['p50']:.2f}, p95 {lat['p95']:.2f}, "
            f"max {lat['max']:.2f}",
            f"Library.ask latency (with the database): mean {ask['mean']:.2f} ms, p95 {ask['p95']:.2f}, max {ask['max']:.2f}",
            f"declined, SQuAD questions against the library: {self.declined_in_library:.2%}; the gold sentence "
            f"is among the quoted passages for {self.gold_quoted:.2%}",
            f"declined, out-of-library questions ({self.out_of_library_questions:,} questions of "
            f"{self.out_of_library_articles} articles, each asked with its article removed): "
            f"{self.declined_out_of_library:.2%}",
            f"small libraries (one SQuAD article + the shipped corpus, {self.small_libraries} libraries): own questions "
            f"answered {self.small_own_answered:.2%} of {self.small_own_questions:,}; other articles' questions declined "
            f"{self.small_other_declined:.2%} of {self.small_other_questions:,}",
            "coverage-risk, SQuAD questions answered only from a confidence (best sentence right among those answered):",
            "  confidence >=  " + "".join(f"{p['confidence']:>7.1f}" for p in self.coverage_risk),
            "  answered       " + "".join(f"{p['answered']:>7.1%}" for p in self.coverage_risk),
            "  right          " + "".join(f"{p['right']:>7.1%}" for p in self.coverage_risk),
            "declined share had the library declined below each 'answerable' value (* = the shipped threshold):",
        ]
        groups = [k for k in self.decline_trade_off[0] if k != "answerable below"] if self.decline_trade_off else []
        lines.append("  answerable <  " + "".join(f"{g:>16}" for g in groups))
        threshold = _threshold()
        for row in self.decline_trade_off:
            mark = "*" if row["answerable below"] == threshold else " "
            lines.append(f"  {row['answerable below']:>11.4f}{mark}  " + "".join(f"{row[g]:>16.2%}" for g in groups))
        lines.append("reliability, answered SQuAD questions: confidence bin, answers, mean confidence, best sentence right")
        for r in self.reliability:
            lines.append(f"  {r['from']:.1f}-{r['to']:.1f}  {r['answers']:>6}  {r['mean confidence']:.3f}  {r['right']:.3f}")
        lines.append("time: " + ", ".join(f"{k} {v:.1f} s" for k, v in self.seconds.items()))
        return "\n".join(lines)


def _latency(samples: Sequence[float]) -> dict[str, float]:
    if not samples:
        return {"mean": 0.0, "p50": 0.0, "p95": 0.0, "max": 0.0}
    ms = sorted(s * 1000 for s in samples)
    return {
        "mean": statistics.fmean(ms),
        "p50": ms[len(ms) // 2],
        "p95": ms[min(len(ms) - 1, math.ceil(0.95 * len(ms)) - 1)],
        "max": ms[-1],
    }


def sample(questions: list[Question], limit: int | None) -> list[Question]:
    """`limit` questions spread evenly over the file (all of them without a limit)."""
    if limit is None or limit >= len(questions):
        return questions
    step = len(questions) / limit
    return [questions[int(i * step)] for i in range(limit)]


async def evaluate(
    path: str | Path,
    *,
    limit: int | None = None,
    out_of_library_articles: int | None = None,
    small_libraries: int = 0,
    workdir: str | Path | None = None,
) -> Report:
    seconds: dict[str, float] = {}
    data = read_squad(path)
    with tempfile.TemporaryDirectory(prefix="squad-eval-", dir=workdir) as tmp:
        corpus = await build_corpus(data, Path(tmp) / "squad.sqlite3")
        library = corpus.library
        try:
            seconds["import"] = corpus.import_seconds
            questions = sample(corpus.questions, limit)
            cands = Candidates(corpus.candidates)

            started = time.perf_counter()
            ranks, latencies, headline_first = rank_questions(corpus, questions, cands)
            seconds["bot ranking"] = time.perf_counter() - started

            started = time.perf_counter()
            plain = PlainBM25(cands.texts)
            plain.check([q.text for q in questions[:: max(1, len(questions) // 10)]])
            base_ranks = [rank_of_gold(plain.scores(q.text), cands.gold_mask(q)) for q in questions]
            seconds["baseline"] = time.perf_counter() - started

            started = time.perf_counter()
            ask_latencies = []
            declined = quoted = 0
            asked: list[Asked] = []
            for q in questions:
                t0 = time.perf_counter()
                answer = await library.ask(q.text)
                ask_latencies.append(time.perf_counter() - t0)
                declined += not answer.answered
                gold = set(cands.ids[cands.gold_mask(q)].tolist())
                quoted += any(gold.intersection(p.sentence_ids) for p in answer.passages)
                # What the confidence speaks of: the best-ranked sentence (a quoted passage may
                # add its neighbours).
                _, candidates = await library.assess(q.text)
                best_right = bool(candidates) and candidates[0].sentence.text in q.gold
                asked.append(await _asked(library, answer, q, best_right))
            seconds["asks"] = time.perf_counter() - started

            started = time.perf_counter()
            ool = await _out_of_library(corpus, questions, out_of_library_articles)
            seconds["out-of-library"] = time.perf_counter() - started

            started = time.perf_counter()
            own, other, small_articles = await _small_libraries(corpus, questions, small_libraries, workdir)
            seconds["small libraries"] = time.perf_counter() - started
        finally:
            await library.close()
    return Report(
        questions=len(questions),
        candidates=len(cands),
        paragraphs=corpus.paragraphs,
        paragraphs_kept_whole=corpus.kept_whole,
        bot=summarise(ranks),
        baseline=summarise(base_ranks),
        bot_by_half=by_half(questions, ranks),
        baseline_by_half=by_half(questions, base_ranks),
        headline_first=headline_first / max(1, len(questions)),
        latency_ms=_latency(latencies),
        ask_latency_ms=_latency(ask_latencies),
        declined_in_library=declined / max(1, len(questions)),
        gold_quoted=quoted / max(1, len(questions)),
        declined_out_of_library=_share(a.answered is False for a in ool),
        out_of_library_questions=len(ool),
        out_of_library_articles=len({a.article for a in ool}),
        small_libraries=small_articles,
        small_own_questions=len(own),
        small_own_answered=_share(a.answered for a in own),
        small_other_questions=len(other),
        small_other_declined=_share(not a.answered for a in other),
        coverage_risk=coverage_risk(asked),
        decline_trade_off=decline_trade_off({"SQuAD": asked, "out-of-library": ool, "small, own": own, "small, other": other}),
        reliability=reliability_table([a for a in asked if a.answered]),
        seconds=seconds,
    )


@dataclass(frozen=True)
class Asked:
    """What one ask gave, for the decline measures."""

    article: int
    answered: bool
    confidence: float  # that the first quote is right
    answerable: float  # what declining is decided on
    first_right: bool  # the best sentence (the first quote's own) is a gold sentence


def _holds_gold(text: str, q: Question) -> bool:
    return any(g in text for g in q.gold)


async def _asked(library: Library, answer: Answer, q: Question, best_right: bool | None = None) -> Asked:
    first = answer.passages[0].text if answer.passages else ""
    right = (bool(first) and _holds_gold(first, q)) if best_right is None else best_right
    return Asked(q.article, answer.answered, answer.confidence, answer.answerable, right)


def _share(flags) -> float:
    flags = list(flags)
    return sum(map(bool, flags)) / max(1, len(flags))


async def _out_of_library(corpus: Corpus, questions: list[Question], articles: int | None) -> list[Asked]:
    """Each chosen SQuAD article is removed, its questions asked, and it is put back."""
    library = corpus.library
    by_article: dict[int, list[Question]] = {}
    for q in questions:
        by_article.setdefault(q.article, []).append(q)
    chosen = sorted(by_article)
    if articles is not None and articles < len(chosen):
        step = len(chosen) / articles
        chosen = [chosen[int(i * step)] for i in range(articles)]
    out = []
    for a in chosen:
        for article_id in corpus.article_ids[a]:
            await library.remove(article_id, scopes=None)
        for q in by_article[a]:
            out.append(await _asked(library, await library.ask(q.text), q))
        new_ids = []
        for draft in corpus.drafts[a]:
            new_ids.append((await library.add_draft(draft, scope=GLOBAL_SCOPE, added_by="squad-eval")).article.id)
        corpus.article_ids[a] = new_ids
    return out


async def _small_libraries(
    corpus: Corpus, questions: list[Question], count: int, workdir: str | Path | None
) -> tuple[list[Asked], list[Asked], int]:
    """For `count` articles, a library of that article and the shipped corpus: (its own
    questions asked there, other articles' questions asked there, articles)."""
    from .small import chosen_articles, other_questions, small_library

    own: list[Asked] = []
    other: list[Asked] = []
    chosen = chosen_articles(corpus, questions, count) if count > 0 else []
    for a in chosen:
        async with small_library(corpus, a, workdir) as library:
            for q in questions:
                if q.article == a:
                    own.append(await _asked(library, await library.ask(q.text), q))
            for q in other_questions(questions, a, OTHER_QUESTIONS):
                other.append(await _asked(library, await library.ask(q.text), q))
    return own, other, len(chosen)


OTHER_QUESTIONS = 100  # other articles' questions asked of each small library
CURVE_AT = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)


def coverage_risk(asked: Sequence[Asked]) -> list[dict[str, float]]:
    """SQuAD questions against the whole library, answered only from a confidence: the share
    answered and the share of those whose first quote is right (what a stricter skin gets)."""
    out = []
    for t in CURVE_AT:
        kept = [a for a in asked if a.answered and a.confidence >= t]
        out.append({"confidence": t, "answered": len(kept) / max(1, len(asked)), "right": _share(a.first_right for a in kept)})
    return out


def decline_trade_off(groups: dict[str, Sequence[Asked]]) -> list[dict[str, float]]:
    """Declined share of each group had the library declined below each `answerable` value
    from the shipped threshold up (a question it declined stays declined)."""
    # Below the shipped threshold nothing can be read off: those questions were declined.
    points = sorted({t for t in (0.2, 0.25, 0.3, 0.4, 0.5, 0.6) if t > _threshold()} | {_threshold()})
    out = []
    for t in points:
        row = {"answerable below": t}
        for name, asked in groups.items():
            row[name] = _share((not a.answered) or a.answerable < t for a in asked)
        out.append(row)
    return out


def _threshold() -> float:
    from ..core.confidence import load_model

    return load_model().answer_threshold


def reliability_table(answered: Sequence[Asked], bins: int = 10) -> list[dict[str, float]]:
    """Answered SQuAD questions by confidence: how often the first quote is right."""
    out = []
    for b in range(bins):
        lo, hi = b / bins, (b + 1) / bins
        inside = [a for a in answered if lo <= a.confidence < hi or (hi == 1.0 and a.confidence == 1.0)]
        if inside:
            out.append(
                {"from": lo, "to": hi, "answers": len(inside), "mean confidence": statistics.fmean(a.confidence for a in inside),
                 "right": _share(a.first_right for a in inside)}
            )
    return out


def report_dict(report: Report) -> dict:
    return asdict(report)


def run(path: str, limit: int | None, as_json: bool, ool_articles: int | None, small_libraries: int) -> int:
    report = asyncio.run(
        evaluate(path, limit=limit, out_of_library_articles=ool_articles, small_libraries=small_libraries)
    )
    print(json.dumps(report_dict(report), indent=2) if as_json else report.text())
    return 0
