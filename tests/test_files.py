"""Outputs people open: written whole or not at all, and safe to open in a spreadsheet."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from storage.files import spreadsheet_safe, write_frame

RISKY = ['=HYPERLINK("http://x","y")', "+1+1", "-2+3", "@SUM(A1:A2)", "\tcmd", "plain", None]


def test_csv_cells_a_spreadsheet_would_run_are_escaped(tmp_path: Path) -> None:
    frame = pd.DataFrame({"name": RISKY, "score": [-0.5, 1.0, -2.0, 3.0, 4.0, 5.0, 6.0]})
    out = write_frame(frame, tmp_path / "scores.csv")
    back = pd.read_csv(out, dtype={"name": "str"}, keep_default_na=False)
    assert back["name"].tolist()[:6] == ["'" + v for v in RISKY[:5]] + ["plain"]
    assert back["score"].tolist() == [-0.5, 1.0, -2.0, 3.0, 4.0, 5.0, 6.0]  # numbers stay numbers


def test_parquet_keeps_the_values_as_they_are(tmp_path: Path) -> None:
    frame = pd.DataFrame({"name": RISKY})
    out = write_frame(frame, tmp_path / "scores.parquet")
    back = pd.read_parquet(out)["name"]
    assert back.tolist()[:6] == RISKY[:6] and pd.isna(back.iloc[6])


def test_a_frame_without_risky_cells_is_returned_untouched() -> None:
    frame = pd.DataFrame({"name": ["a", "b"], "n": [-1, 2]})
    assert spreadsheet_safe(frame) is frame


def test_a_failed_write_leaves_nothing_under_the_name(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"must end in \.parquet or \.csv"):
        write_frame(pd.DataFrame({"a": [1]}), tmp_path / "scores.json")
    assert not list(tmp_path.iterdir())
