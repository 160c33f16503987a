"""Exact, incremental BM25Okapi index over tokenised sentences.

Scores are bit-for-bit those of ``rank_bm25.BM25Okapi`` built over the live
documents (same float64 expression, same query-term order, ``math.log`` for the
idf), but a question only touches the postings of its own terms instead of
scanning every document.

Layout
------
* A shared, append-only vocabulary maps a term to a global term id.
* Documents live in immutable *segments*.  Each segment keeps a forward index
  (doc -> unique term ids + tf, needed to undo statistics on removal and to
  re-merge) and an inverted index (term -> row positions, CSR) whose postings
  carry a code for their (tf, doc length) pair instead of the tf.
* Corpus statistics (N, df per term id, total length) are kept for the whole
  index and per group, and updated incrementally, so they always equal those of
  a freshly built index.  A question asked within a set of groups is ranked
  with the statistics of exactly those groups' docs (N, average length and df
  summed over the groups): what rank_bm25 built over only the visible docs
  gives, so one group's docs never move another group's scores.
* An ``add`` appends a small segment; small tail segments are merged right away,
  larger merges are left to :meth:`BM25Index.compact` (meant for a background
  thread).  Removes flip an alive mask; dead rows disappear on the next merge.
* Readers grab ``self._state`` once and work on that immutable snapshot; writers
  are serialised by a lock and publish a new state by a single reference swap.
"""

from __future__ import annotations

import itertools
import json
import logging
import math
import os
import tempfile
import threading
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass, field, replace

import numpy as np

log = logging.getLogger(__name__)

_FORMAT = "bm25index/1"
_SEG_FIELDS = (
    "doc_ids",
    "groups",
    "doc_len",
    "alive",
    "fwd_ptr",
    "fwd_tids",
    "fwd_tf",
    "terms",
    "post_ptr",
    "post_pos",
    "post_code",
    "pair_tf",
    "pair_dl",
)
# Docs converted from tokens per chunk, bounding the int64 temporaries of a bulk add.
_TOKEN_CHUNK = 65_536
# Elements per call for numpy routines that hold the GIL (a few ms each).
_GIL_SLICE = 1 << 20


class Vocabulary(dict):
    """term -> term id; ids are dense and handed out in insertion order.

    Only the (single) writer may call ``vocab[term]``, which inserts unknown
    terms.  Readers must use ``.get`` so they never mutate it; ids they see that
    are newer than their snapshot are ignored via ``_State.n_terms``.
    """

    __slots__ = ("terms",)

    def __init__(self) -> None:
        super().__init__()
        self.terms: list[str] = []

    def __missing__(self, term: str) -> int:
        tid = len(self.terms)
        # Append to the list before the dict so a save that slices ``terms``
        # never lacks a term that a published state refers to.
        self.terms.append(term)
        self[term] = tid
        return tid


@dataclass(frozen=True, eq=False)
class _Segment:
    """Immutable block of documents, rows sorted by doc id.

    ``alive`` is the only part that changes; a remove publishes a copy of the
    segment with a new mask, sharing all other arrays.
    """

    uid: int
    doc_ids: np.ndarray  # int64, strictly increasing
    groups: np.ndarray  # int64
    doc_len: np.ndarray  # int32, tokens incl. duplicates (rank_bm25's len(doc))
    alive: np.ndarray  # bool
    n_live: int
    fwd_ptr: np.ndarray  # int64, n + 1
    fwd_tids: np.ndarray  # int32, unique and sorted within a doc
    fwd_tf: np.ndarray  # uint8/16/32, smallest that fits
    terms: np.ndarray  # int32, sorted global term ids present in the segment
    post_ptr: np.ndarray  # int64, len(terms) + 1
    post_pos: np.ndarray  # int32 row positions, increasing within a term
    # A posting's BM25 weight depends only on (tf, doc length), and a segment
    # has few distinct such pairs (hundreds).  Postings store the pair's index,
    # so a question evaluates the formula once per pair and then does a
    # single gather per posting -- bit-identical to evaluating it per posting.
    post_code: np.ndarray  # uint8/16/32 index into pair_tf / pair_dl
    pair_tf: np.ndarray  # float64
    pair_dl: np.ndarray  # float64
    group_values: np.ndarray  # int64, distinct groups (lets a filter skip whole segments)

    @property
    def n_rows(self) -> int:
        return len(self.doc_ids)

    def locate_live(self, ids: np.ndarray) -> np.ndarray:
        """Row positions of the live docs among ``ids`` (sorted int64)."""
        if self.n_live == 0 or len(ids) == 0:
            return np.zeros(0, dtype=np.int64)
        lo = int(np.searchsorted(ids, self.doc_ids[0], side="left"))
        hi = int(np.searchsorted(ids, self.doc_ids[-1], side="right"))
        cand = ids[lo:hi]
        if len(cand) == 0:
            return np.zeros(0, dtype=np.int64)
        # Every candidate is <= the last id, so positions stay in range.
        pos = np.searchsorted(self.doc_ids, cand)
        pos = pos[self.doc_ids[pos] == cand]
        return pos[self.alive[pos]]

    def nbytes(self) -> int:
        return sum(getattr(self, f).nbytes for f in _SEG_FIELDS) + self.group_values.nbytes


@dataclass(frozen=True, eq=False)
class _GroupStats:
    """Statistics of one group's live docs; immutable, replaced on every change.

    Sparse (a group holds a small part of the vocabulary): sorted term ids with
    df > 0 and their df, in the narrowest dtype the group's size allows.
    """

    n_docs: int
    total_len: int
    terms: np.ndarray  # int32, sorted
    df: np.ndarray  # uint16/uint32, > 0
    cache: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)

    def lookup(self, tids: np.ndarray) -> np.ndarray:
        """df of each term id (0 where the group lacks it), as int64."""
        nt = len(self.terms)
        if nt == 0:
            return np.zeros(len(tids), dtype=np.int64)
        at = np.minimum(np.searchsorted(self.terms, tids), nt - 1)
        return np.where(self.terms[at] == tids, self.df[at], 0).astype(np.int64)

    def df_histogram(self) -> tuple[np.ndarray, np.ndarray]:
        """(distinct df values as float64, how many terms have each): a sum of f(df)
        over the group's terms costs one f per distinct value (a few thousand)."""
        hist = self.cache.get("hist")
        if hist is None:
            values = np.sort(self.df)
            first = np.flatnonzero(np.concatenate(([True], values[1:] != values[:-1])))
            counts = np.diff(np.append(first, len(values)))
            hist = (values[first].astype(np.float64), counts.astype(np.float64))
            self.cache["hist"] = hist
        return hist

    def changed(self, n: int, length: int, terms: np.ndarray, counts: np.ndarray) -> _GroupStats | None:
        """These statistics with ``n`` docs of ``length`` tokens holding ``terms`` (sorted,
        ``counts`` docs each) added, or removed when the numbers are negative; None once empty."""
        n_docs = self.n_docs + n
        if n_docs <= 0:
            return None
        at = np.searchsorted(self.terms, terms)
        hit = at < len(self.terms)
        hit[hit] = self.terms[at[hit]] == terms[hit]
        df = self.df.astype(np.int64)
        df[at[hit]] += counts[hit]
        new_terms, new_df = self.terms, df
        if not hit.all():  # only an add brings terms the group lacks
            new_terms = np.insert(self.terms, at[~hit], terms[~hit].astype(np.int32))
            new_df = np.insert(df, at[~hit], counts[~hit])
        if n < 0:
            live = new_df > 0
            if not live.all():
                new_terms, new_df = new_terms[live], new_df[live]
        return _group_stats(n_docs, self.total_len + length, new_terms, new_df)


def _group_stats(n_docs: int, total_len: int, terms: np.ndarray, df: np.ndarray) -> _GroupStats:
    stats = _GroupStats(
        n_docs=n_docs,
        total_len=total_len,
        terms=terms.astype(np.int32, copy=False),
        df=df.astype(np.uint16 if n_docs < 2**16 else np.uint32),
    )
    stats.terms.flags.writeable = False
    stats.df.flags.writeable = False
    return stats


_NO_GROUP = _GroupStats(0, 0, np.zeros(0, dtype=np.int32), np.zeros(0, dtype=np.uint16))


@dataclass(frozen=True, eq=False)
class _State:
    """One consistent snapshot of the whole index."""

    segments: tuple[_Segment, ...]
    df: np.ndarray  # int32 per term id (< n_terms), over live docs only
    n_terms: int
    n_docs: int
    total_len: int
    # Per group with live docs; a dict nobody mutates once published.
    groups: dict[int, _GroupStats] = field(default_factory=dict)
    # Lazily filled per snapshot; racing readers compute the same value.
    cache: dict[str, float] = field(default_factory=dict)

    def average_idf(self) -> float:
        avg = self.cache.get("average_idf")
        if avg is None:
            # rank_bm25 averages over every term of a fresh index, i.e. df > 0.
            n = self.df[self.df > 0].astype(np.float64)
            idf = np.log(self.n_docs - n + 0.5) - np.log(n + 0.5)
            # cumsum adds sequentially in term-id (= first-seen) order like
            # rank_bm25's loop; a pairwise sum would drift by a few ulps.
            avg = float(np.cumsum(idf)[-1]) / len(n) if len(n) else 0.0
            self.cache["average_idf"] = avg
        return avg

    def visible(self, groups: Collection[int] | None) -> _Visible | None:
        """The statistics a question asked within ``groups`` is ranked with (None: the
        whole index); None when those groups hold no live doc."""
        if groups is None:
            return _Visible(self, None, self.n_docs, self.total_len, False)
        present = sorted({int(g) for g in groups} & self.groups.keys())
        n_docs = sum(self.groups[g].n_docs for g in present)
        if n_docs == 0:
            return None
        total_len = sum(self.groups[g].total_len for g in present)
        # When every live doc is visible no row needs filtering; the statistics are still
        # derived from the groups', so they stay the same to the bit when other groups come.
        return _Visible(self, tuple(present), n_docs, total_len, n_docs < self.n_docs)


@dataclass(frozen=True, eq=False)
class _Visible:
    """BM25 statistics of the docs of some groups (``groups`` None: of every doc)."""

    state: _State
    groups: tuple[int, ...] | None
    n_docs: int
    total_len: int
    filtered: bool  # some live docs are outside the groups

    def df(self, tids: np.ndarray) -> np.ndarray:
        """Visible docs holding each term id (int64); ids must be < state.n_terms."""
        if self.groups is None:
            return self.state.df[tids].astype(np.int64)
        total = np.zeros(len(tids), dtype=np.int64)
        for g in self.groups:
            total += self.state.groups[g].lookup(tids)
        return total

    def average_idf(self) -> float:
        """rank_bm25's average idf over every term of the visible docs."""
        st = self.state
        if self.groups is None:
            return st.average_idf()
        key = f"average_idf:{self.groups}"
        avg = st.cache.get(key)
        if avg is not None:
            return avg
        n = float(self.n_docs)
        stats = sorted((st.groups[g] for g in self.groups), key=lambda s: len(s.terms))
        base, others = stats[-1], stats[:-1]
        # Sum of idf(df) over the base group's terms, one term per distinct df ...
        values, counts = base.df_histogram()
        total = float(np.dot(counts, np.log(n - values + 0.5) - np.log(values + 0.5)))
        n_terms = len(base.terms)
        if others:
            # ... then the terms of the other groups: a term the base also holds swaps
            # its base-only idf for its idf over all of them.
            tids = np.concatenate([o.terms for o in others])
            dfs = np.concatenate([o.df.astype(np.int64) for o in others])
            if len(others) > 1:
                order = np.argsort(tids, kind="stable")
                tids, dfs = tids[order], dfs[order]
                first = np.flatnonzero(np.concatenate(([True], tids[1:] != tids[:-1])))
                tids, dfs = tids[first], np.add.reduceat(dfs, first)
            in_base = base.lookup(tids).astype(np.float64)
            d = in_base + dfs
            total += float(np.sum(np.log(n - d + 0.5) - np.log(d + 0.5)))
            shared = in_base[in_base > 0]
            total -= float(np.sum(np.log(n - shared + 0.5) - np.log(shared + 0.5)))
            n_terms += len(tids) - len(shared)
        avg = total / n_terms if n_terms else 0.0
        st.cache[key] = avg
        return avg


def _no_match() -> tuple[np.ndarray, np.ndarray]:
    # Fresh arrays each time: callers own what match() returns.
    return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float64)


def _distinct(a: np.ndarray) -> np.ndarray:
    # np.unique takes a slow hash path for large int arrays in numpy 2.x.
    if len(a) == 0:
        return a.copy()
    s = np.sort(a)
    return s[np.concatenate(([True], s[1:] != s[:-1]))]


def _ragged_take(starts: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Concatenation of ``arange(s, s + c)`` for each pair, vectorised.

    Built as the running sum of a step array (1 within a run, a jump at each
    run's first slot) rather than with ``np.repeat``: repeat holds the GIL for
    its whole run (~300 ms over a million-sentence index, a stall for every
    other thread), while fancy assignment and cumsum release it.
    """
    keep = np.flatnonzero(counts)
    if len(keep) == 0:
        return np.zeros(0, dtype=np.int64)
    s = starts[keep].astype(np.int64)
    c = counts[keep].astype(np.int64)
    out_start = np.cumsum(c)
    total = int(out_start[-1])
    out_start -= c
    step = np.ones(total, dtype=np.int64)
    step[0] = s[0]
    step[out_start[1:]] = s[1:] - (s[:-1] + c[:-1]) + 1
    return _running_sum(step)


def _running_sum(a: np.ndarray) -> np.ndarray:
    """In-place cumsum, in slices: cumsum holds the GIL (30+ ms over 12M postings)."""
    for lo in range(0, len(a), _GIL_SLICE):
        if lo:
            a[lo] += a[lo - 1]
        np.cumsum(a[lo : lo + _GIL_SLICE], dtype=a.dtype, out=a[lo : lo + _GIL_SLICE])
    return a


def _repeat(values: np.ndarray, counts: np.ndarray, dtype: type[np.integer]) -> np.ndarray:
    """``np.repeat(values, counts)`` as ``dtype``, without holding the GIL (see _ragged_take)."""
    keep = np.flatnonzero(counts)
    if len(keep) == 0:
        return np.zeros(0, dtype=dtype)
    v = values[keep].astype(np.int64)
    c = counts[keep].astype(np.int64)
    out_start = np.cumsum(c)
    total = int(out_start[-1])
    out_start -= c
    step = np.zeros(total, dtype=dtype)
    step[0] = v[0]
    # Every step fits dtype because the running sums (the values) do.
    step[out_start[1:]] = np.diff(v)
    return _running_sum(step)


def _runs(sorted_values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(distinct values, how many times each) of a sorted array."""
    if len(sorted_values) == 0:
        return sorted_values[:0], np.zeros(0, dtype=np.int64)
    first = np.flatnonzero(np.concatenate(([True], sorted_values[1:] != sorted_values[:-1])))
    return sorted_values[first], np.diff(np.append(first, len(sorted_values)))


def _per_group(
    groups: np.ndarray, counts: np.ndarray, tids: np.ndarray, lens: np.ndarray
) -> dict[int, tuple[int, int, np.ndarray, np.ndarray]]:
    """group -> (docs, tokens, sorted term ids, docs holding each) of some rows, given each
    row's group, number of forward entries and length, and their forward term ids in row order."""
    values = _distinct(groups)
    if len(values) == 0:
        return {}
    if len(values) == 1:
        t, c = _runs(np.sort(tids))
        return {int(values[0]): (len(groups), int(lens.sum(dtype=np.int64)), t, c)}
    inv = np.searchsorted(values, groups)
    bound = int(tids.max()) + 1 if len(tids) else 1
    # One packed sort gives every (group, term) pair and how many rows hold it.
    key = _repeat(inv, counts, np.int64)
    key *= bound
    key += tids
    key.sort()
    keys, docs_holding = _runs(key)
    del key
    key_group = keys // bound
    ends = np.searchsorted(key_group, np.arange(len(values) + 1))
    n_rows = np.bincount(inv, minlength=len(values))
    n_tokens = np.zeros(len(values), dtype=np.int64)
    np.add.at(n_tokens, inv, lens.astype(np.int64))
    out = {}
    for j, g in enumerate(values.tolist()):
        lo, hi = ends[j], ends[j + 1]
        out[g] = (int(n_rows[j]), int(n_tokens[j]), keys[lo:hi] - j * bound, docs_holding[lo:hi])
    return out


def _all_group_stats(
    row_groups: np.ndarray, counts: np.ndarray, tids: np.ndarray, lens: np.ndarray, df: np.ndarray, n_docs: int, total_len: int
) -> dict[int, _GroupStats]:
    """Every group's statistics, from each live row's group, number of forward entries and
    length, their forward term ids in row order, and the whole index's df and totals."""
    groups: dict[int, _GroupStats] = {}
    # The largest group's statistics are the whole index's less the others': only the
    # others' (term, group) pairs need sorting.
    values, sizes = _runs(np.sort(row_groups))
    largest = int(values[np.argmax(sizes)])
    rest = row_groups != largest
    parts = _per_group(row_groups[rest], counts[rest], tids[_repeat(rest, counts, np.int8).view(np.bool_)], lens[rest])
    largest_df = df.astype(np.int64)
    for g, (n, length, t, c) in parts.items():
        groups[g] = _group_stats(n, length, t, c)
        largest_df[t] -= c
    terms = np.flatnonzero(largest_df)
    groups[largest] = _group_stats(
        n_docs - int(np.count_nonzero(rest)),
        total_len - int(lens[rest].sum(dtype=np.int64)),
        terms,
        largest_df[terms],
    )
    return groups


def _apply(
    groups: dict[int, _GroupStats], deltas: dict[int, tuple[int, int, np.ndarray, np.ndarray]], sign: int
) -> dict[int, _GroupStats]:
    """A copy of ``groups`` with ``deltas`` (see _per_group) added (sign 1) or removed (-1)."""
    out = dict(groups)
    for g, (n, length, terms, counts) in deltas.items():
        stats = out.get(g, _NO_GROUP).changed(sign * n, sign * length, terms, sign * counts.astype(np.int64))
        if stats is None:
            out.pop(g, None)
        else:
            out[g] = stats
    return out


def _uint_dtype(max_value: int) -> type[np.unsignedinteger]:
    if max_value < 2**8:
        return np.uint8
    if max_value < 2**16:
        return np.uint16
    return np.uint32


def _build_segment(
    uid: int,
    doc_ids: np.ndarray,
    groups: np.ndarray,
    doc_len: np.ndarray,
    fwd_ptr: np.ndarray,
    fwd_tids: np.ndarray,
    fwd_tf: np.ndarray,
) -> _Segment:
    """Derive the inverted index from a forward index whose rows are sorted by id."""
    n = len(doc_ids)
    nnz = len(fwd_tids)
    doc_len = doc_len.astype(np.int32, copy=False)
    fwd_tids = fwd_tids.astype(np.int32, copy=False)
    fwd_tf = fwd_tf.astype(_uint_dtype(int(fwd_tf.max()) if nnz else 0), copy=False)
    counts = np.diff(fwd_ptr)
    rows_of = _repeat(np.arange(n, dtype=np.int32), counts, np.int32)

    # Distinct (tf, dl) pairs and each forward entry's pair index.
    width = int(doc_len.max()) + 1 if n else 1
    max_tf = int(fwd_tf.max()) if nnz else 0
    pair_space = (max_tf + 1) * width
    key_dtype = np.int32 if pair_space < 2**31 else np.int64
    pair_key = fwd_tf.astype(key_dtype) * width + doc_len[rows_of]
    if pair_space <= 2**24:
        present = np.zeros(pair_space, dtype=bool)
        present[pair_key] = True
        pair_keys = np.flatnonzero(present)
        n_pairs = max(len(pair_keys), 1)
        code_dtype = _uint_dtype(n_pairs - 1)
        remap = (np.cumsum(present, dtype=np.int64) - 1).astype(code_dtype)
        code = remap[pair_key]
    else:
        pair_keys, code = np.unique(pair_key, return_inverse=True)
        n_pairs = max(len(pair_keys), 1)
        code_dtype = _uint_dtype(n_pairs - 1)
        code = code.astype(code_dtype)
    del pair_key
    pair_tf = (pair_keys // width).astype(np.float64)
    pair_dl = (pair_keys % width).astype(np.float64)

    term_counts = np.bincount(fwd_tids) if nnz else np.zeros(0, dtype=np.int64)
    terms = np.flatnonzero(term_counts).astype(np.int32)
    post_ptr = np.zeros(len(terms) + 1, dtype=np.int64)
    np.cumsum(term_counts[terms], out=post_ptr[1:])
    del term_counts
    if nnz and len(terms) * n * n_pairs < 2**62:
        # One packed int64 sort (SIMD) is several times faster than an argsort
        # and leaves (term, row, pair) in CSR order; term boundaries are known
        # from the counts, so only row and pair need decoding.
        key = fwd_tids.astype(np.int64)
        key *= n
        key += rows_of
        del rows_of
        key *= n_pairs
        key += code
        del code
        key.sort()
        # Decode straight into the narrow output dtypes (no int64 temporaries).
        post_code = np.empty(nnz, dtype=code_dtype)
        np.remainder(key, n_pairs, out=post_code, casting="unsafe")
        key //= n_pairs
        post_pos = np.empty(nnz, dtype=np.int32)
        np.remainder(key, n, out=post_pos, casting="unsafe")
        del key
    elif nnz:
        order = np.lexsort((rows_of, fwd_tids))
        post_pos = rows_of[order]
        post_code = code[order].astype(code_dtype)
    else:
        post_pos = np.zeros(0, dtype=np.int32)
        post_code = np.zeros(0, dtype=code_dtype)
    seg = _Segment(
        uid=uid,
        doc_ids=doc_ids,
        groups=groups,
        doc_len=doc_len,
        alive=np.ones(n, dtype=bool),
        n_live=n,
        fwd_ptr=fwd_ptr.astype(np.int64, copy=False),
        fwd_tids=fwd_tids,
        fwd_tf=fwd_tf,
        terms=terms,
        post_ptr=post_ptr,
        post_pos=post_pos,
        post_code=post_code,
        pair_tf=pair_tf,
        pair_dl=pair_dl,
        group_values=_distinct(groups),
    )
    _freeze(seg)
    return seg


def _freeze(seg: _Segment) -> None:
    # Shared between snapshots and threads: make accidental in-place edits fail loudly.
    for f in _SEG_FIELDS:
        getattr(seg, f).flags.writeable = False
    seg.group_values.flags.writeable = False


def _merge_segments(uid: int, segs: Sequence[_Segment]) -> tuple[_Segment | None, list[np.ndarray]]:
    """Merge the live rows of ``segs`` into one segment.

    Returns the segment (None if nothing is alive) and, per source, an array
    mapping each source row to its merged row (-1 for rows dropped as dead), so
    that removals which happen while a background merge runs can be replayed.
    """
    lives = [np.flatnonzero(s.alive) for s in segs]
    ids = np.concatenate([s.doc_ids[lv] for s, lv in zip(segs, lives)])
    n = len(ids)
    maps: list[np.ndarray] = []
    if n == 0:
        return None, [np.full(s.n_rows, -1, dtype=np.int64) for s in segs]
    order = np.argsort(ids, kind="stable")
    if np.all(order[1:] > order[:-1]):
        order = None  # sources already in id order: skip the permutations
    inv = np.arange(n, dtype=np.int64)
    if order is not None:
        inv[order] = np.arange(n, dtype=np.int64)
    off = 0
    for s, lv in zip(segs, lives):
        m = np.full(s.n_rows, -1, dtype=np.int64)
        m[lv] = inv[off : off + len(lv)]
        off += len(lv)
        maps.append(m)

    nnz_base = np.cumsum([0] + [len(s.fwd_tids) for s in segs[:-1]])
    starts = np.concatenate([s.fwd_ptr[lv] + base for s, lv, base in zip(segs, lives, nnz_base)])
    counts = np.concatenate([np.diff(s.fwd_ptr)[lv] for s, lv in zip(segs, lives)])
    groups = np.concatenate([s.groups[lv] for s, lv in zip(segs, lives)])
    doc_len = np.concatenate([s.doc_len[lv] for s, lv in zip(segs, lives)])
    if order is not None:
        ids, starts, counts = ids[order], starts[order], counts[order]
        groups, doc_len = groups[order], doc_len[order]
    take = _ragged_take(starts, counts)
    all_tids = np.concatenate([s.fwd_tids for s in segs])
    tf_dtype = np.result_type(*[s.fwd_tf.dtype for s in segs])
    all_tf = np.concatenate([s.fwd_tf.astype(tf_dtype, copy=False) for s in segs])
    fwd_ptr = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(counts, out=fwd_ptr[1:])
    seg = _build_segment(uid, ids, groups, doc_len, fwd_ptr, all_tids[take], all_tf[take])
    return seg, maps


def forward_rows(tids: np.ndarray, lens: np.ndarray, n_terms: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(unique term ids per row, sorted, their tf, terms per row) of rows given as their term
    ids in a row, one after another (``lens`` per row), ids below ``n_terms``."""
    n = len(lens)
    total = len(tids)
    if total == 0:
        return np.zeros(0, dtype=np.int32), np.zeros(0, dtype=np.uint8), np.zeros(n, dtype=np.int64)
    # Sorting packed (row, term) keys gives per-row unique terms and their tf.
    key = _repeat(np.arange(n, dtype=np.int64) * n_terms, lens, np.int64)
    key += tids
    key.sort()
    first = np.empty(total, dtype=bool)
    first[0] = True
    np.not_equal(key[1:], key[:-1], out=first[1:])
    starts = np.flatnonzero(first)
    tf = np.diff(np.append(starts, total))
    tf = tf.astype(_uint_dtype(int(tf.max())))
    ukey = key[starts]
    del key, starts, first
    rows = ukey // n_terms
    fwd_tids = (ukey - rows * n_terms).astype(np.int32)
    return fwd_tids, tf, np.bincount(rows, minlength=n)


class BM25Index:
    """Exact BM25Okapi (rank_bm25 semantics) with incremental add/remove.

    Thread safety: any number of threads may call :meth:`match`/:meth:`top_k`
    concurrently with one another and with writers; writers (:meth:`add`,
    :meth:`remove`, :meth:`compact`) are serialised internally.
    """

    def __init__(
        self,
        k1: float = 1.5,
        b: float = 0.75,
        epsilon: float = 0.25,
        *,
        max_segments: int = 8,
        merge_ratio: float = 2.0,
        auto_merge_max_docs: int = 25_000,
    ) -> None:
        self.k1 = k1
        self.b = b
        self.epsilon = epsilon
        self.max_segments = max_segments
        self.merge_ratio = merge_ratio
        self.auto_merge_max_docs = auto_merge_max_docs
        self._vocab = Vocabulary()
        self._state = _State((), np.zeros(0, dtype=np.int32), 0, 0, 0)
        self._lock = threading.Lock()
        self._compact_lock = threading.Lock()
        self._compacting: frozenset[int] = frozenset()
        self._uids = itertools.count()

    # ------------------------------------------------------------------ info

    def __len__(self) -> int:
        return self._state.n_docs

    def __contains__(self, doc_id: object) -> bool:
        try:
            ids = np.array([doc_id], dtype=np.int64)
        except (TypeError, ValueError, OverflowError):
            return False
        return any(len(s.locate_live(ids)) for s in self._state.segments)

    @property
    def segment_count(self) -> int:
        return len(self._state.segments)

    @property
    def vocabulary_size(self) -> int:
        """Terms occurring in at least one live doc."""
        return int(np.count_nonzero(self._state.df))

    @property
    def needs_compaction(self) -> bool:
        """True when a background :meth:`compact` call would do useful work."""
        segs = self._state.segments
        return len(segs) > self.max_segments or any(self._is_dirty(s) for s in segs)

    def size(self, groups: Collection[int] | None = None) -> int:
        """Live docs (within ``groups`` when given)."""
        vis = self._state.visible(groups)
        return 0 if vis is None else vis.n_docs

    def document_frequencies(
        self, terms: Sequence[str], groups: Collection[int] | None = None
    ) -> tuple[int, list[int]]:
        """(live docs, live docs holding each term), within ``groups`` when given, from one
        snapshot, without touching postings."""
        st = self._state
        vis = st.visible(groups)
        if vis is None:
            return 0, [0] * len(terms)
        tids = [self._vocab.get(term) for term in terms]
        known = [j for j, tid in enumerate(tids) if tid is not None and tid < st.n_terms]
        dfs = [0] * len(terms)
        for j, df in zip(known, vis.df(np.asarray([tids[j] for j in known], dtype=np.int64)).tolist()):
            dfs[j] = df
        return vis.n_docs, dfs

    def statistics_bytes(self) -> int:
        """Retained size of the per-group statistics (part of memory_bytes)."""
        return sum(g.terms.nbytes + g.df.nbytes + 120 for g in self._state.groups.values())

    def memory_bytes(self) -> int:
        """Approximate retained size: numpy arrays, per-group statistics and the vocabulary."""
        st = self._state
        arrays = sum(s.nbytes() for s in st.segments) + st.df.nbytes + self.statistics_bytes()
        # dict entry (~2 slots + hash) + str object + list slot, per term.
        vocab = sum(49 + len(t) for t in self._vocab.terms) + 8 * len(self._vocab.terms)
        vocab += 3 * 8 * len(self._vocab) * 2
        return arrays + vocab

    # ----------------------------------------------------------------- write

    def add(
        self,
        doc_ids: Sequence[int],
        docs: Sequence[Sequence[str]],
        groups: Sequence[int] | None = None,
    ) -> None:
        """Index ``docs`` (token lists) under ``doc_ids``.

        Raises ValueError if lengths differ or an id is duplicated or already live.
        """
        n = len(doc_ids)
        if len(docs) != n:
            raise ValueError(f"{n} doc ids but {len(docs)} docs")
        if groups is not None and len(groups) != n:
            raise ValueError(f"{n} doc ids but {len(groups)} groups")
        if n == 0:
            return
        if any(isinstance(d, str) for d in docs):
            raise TypeError("each doc must be a sequence of tokens, not a str")
        ids = np.asarray(doc_ids, dtype=np.int64).reshape(n)
        grp = np.zeros(n, dtype=np.int64) if groups is None else np.asarray(groups, dtype=np.int64).reshape(n)
        order = np.argsort(ids, kind="stable")
        sorted_input = bool(np.all(order[1:] > order[:-1]))
        if not sorted_input:
            ids, grp = ids[order], grp[order]
            docs = [docs[i] for i in order]
        if n > 1 and not np.all(ids[1:] != ids[:-1]):
            raise ValueError("duplicate doc ids in one add() call")

        with self._lock:
            st = self._state
            for seg in st.segments:
                clash = seg.locate_live(ids)
                if len(clash):
                    raise ValueError(f"doc id {int(seg.doc_ids[clash[0]])} is already indexed")
            seg = self._segment_from_tokens(ids, grp, docs)
            n_terms = len(self._vocab.terms)
            df = np.zeros(n_terms, dtype=np.int32)
            df[: st.n_terms] = st.df
            holding = np.diff(seg.post_ptr)
            if len(seg.terms):
                df[seg.terms] += holding.astype(np.int32)
            added_len = int(seg.doc_len.sum(dtype=np.int64))
            if len(seg.group_values) == 1:  # the usual add: the segment's postings say it all
                deltas = {int(seg.group_values[0]): (n, added_len, seg.terms, holding)}
            else:
                deltas = _per_group(seg.groups, np.diff(seg.fwd_ptr), seg.fwd_tids, seg.doc_len)
            segments = self._auto_merge(list(st.segments) + [seg])
            self._publish(
                _State(
                    segments=tuple(segments),
                    df=df,
                    n_terms=n_terms,
                    n_docs=st.n_docs + n,
                    total_len=st.total_len + added_len,
                    groups=_apply(st.groups, deltas, 1),
                )
            )

    def fill(
        self,
        terms: Sequence[str] | Vocabulary,
        doc_ids: np.ndarray,
        groups: np.ndarray,
        doc_len: np.ndarray,
        fwd_ptr: np.ndarray,
        fwd_tids: np.ndarray,
        fwd_tf: np.ndarray,
    ) -> None:
        """Index docs given as forward rows (see _Segment: per doc, its unique term ids, which
        index ``terms`` (a Vocabulary is taken over, not copied), and their tf) in this empty index, as one segment: what add() of their
        tokens would give (documents and statistics), without its merges. Ids ascending."""
        ids = np.asarray(doc_ids, dtype=np.int64)
        n = len(ids)
        if len(groups) != n or len(doc_len) != n or len(fwd_ptr) != n + 1 or len(fwd_tf) != len(fwd_tids):
            raise ValueError("forward rows do not match their docs")
        if n > 1 and not np.all(ids[1:] > ids[:-1]):
            raise ValueError("doc ids must be unique and ascending")
        if len(fwd_tids) and int(fwd_tids.max()) >= len(terms):
            raise ValueError("a term id is outside the terms")
        if isinstance(terms, Vocabulary):
            vocab = terms  # the caller's, handed over: a million terms are not copied
        else:
            vocab = Vocabulary()
            vocab.terms.extend(terms)
            dict.update(vocab, zip(terms, range(len(terms))))
        if len(vocab) != len(vocab.terms):
            raise ValueError("duplicate terms")
        terms = vocab.terms
        grp = np.asarray(groups, dtype=np.int64)
        with self._lock:
            if self._state.n_docs or self._state.segments:
                raise ValueError("fill() needs an empty index")
            df = np.bincount(fwd_tids, minlength=len(terms)).astype(np.int32)
            total_len = int(np.asarray(doc_len).sum(dtype=np.int64))
            stats = _all_group_stats(grp, np.diff(fwd_ptr), fwd_tids, doc_len, df, n, total_len) if n else {}
            seg = _build_segment(next(self._uids), ids, grp, doc_len, fwd_ptr, fwd_tids, fwd_tf)
            self._vocab = vocab
            self._publish(
                _State(
                    segments=(seg,) if n else (),
                    df=df,
                    n_terms=len(terms),
                    n_docs=n,
                    total_len=total_len,
                    groups=stats,
                )
            )

    def remove(self, doc_ids: Iterable[int]) -> None:
        """Drop docs; unknown or already removed ids are ignored."""
        ids = np.unique(np.fromiter((int(i) for i in doc_ids), dtype=np.int64))
        if len(ids) == 0:
            return
        with self._lock:
            st = self._state
            segments: list[_Segment] = []
            df: np.ndarray | None = None
            gone_docs = gone_len = 0
            gone: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = []
            for seg in st.segments:
                pos = seg.locate_live(ids)
                if len(pos) == 0:
                    segments.append(seg)
                    continue
                if df is None:
                    df = st.df.copy()
                counts = np.diff(seg.fwd_ptr)[pos]
                tids = seg.fwd_tids[_ragged_take(seg.fwd_ptr[pos], counts)]
                # np.subtract.at handles repeated term ids across the removed docs.
                np.subtract.at(df, tids, 1)
                gone_docs += len(pos)
                gone_len += int(seg.doc_len[pos].sum(dtype=np.int64))
                gone.append((seg.groups[pos], counts, tids, seg.doc_len[pos]))
                alive = seg.alive.copy()
                alive[pos] = False
                alive.flags.writeable = False
                n_live = seg.n_live - len(pos)
                # Empty segments are dropped unless a background merge holds them;
                # compact() treats a vanished source as fully dead anyway.
                if n_live or seg.uid in self._compacting:
                    segments.append(replace(seg, alive=alive, n_live=n_live))
            if df is None:
                return
            deltas = _per_group(*(np.concatenate(parts) for parts in zip(*gone)))
            self._publish(
                _State(
                    segments=tuple(segments),
                    df=df,
                    n_terms=st.n_terms,
                    n_docs=st.n_docs - gone_docs,
                    total_len=st.total_len - gone_len,
                    groups=_apply(st.groups, deltas, -1),
                )
            )

    def compact(self, full: bool = False) -> bool:
        """Merge segments and purge removed rows; returns True if anything changed.

        Safe to call from a background thread: the heavy merge runs outside the
        writer lock, and adds/removes that happen meanwhile are reconciled.
        ``full=True`` merges everything into one segment.
        """
        with self._compact_lock:
            with self._lock:
                snap = self._state
                chosen = self._plan_compaction(snap.segments, full)
                if not chosen:
                    return False
                self._compacting = frozenset(s.uid for s in chosen)
            try:
                merged, maps = _merge_segments(next(self._uids), chosen)
                with self._lock:
                    self._install_merge(chosen, merged, maps)
            finally:
                with self._lock:
                    self._compacting = frozenset()
            log.debug(
                "compacted %d segments (%d rows) into %d live docs",
                len(chosen),
                sum(s.n_rows for s in chosen),
                0 if merged is None else merged.n_live,
            )
            return True

    # ------------------------------------------------------------------ read

    def match(
        self, query: Sequence[str], groups: Collection[int] | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """All live docs containing a query term (optionally within ``groups``).

        Returns ``(doc_ids int64, scores float64)`` in no particular order.
        Scores are those of rank_bm25 built over exactly the live docs of
        ``groups`` (of the whole index when None): docs outside them change
        nothing.
        """
        return self._match(self._state, query, groups)

    def top_k(
        self, query: Sequence[str], k: int, groups: Collection[int] | None = None
    ) -> list[tuple[int, float]]:
        """Best ``k`` matches, by score desc then doc id asc."""
        if k <= 0:
            return []
        ids, scores = self._match(self._state, query, groups, k)
        n = len(ids)
        if n == 0:
            return []
        if n > k:
            # Keep everything tied with the k-th best so the id tie-break is exact.
            kth = np.partition(scores, n - k)[n - k]
            keep = np.flatnonzero(scores >= kth)
            ids, scores = ids[keep], scores[keep]
        order = np.lexsort((ids, -scores))[:k]
        return [(int(i), float(s)) for i, s in zip(ids[order], scores[order])]

    # ------------------------------------------------------------ persistence

    def save(self, path: str | os.PathLike[str], stamp: str) -> None:
        """Write a snapshot atomically (temp file in the same dir + os.replace)."""
        st = self._state
        terms = self._vocab.terms[: st.n_terms]
        joined = "".join(terms)
        meta = {
            "format": _FORMAT,
            "stamp": stamp,
            "k1": self.k1,
            "b": self.b,
            "epsilon": self.epsilon,
            "n_terms": st.n_terms,
            "n_segments": len(st.segments),
            "n_docs": st.n_docs,
        }
        arrays: dict[str, np.ndarray] = {
            "meta": np.frombuffer(json.dumps(meta).encode("utf-8"), dtype=np.uint8),
            "vocab_text": np.frombuffer(joined.encode("utf-8", "surrogatepass"), dtype=np.uint8),
            "vocab_len": np.fromiter(map(len, terms), dtype=np.int64, count=len(terms)),
        }
        for i, seg in enumerate(st.segments):
            for f in _SEG_FIELDS:
                arrays[f"s{i}_{f}"] = getattr(seg, f)
        path = os.fspath(path)
        directory = os.path.dirname(os.path.abspath(path))
        fd, tmp = tempfile.mkstemp(prefix=os.path.basename(path) + ".", suffix=".tmp", dir=directory)
        try:
            with os.fdopen(fd, "wb") as fh:
                np.savez(fh, **arrays)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, path)
        except BaseException:
            try:
                os.unlink(tmp)
            except OSError:
                pass
            raise

    @classmethod
    def load(cls, path: str | os.PathLike[str], stamp: str) -> BM25Index | None:
        """Index saved by :meth:`save`, or None if missing, corrupt or stale."""
        path = os.fspath(path)
        if not os.path.exists(path):
            return None
        try:
            with np.load(path, allow_pickle=False) as npz:
                meta = json.loads(npz["meta"].tobytes().decode("utf-8"))
                if meta.get("format") != _FORMAT:
                    log.info("BM25 index %s has format %r, rebuilding", path, meta.get("format"))
                    return None
                if meta.get("stamp") != stamp:
                    log.info("BM25 index %s is stale (stamp %r != %r)", path, meta.get("stamp"), stamp)
                    return None
                index = cls(float(meta["k1"]), float(meta["b"]), float(meta["epsilon"]))
                index._restore(meta, npz)
                return index
        except Exception as exc:  # any unreadable file just means "rebuild"
            log.warning("BM25 index %s unreadable (%s: %s), rebuilding", path, type(exc).__name__, exc)
            return None

    # -------------------------------------------------------------- internals

    def _publish(self, state: _State) -> None:
        state.df.flags.writeable = False
        self._state = state  # the single reference swap readers rely on

    def _segment_from_tokens(self, ids: np.ndarray, grp: np.ndarray, docs: Sequence[Sequence[str]]) -> _Segment:
        n = len(ids)
        lens = np.fromiter(map(len, docs), dtype=np.int64, count=n)
        fwd_tids: list[np.ndarray] = []
        fwd_tf: list[np.ndarray] = []
        per_row: list[np.ndarray] = []
        for lo in range(0, n, _TOKEN_CHUNK):
            hi = min(lo + _TOKEN_CHUNK, n)
            t, f, r = self._forward_chunk(docs[lo:hi], lens[lo:hi])
            fwd_tids.append(t)
            fwd_tf.append(f)
            per_row.append(r)
        fwd_ptr = np.zeros(n + 1, dtype=np.int64)
        np.cumsum(np.concatenate(per_row), out=fwd_ptr[1:])
        tf = np.concatenate(fwd_tf)
        return _build_segment(
            next(self._uids), ids, grp, lens.astype(np.int32), fwd_ptr, np.concatenate(fwd_tids), tf
        )

    def _forward_chunk(
        self, docs: Sequence[Sequence[str]], lens: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(unique term ids per row, their tf, terms per row) for a run of docs."""
        tids = np.fromiter(
            map(self._vocab.__getitem__, itertools.chain.from_iterable(docs)), dtype=np.int64, count=int(lens.sum())
        )
        return forward_rows(tids, lens, len(self._vocab.terms))

    def _is_dirty(self, seg: _Segment) -> bool:
        dead = seg.n_rows - seg.n_live
        return dead > 0 and dead >= 0.25 * seg.n_rows

    def _auto_merge(self, segments: list[_Segment]) -> list[_Segment]:
        """Merge the newest segments while they are small and of similar size.

        Bounded by ``auto_merge_max_docs`` so an ``add`` never pays for a large
        merge; those are left to :meth:`compact`.
        """
        i = len(segments) - 1
        acc = segments[i].n_live
        while i > 0:
            prev = segments[i - 1]
            if prev.uid in self._compacting:
                break
            if prev.n_live > self.merge_ratio * acc or acc + prev.n_live > self.auto_merge_max_docs:
                break
            i -= 1
            acc += prev.n_live
        if i == len(segments) - 1:
            return segments
        merged, _ = _merge_segments(next(self._uids), segments[i:])
        log.debug("merged %d tail segments into %d docs", len(segments) - i, acc)
        return segments[:i] + ([merged] if merged is not None else [])

    def _plan_compaction(self, segments: tuple[_Segment, ...], full: bool) -> list[_Segment]:
        if full:
            if len(segments) > 1 or any(s.n_live < s.n_rows for s in segments):
                return list(segments)
            return []
        chosen = {s.uid: s for s in segments if self._is_dirty(s)}
        if len(segments) > self.max_segments:
            # Fold the smallest segments into one, leaving headroom for future adds.
            excess = len(segments) - self.max_segments // 2 + 1
            for s in sorted(segments, key=lambda s: s.n_live)[:excess]:
                chosen[s.uid] = s
        if len(chosen) == 1 and not self._is_dirty(next(iter(chosen.values()))):
            return []
        # Keep creation order so the tail-merge policy in add() stays meaningful.
        return [s for s in segments if s.uid in chosen]

    def _install_merge(
        self, sources: list[_Segment], merged: _Segment | None, maps: list[np.ndarray]
    ) -> None:
        st = self._state
        current = {s.uid: s for s in st.segments}
        if merged is not None:
            alive = merged.alive.copy()
            for src, m in zip(sources, maps):
                now = current.get(src.uid)
                now_alive = now.alive if now is not None else np.zeros(src.n_rows, dtype=bool)
                died = np.flatnonzero(src.alive & ~now_alive)
                if len(died):
                    alive[m[died]] = False
            n_live = int(np.count_nonzero(alive))
            alive.flags.writeable = False
            merged = replace(merged, alive=alive, n_live=n_live)
        src_uids = {s.uid for s in sources}
        segments: list[_Segment] = []
        placed = False
        for s in st.segments:
            if s.uid in src_uids:
                if not placed and merged is not None and merged.n_live:
                    segments.append(merged)
                placed = True
                continue
            segments.append(s)
        if not placed and merged is not None and merged.n_live:
            segments.append(merged)
        self._publish(replace(st, segments=tuple(segments)))

    def _restore(self, meta: dict, npz: np.lib.npyio.NpzFile) -> None:
        n_terms = int(meta["n_terms"])
        text = npz["vocab_text"].tobytes().decode("utf-8", "surrogatepass")
        lens = npz["vocab_len"]
        if len(lens) != n_terms or int(lens.sum()) != len(text) or (len(lens) and lens.min() < 0):
            raise ValueError("vocabulary does not match its header")
        ends = np.cumsum(lens).tolist()
        terms = [text[s:e] for s, e in zip([0] + ends[:-1], ends)]
        vocab = Vocabulary()
        vocab.terms.extend(terms)
        dict.update(vocab, zip(terms, range(n_terms)))
        if len(vocab) != n_terms:
            raise ValueError("duplicate terms in vocabulary")

        segments: list[_Segment] = []
        df = np.zeros(n_terms, dtype=np.int64)
        n_docs = total_len = 0
        live_ids: list[np.ndarray] = []
        live_rows: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = []
        for i in range(int(meta["n_segments"])):
            a = {f: npz[f"s{i}_{f}"] for f in _SEG_FIELDS}
            n = len(a["doc_ids"])
            nnz = len(a["fwd_tids"])
            ok = (
                a["doc_ids"].dtype == np.int64
                and len(a["groups"]) == n
                and len(a["doc_len"]) == n
                and len(a["alive"]) == n
                and a["alive"].dtype == np.bool_
                and len(a["fwd_ptr"]) == n + 1
                and len(a["fwd_tf"]) == nnz
                and a["fwd_tf"].dtype.kind == "u"
                and a["post_code"].dtype.kind == "u"
                and len(a["pair_tf"]) == len(a["pair_dl"])
                and (nnz == 0 or int(a["post_code"].max()) < len(a["pair_tf"]))
                and len(a["post_pos"]) == nnz
                and len(a["post_code"]) == nnz
                and len(a["post_ptr"]) == len(a["terms"]) + 1
                and int(a["fwd_ptr"][0]) == 0
                and int(a["fwd_ptr"][-1]) == nnz
                and int(a["post_ptr"][0]) == 0
                and int(a["post_ptr"][-1]) == nnz
                and bool(np.all(np.diff(a["fwd_ptr"]) >= 0))
                and bool(np.all(np.diff(a["post_ptr"]) >= 0))
                and bool(np.all(a["doc_ids"][1:] > a["doc_ids"][:-1]))
                and (nnz == 0 or (int(a["fwd_tids"].min()) >= 0 and int(a["fwd_tids"].max()) < n_terms))
                and (nnz == 0 or (int(a["post_pos"].min()) >= 0 and int(a["post_pos"].max()) < n))
                and (len(a["terms"]) == 0 or int(a["terms"].max()) < n_terms)
            )
            if not ok:
                raise ValueError(f"segment {i} is inconsistent")
            counts = np.diff(a["fwd_ptr"])
            alive = a["alive"]
            n_live = int(np.count_nonzero(alive))
            if n_live == 0:
                continue
            # Statistics are recomputed rather than trusted, so they can never
            # disagree with the postings they describe.
            live_tids = a["fwd_tids"][_repeat(alive, counts, np.int8).view(np.bool_)]
            df += np.bincount(live_tids, minlength=n_terms)
            live_rows.append((a["groups"][alive].astype(np.int64), counts[alive], live_tids, a["doc_len"][alive]))
            n_docs += n_live
            total_len += int(a["doc_len"][alive].sum(dtype=np.int64))
            live_ids.append(a["doc_ids"][alive])
            seg = _Segment(
                uid=next(self._uids),
                doc_ids=a["doc_ids"],
                groups=a["groups"].astype(np.int64, copy=False),
                doc_len=a["doc_len"].astype(np.int32, copy=False),
                alive=alive,
                n_live=n_live,
                fwd_ptr=a["fwd_ptr"].astype(np.int64, copy=False),
                fwd_tids=a["fwd_tids"].astype(np.int32, copy=False),
                fwd_tf=a["fwd_tf"],
                terms=a["terms"].astype(np.int32, copy=False),
                post_ptr=a["post_ptr"].astype(np.int64, copy=False),
                post_pos=a["post_pos"].astype(np.int32, copy=False),
                post_code=a["post_code"],
                pair_tf=a["pair_tf"].astype(np.float64, copy=False),
                pair_dl=a["pair_dl"].astype(np.float64, copy=False),
                group_values=_distinct(a["groups"].astype(np.int64, copy=False)),
            )
            _freeze(seg)
            segments.append(seg)
        if live_ids:
            all_live = np.sort(np.concatenate(live_ids))
            if np.any(all_live[1:] == all_live[:-1]):
                raise ValueError("a doc id is live in two segments")
        groups: dict[int, _GroupStats] = {}
        if live_rows:
            groups = _all_group_stats(*(np.concatenate(p) for p in zip(*live_rows)), df, n_docs, total_len)
        self._vocab = vocab
        self._publish(
            _State(
                segments=tuple(segments),
                df=df.astype(np.int32),
                n_terms=n_terms,
                n_docs=n_docs,
                total_len=total_len,
                groups=groups,
            )
        )

    def _match(
        self, st: _State, query: Sequence[str], groups: Collection[int] | None, k: int | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """match(); with ``k``, each segment only contributes its best k (plus ties)."""
        if st.n_docs == 0 or not query:
            return _no_match()
        vis = st.visible(groups)
        if vis is None:
            return _no_match()
        gset = np.asarray(vis.groups, dtype=np.int64) if vis.filtered else None

        # Resolve terms once; `plan` keeps query order (duplicates included)
        # because rank_bm25 accumulates contributions in that order.
        vocab_get = self._vocab.get
        known_at: dict[str, int] = {}  # term -> position in `known`, -1 if not in the vocabulary
        known: list[int] = []
        for term in query:
            if term not in known_at:
                tid = vocab_get(term)
                known_at[term] = -1 if tid is None or tid >= st.n_terms else len(known)
                if known_at[term] >= 0:
                    known.append(tid)
        dfs = vis.df(np.asarray(known, dtype=np.int64)).tolist()
        # Terms no visible doc holds are unknown to rank_bm25 built over the visible
        # docs: they contribute exactly 0. The rest get slots in first-seen order.
        slot_of = [-1] * len(known)
        uniq_tids: list[int] = []
        idfs: list[float] = []
        n_docs = vis.n_docs
        for j, (tid, df) in enumerate(zip(known, dfs)):
            if df == 0:
                continue
            idf = math.log(n_docs - df + 0.5) - math.log(df + 0.5)
            if idf < 0:
                idf = self.epsilon * vis.average_idf()
            slot_of[j] = len(uniq_tids)
            uniq_tids.append(tid)
            idfs.append(idf)
        plan = [slot_of[j] for j in map(known_at.__getitem__, query) if j >= 0 and slot_of[j] >= 0]
        if not plan:
            return _no_match()
        q = np.asarray(uniq_tids, dtype=np.int32)
        avgdl = vis.total_len / n_docs

        out_ids: list[np.ndarray] = []
        out_scores: list[np.ndarray] = []
        for seg in st.segments:
            if seg.n_live == 0:
                continue
            row_filter: np.ndarray | None = None
            if gset is not None:
                wanted = np.isin(seg.group_values, gset)
                if not wanted.any():
                    continue
                if not wanted.all():
                    row_filter = gset
            res = self._score_segment(seg, q, idfs, plan, avgdl)
            if res is None:
                continue
            rows, scores = res
            keep: np.ndarray | None = None
            if seg.n_live < seg.n_rows:
                keep = seg.alive[rows]
            if row_filter is not None:
                g = seg.groups[rows]
                in_group = g == row_filter[0]
                for other in row_filter[1:]:  # a server's question: two groups
                    in_group |= g == other
                keep = in_group if keep is None else keep & in_group
            if keep is not None:
                rows, scores = rows[keep], scores[keep]
            if k is not None and len(rows) > k:
                # Keeping every tie of the segment's k-th score leaves the global
                # (score desc, id asc) top k intact and skips most id lookups.
                kth = np.partition(scores, len(rows) - k)[len(rows) - k]
                best = scores >= kth
                rows, scores = rows[best], scores[best]
            if len(rows):
                out_ids.append(seg.doc_ids[rows])
                out_scores.append(scores)
        if not out_ids:
            return _no_match()
        if len(out_ids) == 1:
            return out_ids[0], out_scores[0]
        return np.concatenate(out_ids), np.concatenate(out_scores)

    def _score_segment(
        self, seg: _Segment, q: np.ndarray, idfs: list[float], plan: list[int], avgdl: float
    ) -> tuple[np.ndarray, np.ndarray] | None:
        """(rows, scores) of the segment rows containing a query term."""
        nt = len(seg.terms)
        if nt == 0:
            return None
        at = np.searchsorted(seg.terms, q)
        present = seg.terms[np.minimum(at, nt - 1)] == q
        if not present.any():
            return None
        k1, b = self.k1, self.b
        tf, dl = seg.pair_tf, seg.pair_dl
        # rank_bm25's expression and operand order, evaluated once per distinct
        # (tf, dl) pair; the gather below makes it per posting, bit-identical.
        weight = tf * (k1 + 1) / (tf + k1 * (1 - b + b * dl / avgdl))
        contrib: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        for slot in np.flatnonzero(present).tolist():
            lo, hi = int(seg.post_ptr[at[slot]]), int(seg.post_ptr[at[slot] + 1])
            table = idfs[slot] * weight
            contrib[slot] = (seg.post_pos[lo:hi], table.take(seg.post_code[lo:hi]))
        seq = [contrib[s] for s in plan if s in contrib]
        if len(seq) == 1:
            return seq[0]
        rows = np.concatenate([r for r, _ in seq])
        vals = np.concatenate([v for _, v in seq])
        if len(rows) * 8 > seg.n_rows:
            # Dense accumulation: bincount adds weights in input order, i.e. in
            # query-term order per doc, matching rank_bm25's `score +=` loop.
            dense = np.bincount(rows, weights=vals, minlength=seg.n_rows)
            hit = np.zeros(seg.n_rows, dtype=bool)
            hit[rows] = True
            uniq = np.flatnonzero(hit)
            return uniq, dense[uniq]
        # Sparse: a stable sort keeps query order within each doc (and is cheap
        # because the input is a few already-sorted runs); bincount over the
        # sorted group ids then sums each doc's contributions in that order.
        order = np.argsort(rows, kind="stable")
        srows = rows[order]
        first = np.concatenate(([True], srows[1:] != srows[:-1]))
        gid = np.cumsum(first) - 1
        return srows[first], np.bincount(gid, weights=vals[order])
