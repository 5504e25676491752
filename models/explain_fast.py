"""TreeSHAP for a whole customer base, fast and exact for the reasons shown.

Path-dependent TreeSHAP of one tree depends on a row only through the side the row takes at every
split of that tree (off its own path too: the algorithm follows the row wherever a feature is "in"
the coalition). A tree with 14 splits has at most 2^14 such patterns and a customer base has far
fewer in practice, so `PatternTreeShap` computes each tree's contributions once per distinct pattern
(with LightGBM's own `pred_contrib` on one representative row, restricted to that tree), keeps them
across chunks, and adds them up per row. The sum equals `Booster.predict(pred_contrib=True)` up to
floating-point rounding (about 1e-14): LightGBM adds each tree's terms straight into the running
total, we add per-tree totals.

Rounding cannot change a reason: `exact_where_ambiguous` recomputes with LightGBM's exact call every
row whose top reasons (by size, or pushing one way, as the disagreement drivers are chosen) are
separated by less than `AMBIGUITY` log-odds, far above the rounding error and far below any gap a
person could see. So the batch job's reasons equal the API's, which calls `pred_contrib` per row.
"""

from __future__ import annotations

import threading
import warnings
from dataclasses import dataclass, field
from typing import Any

import lightgbm as lgb
import numpy as np

AMBIGUITY = 1e-9  # log-odds; rounding differences are about 1e-14
_ZERO = 1e-35  # LightGBM's kZeroThreshold: |x| <= this is zero
_CHECK_ROWS = 32  # rows per call compared with the exact computation (a guard against a wrong tree parse)
_CHECK_TOLERANCE = 1e-9
# Cached per-tree contributions, in floats, before the cache stops growing (about 256 MB).
_CACHE_FLOATS = 32_000_000


@dataclass(frozen=True)
class _Split:
    feature: int
    categorical: bool
    threshold: float
    categories: tuple[int, ...]
    default_left: bool
    missing: str  # "None", "Zero" or "NaN", as in LightGBM's model dump


@dataclass
class _Tree:
    index: int
    splits: np.ndarray  # per internal node: its row in the unique split table
    columns: np.ndarray  # contribution columns this tree can touch (its features, then the base value)
    # Patterns seen so far (sorted) and their contributions; replaced as a pair, never mutated.
    cache: tuple[np.ndarray, np.ndarray] = field(
        default_factory=lambda: (np.empty(0, dtype=np.uint64), np.empty((0, 0), dtype=np.float64))
    )


@dataclass
class ExplainStats:
    """What one `contributions` call did (for logs and the benchmark)."""

    rows: int = 0
    patterns: int = 0  # distinct (tree, pattern) pairs among the rows
    computed: int = 0  # of which not cached yet: explained with LightGBM
    exact_rows: int = 0  # rows recomputed exactly (near-ties, or a failed self-check)

    def add(self, other: ExplainStats) -> None:
        self.rows += other.rows
        self.patterns += other.patterns
        self.computed += other.computed
        self.exact_rows += other.exact_rows


def _parse(booster: lgb.Booster) -> tuple[list[_Split], list[_Tree]]:
    model = booster.dump_model()
    if model.get("num_tree_per_iteration", 1) != 1:
        raise ValueError("PatternTreeShap supports single-output models only")
    splits: dict[_Split, int] = {}
    trees: list[_Tree] = []
    for info in model["tree_info"]:
        nodes: list[int] = []
        features: set[int] = set()
        stack = [info["tree_structure"]]
        while stack:  # node order does not matter: it only has to be the same for every row
            node = stack.pop()
            if "split_index" not in node:
                continue
            categorical = node["decision_type"] == "=="
            split = _Split(
                feature=int(node["split_feature"]),
                categorical=categorical,
                threshold=0.0 if categorical else float(node["threshold"]),
                categories=tuple(int(c) for c in str(node["threshold"]).split("||")) if categorical else (),
                default_left=bool(node["default_left"]),
                missing=str(node["missing_type"]),
            )
            nodes.append(splits.setdefault(split, len(splits)))
            features.add(split.feature)
            stack.extend((node["left_child"], node["right_child"]))
        columns = np.array([*sorted(features), booster.num_feature()], dtype=np.int64)
        trees.append(_Tree(int(info["tree_index"]), np.array(nodes, dtype=np.int64), columns))
    return list(splits), trees


def _pattern_keys(decisions: np.ndarray) -> np.ndarray:
    """One uint64 per row (column of `decisions`) from up to 64 split decisions: bit i = node i."""
    packed = np.packbits(decisions, axis=0, bitorder="little")  # (bytes x rows)
    keys = np.zeros(decisions.shape[1], dtype=np.uint64)
    for b, byte in enumerate(packed):
        keys |= byte.astype(np.uint64) << np.uint64(8 * b)
    return keys


_DENSE_BITS = 20  # up to 2^20 possible patterns, find the distinct ones by counting, not sorting


def _unique(keys: np.ndarray, bits: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """`np.unique(keys, return_index=True, return_inverse=True)`, in O(n) for small key spaces."""
    if bits > _DENSE_BITS:
        unique, first, inverse = np.unique(keys, return_index=True, return_inverse=True)
        return unique, first, inverse.ravel()
    small = keys.astype(np.int64)
    first_at = np.full(1 << bits, len(keys), dtype=np.int64)
    np.minimum.at(first_at, small, np.arange(len(keys)))
    present = np.flatnonzero(first_at < len(keys))
    rank = np.empty(1 << bits, dtype=np.int64)
    rank[present] = np.arange(len(present))
    return present.astype(np.uint64), first_at[present], rank[small]


def _goes_left(split: _Split, values: np.ndarray) -> np.ndarray:
    """LightGBM's decision (tree.h NumericalDecision / CategoricalDecision) for one split."""
    nan = np.isnan(values)
    if split.categorical:
        codes = np.where(nan, -1, values).astype(np.int64)
        return ~nan & (codes >= 0) & np.isin(codes, split.categories)
    if split.missing != "NaN":
        values = np.where(nan, 0.0, values)
    left = values <= split.threshold
    if split.missing == "Zero":
        return np.where(np.abs(values) <= _ZERO, split.default_left, left)
    if split.missing == "NaN":
        return np.where(nan, split.default_left, left)
    return left


class PatternTreeShap:
    """TreeSHAP of a LightGBM booster, computed once per distinct split pattern of each tree.

    Thread-safe; the cache of per-pattern contributions is shared by every call (one per worker).
    """

    def __init__(self, booster: lgb.Booster) -> None:
        # A private copy, used under a lock: LightGBM sets the iteration range on the booster itself
        # for each predict, so per-tree calls racing other predictions on it would mix ranges.
        self.booster = lgb.Booster(model_str=booster.model_to_string())
        self._predict_lock = threading.Lock()
        self.n_features = booster.num_feature()
        self.splits, self.trees = _parse(booster)
        # Patterns are 64-bit keys: bigger trees (more than 65 leaves) are explained exactly instead.
        self.supported = all(len(t.splits) <= 64 for t in self.trees)
        self._lock = threading.Lock()
        self._cached_floats = 0

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        del state["_lock"], state["_predict_lock"]
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()
        self._predict_lock = threading.Lock()

    def _predict(self, rows: np.ndarray, **kwargs: Any) -> np.ndarray:
        with self._predict_lock:
            return np.asarray(self.booster.predict(rows, pred_contrib=True, **kwargs))

    def _decisions(self, matrix: np.ndarray) -> np.ndarray:
        """(unique splits x rows) booleans: True where the row goes left."""
        out = np.empty((len(self.splits), len(matrix)), dtype=bool)
        columns = np.ascontiguousarray(matrix.T)
        for j, split in enumerate(self.splits):
            out[j] = _goes_left(split, columns[split.feature])
        return out

    def _tree_contributions(self, tree: _Tree, rows: np.ndarray) -> np.ndarray:
        """Exact contributions of one tree for some rows, restricted to the tree's columns."""
        full = self._predict(rows, start_iteration=tree.index, num_iteration=1, num_threads=1)
        return np.ascontiguousarray(full[:, tree.columns])

    def fast_contributions(self, matrix: np.ndarray) -> tuple[np.ndarray, ExplainStats]:
        """Contributions (rows x features + 1, base value last), equal to `pred_contrib` up to rounding."""
        x = np.where(np.abs(matrix) <= _ZERO, 0.0, matrix)  # as LightGBM reads a dense row
        n = len(x)
        # Column-major while adding up: each tree adds to a few whole columns.
        out = np.zeros((self.n_features + 1, n), dtype=np.float64)
        stats = ExplainStats(rows=n)
        if n == 0:
            return out.T.copy(), stats
        decisions = self._decisions(x)
        for tree in self.trees:
            unique, first, inverse = _unique(_pattern_keys(decisions[tree.splits]), len(tree.splits))
            stats.patterns += len(unique)
            known_keys, known_values = tree.cache
            per_pattern = np.empty((len(unique), len(tree.columns)), dtype=np.float64)
            hit = np.zeros(len(unique), dtype=bool)
            if len(known_keys):
                at = np.minimum(np.searchsorted(known_keys, unique), len(known_keys) - 1)
                hit = known_keys[at] == unique
                per_pattern[hit] = known_values[at[hit]]
            miss = np.flatnonzero(~hit)
            if len(miss):
                fresh = self._tree_contributions(tree, x[first[miss]])
                per_pattern[miss] = fresh
                stats.computed += len(miss)
                self._remember(tree, unique[miss], fresh)
            for j, column in enumerate(tree.columns):
                out[column] += per_pattern[:, j].take(inverse)
        return np.ascontiguousarray(out.T), stats

    def _remember(self, tree: _Tree, keys: np.ndarray, values: np.ndarray) -> None:
        with self._lock:
            if self._cached_floats + values.size > _CACHE_FLOATS:
                return  # bounded memory matters more than the last speed-up
            known_keys, known_values = tree.cache
            merged_keys = np.concatenate([known_keys, keys])
            merged_values = np.concatenate([known_values.reshape(-1, values.shape[1]), values])
            order = np.argsort(merged_keys, kind="stable")
            merged_keys, merged_values = merged_keys[order], merged_values[order]
            # Another thread may have added the same patterns meanwhile: keep one of each.
            keep = np.r_[True, merged_keys[1:] != merged_keys[:-1]]
            tree.cache = (merged_keys[keep], merged_values[keep])
            self._cached_floats += int(keep.sum()) * values.shape[1] - known_values.size

    def contributions(self, matrix: np.ndarray, top: int = 3) -> tuple[np.ndarray, ExplainStats]:
        """Contributions whose top `top` reasons equal those of LightGBM's exact `pred_contrib`.

        Fast per-pattern values, self-checked against the exact call on a few rows, with every row
        whose top reasons could depend on rounding recomputed exactly.
        """
        if not self.supported:
            exact = self._predict(matrix)
            return exact, ExplainStats(rows=len(exact), exact_rows=len(exact))
        out, stats = self.fast_contributions(matrix)
        if len(out) and not self._agrees(matrix, out):
            warnings.warn(
                "fast TreeSHAP disagreed with LightGBM on a self-check: explaining this chunk exactly",
                RuntimeWarning,
                stacklevel=2,
            )
            out = self._predict(matrix)
            stats.exact_rows = len(out)
        else:
            stats.exact_rows = self.exact_where_ambiguous(out, matrix, top)
        return out, stats

    def exact_where_ambiguous(self, contributions: np.ndarray, matrix: np.ndarray, top: int = 3) -> int:
        """Replace, in place, the rows `ambiguous_rows` flags by LightGBM's exact values; return how many."""
        rows = np.flatnonzero(ambiguous_rows(contributions, top))
        if len(rows):
            contributions[rows] = self._predict(matrix[rows], num_threads=1)
        return len(rows)

    def _agrees(self, matrix: np.ndarray, fast: np.ndarray) -> bool:
        rows = np.unique(np.linspace(0, len(matrix) - 1, min(len(matrix), _CHECK_ROWS)).astype(np.int64))
        exact = self._predict(matrix[rows], num_threads=1)
        return bool(np.max(np.abs(exact - fast[rows])) <= _CHECK_TOLERANCE)


def ambiguous_rows(contributions: np.ndarray, top: int = 3, tolerance: float = AMBIGUITY) -> np.ndarray:
    """Rows whose top reasons could change under rounding of `tolerance` log-odds.

    Looks at the `top + 1` largest values by size, by push up and by push down (the disagreement
    drivers), and flags a row where two of them are closer than `tolerance`, or one of the top is
    closer than that to zero (a reason is shown only if its contribution is not zero).
    """
    values = contributions[:, :-1]
    k = min(top + 1, values.shape[1])
    flagged = np.zeros(len(values), dtype=bool)
    for ranked in (np.abs(values), values, -values):
        best = -np.sort(-ranked, axis=1)[:, :k]
        close = np.diff(best, axis=1) > -tolerance if k > 1 else np.zeros((len(values), 0), dtype=bool)
        near_zero = np.abs(best[:, :top]) < tolerance
        flagged |= close.any(axis=1) | near_zero.any(axis=1)
    return flagged


__all__ = ["AMBIGUITY", "ExplainStats", "PatternTreeShap", "ambiguous_rows"]
