"""Feature ranges: `/score_features` accepts each feature's range from `features.spec` and nothing past it."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest
from pydantic import ValidationError

from features.spec import CATEGORICAL_FEATURES, FEATURE_RANGES, FEATURES, NUMERIC_FEATURES, Feature
from serving.schemas import ScoreFeaturesRequest

# Every end the spec closes, as (feature, bound, which side): the test follows the spec as it changes.
CLOSED_ENDS = [
    pytest.param(name, bound, side, id=f"{name}-{side}")
    for name in NUMERIC_FEATURES
    for bound, side in zip(FEATURE_RANGES[name], ("low", "high"), strict=True)
    if bound is not None
]
OPEN_ENDS = [
    pytest.param(name, side, id=f"{name}-{side}")
    for name in NUMERIC_FEATURES
    for bound, side in zip(FEATURE_RANGES[name], ("low", "high"), strict=True)
    if bound is None
]


def _send(name: str, value: float) -> ScoreFeaturesRequest:
    """Parse a one-record body, as the API does from the wire, with only `name` known."""
    record: dict[str, Any] = {f.name: None for f in FEATURES} | {name: value}
    return ScoreFeaturesRequest.model_validate_json(json.dumps({"records": [record]}))


def test_every_numeric_feature_and_only_those_has_a_range() -> None:
    assert set(NUMERIC_FEATURES) <= set(FEATURE_RANGES)
    assert not set(CATEGORICAL_FEATURES) & set(FEATURE_RANGES)
    for low, high in FEATURE_RANGES.values():
        assert low is None or high is None or low <= high
    assert CLOSED_ENDS, "no feature has a range; the bounds checks below would test nothing"


@pytest.mark.parametrize(("name", "bound", "side"), CLOSED_ENDS)
def test_a_bound_is_accepted_and_the_next_float_past_it_refused(name: str, bound: float, side: str) -> None:
    accepted = _send(name, float(bound))
    assert getattr(accepted.records[0], name) == bound

    outside = math.nextafter(bound, -math.inf if side == "low" else math.inf)
    with pytest.raises(ValidationError) as refused:
        _send(name, outside)
    [error] = refused.value.errors()
    assert error["loc"] == ("records", 0, name)
    assert error["type"] == ("greater_than_equal" if side == "low" else "less_than_equal")


@pytest.mark.parametrize(("name", "side"), OPEN_ENDS)
def test_an_open_end_takes_any_finite_value(name: str, side: str) -> None:
    far = -1e300 if side == "low" else 1e300
    assert getattr(_send(name, far).records[0], name) == far


def test_the_published_request_schema_carries_the_spec_ranges() -> None:
    # Callers read the ranges from the OpenAPI document, so it must say what the validation does.
    schema = ScoreFeaturesRequest.model_json_schema()
    properties = schema["$defs"]["FeatureRecord"]["properties"]
    for name in NUMERIC_FEATURES:
        [number] = [option for option in properties[name]["anyOf"] if option.get("type") == "number"]
        assert (number.get("minimum"), number.get("maximum")) == FEATURE_RANGES[name], name


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        pytest.param({"kind": "categorical", "low": 0}, "categorical", id="categorical-with-range"),
        pytest.param({"kind": "numeric", "low": 1, "high": 0}, "above", id="low-above-high"),
    ],
)
def test_a_feature_with_an_impossible_range_is_refused(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Feature(name="x", label="x", group="x", **kwargs)
