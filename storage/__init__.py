"""The bottom layer: settings and everything that touches disk (spec section 8).

`settings` (one `ADVOCACY_*` settings object), `files` (outputs written whole or not at all),
`snapshots` (feature-snapshot folders behind an atomically replaced pointer) and `asklog` (the
durable SQLite log of asks). It imports nothing of the product: what the tables hold is handed in
(the ask log gets the asks contract), so `features/` stays free of storage and the environment.
"""
