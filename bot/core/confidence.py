"""How sure the library is that a sentence answers a question: calibrated probabilities.

BM25 ranks well, but its score says little about whether the best sentence answers at all:
in a library of one article every word looks rare, and a question about dogs finds the one
sentence that says "feed". So each candidate sentence is described by features that mean
the same in a one-article library and at a million sentences, because they read nothing of
the library's statistics: every question word is weighed by its rarity in ordinary English
(the `wordfreq` lists, shipped in its wheel), and the features say

- how much of that weight the sentence, and the sentence with its paragraph, hold;
- how rare the words left unmatched are ("dog" in "what should I feed my dog?"), how many
  there are, and whether the question's rarest word is matched;
- how many of the question's adjacent word pairs ("super bowl") appear as such;
- whether the sentence holds the kind of thing asked for (a year for "when", a number for
  "how many"); its score against the best candidate's; the best of these over all candidates.

A logistic regression over the standardised features and their pairwise products turns them
into probabilities. Three coefficient sets, trained by `python -m bot.eval train PATH` on
SQuAD with whole articles held out (docs/answer-quality.md) and shipped in
`confidence_model.json`: `answer`, the chance that the first quote is right (the reply's
confidence); `passage`, the same for any quoted passage; `answerable`, the chance that the
library holds an answer at all, below the threshold of which the library declines.
"""
from __future__ import annotations

import json
import math
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from .tokens import is_answer_type, tokenize, word_tokens, words_of

MODEL_PATH = Path(__file__).with_name("confidence_model.json")

FEATURES = (
    "prior_share_sentence",
    "prior_share_context",
    "rarest_missing",
    "rarest_matched",
    "answer_type",
    "words",
    "relative_score",
    "missing_prior",
    "missing_count",
    "pair_share",
    "best_prior_share_context",
    "least_missing_prior",
    "best_pair_share",
)
# The last three describe the question's candidates together (the best of any of them),
# the others one candidate: `features` fills them, `with_best` the rest.
_OWN = len(FEATURES) - 3

# wordfreq's Zipf scale: log10 of a word's frequency per billion words ("the" 7.7, "dog" 5.1,
# "pastor" 4.1; a word it has never seen 0). Rarity = ZIPF_TOP - zipf, so 0 for the commonest.
ZIPF_TOP = 8.0


@lru_cache(maxsize=100_000)
def rarity(word: str) -> float:
    """How rare a surface word is in ordinary English, 0 (commonest) to 8 (never seen)."""
    from wordfreq import zipf_frequency  # loaded on the first question, not at import

    return ZIPF_TOP - min(zipf_frequency(word, "en"), ZIPF_TOP)


@dataclass(frozen=True, slots=True)
class QuestionWords:
    """A question's words and how rare each is in English at large."""

    words: tuple[str, ...]  # distinct word terms (no answer types)
    pairs: frozenset[tuple[str, str]]  # adjacent word terms, in the question's order
    prior: np.ndarray  # rarity in English (0..8) of each word
    asked: frozenset[str]  # answer types the question asks for


def weigh_question(question: str, terms: Sequence[str]) -> QuestionWords:
    words = sorted({t for t in terms if not is_answer_type(t)})
    prior = dict.fromkeys(words, 0.0)
    for raw in word_tokens(question):
        for term in words_of(tokenize(raw)):
            if term in prior:
                prior[term] = max(prior[term], rarity(raw))
    ordered = [t for t in terms if not is_answer_type(t)]
    return QuestionWords(
        words=tuple(words),
        pairs=frozenset(zip(ordered, ordered[1:])),
        prior=np.asarray([prior[w] for w in words], dtype=np.float64),
        asked=frozenset(t for t in terms if is_answer_type(t)),
    )


class TokenText:
    """The stored tokens ("w1 w2 #num") of a sentence and its paragraph, asked whether a word,
    or two words side by side, occur: a substring test for each of the question's few words,
    where sets of every word and word pair cost a millisecond for a 50-sentence paragraph."""

    __slots__ = ("_text",)

    def __init__(self, lines: str) -> None:
        # `lines`: one sentence's tokens a line, so that no pair spans two sentences. Answer
        # types come after a sentence's words and are never part of a question's pairs.
        self._text = " " + lines.replace("\n", " \n ") + " "

    def __contains__(self, item: object) -> bool:
        if isinstance(item, tuple):
            return f" {item[0]} {item[1]} " in self._text
        return f" {item} " in self._text


def features(
    q: QuestionWords,
    score: float,
    best: float,
    sentence: Collection[str],
    context: TokenText,
) -> np.ndarray:
    """The features (FEATURES order) of one candidate: its BM25 `score` (the best candidate's:
    `best`), the tokens of the sentence, and the sentence with its paragraph (asked for single
    words and for adjacent word pairs)."""
    in_sentence = np.fromiter((w in sentence for w in q.words), dtype=bool, count=len(q.words))
    in_context = in_sentence | np.fromiter((w in context for w in q.words), dtype=bool, count=len(q.words))
    prior_total = float(q.prior.sum()) or 1.0
    missing = q.prior[~in_context]
    rarest = int(np.argmax(q.prior)) if len(q.words) else -1
    held = {t for t in sentence if is_answer_type(t)}
    if q.asked:
        answer_type = 1.0 if q.asked <= held else -1.0
    else:
        answer_type = 0.0
    return np.array(
        [
            float(q.prior[in_sentence].sum()) / prior_total,
            float(q.prior[in_context].sum()) / prior_total,
            float(missing.max()) / ZIPF_TOP if len(missing) else 0.0,
            float(in_context[rarest]) if rarest >= 0 else 0.0,
            answer_type,
            math.log1p(len(q.words)),
            score / best if best > 0 else 0.0,
            float(missing.sum()) / ZIPF_TOP,
            float(len(missing)),
            sum(p in context for p in q.pairs) / len(q.pairs) if q.pairs else 1.0,
            0.0,
            0.0,
            0.0,
        ],
        dtype=np.float64,
    )


# A question of this few words is declined when no candidate's paragraph holds this share of
# their rarity: "feed my dog" finds "feed" and nothing else. SQuAD questions are long enough
# for the model to judge; members' two-word questions are not (docs/answer-quality.md).
SHORT_QUESTION_WORDS = 2
MIN_SHORT_SHARE = 0.6


def too_thin(x: np.ndarray) -> bool:
    """True for a short question that no candidate matches well enough to answer."""
    words = round(math.expm1(x[FEATURES.index("words")]))
    return words <= SHORT_QUESTION_WORDS and x[FEATURES.index("best_prior_share_context")] < MIN_SHORT_SHARE


def with_best(rows: Sequence[np.ndarray]) -> list[np.ndarray]:
    """Each candidate's features completed with the best values among all the question's
    candidates: a question whose words all sit in some paragraph is likely answerable there,
    even when the best-scored sentence is elsewhere."""
    if not rows:
        return []
    at = {name: FEATURES.index(name) for name in ("prior_share_context", "missing_prior", "pair_share")}
    stacked = np.vstack(rows)
    best = (
        stacked[:, at["prior_share_context"]].max(),
        stacked[:, at["missing_prior"]].min(),
        stacked[:, at["pair_share"]].max(),
    )
    out = []
    for row in rows:
        row = row.copy()
        row[_OWN:] = best
        out.append(row)
    return out


# --- the model ----------------------------------------------------------------------------------


def expand(x: np.ndarray, mean: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """Standardised features and all their pairwise products (squares included): a linear
    model over these bends where one feature matters more when another is high (a missing rare
    word weighs more in a large library). Rows are candidates; one row may be given as 1-D."""
    z = (np.atleast_2d(x) - mean) / scale
    upper = np.triu_indices(z.shape[1])
    return np.hstack([z, (z[:, :, None] * z[:, None, :])[:, upper[0], upper[1]]])


@dataclass(frozen=True, slots=True)
class Model:
    features: tuple[str, ...]
    mean: np.ndarray  # standardisation of the raw features
    scale: np.ndarray
    answer: np.ndarray  # coefficients over expand(), intercept last: the best candidate is right
    passage: np.ndarray  # the same for any of the best three candidates
    answerable: np.ndarray  # the library holds the answer (the question is about its articles)
    answer_threshold: float  # decline when answerable() is below this
    passage_threshold: float  # quote a further passage only from this confidence
    close_threshold: float  # a declined question's best sentence from this answerable() is "close"

    def _p(self, w: np.ndarray, x: np.ndarray) -> float:
        return float(predict(w, expand(x, self.mean, self.scale))[0])

    def answer_confidence(self, x: np.ndarray) -> float:
        return self._p(self.answer, x)

    def passage_confidence(self, x: np.ndarray) -> float:
        return self._p(self.passage, x)

    def passage_confidences(self, rows: Sequence[np.ndarray]) -> list[float]:
        """passage_confidence of many candidates at once."""
        if not rows:
            return []
        return predict(self.passage, expand(np.vstack(rows), self.mean, self.scale)).tolist()

    def answerable_confidence(self, x: np.ndarray) -> float:
        return self._p(self.answerable, x)

    def to_json(self, **extra: object) -> str:
        def listed(v: np.ndarray) -> list[float]:
            return [round(float(a), 6) for a in v]

        data = {
            "features": list(self.features),
            "mean": listed(self.mean),
            "scale": listed(self.scale),
            "answer": listed(self.answer),
            "passage": listed(self.passage),
            "answerable": listed(self.answerable),
            "answer_threshold": self.answer_threshold,
            "passage_threshold": self.passage_threshold,
            "close_threshold": self.close_threshold,
            **extra,
        }
        return json.dumps(data) + "\n"


def model_from_dict(data: dict) -> Model:
    names = tuple(data["features"])
    if names != FEATURES:
        raise ValueError(f"confidence model features {names} are not {FEATURES}: retrain it")
    return Model(
        features=names,
        **{k: np.asarray(data[k], dtype=np.float64) for k in ("mean", "scale", "answer", "passage", "answerable")},
        answer_threshold=float(data["answer_threshold"]),
        passage_threshold=float(data["passage_threshold"]),
        close_threshold=float(data["close_threshold"]),
    )


@lru_cache(maxsize=4)
def load_model(path: Path = MODEL_PATH) -> Model:
    return model_from_dict(json.loads(path.read_text(encoding="utf-8")))


def fit_logistic(
    x: np.ndarray, y: np.ndarray, weight: np.ndarray | None = None, l2: float = 1e-3, iterations: int = 50
) -> np.ndarray:
    """Coefficients (intercept last) of an L2-regularised logistic regression, by Newton's
    method: a hundred features and tens of thousands of rows need nothing more than numpy.
    `weight`: how much each row counts (default 1)."""
    x1 = np.hstack([x, np.ones((len(x), 1))])
    weight = np.ones(len(x1)) if weight is None else weight
    w = np.zeros(x1.shape[1])
    penalty = l2 * float(weight.sum()) * np.eye(x1.shape[1])
    penalty[-1, -1] = 0.0  # the intercept is not shrunk
    for _ in range(iterations):
        p = 1.0 / (1.0 + np.exp(-np.clip(x1 @ w, -30, 30)))
        gradient = x1.T @ (weight * (p - y)) + penalty @ w
        hessian = (x1 * (weight * p * (1 - p))[:, None]).T @ x1 + penalty
        step = np.linalg.solve(hessian, gradient)
        w -= step
        if float(np.abs(step).max()) < 1e-8:
            break
    return w


def predict(w: np.ndarray, x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.clip(x @ w[:-1] + w[-1], -30, 30)))
