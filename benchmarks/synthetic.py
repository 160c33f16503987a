"""Synthetic sentence libraries and questions for retrieval benchmarks.

The generator models what the bot indexes: sentences that have already been
tokenised and stripped of stop words.

* Vocabulary: ``n_types`` pseudo-words (200k by default).  Word of rank r
  (1-based) is drawn with probability proportional to ``(r + offset) ** -s``
  (Zipf-Mandelbrot, s = 1.1).  The offset (10) flattens the head the way
  stop-word removal does: the most common content word is ~1.4 % of tokens and
  appears in ~16 % of sentences, the top 1000 words cover ~58 % of tokens.
  Frequent words get short spellings (pronounceable syllables), as in English.
* Sentence length: lognormal with mean ``mean_len`` (12) content tokens and
  sigma 0.6, rounded and clipped to [1, 80] (median ~10, p99 ~45).
* Articles: consecutive runs of ``sentences_per_article`` sentences share a
  group: 0 (global) for ~70 % of articles, otherwise one of ``n_guilds``
  Discord-like guild ids (large 63-bit ints).  Sentence ids increase with small
  random gaps, like SQLite row ids after some deletions.
* Questions: 3-8 terms.  Each term is, with probability 0.4, a word drawn from
  the token distribution itself (so mostly frequent words) and otherwise a word
  whose rank is log-uniform over [50, n_types] (specific / rare words).  A few
  questions repeat a term, and ~5 % of terms are out-of-vocabulary.

Everything is deterministic for a given seed.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

_CONSONANTS = "bcdfghjklmnprstvz"
_VOWELS = "aeiou"
_SYLLABLES = [c + v for c in _CONSONANTS for v in _VOWELS]


def pseudo_word(rank: int) -> str:
    """Unique pronounceable spelling for a 0-based rank; short for low ranks."""
    base = len(_SYLLABLES)
    parts: list[str] = []
    r = rank
    while True:  # bijective base-85 so every length is used
        parts.append(_SYLLABLES[r % base])
        r = r // base - 1
        if r < 0:
            break
    return "".join(reversed(parts))


@dataclass(frozen=True)
class SyntheticConfig:
    n_types: int = 200_000
    zipf_exponent: float = 1.1
    zipf_offset: float = 10.0
    mean_len: float = 12.0
    len_sigma: float = 0.6
    max_len: int = 80
    sentences_per_article: int = 50
    n_guilds: int = 20
    guild_fraction: float = 0.3
    seed: int = 1234


@dataclass
class Library:
    """Sentences ready for ``BM25Index.add(ids, docs, groups)``."""

    ids: list[int]
    docs: list[list[str]]
    groups: list[int]
    guilds: list[int] = field(default_factory=list)


class SyntheticCorpus:
    def __init__(self, config: SyntheticConfig | None = None) -> None:
        self.config = config or SyntheticConfig()
        c = self.config
        self.words: list[str] = [pseudo_word(r) for r in range(c.n_types)]
        self._words_obj = np.array(self.words, dtype=object)
        weights = (np.arange(1, c.n_types + 1, dtype=np.float64) + c.zipf_offset) ** -c.zipf_exponent
        self.probabilities = weights / weights.sum()
        self._cdf = np.cumsum(self.probabilities)
        self._cdf[-1] = 1.0
        guild_rng = np.random.default_rng(c.seed + 7)
        self.guilds: list[int] = sorted(
            int(g) for g in guild_rng.integers(10**17, 2**63 - 1, size=c.n_guilds, dtype=np.int64)
        )

    def sample_ranks(self, rng: np.random.Generator, n: int) -> np.ndarray:
        return np.searchsorted(self._cdf, rng.random(n), side="right")

    def sentence_lengths(self, rng: np.random.Generator, n: int) -> np.ndarray:
        c = self.config
        mu = np.log(c.mean_len) - c.len_sigma**2 / 2
        return np.clip(np.rint(rng.lognormal(mu, c.len_sigma, n)), 1, c.max_len).astype(np.int64)

    def sentences(self, rng: np.random.Generator, n: int) -> list[list[str]]:
        lens = self.sentence_lengths(rng, n)
        flat = self._words_obj[self.sample_ranks(rng, int(lens.sum()))].tolist()
        ends = np.cumsum(lens).tolist()
        starts = [0] + ends[:-1]
        return [flat[a:b] for a, b in zip(starts, ends)]

    def library(self, n_sentences: int, first_id: int = 1_000, seed: int | None = None) -> Library:
        c = self.config
        rng = np.random.default_rng(c.seed if seed is None else seed)
        docs = self.sentences(rng, n_sentences)
        gaps = 1 + (rng.random(n_sentences) < 0.05) * rng.integers(1, 20, n_sentences)
        ids = (first_id + np.cumsum(gaps)).tolist()
        n_articles = -(-n_sentences // c.sentences_per_article)
        in_guild = rng.random(n_articles) < c.guild_fraction
        which = rng.integers(0, c.n_guilds, n_articles)
        art_group = np.where(in_guild, np.array(self.guilds, dtype=np.int64)[which], 0)
        groups = np.repeat(art_group, c.sentences_per_article)[:n_sentences].tolist()
        return Library(ids=ids, docs=docs, groups=groups, guilds=list(self.guilds))

    def questions(self, n: int, seed: int = 99) -> list[list[str]]:
        c = self.config
        rng = np.random.default_rng(seed)
        out: list[list[str]] = []
        lo, hi = np.log(50), np.log(c.n_types)
        for qi in range(n):
            n_terms = int(rng.integers(3, 9))
            terms: list[str] = []
            for _ in range(n_terms):
                u = rng.random()
                if u < 0.05:
                    terms.append(f"zzunknown{qi}x{len(terms)}")
                elif u < 0.45:
                    terms.append(self.words[int(self.sample_ranks(rng, 1)[0])])
                else:
                    rank = int(np.exp(rng.uniform(lo, hi))) - 1
                    terms.append(self.words[min(rank, c.n_types - 1)])
            if qi % 10 == 3:
                terms.append(terms[0])  # people repeat the key word
            out.append(terms)
        return out
