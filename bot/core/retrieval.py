"""Ranking sentences against a question. Pure CPU: callers run it off the event loop."""
from __future__ import annotations

import logging
import threading
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass

from .bm25_index import BM25Index
from .storage import IndexRow

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Hit:
    sentence_id: int
    score: float


class Retriever:
    """The library's searchable side: sentence ids in, ranked sentence ids out."""

    def __init__(self, index: BM25Index | None = None) -> None:
        self.index = index or BM25Index()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self.index)

    def add(self, rows: Sequence[IndexRow]) -> None:
        if not rows:
            return
        with self._lock:
            self.index.add([r.sentence_id for r in rows], [r.tokens for r in rows], [r.scope for r in rows])

    def remove(self, sentence_ids: Iterable[int]) -> None:
        with self._lock:
            self.index.remove(list(sentence_ids))

    def search(self, terms: Sequence[str], k: int, scopes: Collection[int] | None = None) -> list[Hit]:
        return [Hit(i, s) for i, s in self.index.top_k(terms, k, scopes)]
