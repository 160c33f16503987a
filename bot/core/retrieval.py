"""Ranking sentences against a question. Pure CPU: callers run it off the event loop.

A sentence is scored with its context, every part an exact BM25 over an incremental index
(a question touches only the postings of its own terms, whatever the library size):

    score = BM25(sentence)                                   words and answer-type tokens
          + PARAGRAPH_WEIGHT * BM25(the sentence's paragraph)  its words, all sentences together

Only sentences holding at least one question term are ranked. Headlines (paragraph 0 of an
article) are ranked on their own words: they are nobody's paragraph context. A question asked
in a server is ranked over exactly the sentences and paragraphs it can see (its scopes: the
global one and its own): N, lengths and document frequencies are those of that set alone, so
no server's articles move another server's answers. Parameters and
the measurements behind them: docs/answer-quality.md (`python -m bot.eval squad PATH`).
"""
from __future__ import annotations

import itertools
import json
import logging
import math
import os
import tempfile
import threading
import zipfile
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .bm25_index import _GIL_SLICE, BM25Index, Vocabulary, forward_rows
from .storage import IndexBatch, IndexRow
from .tokens import TOKENIZER_VERSION, is_answer_type, words_of

log = logging.getLogger(__name__)

# Sentence-length documents want little term-frequency saturation and length normalisation.
SENTENCE_K1, SENTENCE_B = 0.5, 0.3
# Paragraph context: near-binary term presence, full length normalisation.
PARAGRAPH_K1, PARAGRAPH_B, PARAGRAPH_WEIGHT = 0.3, 1.0, 1.5
# Floor of a word's idf in information(): a word in most sentences still says a little.
MIN_IDF = 0.1

_FORMAT = "quotebot-retriever/2"
# Part of the cache format: a cache written with other tokens or weights is rebuilt.
_SCORING = (
    f"s{SENTENCE_K1}/{SENTENCE_B} p{PARAGRAPH_K1}/{PARAGRAPH_B}x{PARAGRAPH_WEIGHT}"
    f" t{TOKENIZER_VERSION}"
)
_EMPTY_IDS = np.zeros(0, dtype=np.int64)
_EMPTY_SCORES = np.zeros(0, dtype=np.float64)


@dataclass(frozen=True, slots=True)
class Hit:
    sentence_id: int
    score: float


def is_headline_key(key: tuple[int, int]) -> bool:
    """Paragraph 0 of an article is its headline (see sentences.article_sentences)."""
    return key[1] == 0


class _SentenceMap:
    """Sentence id -> paragraph number (-1: none). A dense array over the id range when ids
    are compact (database row ids are), else sorted pairs. Readers take `view` once; writers
    publish a new view, or write in place where no reader can be misled (new or dead ids)."""

    def __init__(self) -> None:
        self._count = 0  # ids ever set: bounds the dense range
        self.view: tuple = ("dense", 0, np.zeros(0, dtype=np.int32))

    def set(self, sids: np.ndarray, values: np.ndarray) -> None:
        if len(sids) == 0:
            return
        self._count += len(sids)
        kind, *state = self.view
        lo, hi = int(sids.min()), int(sids.max())
        if kind == "dense":
            base, dense = state
            if len(dense) == 0:
                base = lo
            new_base, new_end = min(base, lo), max(base + len(dense), hi + 1)
            if new_end - new_base <= 4 * self._count + (1 << 20):
                if new_base != base or new_end > base + len(dense):
                    grown = np.full(max(new_end - new_base, 2 * len(dense)), -1, dtype=np.int32)
                    grown[base - new_base : base - new_base + len(dense)] = dense
                    dense, base = grown, new_base
                dense[sids - base] = values
                self.view = ("dense", base, dense)
                return
            ids, vals = self.items()
            state = [ids, vals]
        ids, vals = state
        ids = np.concatenate([ids, sids])
        vals = np.concatenate([vals, values.astype(np.int32)])
        order = np.argsort(ids, kind="stable")
        self.view = ("sorted", ids[order], vals[order])

    def clear(self, sids: np.ndarray) -> None:
        kind, a, b = self.view
        if kind == "dense":
            at = sids - a
            b[at[(at >= 0) & (at < len(b))]] = -1
        else:
            keep = ~np.isin(a, sids)
            self.view = ("sorted", a[keep], b[keep])

    def lookup(self, sids: np.ndarray) -> np.ndarray:
        kind, a, b = self.view
        if len(b) == 0:
            return np.full(len(sids), -1, dtype=np.int32)
        if kind == "dense":
            at = sids - a
            inside = (at >= 0) & (at < len(b))
            return np.where(inside, b[np.where(inside, at, 0)], -1)
        at = np.minimum(np.searchsorted(a, sids), len(a) - 1)
        return np.where(a[at] == sids, b[at], -1)

    def items(self) -> tuple[np.ndarray, np.ndarray]:
        """(ids, values) of every id set, ids ascending."""
        kind, a, b = self.view
        if kind == "dense":
            at = np.flatnonzero(b >= 0)
            return at.astype(np.int64) + a, b[at]
        return a, b


class _SentenceIndex(BM25Index):
    """The sentence index. Saving it saves the whole retriever (context indexes too), so a
    cache written through `retriever.index.save` is never mistaken for a sentence-only one
    (`BM25Index.load` turns the combined file away and the library rebuilds)."""

    owner: Retriever | None = None

    def save(self, path: str | os.PathLike[str], stamp: str) -> None:  # type: ignore[override]
        if self.owner is None:
            super().save(path, stamp)
        else:
            self.owner.save(path, stamp)


class Retriever:
    """The library's searchable side: sentence ids in, ranked sentence ids out."""

    def __init__(self, index: BM25Index | None = None) -> None:
        fresh = index is None
        self.index = index if index is not None else _SentenceIndex(SENTENCE_K1, SENTENCE_B)
        # Paragraph documents, numbered in order of arrival (ids are these numbers).
        self.paragraphs = BM25Index(PARAGRAPH_K1, PARAGRAPH_B)
        self._paragraph_of = _SentenceMap()
        self._paragraph_count = 0
        # The paragraphs of the latest add(): paragraph key -> (number, words). A paragraph
        # cut across two add() calls (a rebuild reads the database in batches) is joined.
        self._tail: dict[tuple[int, int], tuple[int, list[str]]] = {}
        self._lock = threading.Lock()
        # An index built elsewhere comes without its context: it is ranked on sentences alone.
        self.has_context = fresh or len(self.index) == 0
        if isinstance(self.index, _SentenceIndex):
            self.index.owner = self

    def __len__(self) -> int:
        return len(self.index)

    @property
    def needs_compaction(self) -> bool:
        """True when a background compact() would do useful work."""
        return any(i.needs_compaction for i in (self.index, self.paragraphs))

    def memory_bytes(self) -> int:
        """Approximate retained size of all indexes."""
        kind, _, values = self._paragraph_of.view
        extra = values.nbytes + (self._paragraph_of.view[1].nbytes if kind == "sorted" else 0)
        return self.index.memory_bytes() + self.paragraphs.memory_bytes() + extra

    # --- changes -----------------------------------------------------------------------------

    def add(self, rows: Sequence[IndexRow]) -> None:
        if not rows:
            return
        ids = [r.sentence_id for r in rows]
        scopes = [r.scope for r in rows]
        with self._lock:
            self.index.add(ids, [r.tokens for r in rows], scopes)  # raises on a known id: nothing changed
            if not self.has_context:
                return
            tail: dict[tuple[int, int], tuple[int, list[str]]] = {}
            doc_scope: dict[tuple[int, int], int] = {}
            numbers = np.full(len(rows), -1, dtype=np.int32)
            for n, r in enumerate(rows):
                key = r.paragraph_key
                if is_headline_key(key):
                    continue
                if key not in tail:
                    earlier = self._tail.get(key)
                    if earlier is not None:  # the rest of a paragraph begun by the previous add()
                        self.paragraphs.remove([earlier[0]])
                        tail[key] = (earlier[0], list(earlier[1]))
                    else:
                        tail[key] = (self._paragraph_count, [])
                        self._paragraph_count += 1
                number, words = tail[key]
                words.extend(words_of(r.tokens))
                doc_scope[key] = r.scope
                numbers[n] = number
            self._paragraph_of.set(np.asarray(ids, dtype=np.int64), numbers)
            keys = list(tail)
            self.paragraphs.add([tail[k][0] for k in keys], [tail[k][1] for k in keys], [doc_scope[k] for k in keys])
            self._tail = tail

    def remove(self, sentence_ids: Iterable[int]) -> None:
        ids = np.unique(np.fromiter((int(i) for i in sentence_ids), dtype=np.int64))
        if len(ids) == 0:
            return
        with self._lock:
            self.index.remove(ids.tolist())
            if not self.has_context:
                return
            numbers = np.unique(self._paragraph_of.lookup(ids))
            numbers = numbers[numbers >= 0]
            # A paragraph leaves whole: its other sentences (if any stay) lose their context.
            self.paragraphs.remove(numbers.tolist())
            self._paragraph_of.clear(ids)
            gone = set(numbers.tolist())
            self._tail = {k: v for k, v in self._tail.items() if v[0] not in gone}

    def compact(self, full: bool = False) -> bool:
        """Merge index segments (meant for a background thread); True if anything changed."""
        changed = self.index.compact(full)
        return self.paragraphs.compact(full) or changed

    # --- questions -----------------------------------------------------------------------------

    def search(self, terms: Sequence[str], k: int, scopes: Collection[int] | None = None) -> list[Hit]:
        """The best `k` sentences holding a question term, by score then id."""
        if k <= 0:
            return []
        ids, scores = self.scores(terms, scopes)
        if len(ids) == 0:
            return []
        if len(ids) > k:
            kth = np.partition(scores, len(ids) - k)[len(ids) - k]
            keep = np.flatnonzero(scores >= kth)
            ids, scores = ids[keep], scores[keep]
        order = np.lexsort((ids, -scores))[:k]
        return [Hit(int(i), float(s)) for i, s in zip(ids[order], scores[order])]

    def scores(self, terms: Sequence[str], scopes: Collection[int] | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(sentence ids, scores) of every sentence visible from `scopes` holding a question
        term, unordered: what search() ranks (evaluations rank all of them). Both parts are
        BM25 over the visible set only: sentences, and paragraphs of the same scopes."""
        ids, scores = self.index.match(terms, scopes)
        if len(ids) == 0 or not self.has_context:
            return ids, scores
        words = [t for t in terms if not is_answer_type(t)]
        total = scores.copy()
        if words:
            p_ids, p_scores = self.paragraphs.match(words, scopes)
            if len(p_ids):
                numbers = self._paragraph_of.lookup(ids)
                total += PARAGRAPH_WEIGHT * _values_at(p_ids, p_scores, numbers, self._paragraph_count)
        return ids, total

    # A question asked in a server is ranked over exactly the sentences it can see (`scopes`:
    # the global scope and its own): every statistic below is of that set, so what other
    # servers store never moves its answers. `scopes` None: the whole library.

    def size(self, scopes: Collection[int] | None = None) -> int:
        """Sentences visible from `scopes`."""
        return self.index.size(scopes)

    def document_frequencies(
        self, terms: Sequence[str], scopes: Collection[int] | None = None
    ) -> tuple[int, list[int]]:
        """(sentences visible from `scopes`, how many of them hold each term)."""
        return self.index.document_frequencies(terms, scopes)

    def information(self, terms: Sequence[str], scopes: Collection[int] | None = None) -> float:
        """What a full match of the question is worth within `scopes`: the sum of the idf of
        its distinct words (a word no visible sentence holds counts as one found once, the
        rarest there is). A hit's score over this is its strength: the library's test for
        "this answers it"."""
        words = sorted({t for t in terms if not is_answer_type(t)})
        n, dfs = self.document_frequencies(words, scopes)
        if not words or n == 0:
            return 0.0
        total = 0.0
        for df in dfs:
            df = max(df, 1)
            total += max(math.log((n - df + 0.5) / (df + 0.5)), MIN_IDF)
        return total

    # --- cache ---------------------------------------------------------------------------------

    def save(self, path: str | os.PathLike[str], stamp: str) -> None:
        """Write every index to one file, atomically (temp file in the same dir + os.replace)."""
        path = Path(path)
        parts = {"sentences.npz": self.index, "paragraphs.npz": self.paragraphs}
        with self._lock, tempfile.TemporaryDirectory(prefix=path.name + ".", dir=path.parent) as tmp:
            for name, index in parts.items():
                BM25Index.save(index, Path(tmp) / name, _part_stamp(stamp))
            sids, numbers = self._paragraph_of.items()
            np.savez(Path(tmp) / "paragraph_of.npz", sids=sids, numbers=numbers)
            meta = {
                "format": _FORMAT,
                "scoring": _SCORING,
                "stamp": stamp,
                "context": self.has_context,
                "paragraph_count": self._paragraph_count,
            }
            np.save(Path(tmp) / "meta.npy", np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8))
            bundle = Path(tmp) / "bundle"
            with zipfile.ZipFile(bundle, "w", zipfile.ZIP_STORED) as zf:
                for name in ("meta.npy", *parts, "paragraph_of.npz"):
                    zf.write(Path(tmp) / name, name)
            with open(bundle, "rb+") as fh:
                os.fsync(fh.fileno())
            os.replace(bundle, path)

    @classmethod
    def load(cls, path: str | os.PathLike[str], stamp: str | None = None) -> tuple[Retriever, str] | None:
        """(retriever, the stamp it was saved with), whatever that stamp (unless `stamp` is
        given); None if missing, unreadable or of another version."""
        path = Path(path)
        if not path.is_file():
            return None
        try:
            with zipfile.ZipFile(path) as zf, tempfile.TemporaryDirectory(prefix=path.name + ".", dir=path.parent) as tmp:
                with zf.open("meta.npy") as fh:
                    meta = json.loads(np.load(fh, allow_pickle=False).tobytes().decode())
                if meta.get("format") != _FORMAT or meta.get("scoring") != _SCORING:
                    log.info("Index cache %s is of another version, rebuilding", path)
                    return None
                if stamp is not None and meta.get("stamp") != stamp:
                    log.info("Index cache %s is stale, rebuilding", path)
                    return None
                stamp = str(meta["stamp"])
                loaded = []
                for name, kind in (("sentences.npz", _SentenceIndex), ("paragraphs.npz", BM25Index)):
                    zf.extract(name, tmp)
                    index = kind.load(Path(tmp) / name, _part_stamp(stamp))
                    if index is None:
                        return None
                    loaded.append(index)
                zf.extract("paragraph_of.npz", tmp)
                with np.load(Path(tmp) / "paragraph_of.npz", allow_pickle=False) as npz:
                    sids, numbers = npz["sids"].astype(np.int64), npz["numbers"].astype(np.int32)
            count = int(meta["paragraph_count"])
        except Exception as exc:  # an unreadable cache only means "rebuild"
            log.warning("Index cache %s unreadable (%s: %s), rebuilding", path, type(exc).__name__, exc)
            return None
        if len(sids) != len(numbers) or (len(numbers) and int(numbers.max()) >= count):
            log.warning("Index cache %s is inconsistent, rebuilding", path)
            return None
        retriever = cls(loaded[0])
        retriever.paragraphs = loaded[1]
        retriever.has_context = bool(meta.get("context", True))
        retriever._paragraph_of.set(sids, numbers)
        retriever._paragraph_count = count
        return retriever, stamp


class RetrieverBuild:
    """A new retriever from every stored sentence, read in batches in id order (a rebuild,
    from the store's iter_index_rows).

    Each token is mapped to a term id once, for both indexes (a paragraph's words are its
    sentences' word tokens), and each index is built as one segment at the end: what add()
    of the same rows gives, without its merges and compaction. add() and finish() are CPU
    work for a worker thread."""

    def __init__(self) -> None:
        self._vocab = Vocabulary()
        self._answer_type = np.zeros(0, dtype=bool)  # per term id
        self._sentences: list[tuple[np.ndarray, ...]] = []  # ids, scopes, lengths, terms per row, term ids, tf
        self._paragraph_at: dict[tuple[int, int], int] = {}  # paragraph key -> number
        self._paragraph_scope: list[int] = []
        self._paragraph_words: list[tuple[np.ndarray, np.ndarray]] = []  # (number, term id) per word, in order
        self._paragraph_of: list[np.ndarray] = []  # per sentence: its paragraph number, -1 for none

    def add(self, batch: IndexBatch) -> None:
        n = len(batch)
        if not n:
            return
        ids, scopes, docs = batch.sentence_ids, batch.scopes, batch.tokens
        lens = np.fromiter(map(len, docs), dtype=np.int64, count=n)
        known = len(self._vocab.terms)
        tids = np.fromiter(
            map(self._vocab.__getitem__, itertools.chain.from_iterable(docs)), dtype=np.int32, count=int(lens.sum())
        )
        n_terms = len(self._vocab.terms)
        if n_terms > known:
            fresh = np.fromiter((is_answer_type(t) for t in self._vocab.terms[known:]), dtype=bool, count=n_terms - known)
            self._answer_type = np.concatenate([self._answer_type, fresh])
        fwd_tids, tf, per_row = forward_rows(tids, lens, n_terms)
        self._sentences.append((ids, scopes, lens, per_row, fwd_tids, tf))

        # Paragraph numbers in order of first appearance; a paragraph's rows are usually one
        # run, so the dictionary is asked once a run.
        art, par = batch.article_ids, batch.paragraphs
        starts = np.flatnonzero(np.concatenate(([True], (art[1:] != art[:-1]) | (par[1:] != par[:-1]))))
        numbers: list[int] = []
        for a, p, s in zip(art[starts].tolist(), par[starts].tolist(), starts.tolist()):
            if is_headline_key((a, p)):
                numbers.append(-1)
                continue
            number = self._paragraph_at.get((a, p))
            if number is None:
                number = self._paragraph_at[(a, p)] = len(self._paragraph_scope)
                self._paragraph_scope.append(int(scopes[s]))
            numbers.append(number)
        row_number = np.repeat(np.asarray(numbers, dtype=np.int32), np.diff(np.append(starts, n)))
        self._paragraph_of.append(row_number)

        # A sentence's words: its tokens but the answer-type ones tokenize() puts last (words_of).
        at = np.arange(len(tids), dtype=np.int64)
        row_of = np.repeat(np.arange(n), lens)
        last_word = np.full(n, -1, dtype=np.int64)
        np.maximum.at(last_word, row_of, np.where(self._answer_type[tids], -1, at))
        keep = (at <= last_word[row_of]) & (row_number[row_of] >= 0)
        self._paragraph_words.append((row_number[row_of[keep]], tids[keep]))

    def finish(self) -> Retriever:
        retriever = Retriever()
        if not self._sentences:
            return retriever
        ids, scopes, lens, per_row, fwd_tids, tf = (np.concatenate(p) for p in zip(*self._sentences))
        self._sentences.clear()
        fwd_ptr = np.zeros(len(ids) + 1, dtype=np.int64)
        np.cumsum(per_row, out=fwd_ptr[1:])
        terms = self._vocab.terms
        retriever.index.fill(self._vocab, ids, scopes, lens.astype(np.int32), fwd_ptr, fwd_tids, tf)

        count = len(self._paragraph_scope)
        number, word = (np.concatenate(p) for p in zip(*self._paragraph_words))
        self._paragraph_words.clear()
        if len(number) > 1 and not np.all(number[1:] >= number[:-1]):
            order = np.argsort(number, kind="stable")  # paragraphs whose sentences interleave
            number, word = number[order], word[order]
        # The paragraph index numbers its terms in the order its documents bring them (its
        # average idf adds in that order): by first position in paragraph order.
        first = np.full(len(terms), len(word), dtype=np.int64)
        for lo in range(0, len(word), _GIL_SLICE):  # ufunc.at holds the GIL
            np.minimum.at(first, word[lo : lo + _GIL_SLICE], np.arange(lo, min(lo + _GIL_SLICE, len(word))))
        used = np.flatnonzero(first < len(word))
        used = used[np.argsort(first[used], kind="stable")]
        remap = np.zeros(len(terms), dtype=np.int64)
        remap[used] = np.arange(len(used))
        p_lens = np.bincount(number, minlength=count)
        p_tids, p_tf, p_rows = forward_rows(remap[word], p_lens, max(len(used), 1))
        del number, word
        p_ptr = np.zeros(count + 1, dtype=np.int64)
        np.cumsum(p_rows, out=p_ptr[1:])
        retriever.paragraphs.fill(
            [terms[t] for t in used.tolist()],
            np.arange(count, dtype=np.int64),
            np.asarray(self._paragraph_scope, dtype=np.int64),
            p_lens.astype(np.int32),
            p_ptr,
            p_tids,
            p_tf,
        )
        retriever._paragraph_of.set(ids, np.concatenate(self._paragraph_of))
        retriever._paragraph_count = count
        return retriever


def _part_stamp(stamp: str) -> str:
    # The parts are zip files stored inside the cache file: a cut-off cache can look like a
    # part to a plain BM25Index.load, which their own stamp then turns away.
    return f"{stamp}:retriever-part"


def _values_at(keys: np.ndarray, values: np.ndarray, wanted: np.ndarray, key_space: int | None) -> np.ndarray:
    """values[keys == w] for each w of `wanted` (0 where absent or w < 0), clipped at 0: context
    only adds (in a tiny library BM25's idf floor can turn negative). With a small `key_space`
    the lookup goes through a dense array, else through a sort."""
    values = np.maximum(values, 0.0)
    if key_space is not None and key_space <= 16 * len(keys) + 4096:
        dense = np.zeros(key_space + 1, dtype=np.float64)  # the last slot answers w = -1
        dense[keys] = values
        return dense[np.where(wanted >= 0, wanted, key_space)]
    order = np.argsort(keys, kind="stable")
    keys, values = keys[order], values[order]
    at = np.minimum(np.searchsorted(keys, wanted), len(keys) - 1)
    return np.where(keys[at] == wanted, values[at], 0.0)
