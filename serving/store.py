"""The feature snapshot in memory, encoded for the bundle once at start-up (spec section 7).

`FeatureStore` holds a float matrix and per-column arrays with an id -> row index, so scoring one
customer slices arrays and never builds a DataFrame. The rest of the service's state lives beside
it: `serving.guardrail_book` (guardrails from the snapshot's asks and the ask log),
`serving.results` (each customer's result, made once) and `serving.state` (one method per route).
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from features.catalog import ASK_TYPE_NAMES
from features.commitments import COMMITMENT_COLUMNS
from features.context import Snapshot
from features.contracts import from_micros, to_micros
from features.spec import CATEGORICAL_FEATURES, FEATURE_NAMES, FEATURE_VERSION, KEYS
from models.bundle import Bundle, acceptance_matrix
from models.references import SIMILARITY_WEIGHTS, folded
from models.scoring import Blocked, Scores, cold_start, score
from models.tiers import is_committed

ASK_TABLE_COLUMNS: tuple[str, ...] = ("ask_id", "customer_id", "ask_type", "asked_at", "outcome", "responded_at")
CONTEXT_COLUMNS: tuple[str, ...] = ("name", "last_urgent_ticket_at", "recent_reference_calls")
RESULT_CACHE_ROWS = 20_000  # about 6 kB each: about 120 MB per worker when full


_REFERENCE_CALL = ASK_TYPE_NAMES.index("reference_call")


def _acceptance(bundle: Bundle, matrix: np.ndarray) -> np.ndarray:
    """Acceptance per ask type (columns in `ASK_TYPE_NAMES` order) of encoded feature rows."""
    return bundle.acceptance.proba(acceptance_matrix(matrix), 2).reshape(len(matrix), len(ASK_TYPE_NAMES))


class UnknownCustomersError(KeyError):
    """Customer ids the service has no features for (a 404 naming them)."""

    def __init__(self, ids: Sequence[str]) -> None:
        self.ids = list(dict.fromkeys(ids))
        shown = ", ".join(self.ids[:10]) + (f" and {len(self.ids) - 10} more" if len(self.ids) > 10 else "")
        super().__init__(f"unknown customer_id: {shown}")

    def __str__(self) -> str:
        return str(self.args[0])


class IncompatibleStateError(ValueError):
    """The snapshot and the model do not fit together (or this code): serving them would be garbage."""


def now_utc() -> pd.Timestamp:
    return pd.Timestamp(time.time_ns() // 1_000, unit="us", tz="UTC")


def json_value(value: Any) -> Any:
    """A JSON-friendly Python value: numpy scalars unwrapped, NaN as None."""
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


class FeatureStore:
    """The snapshot's feature rows, encoded for the bundle once, with an id -> row index."""

    def __init__(self, snapshot: Snapshot, bundle: Bundle) -> None:
        frame = snapshot.features.reset_index(drop=True)
        if tuple(bundle.encoder.columns) != FEATURE_NAMES:
            raise IncompatibleStateError(
                f"model version {bundle.model_version} was trained on {len(bundle.encoder.columns)} features that are "
                f"not the {len(FEATURE_NAMES)} features of this code: retrain (`advocacy train`) or serve matching code"
            )
        written = snapshot.meta.get("feature_version")
        if written != FEATURE_VERSION:
            raise IncompatibleStateError(
                f"the feature snapshot has feature version {written}, this code computes {FEATURE_VERSION}: "
                "write a new one (`advocacy score`)"
            )
        missing = [c for c in (*KEYS, *FEATURE_NAMES, *CONTEXT_COLUMNS, *COMMITMENT_COLUMNS) if c not in frame.columns]
        if missing:
            raise IncompatibleStateError(
                f"the feature snapshot lacks column(s) {', '.join(missing[:8])}: it was written by other code; "
                "write a new one (`advocacy score`)"
            )
        if "delivered_at" not in snapshot.asks.columns:
            raise IncompatibleStateError(
                "the feature snapshot's asks lack delivered_at: it was written by older code; "
                "write a new one (`advocacy score`)"
            )
        ids = frame["customer_id"].astype("str")
        if ids.duplicated().any():
            raise IncompatibleStateError(f"the feature snapshot repeats customer_id {ids[ids.duplicated()].iloc[0]}")
        self.as_of: pd.Timestamp = snapshot.as_of
        self.ids: np.ndarray = ids.to_numpy(dtype=object)
        self.index: dict[str, int] = {cid: i for i, cid in enumerate(self.ids.tolist())}
        self.matrix: np.ndarray = np.ascontiguousarray(bundle.encoder.transform(frame), dtype=np.float64)
        self.columns: dict[str, np.ndarray] = {"customer_id": self.ids, "as_of": frame["as_of"].to_numpy()}
        # Copies, writable: a recorded ask restates a row's ask history in place (`restate`).
        for name in FEATURE_NAMES:
            col = frame[name]
            kind = object if name in CATEGORICAL_FEATURES else float
            self.columns[name] = col.to_numpy(dtype=kind, copy=True)
        for name in COMMITMENT_COLUMNS:  # the open accepted ask each result names
            self.columns[name] = frame[name].to_numpy(dtype=object, copy=True)
        self.health: np.ndarray = pd.to_numeric(frame["health_score"], errors="coerce").to_numpy(float)
        self.last_urgent_us: np.ndarray = to_micros(frame["last_urgent_ticket_at"])
        self.recent_reference_calls: np.ndarray = (
            pd.to_numeric(frame["recent_reference_calls"], errors="coerce").fillna(0).to_numpy(float)
        )
        self.customers: pd.DataFrame = frame.loc[
            :, ["customer_id", "name", "industry", "segment", "region", "use_case"]
        ].assign(customer_id=ids)
        # Normalised as `models.references.similarity` compares them, to find who can match a prospect.
        self.matchable: dict[str, pd.Series] = {attr: folded(self.customers[attr]) for attr in SIMILARITY_WEIGHTS}
        # Reference matching and the planner rank everyone by acceptance of each ask type: computed
        # once (in slices, to bound the memory of the model's input), not per request.
        parts = [_acceptance(bundle, part) for part in np.array_split(self.matrix, max(1, len(frame) // 20_000))]
        self.acceptance: np.ndarray = np.vstack(parts) if parts else np.zeros((0, len(ASK_TYPE_NAMES)))
        self.reference_acceptance = pd.Series(self.acceptance[:, _REFERENCE_CALL].copy(), index=pd.Index(ids))
        self.cold_start: np.ndarray = cold_start(self.columns["usage_months"], self.matrix)
        self.committed: np.ndarray = is_committed(self.columns["accepted_not_delivered"])
        self._history = _HistoryIndex(snapshot.history)
        self._bundle = bundle

    def restate(self, rows: np.ndarray, restated: pd.DataFrame) -> None:
        """Replace the rows' ask-history features and open accepted ask with `restated` (one row per
        row, `features.pointintime.restate_ask_history`'s columns), and everything derived from them.

        The caller serialises restatements and forgets the rows' kept results afterwards."""
        for name in restated.columns:
            values = restated[name].to_numpy(dtype=self.columns[name].dtype)
            self.columns[name][rows] = values
            if name in FEATURE_NAMES:  # numeric: encoded as themselves, in the encoder's column order
                self.matrix[rows, FEATURE_NAMES.index(name)] = values
        matrix = self.matrix[rows]
        self.acceptance[rows] = _acceptance(self._bundle, matrix)
        self.reference_acceptance.iloc[rows] = self.acceptance[rows, _REFERENCE_CALL]
        self.cold_start[rows] = cold_start(self.columns["usage_months"][rows], matrix)
        self.committed[rows] = is_committed(self.columns["accepted_not_delivered"][rows])

    def __len__(self) -> int:
        return len(self.ids)

    def rows(self, customer_ids: Sequence[str]) -> np.ndarray:
        """Row positions of the ids, in order; `UnknownCustomersError` naming every id without features."""
        get = self.index.get
        rows = [get(c, -1) for c in customer_ids]
        if -1 in rows:
            raise UnknownCustomersError([c for c, r in zip(customer_ids, rows, strict=True) if r < 0])
        return np.asarray(rows, dtype=np.int64)

    def values(self, rows: np.ndarray) -> dict[str, np.ndarray]:
        """`customer_id`, `as_of`, every feature and the open ask for the rows (what `score` reads)."""
        return {name: col[rows] for name, col in self.columns.items()}

    def signals(self, rows: np.ndarray) -> pd.DataFrame:
        """The guardrails' per-customer inputs for the rows."""
        return pd.DataFrame(
            {
                "customer_id": pd.Series(self.ids[rows], dtype="str"),
                "health_score": self.health[rows],
                "last_urgent_ticket_at": from_micros(self.last_urgent_us[rows]),
            }
        )

    def history(self, customer_id: str) -> list[dict[str, str]]:
        return self._history.events(customer_id)


class _HistoryIndex:
    """The snapshot's recent events, grouped by customer once, turned into dicts only when asked for."""

    def __init__(self, history: pd.DataFrame) -> None:
        frame = history.sort_values(["customer_id", "at"], ascending=[True, False], kind="stable")
        ids = frame["customer_id"].astype("str").to_numpy(dtype=object)
        # Kept as seconds and formatted per request: formatting millions of events at load is slow.
        self._at = to_micros(frame["at"]) // 1_000_000
        self._kind = frame["kind"].astype("str").to_numpy(dtype=object)
        self._detail = frame["detail"].astype("str").to_numpy(dtype=object)
        starts = np.flatnonzero(np.r_[True, ids[1:] != ids[:-1]]) if len(ids) else np.array([], dtype=np.int64)
        ends = np.r_[starts[1:], len(ids)]
        self._span = {ids[s]: (int(s), int(e)) for s, e in zip(starts, ends, strict=True)}

    def events(self, customer_id: str) -> list[dict[str, str]]:
        start, end = self._span.get(customer_id, (0, 0))
        at = np.datetime_as_string(self._at[start:end].astype("datetime64[s]"), timezone="UTC").tolist()
        return [
            {"at": when, "kind": self._kind[i], "detail": self._detail[i]}
            for when, i in zip(at, range(start, end), strict=True)
        ]


def score_stored(bundle: Bundle, store: FeatureStore, rows: np.ndarray, blocked: Blocked) -> Scores:
    """`models.scoring.score` on stored rows with their blocks: the scoring behind `/explain`."""
    return score(bundle, store.values(rows), matrix=store.matrix[rows], blocked=blocked)
