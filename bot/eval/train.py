"""Train the confidence model (bot/core/confidence_model.json) on SQuAD v1.1 dev.

`python -m bot.eval train PATH [--small-libraries N] [--write]`

Every question is asked three ways through `Library.assess` (the features the library itself
computes): against the whole library (its best sentences are right or wrong), against the
library without its article (out-of-library: nothing right to find), and in small libraries
of one article plus the shipped corpus (own questions, and other articles' questions). Two
logistic regressions are fitted: `answer` on each question's best candidate (label: it is a
gold sentence) and `passage` on its best three. Cross-validation holds out whole SQuAD
articles (fold = article number mod FOLDS): no fold is ever scored by a model that saw its
articles' questions or paragraphs. Thresholds are chosen on the held-out predictions; the
shipped coefficients are then fitted on everything.
"""
from __future__ import annotations

import asyncio
import json
import logging
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..core.articles import GLOBAL_SCOPE
from ..core.confidence import FEATURES, MODEL_PATH, Model, expand, fit_logistic, predict, too_thin
from ..core.library import Library
from .small import chosen_articles, other_questions, small_library
from .squad import Corpus, Question, build_corpus, read_squad, sample

log = logging.getLogger(__name__)

FOLDS = 5
PASSAGE_RANKS = 3
# Where the answer threshold may sit: SQuAD's own questions declined at most this often
# (held out), and in one-article libraries their own questions at most this often.
MAX_DECLINED_IN_LIBRARY = 0.016
MAX_DECLINED_OWN_SMALL = 0.08
# A passage after the first is quoted from this confidence that it holds the answer.
PASSAGE_THRESHOLD = 0.05
SETTINGS = ("in", "ool", "own", "other", "p-own", "p-other")
PARAGRAPH_STEP = 8  # every 8th paragraph of each article is a one-paragraph library
PARAGRAPH_OTHERS = 25  # other articles' questions asked of each
MODELS = ("answer", "passage", "answerable")


@dataclass
class Rows:
    """One row per candidate sentence of a question asked in a setting."""

    x: list[np.ndarray] = field(default_factory=list)
    gold: list[bool] = field(default_factory=list)
    rank: list[int] = field(default_factory=list)
    ask: list[int] = field(default_factory=list)  # which ask (index into the ask lists)
    # Per ask: the setting, the question's SQuAD article, the library's article (small), candidates.
    ask_setting: list[str] = field(default_factory=list)
    ask_article: list[int] = field(default_factory=list)
    ask_library: list[int] = field(default_factory=list)
    ask_has: list[bool] = field(default_factory=list)

    async def add(self, library: Library, q: Question, setting: str, library_article: int = -1) -> None:
        _, candidates = await library.assess(q.text)
        n = len(self.ask_setting)
        self.ask_setting.append(setting)
        self.ask_article.append(q.article)
        self.ask_library.append(library_article)
        self.ask_has.append(bool(candidates))
        for rank, c in enumerate(candidates[:PASSAGE_RANKS]):
            self.x.append(c.features)
            self.gold.append(setting in ("in", "own", "p-own") and c.sentence.text in q.gold)
            self.rank.append(rank)
            self.ask.append(n)

    def arrays(self) -> dict[str, np.ndarray]:
        return {
            "x": np.vstack(self.x) if self.x else np.zeros((0, len(FEATURES))),
            "gold": np.asarray(self.gold, dtype=bool),
            "rank": np.asarray(self.rank, dtype=np.int64),
            "ask": np.asarray(self.ask, dtype=np.int64),
            "setting": np.asarray(self.ask_setting),
            "article": np.asarray(self.ask_article, dtype=np.int64),
            "library": np.asarray(self.ask_library, dtype=np.int64),
            "has": np.asarray(self.ask_has, dtype=bool),
        }


async def collect(corpus: Corpus, questions: Sequence[Question], small: int, others: int, workdir: Path) -> Rows:
    rows = Rows()
    library = corpus.library
    for q in questions:
        await rows.add(library, q, "in")
    by_article: dict[int, list[Question]] = {}
    for q in questions:
        by_article.setdefault(q.article, []).append(q)
    for a in sorted(by_article):
        for article_id in corpus.article_ids[a]:
            await library.remove(article_id, scopes=None)
        for q in by_article[a]:
            await rows.add(library, q, "ool")
        corpus.article_ids[a] = [
            (await library.add_draft(d, scope=GLOBAL_SCOPE, added_by="squad-eval")).article.id for d in corpus.drafts[a]
        ]
    for a in chosen_articles(corpus, questions, small):
        async with small_library(corpus, a, workdir) as lib:
            for q in by_article[a]:
                await rows.add(lib, q, "own", a)
            for q in other_questions(questions, a, others):
                await rows.add(lib, q, "other", a)
    # Libraries of one paragraph beside the shipped corpus: a new server's size.
    for a in sorted(by_article):
        for p in range(0, len(corpus.drafts[a]), PARAGRAPH_STEP):
            body = corpus.drafts[a][p].body
            own = [q for q in by_article[a] if any(g in body for g in q.gold)]
            if not own:
                continue
            async with small_library(corpus, a, workdir, paragraph=p) as lib:
                for q in own:
                    await rows.add(lib, q, "p-own", a)
                for q in other_questions(questions, a, PARAGRAPH_OTHERS):
                    await rows.add(lib, q, "p-other", a)
    return rows


def fold_of(article: np.ndarray) -> np.ndarray:
    return article % FOLDS


def held_out_predictions(data: dict[str, np.ndarray], mean: np.ndarray, scale: np.ndarray) -> dict[str, np.ndarray]:
    """Each model's prediction for every row, from the model fitted without that row's fold.
    A small-library row belongs to the folds of both its question's article and its library's
    article: it is trained on only when neither is held out."""
    ask = data["ask"]
    q_fold = fold_of(data["article"])[ask]
    lib = data["library"][ask]
    l_fold = np.where(lib >= 0, fold_of(lib), q_fold)
    x = expand(data["x"], mean, scale)
    out = {name: np.zeros(len(ask)) for name in MODELS}
    for f in range(FOLDS):
        train = (q_fold != f) & (l_fold != f)
        test = q_fold == f
        for name, (rows, label, weight) in _targets(data).items():
            w = fit_logistic(x[train & rows], label[train & rows], weight[train & rows])
            out[name][test] = predict(w, x[test])
    return out


def _targets(data: dict[str, np.ndarray]) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Per model: (rows it is fitted on, label, row weights). For `answerable`, each setting
    weighs as much in all as the questions asked against the whole library: small libraries
    then count as much as the large one, and their own and other questions equally."""
    top = data["rank"] == 0
    setting = data["setting"][data["ask"]]
    answerable = np.isin(setting, ("in", "own", "p-own"))
    balanced = np.ones(len(top))
    reference = np.count_nonzero(top & (setting == "in"))
    for name in SETTINGS:
        rows = top & (setting == name)
        if np.any(rows):
            balanced[rows] = reference / np.count_nonzero(rows)
    ones = np.ones(len(top))
    return {
        "answer": (top, data["gold"], ones),
        "passage": (np.ones(len(top), dtype=bool), data["gold"], ones),
        "answerable": (top, answerable, balanced),
    }


def ask_confidence(data: dict[str, np.ndarray], answer: np.ndarray) -> np.ndarray:
    """Per ask: the answer model's confidence in its best candidate (0 when there is none)."""
    out = np.zeros(len(data["setting"]))
    top = data["rank"] == 0
    out[data["ask"][top]] = answer[top]
    return out


def declined_at(data: dict[str, np.ndarray], confidence: np.ndarray, threshold: float) -> dict[str, float]:
    """Declined share per setting, as Library.ask decides: no candidate, `confidence` below
    `threshold`, or a short question too thinly matched."""
    thin = np.zeros(len(data["setting"]), dtype=bool)
    top = data["rank"] == 0
    thin[data["ask"][top]] = [too_thin(x) for x in data["x"][top]]
    declined = ~data["has"] | (confidence < threshold) | thin
    return {s: float(declined[data["setting"] == s].mean()) for s in SETTINGS if np.any(data["setting"] == s)}


def choose_threshold(data: dict[str, np.ndarray], confidence: np.ndarray) -> float:
    best = 0.0
    for t in np.round(np.arange(0.0, 0.6, 0.0025), 4):
        d = declined_at(data, confidence, float(t))
        if d.get("in", 0) <= MAX_DECLINED_IN_LIBRARY and max(d.get("own", 0), d.get("p-own", 0)) <= MAX_DECLINED_OWN_SMALL:
            best = float(t)
    return best


def reliability(confidence: np.ndarray, right: np.ndarray, bins: int = 10) -> list[tuple[str, int, float, float]]:
    """(confidence bin, answers, mean confidence, share right) per bin."""
    out = []
    edges = np.linspace(0, 1, bins + 1)
    for lo, hi in zip(edges[:-1], edges[1:]):
        inside = (confidence >= lo) & ((confidence < hi) | (hi == 1.0))
        if np.any(inside):
            out.append((f"{lo:.1f}-{hi:.1f}", int(inside.sum()), float(confidence[inside].mean()), float(right[inside].mean())))
    return out


def top_right(data: dict[str, np.ndarray]) -> np.ndarray:
    """Per ask: its best candidate is a gold sentence."""
    out = np.zeros(len(data["setting"]), dtype=bool)
    top = data["rank"] == 0
    out[data["ask"][top]] = data["gold"][top]
    return out


async def train(
    path: str | Path, *, limit: int | None, small: int, others: int, rows_file: Path | None = None
) -> tuple[Model, str, dict]:
    """Collect (or read from `rows_file`, which a first run writes) the candidates' features,
    cross-validate, fit."""
    started = time.perf_counter()
    if rows_file is not None and rows_file.is_file():
        with np.load(rows_file) as saved:
            data = {k: saved[k] for k in saved.files}
    else:
        data_set = read_squad(path)
        with tempfile.TemporaryDirectory(prefix="squad-train-") as tmp:
            corpus = await build_corpus(data_set, Path(tmp) / "squad.sqlite3")
            try:
                questions = sample(corpus.questions, limit)
                rows = await collect(corpus, questions, small, others, Path(tmp))
            finally:
                await corpus.library.close()
        data = rows.arrays()
        if rows_file is not None:
            np.savez(rows_file, **data)
    mean, scale = data["x"].mean(axis=0), data["x"].std(axis=0) + 1e-9
    held = held_out_predictions(data, mean, scale)
    answerable = ask_confidence(data, held["answerable"])
    threshold = choose_threshold(data, answerable)
    confidence = ask_confidence(data, held["answer"])
    right = top_right(data)
    lines = [f"{len(data['setting']):,} asks, {len(data['gold']):,} candidate rows, {time.perf_counter() - started:.0f} s"]
    lines.append("held out (a fold's articles scored by models fitted on the other folds), declined share by threshold:")
    lines.append("threshold  " + "  ".join(f"{s:>7}" for s in SETTINGS))
    for t in (0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.4, 0.5, threshold):
        d = declined_at(data, answerable, t)
        lines.append(f"{t:>9.4f}  " + "  ".join(f"{d.get(s, 0):>7.2%}" for s in SETTINGS))
    in_lib = data["setting"] == "in"
    lines.append("reliability, SQuAD questions against the whole library (held out): bin, asks, mean confidence, first quote right")
    for name, n, mean_c, share in reliability(confidence[in_lib], right[in_lib]):
        lines.append(f"  {name}  {n:>6}  {mean_c:.3f}  {share:.3f}")
    x = expand(data["x"], mean, scale)
    fitted = {name: fit_logistic(x[rows], label[rows], weight[rows]) for name, (rows, label, weight) in _targets(data).items()}
    model = Model(
        features=FEATURES,
        mean=mean,
        scale=scale,
        answer_threshold=threshold,
        passage_threshold=PASSAGE_THRESHOLD,
        close_threshold=threshold / 3,
        **fitted,
    )
    summary = {"asks": len(data["setting"]), "threshold": threshold, "held_out_declined": declined_at(data, answerable, threshold)}
    return model, "\n".join(lines), summary


def run(path: str, limit: int | None, small: int, others: int, write: bool, rows_file: str | None = None) -> int:
    rows = Path(rows_file) if rows_file else None
    model, text, summary = asyncio.run(train(path, limit=limit, small=small, others=others, rows_file=rows))
    print(text)
    print(json.dumps(summary))
    if write:
        command = f"python -m bot.eval train PATH --small-libraries {small} --other-questions {others}" + (
            f" --limit {limit}" if limit else ""
        )
        MODEL_PATH.write_text(model.to_json(trained_with=command), encoding="utf-8")
        print(f"wrote {MODEL_PATH}")
    return 0
