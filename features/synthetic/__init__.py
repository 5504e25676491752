"""Deterministic synthetic customer base with known true probabilities.

The world is simulated in monthly steps. Every customer carries hidden traits (advocacy
affinity, a drifting satisfaction, product fit) that show only through noisy observable
signals: usage, health, NPS, tickets and social mentions. Each month the company asks some
customers for advocacy (a points rule plus exploration, mostly within the guardrails), the
customers accept with a probability that the generator knows exactly, and accepted asks turn
into activities; unsolicited advocacy happens too.

`generate_world` returns the seven raw tables of the data contract (spec section 2) and the
truth: the exact acceptance probability of every ask, and for every monthly snapshot the
probability of at least one activity in the next 90 days given the full hidden state. The
propensity truth is computed by simulating K futures from the state at the snapshot with the
same step function that produced the realised data, Rao-Blackwellized: activity occurrence is
never sampled in a future, the future instead carries the probability that no activity
happened so far and continues along the "no activity yet" branch. The realised path is one
sample of the same process, so the realised 90-day labels are draws from the truth.

Everything is vectorised over customers (and customers x futures); Python loops run over
months, futures chunks and the nine ask types only.

Layout: `_params` (the generator's own vocabularies and model constants; ask types, segments,
priorities, outcomes and table columns come from `features.catalog` / `features.contracts`),
`_calendar` (the monthly grid), `_state` (per-row state and draw helpers), `_population`
(customers and hidden traits), `_signals` (churn, satisfaction, tickets, NPS, social, usage),
`_asks` (whom to ask, with what, acceptance, activities), `_step` (one month: the signals in
their fixed draw order, then the state after it), `_truth` (the futures), `_tables` (table
assembly) and `_world` (`generate_world`).
"""

from features.synthetic._params import DEFAULT_END, DRIFTING, STATIONARY, Drift
from features.synthetic._world import SyntheticWorld, generate_world

__all__ = ["DEFAULT_END", "DRIFTING", "STATIONARY", "Drift", "SyntheticWorld", "generate_world"]
