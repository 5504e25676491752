"""Shared fixtures: small generated worlds, made once per session."""

from __future__ import annotations

import pytest

from features.io import World, world_from_tables


@pytest.fixture(scope="session")
def generated_world() -> World:
    """A small synthetic world (validated through the data contract like user data)."""
    from features.synthetic import generate_world

    return world_from_tables(generate_world(n_customers=400, months=24, seed=7).tables)
