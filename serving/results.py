"""Each customer's result (reasons included) made once by `models.scoring.score` and kept as JSON.

Only the next best ask is re-chosen per request, under the current guardrails.
"""

from __future__ import annotations

import threading
from collections import OrderedDict

import numpy as np

from models.bundle import Bundle
from models.scoring import score
from serving.schemas import Result
from serving.store import RESULT_CACHE_ROWS, FeatureStore


class ResultCache:
    """Each stored customer's result as `models.scoring.score` made it, kept as JSON, minus the next best ask.

    Within one snapshot and one model, everything in a result except the next best ask depends only
    on the customer's features, so it is computed once (TreeSHAP reasons included, the expensive
    part), validated and serialised by the response model, and kept as bytes (one object per
    customer: nothing for the garbage collector to walk), least recently used out first. The next
    best ask depends on guardrails that move with every recorded ask, so it is re-chosen per request
    from the kept acceptance probabilities with the functions `score` itself uses.
    """

    def __init__(self, bundle: Bundle, store: FeatureStore, capacity: int = RESULT_CACHE_ROWS) -> None:
        self._bundle = bundle
        self._store = store
        self._capacity = capacity
        self._kept: OrderedDict[int, tuple[bytes, np.ndarray]] = OrderedDict()
        self._lock = threading.Lock()
        self._generation = 0  # moved by `forget`: results computed across it are not kept

    def warm(self, limit: int | None = None, chunk: int = 1000, num_threads: int = 2) -> int:
        """Compute the first `limit` customers' results ahead of requests (at load time); return how many."""
        n = min(len(self._store), self._capacity if limit is None else limit)
        for start in range(0, n, chunk):
            self._compute(np.arange(start, min(n, start + chunk), dtype=np.int64), num_threads)
        return n

    def forget(self, rows: np.ndarray) -> None:
        """Drop the rows' results: their features were restated (`FeatureStore.restate`)."""
        with self._lock:
            self._generation += 1
            for r in rows.tolist():
                self._kept.pop(r, None)

    def _compute(self, rows: np.ndarray, num_threads: int = 1) -> dict[int, tuple[bytes, np.ndarray]]:
        generation = self._generation
        values, matrix = self._store.values(rows), self._store.matrix[rows]
        scores = score(self._bundle, values, matrix=matrix, explain=True, num_threads=num_threads)
        made: dict[int, tuple[bytes, np.ndarray]] = {}
        for i, r in enumerate(rows.tolist()):
            body = Result.model_validate(scores.result(i)).model_dump_json(exclude={"next_best_ask"}).encode()
            made[r] = (body[:-1], scores.acceptance[i].copy())
        with self._lock:
            if generation != self._generation:  # a row may have been restated while these were made
                return made
            self._kept.update(made)
            while len(self._kept) > self._capacity:
                self._kept.popitem(last=False)
        return made

    def get(self, rows: np.ndarray) -> list[tuple[bytes, np.ndarray]]:
        """(result JSON without `next_best_ask` and its closing brace, acceptance per ask type) per row."""
        found: dict[int, tuple[bytes, np.ndarray]] = {}
        with self._lock:
            for r in rows.tolist():
                kept = self._kept.get(r)
                if kept is not None:
                    self._kept.move_to_end(r)
                    found[r] = kept
        missing = np.asarray([r for r in dict.fromkeys(rows.tolist()) if r not in found], dtype=np.int64)
        if len(missing):
            found.update(self._compute(missing))
        return [found[r] for r in rows.tolist()]
