"""Outputs are written whole under their final name, in the format their name says."""

import pandas as pd

from portrait.files import atomic_write, atomic_write_text


def test_atomic_write_picks_the_format_from_the_name_and_leaves_no_temporary_file(tmp_path):
    frame = pd.DataFrame({"customer_id": ["a", "b"], "persona_id": [0, 3]})
    atomic_write(frame, tmp_path / "out" / "assignments.csv")
    atomic_write(frame, tmp_path / "out" / "assignments.parquet")
    assert (tmp_path / "out" / "assignments.csv").read_text() == "customer_id,persona_id\na,0\nb,3\n"
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "out" / "assignments.parquet"), frame)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["assignments.csv", "assignments.parquet"]


def test_atomic_write_replaces_an_existing_file(tmp_path):
    target = tmp_path / "latest.txt"
    atomic_write_text("scores_2025-01-01.parquet", target)
    atomic_write_text("scores_2025-02-01.parquet", target)
    assert target.read_text() == "scores_2025-02-01.parquet"
    assert list(tmp_path.iterdir()) == [target]
